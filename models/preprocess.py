"""The one definition of face preprocessing, imported by serving and by training.

A face crop is a square around the detector's box, enlarged by a margin on every side, cut from the RGB frame
(parts outside the frame are black) and resized to the model's input size. The model receives the crop as RGB
float32 values in [0, 255]; normalisation beyond that is a layer inside the model, so TFLite, SavedModel and
training all see identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.geometry import Box


@dataclass(frozen=True)
class CropSpec:
    """How a face box becomes a model input: output side in pixels and margin as a fraction of the box side."""

    size: int = 128
    margin: float = 0.25

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"crop size must be >= 16, got {self.size}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"crop margin must be in [0, 2], got {self.margin}")


def square_region(box: Box, margin: float) -> tuple[int, int, int]:
    """Integer (left, top, side) of the square centred on `box`, side = max(w, h) * (1 + 2 * margin)."""
    side = max(box.width, box.height) * (1.0 + 2.0 * margin)
    cx, cy = box.center
    side_px = max(1, int(round(side)))
    left = int(round(cx - side_px / 2.0))
    top = int(round(cy - side_px / 2.0))
    return left, top, side_px


def crop_face(image: np.ndarray, box: Box, spec: CropSpec) -> np.ndarray:
    """Cut the square face crop for `box` out of an RGB uint8 image and resize it to `spec.size`.

    Returns a (size, size, 3) uint8 array; pixels outside the image are zero.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    left, top, side = square_region(box, spec.margin)
    x1, y1 = max(left, 0), max(top, 0)
    x2, y2 = min(left + side, width), min(top + side, height)
    if x2 <= x1 or y2 <= y1:
        return np.zeros((spec.size, spec.size, 3), dtype=np.uint8)
    region = image[y1:y2, x1:x2]
    if (x1, y1, x2, y2) != (left, top, left + side, top + side):
        region = cv2.copyMakeBorder(
            region,
            y1 - top,
            top + side - y2,
            x1 - left,
            left + side - x2,
            cv2.BORDER_CONSTANT,
            value=(0, 0, 0),
        )
    interpolation = cv2.INTER_AREA if side > spec.size else cv2.INTER_LINEAR
    return cv2.resize(region, (spec.size, spec.size), interpolation=interpolation)


def stack_crops(crops: list[np.ndarray]) -> np.ndarray:
    """Stack crops into the (N, S, S, 3) float32 batch the model takes."""
    return np.stack(crops).astype(np.float32)
