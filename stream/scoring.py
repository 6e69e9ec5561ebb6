"""Per-track score smoothing and verdict: classify on a schedule, smooth with an EMA, decide with hysteresis.

With decision threshold t, suspect margin m and hysteresis h, the smoothed probability p moves a track UP to
SUSPECT when p >= t - m and to MANIPULATED when p >= t, and DOWN to SUSPECT only when p < t - h and to REAL
only when p < t - m - h. A score wandering around a boundary therefore does not flicker.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class Verdict(str, Enum):
    """What the overlay says about a face."""

    UNKNOWN = "unknown"
    REAL = "real"
    SUSPECT = "suspect"
    MANIPULATED = "manipulated"


_LEVELS = (Verdict.REAL, Verdict.SUSPECT, Verdict.MANIPULATED)


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring settings; `threshold` comes from the model manifest."""

    threshold: float = 0.5
    classify_every: int = 10
    ema_alpha: float = 0.4
    suspect_margin: float = 0.15
    hysteresis: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.classify_every < 1:
            raise ValueError(f"classify_every must be >= 1, got {self.classify_every}")
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1], got {self.ema_alpha}")
        if self.suspect_margin < 0.0 or self.hysteresis < 0.0:
            raise ValueError(
                f"suspect_margin and hysteresis must be >= 0, got {self.suspect_margin}, {self.hysteresis}"
            )
        if self.suspect_margin + self.hysteresis >= self.threshold:
            raise ValueError(
                f"suspect_margin + hysteresis must be < threshold (else REAL is unreachable), got "
                f"{self.suspect_margin} + {self.hysteresis} >= {self.threshold}"
            )


@dataclass(frozen=True)
class TrackScore:
    """Smoothed manipulation probability, its verdict, the samples that fed it and the last sample's frame."""

    probability: float | None
    verdict: Verdict
    samples: int
    last_classified: int | None


_UNSEEN = TrackScore(probability=None, verdict=Verdict.UNKNOWN, samples=0, last_classified=None)


def _level(probability: float, config: ScoringConfig, lowered_by: float) -> int:
    if probability >= config.threshold - lowered_by:
        return 2
    if probability >= config.threshold - config.suspect_margin - lowered_by:
        return 1
    return 0


def next_verdict(previous: Verdict, probability: float, config: ScoringConfig) -> Verdict:
    """Verdict for smoothed `probability` given the previous one, with hysteresis on the way down."""
    up = _level(probability, config, 0.0)
    if previous is Verdict.UNKNOWN:
        return _LEVELS[up]
    current = _LEVELS.index(previous)
    if up > current:
        return _LEVELS[up]
    return _LEVELS[min(current, _level(probability, config, config.hysteresis))]


class TrackScorer:
    """Scores of the tracks of one stream. Not thread-safe: one scorer per stream, one caller."""

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self._scores: dict[int, TrackScore] = {}

    def due(self, track_id: int, frame_index: int) -> bool:
        """Whether to classify the track at this frame: never classified, or `classify_every` frames ago."""
        last = self.get(track_id).last_classified
        return last is None or frame_index - last >= self.config.classify_every

    def update(self, track_id: int, probability: float, frame_index: int) -> TrackScore:
        """Fold one classifier probability into the track's score and return the new score."""
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        previous = self.get(track_id)
        if previous.probability is None:
            smoothed = probability
        else:
            alpha = self.config.ema_alpha
            smoothed = alpha * probability + (1.0 - alpha) * previous.probability
        score = TrackScore(
            probability=smoothed,
            verdict=next_verdict(previous.verdict, smoothed, self.config),
            samples=previous.samples + 1,
            last_classified=frame_index,
        )
        self._scores[track_id] = score
        return score

    def get(self, track_id: int) -> TrackScore:
        """The track's current score; UNKNOWN for a track never classified (or forgotten)."""
        return self._scores.get(track_id, _UNSEEN)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the scores of these tracks (e.g. `IouTracker.pop_removed()`); unknown ids are ignored."""
        for track_id in track_ids:
            self._scores.pop(track_id, None)
