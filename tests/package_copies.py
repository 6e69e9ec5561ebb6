"""Model package variants for reload and fault tests: a valid package copied under a new version."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

from models.manifest import MANIFEST_NAME, TFLITE_NAME, hash_tree
from models.package import ModelPackage
from models.preprocess import CropSpec


def clone(
    base: Path, folder: Path, version: str, tflite: bytes | None = None, crop: CropSpec | None = None
) -> Path:
    """A copy of `base` under `version`, optionally with other TFLite bytes or crop spec; checksums valid."""
    package = folder / f"{version}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(base, package)
    if tflite is not None:
        (package / TFLITE_NAME).write_bytes(tflite)
    manifest = ModelPackage.load(base).manifest
    manifest = dataclasses.replace(
        manifest, version=version, crop=crop or manifest.crop, files=hash_tree(package)
    )
    (package / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return package
