"""Shared fixtures: the optional ../shared/data folder and synthetic face clips built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from clips import ClipTruth, moving_face_clip, two_faces_clip

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
