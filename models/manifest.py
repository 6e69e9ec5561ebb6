"""`manifest.json`: what a model package declares about itself, validated on load."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from models.errors import ModelPackageError
from models.preprocess import CropSpec

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
TFLITE_NAME = "model.tflite"
SAVED_MODEL_DIR = "saved_model"
NORMALISATION = "rgb float32 in [0, 255]; scaling is a layer inside the model"


@dataclass(frozen=True)
class Manifest:
    """The package's declaration: identity, the preprocessing it expects, its threshold, metrics and provenance.

    `files` maps each file's path relative to the package folder to its sha256 hex digest. `threshold` is the
    decision threshold in the space of the model's output. `calibration`, optional (older packages have none),
    describes how that output was calibrated, e.g. `{"method": "platt", "slope": a, "intercept": b, "applied":
    "inside the model ...", "false_alarm_rate": 0.01, "fitted_on": "validation ..."}`: the model outputs
    calibrated probabilities (the calibration is folded into its last layer) and the threshold was chosen on
    them, so serving applies nothing more; the object is informational. When present it needs a non-empty
    `method`; a Platt calibration needs finite `slope` and `intercept`; a `false_alarm_rate` is in [0, 1].
    """

    version: str
    created_at: str
    architecture: str
    crop: CropSpec
    threshold: float
    files: dict[str, str]
    normalisation: str = NORMALISATION
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.version:
            raise ModelPackageError("manifest: 'version' is empty")
        if not 0.0 < self.threshold < 1.0:
            raise ModelPackageError(f"manifest: threshold must be in (0, 1), got {self.threshold}")
        if not self.files:
            raise ModelPackageError("manifest: 'files' lists no files")
        if self.calibration is not None:
            _check_calibration(self.calibration)

    def to_json(self) -> str:
        data = asdict(self)
        data["input"] = {"size": self.crop.size, "margin": self.crop.margin, "channels": 3, "color": "RGB"}
        del data["crop"]
        if self.calibration is None:
            del data["calibration"]  # a package without one keeps the manifest older readers know
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str, source: str = MANIFEST_NAME) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelPackageError(f"{source}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelPackageError(f"{source}: expected a JSON object")
        try:
            if data["format_version"] != FORMAT_VERSION:
                raise ModelPackageError(
                    f"{source}: format_version {data['format_version']} is not supported (expected {FORMAT_VERSION})"
                )
            crop = CropSpec(size=int(data["input"]["size"]), margin=float(data["input"]["margin"]))
            return Manifest(
                version=str(data["version"]),
                created_at=str(data["created_at"]),
                architecture=str(data["architecture"]),
                crop=crop,
                threshold=float(data["threshold"]),
                files={str(k): str(v) for k, v in dict(data["files"]).items()},
                normalisation=str(data.get("normalisation", NORMALISATION)),
                metrics=dict(data.get("metrics", {})),
                provenance=dict(data.get("provenance", {})),
                calibration=_calibration(data.get("calibration")),
            )
        except KeyError as exc:
            raise ModelPackageError(f"{source}: missing field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ModelPackageError(f"{source}: invalid field ({exc})") from exc


def _calibration(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelPackageError(f"manifest: calibration must be an object, got {value!r}")
    return dict(value)


def _check_calibration(calibration: Any) -> None:
    if not isinstance(calibration, dict):
        raise ModelPackageError(f"manifest: calibration must be an object, got {calibration!r}")
    method = calibration.get("method")
    if not isinstance(method, str) or not method:
        raise ModelPackageError(f"manifest: calibration needs a 'method', got {method!r}")
    if method == "platt":
        for name in ("slope", "intercept"):
            value = calibration.get(name)
            if not (_is_number(value) and math.isfinite(value)):
                raise ModelPackageError(f"manifest: platt calibration needs a finite '{name}', got {value!r}")
    if "false_alarm_rate" in calibration:
        rate = calibration["false_alarm_rate"]
        if not _is_number(rate) or not 0.0 <= rate <= 1.0:
            raise ModelPackageError(f"manifest: calibration false_alarm_rate must be in [0, 1], got {rate!r}")


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, keyed by POSIX relative path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
