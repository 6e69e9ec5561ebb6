"""Face detection with MediaPipe BlazeFace: boxes and six keypoints in pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import mediapipe as mp
import numpy as np

from models.geometry import Box, Detection

DetectorRange = Literal["short", "full"]


@dataclass(frozen=True)
class DetectorConfig:
    """`short` range suits faces within ~2 m of a webcam; `full` range finds smaller faces up to ~5 m."""

    range: DetectorRange = "short"
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.range not in ("short", "full"):
            raise ValueError(f"detector range must be 'short' or 'full', got {self.range!r}")
        if not 0.0 < self.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in (0, 1), got {self.min_confidence}")


class FaceDetector:
    """BlazeFace over whole RGB frames. Not thread-safe: use one instance per thread or stream."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=0 if self.config.range == "short" else 1,
            min_detection_confidence=self.config.min_confidence,
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an (H, W, 3) uint8 RGB image, boxes clipped to the image, highest score first."""
        height, width = image.shape[:2]
        result = self._detector.process(image)
        detections: list[Detection] = []
        for found in result.detections or []:
            relative = found.location_data.relative_bounding_box
            x1 = max(0.0, relative.xmin * width)
            y1 = max(0.0, relative.ymin * height)
            x2 = min(float(width), (relative.xmin + relative.width) * width)
            y2 = min(float(height), (relative.ymin + relative.height) * height)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            keypoints = np.array(
                [[kp.x * width, kp.y * height] for kp in found.location_data.relative_keypoints],
                dtype=np.float32,
            ).reshape(-1, 2)
            score = float(min(1.0, max(0.0, found.score[0])))
            detections.append(Detection(Box(x1, y1, x2, y2), score, keypoints))
        detections.sort(key=lambda d: d.score, reverse=True)
        return detections

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
