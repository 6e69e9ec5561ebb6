"""Producing models: data readers, self-blended synthesis, the Keras training loop, export and evaluation."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
