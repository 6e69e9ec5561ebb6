"""Synthetic fakes from real faces (self-blends, part and face swaps), degradations and example grids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.landmarks import NUM_LANDMARKS
from models.preprocess import CropSpec
from training import sbi, synth
from training.synth import degradations, warp
from training.synth.examples import face_crops, grid

SEEDS = range(6)
Face = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def astronaut(astronaut_face: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's 128 px serving crop and its FaceMesh landmarks."""
    return astronaut_face


@pytest.fixture(scope="module")
def shared_faces(shared_data: Path) -> list[Face]:
    """Crops and landmarks of three real photos of three people from ../shared/data."""
    faces = shared_data / "faces"
    paths = [
        faces / "ciplab-real-and-fake" / "real" / "real_00001.jpg",
        faces / "ciplab-real-and-fake" / "real" / "real_00002.jpg",
        faces / "pixabay-portraits" / "adult-1851571_1280.jpg",
    ]
    crops, landmarks = face_crops(paths, CropSpec(128))
    assert len(crops) == 3
    return list(zip(crops, landmarks, strict=True))


def _other_face(face: Face) -> Face:
    """A stand-in donor: the crop turned, scaled and moved, with its colours changed, landmarks moved along."""
    crop, points = face
    move = cv2.getRotationMatrix2D((60.0, 66.0), 12.0, 0.9)
    turned = cv2.warpAffine(crop, move, crop.shape[:2][::-1], borderMode=cv2.BORDER_REFLECT_101)
    recoloured = np.clip(turned[..., ::-1].astype(np.int16) * [1, 0.8, 1.2] + 10, 0, 255).astype(np.uint8)
    return recoloured, (points @ move[:, :2].T + move[:, 2]).astype(np.float32)


def _hull(points: np.ndarray, side: int, growth: float) -> np.ndarray:
    centre = points.mean(axis=0)
    hull = cv2.convexHull(np.round(centre + (points - centre) * growth).astype(np.int32))
    mask = np.zeros((side, side), dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, (1,))
    return mask.astype(bool)


def _check_fake(target: Face, fake: np.ndarray, mask: np.ndarray) -> None:
    """The fake departs from the target inside its mask, on the face, and nowhere far from the mask."""
    crop, points = target
    assert fake.shape == crop.shape and fake.dtype == np.uint8
    assert mask.shape == crop.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and 0.25 - 1e-6 <= mask.max() <= 1.0
    assert mask[_hull(points, len(crop), 1.25)].sum() >= 0.95 * mask.sum()
    difference = np.abs(fake.astype(np.int16) - crop).mean(axis=2)
    assert difference[mask >= 0.5 * mask.max()].mean() > 2.0
    x, y, width, height = cv2.boundingRect((mask > 0).astype(np.uint8))
    far = np.ones(mask.shape, dtype=bool)
    far[max(y - 2, 0) : y + height + 2, max(x - 2, 0) : x + width + 2] = False
    np.testing.assert_array_equal(fake[far], crop[far])
    if np.count_nonzero((mask > 0) & (mask < 1)):  # an alpha blend: nothing changes where the mask is zero
        np.testing.assert_array_equal(fake[mask == 0], crop[mask == 0])


@pytest.mark.parametrize("kind", synth.KINDS)
def test_fakes_change_the_target_within_their_masks(kind: str, astronaut: Face) -> None:
    donor = _other_face(astronaut)
    for seed in SEEDS:
        fake, mask = synth.synthesize(kind, *astronaut, *donor, sbi.seeded_rng(seed))
        _check_fake(astronaut, fake, mask)


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", synth.KINDS)
def test_fakes_of_real_photos_change_them_within_their_masks(kind: str, shared_faces: list[Face]) -> None:
    for seed in SEEDS:
        for target, donor in ((0, 1), (1, 2), (2, 0)):
            fake, mask = synth.synthesize(
                kind, *shared_faces[target], *shared_faces[donor], sbi.seeded_rng(seed)
            )
            _check_fake(shared_faces[target], fake, mask)


@pytest.mark.shared_data
@pytest.mark.parametrize("swap", [synth.region_swap, synth.face_swap])
def test_swaps_show_the_donor(
    swap: Callable[..., tuple[np.ndarray, np.ndarray]], shared_faces: list[Face]
) -> None:
    (target, points), first, second = shared_faces
    for seed in SEEDS:
        one, mask = swap(target, points, *first, sbi.seeded_rng(seed))
        other, _ = swap(target, points, *second, sbi.seeded_rng(seed))
        inside = mask >= 0.5
        assert np.abs(one[inside].astype(np.int16) - other[inside]).mean() > 2.0


@pytest.mark.parametrize("kind", synth.KINDS)
def test_fakes_are_seeded(kind: str, astronaut: Face) -> None:
    donor = _other_face(astronaut)
    first = synth.synthesize(kind, *astronaut, *donor, sbi.seeded_rng(3))
    again = synth.synthesize(kind, *astronaut, *donor, sbi.seeded_rng(3))
    other = synth.synthesize(kind, *astronaut, *donor, sbi.seeded_rng(4))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_inputs_are_checked(astronaut: Face) -> None:
    crop, points = astronaut
    rng = sbi.seeded_rng(0)
    with pytest.raises(ValueError, match="square"):
        synth.region_swap(crop, points, crop[:100], points, rng)
    with pytest.raises(ValueError, match="landmarks"):
        synth.face_swap(crop, points[:68], crop, points, rng)
    with pytest.raises(ValueError, match="landmarks"):
        synth.region_swap(crop, points, crop, np.full_like(points, np.nan), rng)
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        synth.synthesize("morph", crop, points, crop, points, rng)


def test_fits_recover_known_maps() -> None:
    points = np.random.default_rng(0).uniform(0, 100, (20, 2))
    angle, scale = np.deg2rad(20.0), 1.3
    similarity = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 5.0],
                           [scale * np.sin(angle), scale * np.cos(angle), -3.0]])  # fmt: skip
    affine = np.array([[1.1, 0.2, 4.0], [-0.1, 0.9, 7.0]])
    for known, is_similarity in ((similarity, True), (affine, False)):
        moved = points @ known[:, :2].T + known[:, 2]
        np.testing.assert_allclose(warp.fit(points, moved, is_similarity), known, atol=1e-9)


def test_mesh_warp_takes_donor_landmarks_to_the_target(astronaut: Face) -> None:
    assert warp.TRIANGLES.shape == (898, 3) and warp.TRIANGLES.max() < NUM_LANDMARKS
    _, points = astronaut
    _, donor = _other_face(astronaut)
    map_x, map_y = warp.piecewise_affine_maps(points.astype(np.float64), donor.astype(np.float64), 128)
    pixels = np.round(points).astype(int)
    landed = np.stack([map_x[pixels[:, 1], pixels[:, 0]], map_y[pixels[:, 1], pixels[:, 0]]], axis=1)
    assert np.median(np.linalg.norm(landed - donor, axis=1)) < 1.0  # pixel rounding and smoothing


def test_degrade_keeps_the_image_shape_and_changes_pixels(astronaut: Face) -> None:
    crop, _ = astronaut
    outputs = [synth.degrade(crop, sbi.seeded_rng(seed)) for seed in range(30)]
    assert all(out.shape == crop.shape and out.dtype == np.uint8 for out in outputs)
    changed = [not np.array_equal(out, crop) for out in outputs]
    assert sum(changed) >= 20
    assert all(np.abs(out.astype(np.int16) - crop).mean() < 40 for out in outputs)
    np.testing.assert_array_equal(outputs[5], synth.degrade(crop, sbi.seeded_rng(5)))


@pytest.mark.parametrize("codec", ["jpeg", "h264"])
def test_compressions_round_trip(codec: str, astronaut: Face) -> None:
    crop, _ = astronaut
    compress = degradations.jpeg if codec == "jpeg" else degradations.h264
    for image in (crop, crop[:75, :99]):  # odd sides too
        coarse, fine = (
            compress(image, 30 if codec == "jpeg" else 40),
            compress(image, 90 if codec == "jpeg" else 22),
        )
        assert coarse.shape == image.shape and coarse.dtype == np.uint8
        coarse_error = np.abs(coarse.astype(np.int16) - image).mean()
        assert 0 < np.abs(fine.astype(np.int16) - image).mean() < coarse_error < 15
    np.testing.assert_array_equal(degradations.h264(crop, 30), degradations.h264(crop, 30))


def test_grid_lays_out_images_and_masks() -> None:
    image = np.full((4, 5, 3), 10, dtype=np.uint8)
    mask = np.full((4, 5), 0.5, dtype=np.float32)
    out = grid([image, mask, image], columns=2, gap=1)
    assert out.shape == (9, 11, 3) and out.dtype == np.uint8
    assert (out[:4, :5] == 10).all() and (out[:4, 6:] == 128).all() and (out[5:, 6:] == 255).all()
    with pytest.raises(ValueError, match="is"):
        grid([image, image[:3]], columns=2)
