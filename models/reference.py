"""A reference face shipped with the code, for smoke-testing a model before it serves.

`reference_face.jpg` is rows 45:205, columns 160:320 of `skimage.data.astronaut()` (NASA portrait of Eileen
Collins, public domain), saved once as JPEG quality 90. OpenCV reads it (scikit-image is a dev dependency).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

REFERENCE_FACE_PATH = Path(__file__).resolve().parent / "reference_face.jpg"


def reference_face() -> np.ndarray:
    """The 160x160 reference face as an RGB uint8 array (a fresh copy on every call)."""
    image = cv2.imread(str(REFERENCE_FACE_PATH), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"reference face missing or unreadable: {REFERENCE_FACE_PATH}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
