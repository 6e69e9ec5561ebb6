"""Synthetic fakes in the input pipeline: recipes, donors from another group, fixed fakes for held-out splits,
the tf.data stream of (real, fake) pairs and seeded degradation."""

from __future__ import annotations

import numpy as np
import pytest

from models.landmarks import NUM_LANDMARKS
from training import pipeline


@pytest.fixture(scope="module")
def pool(astronaut_face: tuple[np.ndarray, np.ndarray]) -> pipeline.RealPool:
    """Three 'people' made from the astronaut's crop (the second and third mirrored or shifted in colour), with
    the same landmarks; groups 0, 1, 1."""
    crop, points = astronaut_face
    bluer = np.clip(crop.astype(np.int16) + [0, 0, 40], 0, 255).astype(np.uint8)
    images = np.stack([crop, crop[:, :, ::-1].copy(), bluer])
    return pipeline.RealPool(images, np.stack([points] * 3), np.array([0, 1, 1]))


def test_recipe_shares_are_normalised_and_checked() -> None:
    assert pipeline.parse_recipe("self_blend=3,face_swap=1") == {"self_blend": 0.75, "face_swap": 0.25}
    assert pipeline.parse_recipe("region_swap") == {"region_swap": 1.0}
    for bad, message in (("morph=1", "unknown"), ("face_swap=x", "number"), ("face_swap=0", "positive")):
        with pytest.raises(ValueError, match=message):
            pipeline.parse_recipe(bad)


def test_donor_is_of_another_group(pool: pipeline.RealPool) -> None:
    rng = np.random.default_rng(0)
    assert {pool.donor(0, rng) for _ in range(20)} <= {1, 2}
    assert {pool.donor(1, rng) for _ in range(20)} == {0}


def test_donor_is_posed_like_the_target() -> None:
    rng = np.random.default_rng(1)
    frontal = rng.uniform(30, 100, (NUM_LANDMARKS, 2)).astype(np.float32)
    turned = frontal.copy()
    turned[:, 0] = 64 + (turned[:, 0] - 64) * 0.4  # squeezed sideways, as a face turned away
    same_pose = frontal * 0.8 + 10  # smaller and moved: the same pose
    images = np.zeros((3, 128, 128, 3), np.uint8)
    pool = pipeline.RealPool(images, np.stack([frontal, turned, same_pose]), np.array([0, 1, 2]))
    donors = [pool.donor(0, np.random.default_rng(seed)) for seed in range(20)]
    assert set(donors) <= {1, 2} and donors.count(2) >= 15  # 1 only when no candidate drew 2


def test_fixed_fakes_are_seeded_per_real_and_kind(pool: pipeline.RealPool) -> None:
    kinds = ("self_blend", "face_swap")
    fakes, names = pool.fixed_fakes(kinds, seed=3, every_kind=True)
    assert fakes.shape == (6, 128, 128, 3) and names == ["self_blend", "face_swap"] * 3
    np.testing.assert_array_equal(fakes, pool.fixed_fakes(kinds, seed=3, every_kind=True)[0])
    assert not np.array_equal(fakes, pool.fixed_fakes(kinds, seed=4, every_kind=True)[0])
    for row in range(6):
        assert not np.array_equal(fakes[row], pool.images[row // 2])
    one_each, names = pool.fixed_fakes(kinds, seed=3, every_kind=False)
    assert names == ["self_blend", "face_swap", "self_blend"]  # one per real, the kinds in turn
    np.testing.assert_array_equal(one_each[:2], fakes[[0, 3]])


def test_synthetic_pairs_alternate_a_real_and_its_fake(pool: pipeline.RealPool) -> None:
    def take(seed: int) -> tuple[np.ndarray, np.ndarray]:
        recipe = {"self_blend": 0.5, "region_swap": 0.5}
        batch = next(iter(pipeline.synthetic_pairs(pool, recipe, seed).batch(6)))
        return batch[0].numpy(), batch[1].numpy()

    crops, labels = take(seed=1)
    assert crops.shape == (6, 128, 128, 3) and crops.dtype == np.uint8
    assert labels.tolist() == [0.0, 1.0] * 3
    for real, fake in zip(crops[0::2], crops[1::2], strict=True):
        assert any(np.array_equal(real, image) for image in pool.images) and not np.array_equal(real, fake)
    np.testing.assert_array_equal(crops, take(seed=1)[0])
    assert not np.array_equal(crops, take(seed=2)[0])
    empty = pipeline.RealPool(pool.images[:0], pool.landmarks[:0], pool.groups[:0])
    with pytest.raises(ValueError, match="landmarks"):
        pipeline.synthetic_pairs(empty, {"self_blend": 1.0}, seed=0)


def test_degrade_fixed_is_seeded_and_respects_its_probability(pool: pipeline.RealPool) -> None:
    images = np.concatenate([pool.images] * 4)
    first = pipeline.degrade_fixed(images, 1.0, seed=5)
    np.testing.assert_array_equal(first, pipeline.degrade_fixed(images, 1.0, seed=5))
    assert first.shape == images.shape and first.dtype == np.uint8
    changed = [not np.array_equal(a, b) for a, b in zip(first, images, strict=True)]
    assert sum(changed) >= len(images) // 2  # a degradation may draw "none" now and then
    np.testing.assert_array_equal(pipeline.degrade_fixed(images, 0.0, seed=5), images)
