"""A short training run on real shared photos that must learn: a pretrained backbone, fakes synthesised from
the reals alone (part and face swaps), degradations, mirror averaging, calibration and a threshold for a
false-alarm rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.classifier import load_classifier
from models.package import ModelPackage
from training import train
from training.architectures import build_model
from training.backbones.weights import BackboneWeightsError

REALS_PER_SOURCE = 110
FALSE_ALARM_RATE = 0.05


def _link_photos(source: Path, target: Path, count: int) -> None:
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.jpg"))[:count]:
        (target / path.name).symlink_to(path)


@pytest.mark.slow
@pytest.mark.shared_data
def test_short_run_on_real_photos_learns_synthetic_fakes(shared_data: Path, tmp_path: Path) -> None:
    try:
        build_model("mobilenet_v2_imagenet", 32)
    except BackboneWeightsError as exc:
        pytest.skip(f"pretrained weights not installed: {exc}")
    faces = shared_data / "faces"
    _link_photos(faces / "ciplab-real-and-fake" / "real", tmp_path / "data" / "real", REALS_PER_SOURCE)
    _link_photos(faces / "pixabay-portraits", tmp_path / "portraits", REALS_PER_SOURCE)
    out = tmp_path / "pkg"
    argv = ["--data", str(tmp_path / "data"), "--extra-reals", str(tmp_path / "portraits"), "--out", str(out)]
    argv += ["--architecture", "mobilenet_v2_imagenet", "--input-size", "96", "--epochs", "4"]
    argv += ["--batch-size", "16", "--lr", "1e-3", "--synthetic", "0.3", "--degrade", "0.3"]
    argv += ["--synthetic-kinds", "face_swap=1,region_swap=1"]
    argv += ["--false-alarm-rate", str(FALSE_ALARM_RATE), "--val-fraction", "0.2", "--test-fraction", "0.2"]
    argv += ["--mirror-average", "--cache-dir", str(tmp_path / "cache")]
    assert train.main(argv) == 0

    package = ModelPackage.load(out)
    manifest = package.manifest
    assert manifest.metrics["val"]["auc"] > 0.7, manifest.metrics["val"]
    sets = manifest.metrics["test_sets"]
    assert {"face_swap", "region_swap", "reals/data", "reals/portraits"} <= set(sets)
    assert sets["face_swap"]["auc"] > 0.7, sets["face_swap"]
    assert manifest.calibration is not None and manifest.calibration["method"] == "platt"
    assert manifest.calibration["false_alarm_rate"] == FALSE_ALARM_RATE
    assert manifest.metrics["val"]["true_negative_rate"] >= 1 - FALSE_ALARM_RATE  # the threshold's promise
    crops = np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype(np.uint8)
    classifier = load_classifier(package, device="cpu")  # the exported TFLite file averages the mirror images
    np.testing.assert_allclose(classifier.predict(crops[:, :, ::-1]), classifier.predict(crops), atol=1e-5)
