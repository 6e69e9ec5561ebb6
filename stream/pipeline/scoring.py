"""Per-track scores and verdicts: classify on a schedule, smooth with an EMA, decide only on enough evidence.

A live stream is almost always real faces, so a verdict needs evidence, and what is shown must never contradict
itself. The policy, for a model whose manifest gives the decision threshold t (for calibrated models, chosen on
validation reals for a stated false-alarm rate, in the space of the model's calibrated output):

- Each track is classified every `classify_every` frames, every other time on the mirror image of its crop (the
  pipeline does this: a face and its mirror image are equally real, and the EMA then averages both views); its
  samples are smoothed with an EMA (`ema_alpha`).
  The smoothed probability is the score: the verdict is decided on it, and it is the number shown (overlay
  label, web page, API, results file). A raw sample is never shown.
- UNKNOWN, with no score shown, until the track has `min_samples` samples.
- MANIPULATED when the smoothed probability is >= t at this sample and was at each of the last
  `manipulated_after` samples (this one included): a single spike never produces it. It ends as soon as the
  smoothed probability drops below t, so "manipulated" is never shown next to a score below the threshold; a
  track that left MANIPULATED needs `manipulated_after` samples in a row at or above t again, which keeps a score
  wandering around t from flickering.
- SUSPECT from s = (1 - suspect_band) * t, and for a score at or above t without that run of samples. The
  suspect band lies below the threshold.
- REAL below s. On the way down there is hysteresis h = hysteresis_band * t: a SUSPECT or MANIPULATED track
  returns to REAL only below s - h, so a score wandering around s does not flicker.

Both bands are fractions of t, so every setting valid for one threshold is valid for any threshold in (0, 1):
with the defaults (suspect_band 0.3, hysteresis_band 0.1), t = 0.5 gives s = 0.35 and REAL again below 0.30;
t = 0.05 gives 0.035 and 0.030; t = 0.95 gives 0.665 and 0.57.
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


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring settings; `threshold` comes from the model manifest, the others from the service settings.

    `min_samples`: classifier samples before any verdict (UNKNOWN until then). `manipulated_after`: samples in a
    row with the smoothed probability at or above the threshold before MANIPULATED. `suspect_band`: the width of
    the suspect band below the threshold, as a fraction of the threshold. `hysteresis_band`: how far below the
    suspect band's start a flagged track must fall to become REAL again, as a fraction of the threshold.
    """

    threshold: float = 0.5
    classify_every: int = 10
    ema_alpha: float = 0.4
    min_samples: int = 3
    manipulated_after: int = 2
    suspect_band: float = 0.3
    hysteresis_band: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("classify_every", "min_samples", "manipulated_after"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1], got {self.ema_alpha}")
        if not (0.0 <= self.suspect_band and 0.0 <= self.hysteresis_band):
            raise ValueError(
                f"suspect_band and hysteresis_band must be >= 0, got {self.suspect_band}, {self.hysteresis_band}"
            )
        if not self.suspect_band + self.hysteresis_band < 1.0:
            raise ValueError(
                "suspect_band + hysteresis_band must be < 1 (they are fractions of the threshold; at 1 or more "
                f"a flagged face could never be real again), got {self.suspect_band} + {self.hysteresis_band}"
            )

    @classmethod
    def from_settings(cls, threshold: float, settings: object) -> ScoringConfig:
        """The scoring settings for a model whose manifest gives `threshold`, every other field read from the
        attribute of the same name on `settings` (the service's configuration, or parsed command-line flags)."""
        return cls(threshold=threshold, **{name: getattr(settings, name) for name in SETTINGS})

    @property
    def suspect_from(self) -> float:
        """Smoothed probability from which a track is at least SUSPECT: (1 - suspect_band) * threshold."""
        return (1.0 - self.suspect_band) * self.threshold

    @property
    def real_below(self) -> float:
        """Smoothed probability below which a SUSPECT or MANIPULATED track becomes REAL again."""
        return self.suspect_from - self.hysteresis_band * self.threshold


SETTINGS = tuple(name for name in ScoringConfig.__dataclass_fields__ if name != "threshold")
"""The scoring settings a user sets; the threshold comes from the model's manifest."""


@dataclass(frozen=True)
class TrackScore:
    """A track's score: its EMA, verdict, samples so far, the last sample's frame, and its run at the threshold.

    `smoothed` is the EMA of every sample (None before the first); `streak` counts the latest samples in a row
    whose smoothed probability was at or above the threshold. `probability` is the score to show.
    """

    smoothed: float | None
    verdict: Verdict
    samples: int
    last_classified: int | None
    streak: int = 0

    @property
    def probability(self) -> float | None:
        """The smoothed probability the verdict is based on; None while the verdict is UNKNOWN."""
        return None if self.verdict is Verdict.UNKNOWN else self.smoothed


_UNSEEN = TrackScore(smoothed=None, verdict=Verdict.UNKNOWN, samples=0, last_classified=None)


def next_verdict(previous: Verdict, probability: float, config: ScoringConfig, streak: int) -> Verdict:
    """Verdict for the smoothed `probability`, once the track has enough samples (see the module doc).

    `previous` is the verdict before this sample (UNKNOWN: none yet, so no hysteresis); `streak` counts the
    samples in a row, this one included, whose smoothed probability was at or above the threshold.
    """
    if probability >= config.threshold and streak >= config.manipulated_after:
        return Verdict.MANIPULATED
    if probability >= config.suspect_from:
        return Verdict.SUSPECT
    if previous in (Verdict.SUSPECT, Verdict.MANIPULATED) and probability >= config.real_below:
        return Verdict.SUSPECT
    return Verdict.REAL


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
        config = self.config
        previous = self.get(track_id)
        if previous.smoothed is None:
            smoothed = probability
        else:
            smoothed = config.ema_alpha * probability + (1.0 - config.ema_alpha) * previous.smoothed
        samples = previous.samples + 1
        streak = previous.streak + 1 if smoothed >= config.threshold else 0
        if samples < config.min_samples:
            verdict = Verdict.UNKNOWN
        else:
            verdict = next_verdict(previous.verdict, smoothed, config, streak)
        score = TrackScore(smoothed, verdict, samples, frame_index, streak)
        self._scores[track_id] = score
        return score

    def get(self, track_id: int) -> TrackScore:
        """The track's current score; UNKNOWN for a track never classified (or forgotten)."""
        return self._scores.get(track_id, _UNSEEN)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the scores of these tracks (e.g. `IouTracker.pop_removed()`); unknown ids are ignored."""
        for track_id in track_ids:
            self._scores.pop(track_id, None)
