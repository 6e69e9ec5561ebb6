"""A model package: a folder holding `manifest.json`, `model.tflite` and `saved_model/`, checked on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelPackageError
from models.manifest import MANIFEST_NAME, SAVED_MODEL_DIR, TFLITE_NAME, Manifest, sha256_file

DEFAULT_PACKAGE_DIR = Path(__file__).resolve().parent / "default"


@dataclass(frozen=True)
class ModelPackage:
    """A verified model folder: every file listed in the manifest exists and matches its checksum."""

    path: Path
    manifest: Manifest

    @property
    def tflite_path(self) -> Path:
        return self.path / TFLITE_NAME

    @property
    def saved_model_path(self) -> Path:
        return self.path / SAVED_MODEL_DIR

    @staticmethod
    def load(path: Path | str, verify_checksums: bool = True) -> ModelPackage:
        """Read and verify a package folder; raise ModelPackageError naming what is wrong."""
        folder = Path(path)
        if not folder.is_dir():
            raise ModelPackageError(f"model folder not found: {folder}")
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ModelPackageError(f"{folder}: no {MANIFEST_NAME}")
        manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
        if TFLITE_NAME not in manifest.files:
            raise ModelPackageError(f"{folder}: manifest lists no {TFLITE_NAME}")
        for relative, expected in manifest.files.items():
            file_path = folder / relative
            if not file_path.is_file():
                raise ModelPackageError(f"{folder}: missing file {relative}")
            if verify_checksums and sha256_file(file_path) != expected:
                raise ModelPackageError(f"{folder}: checksum mismatch for {relative}")
        return ModelPackage(folder, manifest)


def load_default_package() -> ModelPackage:
    """The model shipped inside the package (`models/default`)."""
    return ModelPackage.load(DEFAULT_PACKAGE_DIR)
