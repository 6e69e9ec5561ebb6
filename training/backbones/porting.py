"""Keras layers built from a PyTorch state dict: each takes the weights of the torch module it mirrors.

Layouts differ: a torch convolution kernel is (out, in, kh, kw) where Keras wants (kh, kw, in, out), a
depthwise one (channels, 1, kh, kw) where Keras wants (kh, kw, channels, 1), and a linear layer (out, in)
where Keras wants (in, out). Every tensor of the state dict must be taken exactly once (`finish`), so a port
that skips or misnames a module fails loudly instead of leaving random weights behind.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.backbones.weights import BackboneWeightsError

# Torch counts batch-norm updates; Keras has no such variable.
_UNUSED_SUFFIX = ".num_batches_tracked"


class TorchPort:
    """Builds Keras layers named after torch module prefixes and loads their weights from `state`."""

    def __init__(
        self, state: dict[str, np.ndarray], batch_norm_epsilon: float, batch_norm_momentum: float
    ) -> None:
        self._state = dict(state)
        self._epsilon = batch_norm_epsilon
        self._momentum = batch_norm_momentum

    def conv(
        self, x: tf.Tensor, prefix: str, filters: int, kernel: int, stride: int, padding: int | str
    ) -> tf.Tensor:
        """Bias-free convolution; `padding` is torch's symmetric zero padding in pixels, or "same" (TF's)."""
        x = self._pad(x, prefix, padding)
        layer = tf.keras.layers.Conv2D(
            filters, kernel, stride, padding=self._keras_padding(padding), use_bias=False, name=_name(prefix)
        )
        return call_and_load(layer, x, [self._take(f"{prefix}.weight").transpose(2, 3, 1, 0)])

    def depthwise(self, x: tf.Tensor, prefix: str, kernel: int, stride: int, padding: int | str) -> tf.Tensor:
        """Bias-free depthwise convolution with `padding` as in `conv`."""
        x = self._pad(x, prefix, padding)
        layer = tf.keras.layers.DepthwiseConv2D(
            kernel, stride, padding=self._keras_padding(padding), use_bias=False, name=_name(prefix)
        )
        return call_and_load(layer, x, [self._take(f"{prefix}.weight").transpose(2, 3, 0, 1)])

    def batch_norm(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        layer = tf.keras.layers.BatchNormalization(
            epsilon=self._epsilon, momentum=self._momentum, name=_name(prefix)
        )
        names = ("weight", "bias", "running_mean", "running_var")
        return call_and_load(layer, x, [self._take(f"{prefix}.{name}") for name in names])

    def dense(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        weight = self._take(f"{prefix}.weight")
        layer = tf.keras.layers.Dense(weight.shape[0], name=_name(prefix))
        return call_and_load(layer, x, [weight.T, self._take(f"{prefix}.bias")])

    def skip(self, prefix: str) -> None:
        """Leave out the tensors of module `prefix` (e.g. the ImageNet classifier of a backbone)."""
        for key in [key for key in self._state if key.startswith(f"{prefix}.")]:
            del self._state[key]

    def finish(self) -> None:
        """Raise BackboneWeightsError if the state dict holds tensors that no layer took."""
        left = sorted(key for key in self._state if not key.endswith(_UNUSED_SUFFIX))
        if left:
            raise BackboneWeightsError(f"weights left over after the port: {', '.join(left[:5])}")

    def _take(self, key: str) -> np.ndarray:
        try:
            return self._state.pop(key)
        except KeyError:
            raise BackboneWeightsError(f"the weights have no tensor {key}") from None

    @staticmethod
    def _pad(x: tf.Tensor, prefix: str, padding: int | str) -> tf.Tensor:
        if isinstance(padding, str) or padding == 0:
            return x
        return tf.keras.layers.ZeroPadding2D(padding, name=f"{_name(prefix)}_pad")(x)

    @staticmethod
    def _keras_padding(padding: int | str) -> str:
        return padding if isinstance(padding, str) else "valid"


def _name(prefix: str) -> str:
    """A Keras layer name for a torch module prefix: `_blocks.3._bn1` -> `blocks_3_bn1`."""
    return "_".join(part.strip("_") for part in prefix.split("."))


def call_and_load(layer: tf.keras.layers.Layer, x: tf.Tensor, weights: list[np.ndarray]) -> tf.Tensor:
    """Call `layer` on `x`, then set its `weights`; BackboneWeightsError if their shapes do not fit."""
    y = layer(x)
    expected = [tuple(weight.shape) for weight in layer.get_weights()]
    found = [weight.shape for weight in weights]
    if expected != found:
        raise BackboneWeightsError(f"layer {layer.name} expects weights of shapes {expected}, got {found}")
    layer.set_weights([weight.astype(np.float32) for weight in weights])
    return y
