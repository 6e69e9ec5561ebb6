"""Producing models: data readers, synthetic fakes from real faces, pretrained backbones, the Keras training loop,
calibration, export and evaluation."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
