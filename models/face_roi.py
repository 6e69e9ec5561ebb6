"""Rotated square regions of interest around a face, as MediaPipe's face landmark graph computes them.

A region is a centre, a side and a rotation (radians, clockwise in image coordinates, y down) that turns the
face upright. It comes from a detection (box centre, eye keypoints) or from the previous frame's landmarks
(their bounding box, eye corners 33 and 263), scaled 1.5x around the longer side, and maps a square model
input corner to corner onto the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from models.geometry import Box

ROI_SCALE = 1.5
RIGHT_EYE_KEYPOINT, LEFT_EYE_KEYPOINT = 0, 1  # BlazeFace keypoints (subject's right eye is the image's left)
RIGHT_EYE_CORNER, LEFT_EYE_CORNER = 33, 263  # FaceMesh landmarks


@dataclass(frozen=True)
class FaceRoi:
    """A rotated square in image pixels."""

    center_x: float
    center_y: float
    side: float
    rotation: float

    @staticmethod
    def from_box(box: Box, keypoints: np.ndarray | None = None) -> FaceRoi:
        """Around a detection box, upright by its eye keypoints when given (else unrotated)."""
        rotation = 0.0
        if keypoints is not None and len(keypoints) > LEFT_EYE_KEYPOINT:
            rotation = _rotation(keypoints[RIGHT_EYE_KEYPOINT], keypoints[LEFT_EYE_KEYPOINT])
        cx, cy = box.center
        return FaceRoi(cx, cy, max(box.width, box.height) * ROI_SCALE, rotation)

    @staticmethod
    def from_landmarks(points: np.ndarray) -> FaceRoi:
        """Around (468, 2) FaceMesh landmarks in pixels: where the face will be in the next frame."""
        low, high = points.min(axis=0), points.max(axis=0)
        cx, cy = (low + high) / 2.0
        side = float(max(high - low)) * ROI_SCALE
        return FaceRoi(
            float(cx), float(cy), side, _rotation(points[RIGHT_EYE_CORNER], points[LEFT_EYE_CORNER])
        )

    def to_image(self, size: int) -> np.ndarray:
        """(2, 3) affine matrix from a `size` x `size` input's coordinates to image pixels."""
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        unit = self.side / size
        linear = np.array([[cos * unit, -sin * unit], [sin * unit, cos * unit]])
        offset = np.array([self.center_x, self.center_y]) - linear @ np.array([size / 2.0, size / 2.0])
        return np.hstack([linear, offset[:, None]]).astype(np.float32)

    def sample(self, image: np.ndarray, size: int) -> np.ndarray:
        """The region resampled upright to (size, size, 3), edges replicated beyond the image."""
        return cv2.warpAffine(
            image,
            self.to_image(size),
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )


def _rotation(start: np.ndarray, end: np.ndarray) -> float:
    """The angle that makes the start -> end vector point right, in [-pi, pi)."""
    angle = -math.atan2(-(float(end[1]) - float(start[1])), float(end[0]) - float(start[0]))
    return (angle + math.pi) % (2 * math.pi) - math.pi
