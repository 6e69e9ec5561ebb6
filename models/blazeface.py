"""BlazeFace's output decoding, as MediaPipe's face detection graphs configure it: anchors, boxes, weighted NMS.

Coordinates are normalised to the model's square input (0..1). The options are those of MediaPipe 0.10's
`face_detection_short_range` and `face_detection_full_range` graphs (SsdAnchorsCalculator,
TensorsToDetectionsCalculator, NonMaxSuppressionCalculator with the WEIGHTED algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_KEYPOINTS = 6
SCORE_CLIPPING = 100.0
SUPPRESSION_IOU = 0.3


@dataclass(frozen=True)
class BlazeFaceSpec:
    """Input size and anchor layout of one BlazeFace model."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: (
        int  # anchors per cell contributed by each layer (aspect 1.0 plus the interpolated one)
    )
    min_score: float  # the graph's own floor on candidate scores, whatever the caller's threshold


SHORT_RANGE = BlazeFaceSpec(input_size=128, strides=(8, 16, 16, 16), anchors_per_layer=2, min_score=0.0)
FULL_RANGE = BlazeFaceSpec(input_size=192, strides=(4,), anchors_per_layer=1, min_score=0.6)


def anchor_centres(spec: BlazeFaceSpec) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in the SsdAnchorsCalculator's order; anchor sizes are fixed at 1."""
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        repeats = 0
        while layer < len(spec.strides) and spec.strides[layer] == stride:  # equal strides share one grid
            repeats += spec.anchors_per_layer
            layer += 1
        cells = int(np.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid(
            (np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij"
        )
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class RawFaces:
    """Decoded candidates: (N, 4) boxes x1, y1, x2, y2, (N,) scores, (N, 6, 2) keypoints, all normalised."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, size: int, min_score: float
) -> RawFaces:
    """The candidates scoring at least `min_score` from one image's raw outputs ((N, 16) and (N,) or (N, 1))."""
    clipped = np.clip(logits.reshape(-1).astype(np.float64), -SCORE_CLIPPING, SCORE_CLIPPING)
    scores = 1.0 / (1.0 + np.exp(-clipped))
    keep = scores >= min_score
    raw, centres = regressors.reshape(len(anchors), -1)[keep] / size, anchors[keep]
    xy = raw[:, 0:2] + centres
    half = raw[:, 2:4] / 2.0
    boxes = np.concatenate([xy - half, xy + half], axis=1)
    keypoints = raw[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + centres[:, None, :]
    return RawFaces(boxes.astype(np.float32), scores[keep].astype(np.float32), keypoints.astype(np.float32))


def suppression_clusters(faces: RawFaces, iou_threshold: float = SUPPRESSION_IOU) -> list[np.ndarray]:
    """MediaPipe's clustering for non-max suppression: index arrays into `faces` in score order, best first.

    Greedily around the highest remaining score: every remaining candidate whose box overlaps it by IoU above
    `iou_threshold` joins its cluster (itself first). The box coordinates may be normalised or in pixels (IoU
    does not change under a uniform scale and shift).
    """
    order = np.argsort(-faces.scores, kind="stable")
    boxes = faces.boxes[order]
    remaining = np.ones(len(order), dtype=bool)
    clusters: list[np.ndarray] = []
    for first in range(len(order)):
        if not remaining[first]:
            continue
        members = remaining & (_iou(boxes[first], boxes) > iou_threshold)
        members[first] = False
        cluster = np.concatenate([[first], np.flatnonzero(members)])
        clusters.append(order[cluster])
        remaining[cluster] = False
    return clusters


def weighted_nms(faces: RawFaces, iou_threshold: float = SUPPRESSION_IOU) -> RawFaces:
    """MediaPipe's weighted non-max suppression: each kept face is the score-weighted mean of its cluster.

    Clusters as `suppression_clusters`; the cluster keeps its best score. Output is ordered by score, highest
    first.
    """
    kept_boxes, kept_scores, kept_keypoints = [], [], []
    for cluster in suppression_clusters(faces, iou_threshold):
        weights = faces.scores[cluster][:, None]
        total = float(weights.sum())
        kept_boxes.append((faces.boxes[cluster] * weights).sum(axis=0) / total)
        kept_keypoints.append((faces.keypoints[cluster] * weights[:, :, None]).sum(axis=0) / total)
        kept_scores.append(faces.scores[cluster[0]])
    if not kept_scores:
        return RawFaces(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32)
        )
    return RawFaces(
        np.array(kept_boxes, np.float32),
        np.array(kept_scores, np.float32),
        np.array(kept_keypoints, np.float32),
    )


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = (box[2] - box[0]) * (box[3] - box[1]) + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
