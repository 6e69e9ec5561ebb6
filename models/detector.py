"""Face detection with BlazeFace (the model shipped in the mediapipe wheel): boxes and six keypoints in pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from models.blazeface import FULL_RANGE, SHORT_RANGE, RawFaces, anchor_centres, decode, weighted_nms
from models.bundled import FACE_DETECTION_FULL_RANGE, FACE_DETECTION_SHORT_RANGE, BundledModel
from models.geometry import Box, Detection

DetectorRange = Literal["short", "full"]
SourceKind = Literal["browser", "camera", "file"]
RANGE_SETTINGS = ("auto", "short", "full")
"""Values of the `detector_range` setting: a range, or `auto` to choose it by source kind (`range_for`)."""
AUTO_RANGES: dict[str, DetectorRange] = {"browser": "short", "camera": "full", "file": "full"}
"""What `auto` runs per source kind, by measurement (docs/performance.md, "Detector range"): the short range
needs a face at least ~13 % of the frame's longer side wide, the full range ~8-10 % (and finds half to three
quarters of the faces at 4-6 %), but the short range fits close faces better (box centre 6 % of the face's width off the
FaceMesh centre, against 11 %; full range misses 1-10 % of faces filling a third of the frame). Browser webcams
film people at arm's length; cameras and recorded clips (DFDC: 1080x1920, people a few metres away) film them
further."""


def range_for(setting: str, source: SourceKind) -> DetectorRange:
    """The detector range for a `source`: `setting` itself (`short`, `full`) or, for `auto`, `AUTO_RANGES`."""
    if setting == "auto":
        return AUTO_RANGES[source]
    if setting == "short":
        return "short"
    if setting == "full":
        return "full"
    raise ValueError(f"detector range must be one of {', '.join(RANGE_SETTINGS)}, got {setting!r}")


@dataclass(frozen=True)
class DetectorConfig:
    """`short` range suits faces within ~2 m of a webcam; `full` range finds smaller faces up to ~5 m.

    The default stays `short` (the crops the shipped classifier was trained on); the service and `fakeweb run`
    choose per source with `range_for`.
    """

    range: DetectorRange = "short"
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.range not in ("short", "full"):
            raise ValueError(f"detector range must be 'short' or 'full', got {self.range!r}")
        if not 0.0 < self.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in (0, 1), got {self.min_confidence}")


class FaceDetector:
    """BlazeFace over whole RGB frames, decoded as MediaPipe's face detection solution does.

    The frame is letterboxed to the model's square input (black bars, aspect kept), run in the calling thread,
    and the detections mapped back to frame pixels. Not thread-safe: one instance per thread or stream.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        short = self.config.range == "short"
        self._spec = SHORT_RANGE if short else FULL_RANGE
        self._model = BundledModel(FACE_DETECTION_SHORT_RANGE if short else FACE_DETECTION_FULL_RANGE)
        self._anchors = anchor_centres(self._spec)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an (H, W, 3) uint8 RGB image, boxes clipped to the image, highest score first."""
        height, width = image.shape[:2]
        faces = weighted_nms(self.candidates(image))
        detections: list[Detection] = []
        for box, score, keypoints in zip(faces.boxes, faces.scores, faces.keypoints, strict=True):
            x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
            x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            detections.append(Detection(Box(x1, y1, x2, y2), float(min(1.0, score)), keypoints))
        return detections

    def candidates(self, image: np.ndarray) -> RawFaces:
        """Every candidate box scoring at least the threshold, before suppression, in image pixels (unclipped).

        `detect` is these after MediaPipe's weighted non-max suppression (`models.blazeface.weighted_nms`).
        """
        height, width = image.shape[:2]
        size = self._spec.input_size
        # The square of the frame's longer side around its centre, mapped corner to corner onto the input as
        # MediaPipe's ImageToTensorCalculator does: the same sampling, so the same detections.
        side = float(max(width, height))
        origin = np.array([(width - side) / 2.0, (height - side) / 2.0], dtype=np.float32)
        scale = size / side
        warp = np.array(
            [[scale, 0.0, -origin[0] * scale], [0.0, scale, -origin[1] * scale]], dtype=np.float32
        )
        square = cv2.warpAffine(
            image,
            warp,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        outputs = self._model.run(square, 2.0 / 255.0, -1.0)
        regressors = next(out for out in outputs if out.shape[-1] == 16)
        logits = next(out for out in outputs if out.shape[-1] == 1)
        min_score = max(self.config.min_confidence, self._spec.min_score)
        faces = decode(regressors[0], logits[0], self._anchors, size, min_score)
        corners = np.tile(origin, 2)
        return RawFaces(
            (faces.boxes * side + corners).astype(np.float32),
            faces.scores,
            (faces.keypoints * side + origin).astype(np.float32),
        )

    def close(self) -> None:
        """Free the model's memory (a later `detect` loads it again)."""
        self._model.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
