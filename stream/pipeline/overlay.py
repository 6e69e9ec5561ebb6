"""Drawing verdicts on frames: a FaceMesh tessellation over flagged faces, thin boxes and labels elsewhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from models.bundled import face_mesh_tessellation
from models.geometry import Box
from models.landmarks import NUM_LANDMARKS

MeshFor = Literal["manipulated", "flagged", "all"]
RGB = tuple[int, int, int]

VERDICT_COLOURS: dict[str, RGB] = {
    "unknown": (160, 160, 160),
    "real": (40, 200, 40),
    "suspect": (255, 165, 0),
    "manipulated": (255, 40, 40),
}

# Each undirected edge once (MediaPipe lists most in both directions): (1322, 2) landmark indices.
_EDGES = np.unique(np.sort(np.array(sorted(face_mesh_tessellation())), axis=1), axis=0)
_SHIFT = 2  # cv2 fractional bits: mesh vertices are drawn at quarter-pixel precision
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.45


@dataclass(frozen=True)
class FaceOverlay:
    """What to draw for one tracked face.

    `verdict` is one of `VERDICT_COLOURS` ("unknown", "real", "suspect", "manipulated"); `probability` is the
    score the verdict was decided on (`stream.pipeline.scoring`: the smoothed probability), None exactly when the verdict
    is "unknown"; `landmarks` are (468, 2) frame pixels, or None when not computed.
    """

    track_id: int
    box: Box
    probability: float | None
    verdict: str
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICT_COLOURS:
            raise ValueError(f"verdict must be one of {sorted(VERDICT_COLOURS)}, got {self.verdict!r}")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1] or None, got {self.probability}")
        if (self.probability is None) != (self.verdict == "unknown"):
            raise ValueError(
                f"a face has a score exactly when its verdict is not unknown, got {self.verdict!r} with "
                f"probability {self.probability}"
            )
        if self.landmarks is not None and self.landmarks.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must have shape ({NUM_LANDMARKS}, 2), got {self.landmarks.shape}")


@dataclass(frozen=True)
class OverlayConfig:
    """Which verdicts get a mesh ("flagged" = suspect and manipulated), mesh opacity range, label, line width.

    The mesh opacity rises linearly from `min_opacity` at probability 0 to `max_opacity` at probability 1.
    """

    mesh_for: MeshFor = "manipulated"
    min_opacity: float = 0.3
    max_opacity: float = 0.9
    show_label: bool = True
    thickness: int = 1

    def __post_init__(self) -> None:
        if self.mesh_for not in get_args(MeshFor):
            raise ValueError(f"mesh_for must be one of {get_args(MeshFor)}, got {self.mesh_for!r}")
        if not 0.0 <= self.min_opacity <= self.max_opacity <= 1.0:
            raise ValueError(
                f"need 0 <= min_opacity <= max_opacity <= 1, got {self.min_opacity}, {self.max_opacity}"
            )
        if self.thickness < 1:
            raise ValueError(f"thickness must be >= 1, got {self.thickness}")


def wants_mesh(config: OverlayConfig, verdict: str) -> bool:
    """Whether a face with this verdict is drawn with a mesh, i.e. whether its landmarks are worth finding."""
    if config.mesh_for == "all":
        return True
    if config.mesh_for == "flagged":
        return verdict in ("suspect", "manipulated")
    return verdict == "manipulated"


def probability_colour(p: float) -> RGB:
    """RGB from green (p=0) through yellow (p=0.5) to red (p=1)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return round(255 * min(1.0, 2.0 * p)), round(255 * min(1.0, 2.0 * (1.0 - p))), 0


def draw_overlays(image: np.ndarray, faces: Sequence[FaceOverlay], config: OverlayConfig) -> None:
    """Draw every face on an (H, W, 3) uint8 RGB frame, in place.

    Faces selected by `config.mesh_for` that have landmarks get the tessellation, coloured and blended by
    their probability; the others get a thin box in their verdict's colour. Each face gets a label if enabled.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    for face in faces:
        if face.landmarks is not None and wants_mesh(config, face.verdict):
            _draw_mesh(image, face.landmarks, face.probability, config)
        else:
            top_left = (round(face.box.x1), round(face.box.y1))
            bottom_right = (round(face.box.x2) - 1, round(face.box.y2) - 1)
            cv2.rectangle(image, top_left, bottom_right, VERDICT_COLOURS[face.verdict], config.thickness)
        if config.show_label:
            _draw_label(image, face)


def _draw_mesh(
    image: np.ndarray, landmarks: np.ndarray, probability: float | None, config: OverlayConfig
) -> None:
    """Tessellation drawn on a copy of the landmarks' bounding region, then blended back into that region."""
    height, width = image.shape[:2]
    margin = config.thickness + 1
    x0 = max(0, math.floor(float(landmarks[:, 0].min())) - margin)
    y0 = max(0, math.floor(float(landmarks[:, 1].min())) - margin)
    x1 = min(width, math.ceil(float(landmarks[:, 0].max())) + margin + 1)
    y1 = min(height, math.ceil(float(landmarks[:, 1].max())) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return
    region = image[y0:y1, x0:x1]
    layer = region.copy()
    local = (landmarks - (x0, y0)) * float(1 << _SHIFT)
    segments = np.round(local[_EDGES]).astype(np.int32)
    if probability is None:
        colour, opacity = VERDICT_COLOURS["unknown"], config.min_opacity
    else:
        colour = probability_colour(probability)
        opacity = config.min_opacity + (config.max_opacity - config.min_opacity) * probability
    # One call for all edges: cv2 reads an (E, 2, 2) array as E two-point polylines.
    cv2.polylines(layer, segments, False, colour, config.thickness, cv2.LINE_8, _SHIFT)  # type: ignore[call-overload]
    cv2.addWeighted(layer, opacity, region, 1.0 - opacity, 0.0, dst=region)


def label_text(face: FaceOverlay) -> str:
    """`#<track> <probability> <verdict>`, the score with two decimals; `#<track> unknown` without a score."""
    score = "" if face.probability is None else f" {face.probability:.2f}"
    return f"#{face.track_id}{score} {face.verdict}"


def _draw_label(image: np.ndarray, face: FaceOverlay) -> None:
    """`label_text(face)` on a filled tag above the box, or inside its top if no room."""
    text = label_text(face)
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
    x = round(face.box.x1)
    top = round(face.box.y1) - text_h - baseline - 2
    if top < 0:
        top = round(face.box.y1)
    cv2.rectangle(
        image, (x, top), (x + text_w + 3, top + text_h + baseline + 1), VERDICT_COLOURS[face.verdict], -1
    )
    cv2.putText(image, text, (x + 2, top + text_h + 1), _FONT, _FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
