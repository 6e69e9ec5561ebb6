"""Tests for models.manifest: the optional `calibration` object round-trips, and older manifests still load."""

from __future__ import annotations

import json
from typing import Any

import pytest

from models.errors import ModelPackageError
from models.manifest import Manifest
from models.preprocess import CropSpec

PLATT = {
    "method": "platt",
    "slope": 1.7,
    "intercept": -2.25,
    "applied": "inside the model (folded into its last layer)",
    "false_alarm_rate": 0.01,
    "fitted_on": "validation split, 812 faces",
}


def manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "version": "20250101-000000-abcdef12",
        "created_at": "2025-01-01T00:00:00+00:00",
        "architecture": "mobilenet_v3_small",
        "crop": CropSpec(size=224, margin=0.25),
        "threshold": 0.12,
        "files": {"model.tflite": "0" * 64},
        "metrics": {"test": {"auc": 0.9}},
        "provenance": {"command": "train"},
    }
    return Manifest(**{**fields, **changes})


def test_calibration_round_trips() -> None:
    original = manifest(calibration=PLATT)
    text = original.to_json()
    assert json.loads(text)["calibration"] == PLATT
    loaded = Manifest.from_json(text)
    assert loaded == original and loaded.calibration == PLATT


def test_a_manifest_without_calibration_round_trips_without_the_key() -> None:
    original = manifest()
    text = original.to_json()
    assert "calibration" not in json.loads(text), "older readers see the manifest they know"
    assert Manifest.from_json(text) == original and original.calibration is None


def test_an_older_manifest_without_calibration_loads() -> None:
    data = json.loads(manifest().to_json())
    data.pop("calibration", None)
    loaded = Manifest.from_json(json.dumps(data))
    assert loaded.calibration is None and loaded.threshold == 0.12
    data["calibration"] = None
    assert Manifest.from_json(json.dumps(data)).calibration is None


def test_other_calibration_methods_are_kept_as_they_are() -> None:
    isotonic = {"method": "isotonic", "applied": "inside the model", "points": [[0.0, 0.0], [1.0, 1.0]]}
    assert Manifest.from_json(manifest(calibration=isotonic).to_json()).calibration == isotonic


@pytest.mark.parametrize(
    "calibration",
    [
        "platt",
        [1.7, -2.25],
        {},
        {"method": ""},
        {**PLATT, "slope": "1.7"},
        {**PLATT, "intercept": float("nan")},
        {**PLATT, "slope": True},
        {key: value for key, value in PLATT.items() if key != "slope"},
        {**PLATT, "false_alarm_rate": 1.5},
        {**PLATT, "false_alarm_rate": -0.01},
    ],
)
def test_invalid_calibration_is_refused(calibration: Any) -> None:
    with pytest.raises(ModelPackageError, match="calibration"):
        manifest(calibration=calibration)
    data = json.loads(manifest().to_json())
    data["calibration"] = calibration
    with pytest.raises(ModelPackageError, match="calibration"):
        Manifest.from_json(json.dumps(data))
