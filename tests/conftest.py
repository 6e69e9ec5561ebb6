"""Shared fixtures: the optional ../shared/data folder, synthetic face clips, a tiny CIPLAB layout and a tiny
model package, each built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clips import ClipTruth, moving_face_clip, two_faces_clip
from face_photos import write_ciplab
from project_paths import SHARED_DATA
from tiny_model import export_tiny_package


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The repository's sibling `shared/data` folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def moving_face_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClipTruth]:
    """320x240, 25 fps, 2 s: one face moving and growing (see `clips.moving_face_clip`)."""
    return moving_face_clip(tmp_path_factory.mktemp("moving_face"))


@pytest.fixture(scope="session")
def two_faces_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClipTruth]:
    """480x360, 25 fps, 3 s: face 0 throughout, face 1 in the middle third (see `clips.two_faces_clip`)."""
    return two_faces_clip(tmp_path_factory.mktemp("two_faces"))


@pytest.fixture(scope="session")
def ciplab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CIPLAB layout: 6 real face photos and 6 fakes, two per difficulty (`face_photos.write_ciplab`)."""
    return write_ciplab(tmp_path_factory.mktemp("ciplab"))


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model package exported by `training.export`: 32x32 crops, threshold 0.5 (`tiny_model`)."""
    return export_tiny_package(tmp_path_factory.mktemp("tiny_package") / "tiny")


@pytest.fixture(scope="session")
def astronaut_face() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's 128 px serving crop (margin 0.25) and its FaceMesh landmarks in crop pixels."""
    from skimage import data as skdata

    from models.detector import FaceDetector
    from models.preprocess import CropSpec, crop_face
    from training import sbi
    from training.data import face_box

    image = skdata.astronaut()
    with FaceDetector() as detector:
        box = face_box(image, detector)
    assert box is not None
    crop = crop_face(image, box, CropSpec(128, 0.25))
    with sbi.CropLandmarker() as landmarker:
        points = landmarker(crop)
    assert points is not None
    return crop, points
