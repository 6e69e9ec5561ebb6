"""Classifier backends on an exported package: agreement, bucket padding, chunking, rejection, devices."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models.classifier import (
    BATCH_BUCKETS,
    SavedModelClassifier,
    TFLiteClassifier,
    bucket_for,
    load_classifier,
    pad_batch,
)
from models.devices import gpu_available, hpu_available, select_device
from models.errors import DeviceError, ModelPackageError
from models.package import DEFAULT_PACKAGE_DIR, ModelPackage, load_default_package
from models.preprocess import CropSpec
from training.export import export_package

SIZE = 32


def tiny_model() -> tf.keras.Model:
    """A small convolutional classifier with the serving contract (scaling inside, sigmoid output)."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((SIZE, SIZE, 3))
    x = tf.keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="swish")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="sigmoid")(x))


def random_crops(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, SIZE, SIZE, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    out = tmp_path_factory.mktemp("classifier") / "pkg"
    return export_package(
        tiny_model(), out, CropSpec(SIZE), 0.5, "tiny", {}, {}, random_crops(4).astype(np.float32)
    )


@pytest.fixture(scope="module")
def backends(package: ModelPackage) -> dict[str, TFLiteClassifier | SavedModelClassifier]:
    return {"tflite": TFLiteClassifier(package), "savedmodel": SavedModelClassifier(package, "cpu")}


def test_backends_agree(backends: dict[str, TFLiteClassifier | SavedModelClassifier]) -> None:
    crops = random_crops(8)
    lite, saved = backends["tflite"].predict(crops), backends["savedmodel"].predict(crops)
    assert lite.shape == saved.shape == (8,) and lite.dtype == np.float32
    np.testing.assert_allclose(lite, saved, atol=1e-4)
    assert np.ptp(saved) > 1e-4
    np.testing.assert_array_equal(backends["tflite"].predict(crops.astype(np.float32)), lite)


@pytest.mark.parametrize("backend", ["tflite", "savedmodel"])
@pytest.mark.parametrize("count", [3, 5, 40])
def test_padded_and_chunked_batches_match_single_runs(
    backends: dict[str, TFLiteClassifier | SavedModelClassifier], backend: str, count: int
) -> None:
    classifier = backends[backend]
    crops = random_crops(count, seed=count)
    singles = np.concatenate([classifier.predict(crops[i : i + 1]) for i in range(count)])
    np.testing.assert_allclose(classifier.predict(crops), singles, atol=1e-5)


@pytest.mark.skipif(not (DEFAULT_PACKAGE_DIR / "manifest.json").is_file(), reason="no shipped default model")
def test_shipped_default_package_loads_and_backends_agree() -> None:
    package = load_default_package()
    size = package.manifest.crop.size
    crops = np.random.default_rng(2).integers(0, 256, size=(3, size, size, 3)).astype(np.uint8)
    lite = TFLiteClassifier(package).predict(crops)
    np.testing.assert_allclose(lite, SavedModelClassifier(package, "cpu").predict(crops), atol=1e-4)
    assert 0.0 < package.manifest.threshold < 1.0 and "auc" in package.manifest.metrics["test"]


def test_bucket_helpers() -> None:
    assert [bucket_for(n) for n in (1, 2, 3, 5, 32, 40)] == [1, 2, 4, 8, 32, BATCH_BUCKETS[-1]]
    padded = pad_batch(np.ones((3, 2, 2, 3), np.float32), 4)
    assert padded.shape == (4, 2, 2, 3) and not padded[3].any()


def test_empty_and_misshaped_batches(backends: dict[str, TFLiteClassifier | SavedModelClassifier]) -> None:
    assert backends["tflite"].predict(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match="expected crops"):
        backends["tflite"].predict(np.zeros((1, SIZE + 1, SIZE, 3), np.uint8))


def corrupt_tflite(folder: Path) -> None:
    (folder / "model.tflite").write_bytes(b"\x00" * 64)


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return apply


def edit_text(text: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / "manifest.json").write_text(text)

    return apply


TAMPERINGS: dict[str, Callable[[Path], None]] = {
    "corrupt tflite": corrupt_tflite,
    "wrong checksum": edit_manifest(lambda d: d["files"].update({"model.tflite": "0" * 64})),
    "unlisted tflite": edit_manifest(lambda d: d["files"].pop("model.tflite")),
    "bad threshold": edit_manifest(lambda d: d.update({"threshold": 1.5})),
    "future format": edit_manifest(lambda d: d.update({"format_version": 99})),
    "no input": edit_manifest(lambda d: d.pop("input")),
    "not json": edit_text("{"),
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS))
def test_tampered_package_is_rejected(package: ModelPackage, tmp_path: Path, tamper: str) -> None:
    folder = tmp_path / "pkg"
    shutil.copytree(package.path, folder)
    TAMPERINGS[tamper](folder)
    with pytest.raises(ModelPackageError):
        ModelPackage.load(folder)


def test_corrupt_tflite_without_checksums_fails_to_load(package: ModelPackage, tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    shutil.copytree(package.path, folder)
    corrupt_tflite(folder)
    with pytest.raises(ModelPackageError, match="cannot load TFLite"):
        TFLiteClassifier(ModelPackage.load(folder, verify_checksums=False))


def test_load_classifier_backends(package: ModelPackage) -> None:
    assert isinstance(load_classifier(package, device="cpu"), TFLiteClassifier)
    assert isinstance(load_classifier(package, device="cpu", backend="savedmodel"), SavedModelClassifier)
    with pytest.raises(ValueError, match="unknown backend"):
        load_classifier(package, device="cpu", backend="onnx")


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_gpu_requested_without_gpu(package: ModelPackage) -> None:
    with pytest.raises(DeviceError, match="gpu"):
        load_classifier(package, device="gpu")


@pytest.mark.skipif(gpu_available() or hpu_available(), reason="an accelerator is present")
def test_auto_device_is_cpu_here() -> None:
    assert select_device("auto") == "cpu"


def test_select_device_order_and_errors() -> None:
    yes, no = (lambda: True), (lambda: False)
    assert select_device("auto", probe_hpu=yes, probe_gpu=yes) == "hpu"
    assert select_device("auto", probe_hpu=no, probe_gpu=yes) == "gpu"
    assert select_device("cpu", probe_hpu=yes, probe_gpu=yes) == "cpu"
    with pytest.raises(DeviceError, match="hpu"):
        select_device("hpu", probe_hpu=no, probe_gpu=no)
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu")
