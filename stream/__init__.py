"""Serving: sources, the per-stream pipeline and its stages, sinks, the HTTP service and metrics."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
