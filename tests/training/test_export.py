"""Export: the package layout, manifest contents, TFLite/SavedModel agreement and atomic writes."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models.errors import ModelPackageError
from models.package import ModelPackage
from models.preprocess import CropSpec
from training import export
from training.architectures import build_model

SPEC = CropSpec(size=32, margin=0.25)


def warmed_model() -> tf.keras.Model:
    """The serving architecture at 32 px, batch-norm statistics settled so its outputs vary with the input."""
    tf.keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v3_small", SPEC.size)
    crops = np.random.default_rng(0).uniform(0, 255, size=(16, SPEC.size, SPEC.size, 3)).astype(np.float32)
    for _ in range(40):
        model(crops, training=True)
    return model


@pytest.fixture(scope="module")
def model() -> tf.keras.Model:
    return warmed_model()


@pytest.fixture(scope="module")
def check_batch() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(5, SPEC.size, SPEC.size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def package(
    model: tf.keras.Model, check_batch: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> ModelPackage:
    out = tmp_path_factory.mktemp("export") / "pkg"
    return export.export_package(
        model,
        out,
        SPEC,
        0.4,
        "mobilenet_v3_small",
        {"test": {"auc": 0.7}},
        {"data": {"images": 5}},
        check_batch,
    )


def test_package_loads_with_manifest(package: ModelPackage) -> None:
    loaded = ModelPackage.load(package.path)
    manifest = loaded.manifest
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{8}", manifest.version)
    assert datetime.fromisoformat(manifest.created_at).utcoffset() is not None
    assert (
        manifest.crop == SPEC and manifest.threshold == 0.4 and manifest.architecture == "mobilenet_v3_small"
    )
    assert manifest.metrics["test"] == {"auc": 0.7}
    assert manifest.metrics["tflite_savedmodel_max_abs_diff"] <= export.AGREEMENT_TOLERANCE
    for key in ("command", "git_commit", "git_dirty", "tensorflow", "data"):
        assert key in manifest.provenance
    assert "model.tflite" in manifest.files and "saved_model/saved_model.pb" in manifest.files
    assert sorted(p.name for p in package.path.parent.iterdir()) == ["pkg"]


def test_outputs_match_keras_and_vary(
    package: ModelPackage, model: tf.keras.Model, check_batch: np.ndarray
) -> None:
    expected = model(check_batch, training=False).numpy().reshape(-1)
    saved = export.run_saved_model(package.saved_model_path, check_batch)
    lite = export.run_tflite(package.tflite_path.read_bytes(), check_batch)
    assert saved.shape == (5,)
    np.testing.assert_allclose(saved, expected, atol=1e-5)
    np.testing.assert_allclose(lite, expected, atol=export.AGREEMENT_TOLERANCE)
    assert np.ptp(expected) > 1e-4


def test_serving_signature_names(package: ModelPackage) -> None:
    signature = tf.saved_model.load(str(package.saved_model_path)).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["crops"]
    assert spec.shape.as_list() == [None, SPEC.size, SPEC.size, 3] and spec.dtype == tf.float32
    assert list(signature.structured_outputs) == ["probability"]


def test_existing_folder_needs_overwrite(
    package: ModelPackage, model: tf.keras.Model, check_batch: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "old.txt").write_text("previous package")
    with pytest.raises(FileExistsError):
        export.export_package(model, out, SPEC, 0.5, "a", {}, {}, check_batch)
    replaced = export.export_package(model, out, SPEC, 0.5, "a", {}, {}, check_batch, overwrite=True)
    assert not (out / "old.txt").exists()
    assert replaced.manifest.threshold == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_disagreement_is_rejected_and_nothing_is_left(
    model: tf.keras.Model, check_batch: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = export.run_tflite
    monkeypatch.setattr(export, "run_tflite", lambda content, batch: real_run(content, batch) + 0.01)
    with pytest.raises(ModelPackageError, match="disagree"):
        export.export_package(model, tmp_path / "pkg", SPEC, 0.5, "a", {}, {}, check_batch)
    assert list(tmp_path.iterdir()) == []


def test_check_batch_must_match_the_crop_size(model: tf.keras.Model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="check_batch"):
        export.export_package(model, tmp_path / "pkg", SPEC, 0.5, "a", {}, {}, np.zeros((1, 64, 64, 3)))


def test_git_state_outside_a_repository(tmp_path: Path) -> None:
    assert export.git_state(tmp_path) == {"git_commit": None, "git_dirty": None}


def test_manifest_json_declares_input(package: ModelPackage) -> None:
    data = json.loads((package.path / "manifest.json").read_text())
    assert data["input"] == {"size": SPEC.size, "margin": SPEC.margin, "channels": 3, "color": "RGB"}
