"""Shared fixtures: the optional ../shared/data folder, synthetic face clips and a tiny model package, each
built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clips import ClipTruth, moving_face_clip, two_faces_clip

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_SIZE = 32


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
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model package exported by `training.export`: 32x32 crops, a few hundred weights, threshold 0.5.

    Rescaling -> conv -> global pooling -> sigmoid, architecture "tiny-conv": fast to export, load and run.
    """
    import tensorflow as tf

    from models.preprocess import CropSpec
    from training.export import export_package

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((TINY_SIZE, TINY_SIZE, 3), name="crops")
    features = tf.keras.layers.Rescaling(1.0 / 255.0)(inputs)
    features = tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu")(features)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(features)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="sigmoid")(pooled))
    check = np.random.default_rng(0).uniform(0, 255, (2, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    out = tmp_path_factory.mktemp("tiny_package") / "tiny"
    return export_package(model, out, CropSpec(size=TINY_SIZE), 0.5, "tiny-conv", {}, {}, check).path


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
