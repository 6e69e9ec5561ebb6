"""FaceMesh landmarks for tracked faces: MediaPipe's face landmark model on each face's rotated region."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from models.bundled import FACE_LANDMARK, BundledModel
from models.face_roi import FaceRoi
from models.geometry import Box

NUM_LANDMARKS = 468  # FaceMesh without iris refinement
INPUT_SIZE = 192


class FaceMesher:
    """468 FaceMesh landmarks per tracked face, tracked from frame to frame as MediaPipe's FaceMesh does.

    A track's first region comes from its box (upright by the eye keypoints when given); later ones from its
    last landmarks, moved and scaled as the track's box moved since (MediaPipe's FaceMesh keeps the previous
    region as it is; with frames skipped or a detector box at hand, following the box is closer).
    The region is sampled upright to 192x192 and run through the face landmark model shipped in the mediapipe
    wheel, in the calling thread; the face-presence score must reach `min_confidence`. When the tracked region
    loses the face, or the box changed size by more than 2x, the region is taken from the box again in the
    same call.

    Not thread-safe: use one instance per stream, from one thread. Call `forget` for tracks that ended.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        if not 0.0 < min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in (0, 1), got {min_confidence}")
        self.min_confidence = min_confidence
        self._model = BundledModel(FACE_LANDMARK)
        self._last: dict[int, tuple[np.ndarray, Box]] = {}
        """The last landmarks of each track and its box at that time."""
        self.model_runs = 0
        """Inferences so far (a lost face costs two in one call: the tracked region, then the box's)."""

    @property
    def track_ids(self) -> frozenset[int]:
        """Track ids whose region is being tracked from their last landmarks."""
        return frozenset(self._last)

    def landmarks(
        self, image: np.ndarray, track_id: int, box: Box, keypoints: np.ndarray | None = None
    ) -> np.ndarray | None:
        """(468, 2) float32 landmarks (x, y) in `image` pixels for the face in `box`; None if no face is there.

        `image` is an (H, W, 3) uint8 RGB frame; `box` the track's current box and `keypoints` its BlazeFace
        keypoints (optional), in the same pixels.
        """
        if box.width < 2 or box.height < 2:
            return None
        last = self._last.pop(track_id, None)
        points = None
        if last is not None:
            moved = _moved(*last, box)
            points = None if moved is None else self._run(image, FaceRoi.from_landmarks(moved))
        if points is None:
            points = self._run(image, FaceRoi.from_box(box, keypoints))
        if points is not None:
            self._last[track_id] = (points, box)
        return points

    def follow(self, track_id: int, box: Box) -> np.ndarray | None:
        """The track's last landmarks moved and scaled as its box since, without running the model.

        None if the track has no landmarks yet or its box changed size by more than 2x. For frames between mesh
        runs (`mesh_every` in the pipeline): the drawn mesh keeps up with the face at no model cost.
        """
        last = self._last.get(track_id)
        return None if last is None else _moved(*last, box)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Stop tracking the given tracks; unknown ids are ignored."""
        for track_id in track_ids:
            self._last.pop(track_id, None)

    def close(self) -> None:
        """Forget every track and free the model's memory (the mesher stays usable: it loads it again)."""
        self._last.clear()
        self._model.close()

    def __enter__(self) -> FaceMesher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, image: np.ndarray, region: FaceRoi) -> np.ndarray | None:
        if region.side < 2:
            return None
        self.model_runs += 1
        outputs = self._model.run(region.sample(image, INPUT_SIZE), 1.0 / 255.0)
        coordinates = next(out for out in outputs if out.size == NUM_LANDMARKS * 3)
        presence_logit = float(next(out for out in outputs if out.size == 1).reshape(()))
        if 1.0 / (1.0 + np.exp(-np.clip(presence_logit, -100.0, 100.0))) < self.min_confidence:
            return None
        local = coordinates.reshape(NUM_LANDMARKS, 3)[:, :2].astype(np.float32)
        to_image = region.to_image(INPUT_SIZE)
        points: np.ndarray = local @ to_image[:, :2].T + to_image[:, 2]
        return points.astype(np.float32)


def _moved(points: np.ndarray, then: Box, now: Box) -> np.ndarray | None:
    """`points` moved and scaled about the box centre as the box went from `then` to `now`; None beyond 2x."""
    ratio = max(now.width, now.height) / max(then.width, then.height)
    if not 0.5 <= ratio <= 2.0:
        return None
    before, after = np.array(then.center, np.float32), np.array(now.center, np.float32)
    moved: np.ndarray = (points - before) * np.float32(ratio) + after
    return moved.astype(np.float32, copy=False)
