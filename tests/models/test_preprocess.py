"""The one crop definition (`models.preprocess`): square, margin, black padding outside the frame, output size.

Expected crops are cut by hand from a frame of unique random pixels, so any shift, stretch or channel swap shows.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.geometry import Box
from models.preprocess import CropSpec, crop_face, square_region, stack_crops

HEIGHT, WIDTH = 80, 100


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


# (box, margin) -> (left, top, side), worked out by hand: side = max(w, h) * (1 + 2 * margin), centred on the box.
REGIONS = {
    "square box": (Box(30, 20, 50, 40), 0.25, (25, 15, 30)),
    "wide box uses its width": (Box(30, 20, 50, 30), 0.25, (25, 10, 30)),
    "tall box uses its height": (Box(10, 10, 30, 50), 0.0, (0, 10, 40)),
    "top-left corner": (Box(0, 0, 20, 20), 0.25, (-5, -5, 30)),
    "bottom-right corner": (Box(90, 70, 100, 80), 0.5, (85, 65, 20)),
    "fractional box rounds": (Box(10.4, 10.4, 30.4, 30.4), 0.0, (10, 10, 20)),
}


@pytest.mark.parametrize(("box", "margin", "expected"), REGIONS.values(), ids=list(REGIONS))
def test_square_region(box: Box, margin: float, expected: tuple[int, int, int]) -> None:
    assert square_region(box, margin) == expected


def hand_crop(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The side x side square at (left, top), black where it leaves the image."""
    out = np.zeros((side, side, 3), np.uint8)
    for y in range(side):
        for x in range(side):
            if 0 <= top + y < image.shape[0] and 0 <= left + x < image.shape[1]:
                out[y, x] = image[top + y, left + x]
    return out


@pytest.mark.parametrize(("box", "margin", "expected"), REGIONS.values(), ids=list(REGIONS))
def test_crop_at_its_own_size_is_the_hand_cut_square(
    image: np.ndarray, box: Box, margin: float, expected: tuple[int, int, int]
) -> None:
    left, top, side = expected
    crop = crop_face(image, box, CropSpec(size=side, margin=margin))
    np.testing.assert_array_equal(crop, hand_crop(image, left, top, side))


def test_padding_outside_the_image_is_black_and_the_rest_is_the_image(image: np.ndarray) -> None:
    crop = crop_face(image, Box(0, 0, 20, 20), CropSpec(size=30, margin=0.25))  # square at (-5, -5), side 30
    assert not crop[:5].any() and not crop[:, :5].any()
    np.testing.assert_array_equal(crop[5:, 5:], image[:25, :25])


@pytest.mark.parametrize(
    ("size", "interpolation"), [(16, cv2.INTER_AREA), (64, cv2.INTER_LINEAR), (128, cv2.INTER_LINEAR)]
)
def test_resized_crop(image: np.ndarray, size: int, interpolation: int) -> None:
    """Shrinking uses area averaging, enlarging bilinear interpolation, of the same square."""
    crop = crop_face(image, Box(30, 20, 50, 40), CropSpec(size=size, margin=0.25))
    expected = cv2.resize(image[15:45, 25:55], (size, size), interpolation=interpolation)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, expected)


@pytest.mark.parametrize("box", [Box(200, 200, 220, 220), Box(-50, -50, -30, -30)], ids=["after", "before"])
def test_box_entirely_outside_gives_a_black_crop(image: np.ndarray, box: Box) -> None:
    crop = crop_face(image, box, CropSpec(size=32, margin=0.25))
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8 and not crop.any()


@pytest.mark.parametrize("size", [16, 32, 128, 224])
@pytest.mark.parametrize("margin", [0.0, 0.25, 1.0])
def test_output_is_always_the_spec_size(image: np.ndarray, size: int, margin: float) -> None:
    for box in (Box(30, 20, 50, 40), Box(0, 0, 100, 80), Box(95, 0, 100, 3)):
        crop = crop_face(image, box, CropSpec(size=size, margin=margin))
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


def test_the_crop_is_centred_on_the_box() -> None:
    """A lone bright pixel at the box centre lands at the centre of the crop, whatever the margin."""
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    frame[40, 60] = 255
    for margin, side in ((0.0, 20), (0.5, 40), (1.0, 60)):
        crop = crop_face(frame, Box(50, 30, 70, 50), CropSpec(size=side, margin=margin))
        assert list(zip(*np.nonzero(crop[..., 0]), strict=True)) == [(side // 2, side // 2)]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((HEIGHT, WIDTH), np.uint8),
        np.zeros((HEIGHT, WIDTH, 4), np.uint8),
        np.zeros((HEIGHT, WIDTH, 3), np.float32),
    ],
    ids=["grey", "rgba", "float"],
)
def test_rejects_images_that_are_not_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        crop_face(bad, Box(10, 10, 30, 30), CropSpec())


@pytest.mark.parametrize(
    ("kwargs", "valid"),
    [
        ({}, True),
        ({"size": 16, "margin": 0.0}, True),
        ({"size": 224, "margin": 2.0}, True),
        ({"size": 15}, False),
        ({"margin": -0.1}, False),
        ({"margin": 2.5}, False),
    ],
)
def test_crop_spec_validation(kwargs: dict[str, float], valid: bool) -> None:
    if valid:
        CropSpec(**kwargs)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError):
            CropSpec(**kwargs)  # type: ignore[arg-type]


def test_stack_crops_makes_the_float32_model_batch(image: np.ndarray) -> None:
    crops = [crop_face(image, Box(30, 20, 50, 40), CropSpec(size=32)) for _ in range(3)]
    batch = stack_crops(crops)
    assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], crops[1].astype(np.float32))
