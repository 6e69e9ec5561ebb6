"""Self-blended images: landmarks on a crop and the blend (seeded, confined to its mask)."""

from __future__ import annotations

import numpy as np
import pytest

from models.landmarks import NUM_LANDMARKS
from training import sbi


@pytest.fixture(scope="module")
def face(astronaut_face: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's 128 px serving crop and its FaceMesh landmarks."""
    return astronaut_face


def test_landmarks_cover_the_face_inside_the_crop(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    assert points.shape == (NUM_LANDMARKS, 2) and points.dtype == np.float32
    low, high = points.min(axis=0), points.max(axis=0)
    assert (low > 0).all() and (high < 128).all()
    assert (high - low > 40).all()  # a face about half the crop (margin 0.25 on each side)


def test_landmarker_finds_nothing_on_a_blank_crop() -> None:
    with sbi.CropLandmarker() as landmarker:
        assert landmarker(np.full((128, 128, 3), 127, np.uint8)) is None


def test_self_blend_is_seeded(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    first = sbi.self_blend(crop, points, sbi.seeded_rng(7))
    np.testing.assert_array_equal(first, sbi.self_blend(crop, points, sbi.seeded_rng(7)))
    assert not np.array_equal(first, sbi.self_blend(crop, points, sbi.seeded_rng(8)))
    assert first.shape == crop.shape and first.dtype == np.uint8


def test_blend_changes_the_crop_inside_its_mask_only(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    inside = np.zeros(crop.shape[:2], dtype=bool)
    for seed in range(40):
        fake, mask = sbi.self_blend_with_mask(crop, points, sbi.seeded_rng(seed))
        changed = (fake != crop).any(axis=2)
        assert not changed[mask == 0].any()
        assert changed.any() and mask.max() <= 1.0 and mask.max() >= 0.25 - 1e-6
        inside |= mask > 0
    # the masks stay on the face: within the landmarks' box grown by the move, deformation and blur
    x0, y0 = points.min(axis=0) - 16
    x1, y1 = points.max(axis=0) + 16
    rows, cols = np.nonzero(inside)
    assert rows.min() >= y0 and rows.max() <= y1 and cols.min() >= x0 and cols.max() <= x1


def test_hulls_include_whole_faces_and_parts(face: tuple[np.ndarray, np.ndarray]) -> None:
    _, points = face
    areas = [sbi.hull_mask(points, 128, sbi.seeded_rng(seed)).sum() for seed in range(60)]
    whole = sbi.hull_mask(points, 128, sbi.seeded_rng(0)).size
    assert max(areas) > 0.2 * whole  # the whole face hull
    assert min(areas) < 0.05 * whole  # a single part (an eye, the nose or the mouth)


def test_self_blend_rejects_bad_input(face: tuple[np.ndarray, np.ndarray]) -> None:
    crop, points = face
    with pytest.raises(ValueError, match="square"):
        sbi.self_blend(crop[:100], points, sbi.seeded_rng(0))
    with pytest.raises(ValueError, match="landmarks"):
        sbi.self_blend(crop, points[:68], sbi.seeded_rng(0))
