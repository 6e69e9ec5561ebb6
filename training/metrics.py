"""Binary detection metrics in numpy: labels 1 = fake (positive), 0 = real; scores are P(fake).

Ranking metrics (AUC, AP, EER) are NaN when a class they need is absent; `summarize` turns NaN into None and
names the reason under "degenerate", so a report stays valid JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DFDC_LOG_LOSS_EPS = 1e-15


def _arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    return y, s


def _counts_by_score(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores ascending, and how many positives and negatives hold each."""
    distinct, inverse = np.unique(s, return_inverse=True)
    positives = np.bincount(inverse, weights=y, minlength=len(distinct))
    negatives = np.bincount(inverse, minlength=len(distinct)) - positives
    return distinct, positives, negatives


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN without both classes."""
    y, s = _arrays(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based ranks, tied scores share their average rank
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Precision averaged over recall steps, one step per distinct score (as scikit-learn); NaN without fakes."""
    y, s = _arrays(labels, scores)
    if not y.any():
        return math.nan
    _, positives, negatives = _counts_by_score(y, s)
    true_pos = np.cumsum(positives[::-1])  # thresholds from the highest score down
    predicted = np.cumsum((positives + negatives)[::-1])
    recall_steps = np.diff(true_pos, prepend=0.0) / true_pos[-1]
    return float(np.sum(recall_steps * true_pos / predicted))


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, false-negative rate and threshold at every distinct score, highest first.

    `score >= threshold` means fake. The first point is threshold +inf (nothing flagged: FPR 0, FNR 1).
    Needs both classes.
    """
    distinct, positives, negatives = _counts_by_score(y, s)
    fpr = np.concatenate([[0.0], np.cumsum(negatives[::-1]) / negatives.sum()])
    fnr = np.concatenate([[1.0], 1.0 - np.cumsum(positives[::-1]) / positives.sum()])
    return fpr, fnr, np.concatenate([[np.inf], distinct[::-1]])


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the ROC crosses FPR = FNR, interpolated linearly between its two neighbours.

    The threshold is the highest score at which the miss rate no longer exceeds the false-alarm rate.
    (NaN, NaN) without both classes.
    """
    y, s = _arrays(labels, scores)
    if y.all() or not y.any():
        return math.nan, math.nan
    fpr, fnr, thresholds = _roc_points(y, s)
    gap = fnr - fpr  # 1 at +inf, non-increasing, -1 at the lowest score
    i = int(np.argmax(gap <= 0.0))
    step = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + step * (fpr[i] - fpr[i - 1])), float(thresholds[i])


def accuracy_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Fraction of samples with `score >= threshold` exactly when fake; NaN when empty."""
    y, s = _arrays(labels, scores)
    return float(np.mean((s >= threshold) == y)) if len(y) else math.nan


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = DFDC_LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps] (the DFDC metric); NaN when empty."""
    y, p = _arrays(labels, probabilities)
    if not len(y):
        return math.nan
    likelihood = np.clip(np.where(y, p, 1.0 - p), eps, 1.0 - eps)  # clipped alike for either label
    return float(-np.mean(np.log(likelihood)))


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising Youden's J (TPR - FPR, i.e. balanced accuracy); `score >= threshold` means fake.

    Candidates are midpoints between consecutive distinct scores (the lowest on ties of J), clipped to
    [1e-6, 1 - 1e-6]; 0.5 when a class is missing or all scores are equal. O(N log N) time, O(N) memory.
    """
    y, s = _arrays(labels, scores)
    if y.all() or not y.any():
        return 0.5
    distinct, positives, negatives = _counts_by_score(y, s)
    if len(distinct) == 1:
        return 0.5
    # Candidate k flags the scores from distinct[k + 1] up.
    true_pos = positives.sum() - np.cumsum(positives)[:-1]
    false_pos = negatives.sum() - np.cumsum(negatives)[:-1]
    j = true_pos / positives.sum() - false_pos / negatives.sum()
    best = int(np.argmax(j))
    return float(np.clip((distinct[best] + distinct[best + 1]) / 2.0, 1e-6, 1.0 - 1e-6))


@dataclass(frozen=True)
class ConfidentRule:
    """The DFDC winner's video rule (Seferbekov, 2020), minus its fixed minimum of 11 of 32 frames.

    If more than `fake_fraction` of a video's frames score above `fake_above`, the video scores the mean of
    those frames; else if more than `real_fraction` score below `real_below`, the mean of those; else the mean
    of all frames. A few confident fake frames outweigh many unsure ones, so a face swapped in part of a video
    is not averaged away.
    """

    fake_above: float = 0.8
    fake_fraction: float = 0.4
    real_below: float = 0.2
    real_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.real_below <= self.fake_above <= 1.0:
            raise ValueError(f"need 0 <= real_below <= fake_above <= 1, got {self}")
        if not (0.0 <= self.fake_fraction < 1.0 and 0.0 <= self.real_fraction < 1.0):
            raise ValueError(f"fractions must be in [0, 1), got {self}")

    def score(self, frames: np.ndarray) -> float:
        """One video's score from its frame probabilities (at least one)."""
        fake = frames > self.fake_above
        if fake.sum() > self.fake_fraction * len(frames):
            return float(frames[fake].mean())
        real = frames < self.real_below
        if real.sum() > self.real_fraction * len(frames):
            return float(frames[real].mean())
        return float(frames.mean())


VIDEO_RULES = ("mean", "confident")
DFDC_CONFIDENT_RULE = ConfidentRule()


def video_scores(
    frame_scores: np.ndarray,
    video_ids: np.ndarray,
    rule: str = "mean",
    confident: ConfidentRule = DFDC_CONFIDENT_RULE,
) -> tuple[np.ndarray, np.ndarray]:
    """(video ids sorted, one score each) from frame scores by `rule`: "mean", or "confident" (`ConfidentRule`)."""
    if rule not in VIDEO_RULES:
        raise ValueError(f"unknown video rule {rule!r}; choose one of {', '.join(VIDEO_RULES)}")
    scores = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    ids, inverse = np.unique(np.asarray(video_ids).reshape(-1), return_inverse=True)
    if len(inverse) != len(scores):
        raise ValueError(f"frame_scores and video_ids differ in length: {len(scores)} vs {len(inverse)}")
    counts = np.bincount(inverse, minlength=len(ids))
    if rule == "mean" or not len(ids):
        return ids, np.bincount(inverse, weights=scores, minlength=len(ids)) / np.maximum(counts, 1)
    frames = np.split(scores[np.argsort(inverse, kind="stable")], np.cumsum(counts)[:-1])
    return ids, np.array([confident.score(video) for video in frames], dtype=np.float64)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarize(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Counts and metrics at `threshold`; undefined metrics are None and "degenerate" names the reason.

    "degenerate" is None, "empty", "only real" or "only fake".
    """
    y, s = _arrays(labels, scores)
    n_fake, n_real = int(y.sum()), int((~y).sum())
    predicted = s >= threshold
    tpr = float(predicted[y].mean()) if n_fake else math.nan
    tnr = float((~predicted[~y]).mean()) if n_real else math.nan
    eer, eer_threshold = equal_error_rate(y, s)
    degenerate = None
    if not len(y):
        degenerate = "empty"
    elif not n_fake or not n_real:
        degenerate = "only real" if n_real else "only fake"
    return {
        "n": len(y),
        "n_real": n_real,
        "n_fake": n_fake,
        "degenerate": degenerate,
        "threshold": float(threshold),
        "auc": _finite(roc_auc(y, s)),
        "average_precision": _finite(average_precision(y, s)),
        "eer": _finite(eer),
        "eer_threshold": _finite(eer_threshold),
        "accuracy": _finite(accuracy_at(y, s, threshold)),
        "balanced_accuracy": _finite((tpr + tnr) / 2.0),
        "true_positive_rate": _finite(tpr),
        "true_negative_rate": _finite(tnr),
        "log_loss": _finite(log_loss(y, s)),
    }
