"""Multi-face tracking per stream: IoU cost, Hungarian assignment and a small track lifecycle.

A new track is TENTATIVE until `min_hits` consecutive matched detections make it CONFIRMED. A confirmed
track that misses becomes LOST: it is still predicted and matched, and a matching detection makes it CONFIRMED
again with the same id. A tentative track that misses, or a lost one unmatched for more than `max_age`
detector runs, is REMOVED. Ids start at 1 and are never reused within a tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.geometry import Box, Detection


class TrackState(str, Enum):
    """Where a track is in its lifecycle."""

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"
    REMOVED = "removed"


_VISIBLE = (TrackState.TENTATIVE, TrackState.CONFIRMED)


@dataclass(frozen=True, eq=False)
class Track:
    """Snapshot of one tracked face after an update.

    `hits` counts matched detections, `age` updates since the track was created (1 on creation), `misses`
    consecutive detector runs without a match, `time_since_update` frames since the box last came from a
    detection (0 when it did this frame). Otherwise `box` and `keypoints` are predicted and `detection_score`
    is the last one.
    """

    track_id: int
    box: Box
    state: TrackState
    hits: int
    age: int
    misses: int
    time_since_update: int
    detection_score: float
    keypoints: np.ndarray

    @property
    def visible(self) -> bool:
        """Tentative or confirmed: worth drawing and classifying."""
        return self.state in _VISIBLE


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings.

    `iou_threshold`: least IoU for a detection to match a track. `min_hits`: matched detections to confirm.
    `max_age`: detector runs a lost track survives unmatched. `velocity_damping`: factor applied to the
    velocity after each predicted frame. `max_speed`: largest per-frame motion of the box centre, as a
    fraction of the box size.
    """

    iou_threshold: float = 0.3
    min_hits: int = 2
    max_age: int = 15
    velocity_damping: float = 0.9
    max_speed: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")
        if not 0.0 <= self.velocity_damping <= 1.0:
            raise ValueError(f"velocity_damping must be in [0, 1], got {self.velocity_damping}")
        if self.max_speed < 0.0:
            raise ValueError(f"max_speed must be >= 0, got {self.max_speed}")


@dataclass
class _Entry:
    """Mutable state of one live track."""

    track_id: int
    box: Box
    state: TrackState
    detection_score: float
    keypoints: np.ndarray
    matched_center: np.ndarray
    last_match_frame: int
    hits: int = 1
    age: int = 1
    misses: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def snapshot(self, frame: int) -> Track:
        return Track(
            track_id=self.track_id,
            box=self.box,
            state=self.state,
            hits=self.hits,
            age=self.age,
            misses=self.misses,
            time_since_update=frame - self.last_match_frame,
            detection_score=self.detection_score,
            keypoints=self.keypoints,
        )


class IouTracker:
    """Tracks the faces of one stream across frames. Not thread-safe: one tracker per stream, one caller."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._entries: list[_Entry] = []
        self._removed: list[int] = []
        self._next_id = 1
        self._frame = 0

    def update(self, detections: list[Detection] | None) -> list[Track]:
        """Advance one frame and return the visible (tentative and confirmed) tracks, by id.

        `detections` is None when the detector did not run this frame: tracks are only predicted and no miss
        is counted. A list, possibly empty, is the detector's output for this frame.
        """
        self._frame += 1
        for entry in self._entries:
            self._predict(entry)
        if detections is not None:
            self._associate(detections)
        return [e.snapshot(self._frame) for e in self._entries if e.state in _VISIBLE]

    @property
    def tracks(self) -> list[Track]:
        """All live tracks, lost ones included, by id."""
        return [e.snapshot(self._frame) for e in self._entries]

    def pop_removed(self) -> list[int]:
        """Ids removed since the last call, in removal order, so per-track state elsewhere can be freed."""
        removed, self._removed = self._removed, []
        return removed

    def _predict(self, entry: _Entry) -> None:
        entry.age += 1
        if not entry.velocity.any():
            return
        dx, dy = entry.velocity
        box = entry.box
        entry.box = Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)
        entry.keypoints = (entry.keypoints + entry.velocity).astype(entry.keypoints.dtype)
        entry.velocity = entry.velocity * self.config.velocity_damping

    def _associate(self, detections: list[Detection]) -> None:
        matched_tracks: set[int] = set()
        matched_detections: set[int] = set()
        if self._entries and detections:
            iou = np.array([[e.box.iou(d.box) for d in detections] for e in self._entries])
            iou[iou < self.config.iou_threshold] = 0.0
            rows, cols = linear_sum_assignment(iou, maximize=True)
            for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
                if iou[row, col] > 0.0:
                    self._hit(self._entries[row], detections[col])
                    matched_tracks.add(row)
                    matched_detections.add(col)
        for row, entry in enumerate(self._entries):
            if row not in matched_tracks:
                self._miss(entry)
        self._entries = [e for e in self._entries if e.state is not TrackState.REMOVED]
        for col, detection in enumerate(detections):
            if col not in matched_detections:
                self._spawn(detection)

    def _hit(self, entry: _Entry, detection: Detection) -> None:
        box = detection.box
        center = np.array(box.center)
        limit = self.config.max_speed * np.array([box.width, box.height])
        velocity = (center - entry.matched_center) / (self._frame - entry.last_match_frame)
        entry.velocity = np.clip(velocity, -limit, limit)
        entry.box = box
        entry.detection_score = detection.score
        entry.keypoints = detection.keypoints
        entry.matched_center = center
        entry.last_match_frame = self._frame
        entry.hits += 1
        entry.misses = 0
        if entry.state is not TrackState.TENTATIVE or entry.hits >= self.config.min_hits:
            entry.state = TrackState.CONFIRMED

    def _miss(self, entry: _Entry) -> None:
        entry.misses += 1
        if entry.state is TrackState.TENTATIVE or entry.misses > self.config.max_age:
            entry.state = TrackState.REMOVED
            self._removed.append(entry.track_id)
        else:
            entry.state = TrackState.LOST

    def _spawn(self, detection: Detection) -> None:
        confirmed = self.config.min_hits <= 1
        self._entries.append(
            _Entry(
                track_id=self._next_id,
                box=detection.box,
                state=TrackState.CONFIRMED if confirmed else TrackState.TENTATIVE,
                detection_score=detection.score,
                keypoints=detection.keypoints,
                matched_center=np.array(detection.box.center),
                last_match_frame=self._frame,
            )
        )
        self._next_id += 1
