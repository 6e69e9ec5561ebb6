"""`manifest.json`: what a model package declares about itself, validated on load."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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

    `files` maps each file's path relative to the package folder to its sha256 hex digest.
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

    def __post_init__(self) -> None:
        if not self.version:
            raise ModelPackageError("manifest: 'version' is empty")
        if not 0.0 < self.threshold < 1.0:
            raise ModelPackageError(f"manifest: threshold must be in (0, 1), got {self.threshold}")
        if not self.files:
            raise ModelPackageError("manifest: 'files' lists no files")

    def to_json(self) -> str:
        data = asdict(self)
        data["input"] = {"size": self.crop.size, "margin": self.crop.margin, "channels": 3, "color": "RGB"}
        del data["crop"]
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
            )
        except KeyError as exc:
            raise ModelPackageError(f"{source}: missing field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ModelPackageError(f"{source}: invalid field ({exc})") from exc


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
