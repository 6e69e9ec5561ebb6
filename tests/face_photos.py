"""Face photos for the data-set tests: the astronaut's face from scikit-image, written as image files, and a
tiny CIPLAB layout made of them (the `ciplab_root` fixture of conftest.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

CIPLAB_FAKES = [
    "easy_1_1000.jpg",
    "easy_2_0110.jpg",
    "mid_3_0101.jpg",
    "mid_4_1111.jpg",
    "hard_5_0011.jpg",
    "hard_6_1001.jpg",
]
"""The fakes of `write_ciplab`: two per difficulty, named as in the CIPLAB set."""
CIPLAB_REALS = 6
_STRENGTHS = {"easy": 0.9, "mid": 0.5, "hard": 0.2}


def face_photo(index: int = 0) -> np.ndarray:
    """A 160x160 RGB face photo cut from skimage's astronaut, shifted a little per index."""
    image = skdata.astronaut()
    top, left = 20 + 3 * index, 110 + 2 * (index % 3)
    return cv2.resize(image[top : top + 240, left : left + 240], (160, 160), interpolation=cv2.INTER_AREA)


def altered(photo: np.ndarray, strength: float) -> np.ndarray:
    """The photo with its lower face blurred and partly inverted: a crude, visible manipulation."""
    fake = photo.copy()
    region = fake[90:130, 50:110].astype(np.float32)
    mixed = (1.0 - strength) * cv2.GaussianBlur(region, (9, 9), 0) + strength * (255.0 - region)
    fake[90:130, 50:110] = mixed.astype(np.uint8)
    return fake


def write_rgb(path: Path, image: np.ndarray) -> None:
    """Write an RGB image to `path` (its folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_ciplab(root: Path) -> Path:
    """A CIPLAB layout at `root`: `CIPLAB_REALS` face photos in real/, the `CIPLAB_FAKES` in fake/ (altered the
    more, the easier their difficulty). Returns `root`."""
    for index in range(CIPLAB_REALS):
        write_rgb(root / "real" / f"real_{index:05d}.jpg", face_photo(index))
    for index, name in enumerate(CIPLAB_FAKES):
        write_rgb(root / "fake" / name, altered(face_photo(index), _STRENGTHS[name.split("_")[0]]))
    return root
