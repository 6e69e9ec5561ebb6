"""Evaluation metrics against scikit-learn and brute-force references, video rules and degenerate inputs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics import log_loss as sk_log_loss

from training import metrics


def random_case(seed: int, n: int = 300, decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores in [0, 1] that separate the classes somewhat; rounding makes ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0.0, 1.0)
    return labels, scores if decimals is None else np.round(scores, decimals)


HAND_MADE = [
    (np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])),
    (np.array([0, 1, 0, 1, 1, 0]), np.array([0.5, 0.5, 0.5, 0.9, 0.2, 0.1])),
    (np.array([1, 0]), np.array([0.0, 1.0])),
    (np.array([0, 0, 0, 1]), np.array([0.3, 0.3, 0.3, 0.3])),
]


@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_match_sklearn_on_random_inputs(seed: int) -> None:
    labels, scores = random_case(seed, decimals=None if seed == 0 else 1 + seed % 2)
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize(("labels", "scores"), HAND_MADE)
def test_ranking_metrics_match_sklearn_on_hand_made_inputs(labels: np.ndarray, scores: np.ndarray) -> None:
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


def test_log_loss_matches_sklearn_and_clips_like_dfdc() -> None:
    labels, _ = random_case(7)
    probabilities = np.random.default_rng(8).uniform(0.01, 0.99, size=len(labels))
    assert metrics.log_loss(labels, probabilities) == pytest.approx(
        sk_log_loss(labels, probabilities), rel=1e-12
    )
    # Certain and wrong costs -log(1e-15) per sample (DFDC clipping); certain and right costs ~0.
    wrong = metrics.log_loss(np.array([1, 0]), np.array([0.0, 1.0]))
    assert wrong == pytest.approx(-math.log(1e-15), rel=1e-12)
    assert metrics.log_loss(np.array([1, 0]), np.array([1.0, 0.0])) == pytest.approx(1e-15, abs=1e-14)


def brute_force_eer(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """FPR and FNR counted at every threshold, then the segment that crosses FPR = FNR, intersected."""
    n_pos, n_neg = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    points = []
    for threshold in [math.inf, *sorted(set(scores.tolist()), reverse=True)]:
        false_pos = sum(1 for y, s in zip(labels, scores, strict=True) if y == 0 and s >= threshold)
        true_pos = sum(1 for y, s in zip(labels, scores, strict=True) if y == 1 and s >= threshold)
        points.append((false_pos / n_neg, 1.0 - true_pos / n_pos, threshold))
    for (x0, y0, _), (x1, y1, t1) in itertools.pairwise(points):
        if y0 > x0 and y1 <= x1:
            a = (y0 - x0) / ((y0 - x0) - (y1 - x1))
            return x0 + a * (x1 - x0), t1
    raise AssertionError("the ROC always crosses FPR = FNR")


@pytest.mark.parametrize("seed", range(4))
def test_eer_matches_brute_force_and_sklearn_roc(seed: int) -> None:
    labels, scores = random_case(seed, n=120)
    eer, threshold = metrics.equal_error_rate(labels, scores)
    expected_eer, expected_threshold = brute_force_eer(labels, scores)
    assert eer == pytest.approx(expected_eer, abs=1e-12) and threshold == expected_threshold
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmax(1.0 - tpr <= fpr))
    assert thresholds[i] == threshold
    assert fpr[i - 1] <= eer <= fpr[i] and 1.0 - tpr[i] <= eer <= 1.0 - tpr[i - 1]


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], (0.0, 0.8)),  # separable: no error at the lowest fake score
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], (1.0, 0.8)),  # inverted
        ([0, 1, 0, 1], [0.4, 0.4, 0.4, 0.4], (0.5, 0.4)),  # all tied: halfway along the one segment
        ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], (0.5, 0.6)),
    ],
)
def test_eer_hand_made(labels: list[int], scores: list[float], expected: tuple[float, float]) -> None:
    eer, threshold = metrics.equal_error_rate(np.array(labels), np.array(scores))
    assert (eer, threshold) == pytest.approx(expected)


def brute_force_youden(labels: np.ndarray, scores: np.ndarray) -> float:
    """Every midpoint tried as a threshold; the first with the largest TPR - FPR."""
    distinct = np.unique(scores)
    candidates = (distinct[:-1] + distinct[1:]) / 2.0
    predicted = scores[None, :] >= candidates[:, None]
    positive = labels.astype(bool)
    j = (predicted & positive).sum(axis=1) / positive.sum() - (predicted & ~positive).sum(axis=1) / (
        ~positive
    ).sum()
    return float(np.clip(candidates[int(np.argmax(j))], 1e-6, 1.0 - 1e-6))


@pytest.mark.parametrize("seed", range(4))
def test_choose_threshold_matches_brute_force(seed: int) -> None:
    labels, scores = random_case(seed, decimals=2)
    assert metrics.choose_threshold(labels, scores) == brute_force_youden(labels, scores)


def test_choose_threshold_hand_made_and_degenerate() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    assert metrics.choose_threshold(labels, scores) == pytest.approx(0.65)
    assert metrics.choose_threshold(np.ones(3), scores[:3]) == 0.5
    assert metrics.choose_threshold(labels, np.full(6, 0.3)) == 0.5


def test_accuracy_at_is_inclusive_and_matches_sklearn() -> None:
    labels, scores = random_case(3)
    assert metrics.accuracy_at(labels, scores, 0.5) == pytest.approx(accuracy_score(labels, scores >= 0.5))
    assert metrics.accuracy_at(np.array([1, 0]), np.array([0.5, 0.49]), 0.5) == 1.0


def test_summarize_matches_sklearn_and_is_json() -> None:
    labels, scores = random_case(4)
    summary = metrics.summarize(labels, scores, 0.5)
    assert summary["n"] == 300 and summary["n_fake"] == int(labels.sum()) and summary["degenerate"] is None
    assert summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, scores >= 0.5))
    assert summary["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert (summary["eer"], summary["eer_threshold"]) == metrics.equal_error_rate(labels, scores)
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize(
    ("labels", "scores", "reason", "defined"),
    [
        ([], [], "empty", set()),
        ([0, 0, 0], [0.1, 0.7, 0.2], "only real", {"accuracy", "true_negative_rate", "log_loss"}),
        (
            [1, 1],
            [0.9, 0.2],
            "only fake",
            {"accuracy", "true_positive_rate", "log_loss", "average_precision"},
        ),
    ],
)
def test_degenerate_inputs_give_none_and_a_reason(
    labels: list[int], scores: list[float], reason: str, defined: set[str]
) -> None:
    summary = metrics.summarize(np.array(labels), np.array(scores), 0.5)
    assert summary["degenerate"] == reason
    values = {"auc", "average_precision", "eer", "eer_threshold", "accuracy", "balanced_accuracy"}
    values |= {"true_positive_rate", "true_negative_rate", "log_loss"}
    assert {key for key in values if summary[key] is not None} == defined
    json.dumps(summary, allow_nan=False)
    assert math.isnan(metrics.roc_auc(np.array(labels), np.array(scores)))
    assert all(math.isnan(v) for v in metrics.equal_error_rate(np.array(labels), np.array(scores)))


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.roc_auc(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.video_scores(np.array([0.1, 0.2]), np.array(["a"]))


def seferbekov(frames: np.ndarray, t: float = 0.8) -> float:
    """The DFDC winner's rule as published, without its minimum of 11 fake frames."""
    size = len(frames)
    fakes = np.count_nonzero(frames > t)
    if fakes > size / 2.5:
        return float(np.mean(frames[frames > t]))
    if np.count_nonzero(frames < 0.2) > 0.9 * size:
        return float(np.mean(frames[frames < 0.2]))
    return float(np.mean(frames))


def test_video_scores_mean_and_confident() -> None:
    frames = np.array([0.9, 0.95, 0.1, 0.3, 0.1, 0.1, 0.05, 0.5, 0.1, 0.85, 0.1])
    videos = np.array(["b", "b", "b", "b", "a", "a", "a", "c", "b", "c", "c"])
    ids, mean = metrics.video_scores(frames, videos, "mean")
    assert ids.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(mean, [0.25 / 3, 2.35 / 5, 1.45 / 3])
    _, confident = metrics.video_scores(frames, videos, "confident")
    # b: 2 of 5 frames above 0.8 is not more than 40%: mean of all. a: all below 0.2. c: mean of all.
    np.testing.assert_allclose(confident, [0.25 / 3, 2.35 / 5, 1.45 / 3])
    _, confident = metrics.video_scores(np.array([0.9, 0.95, 0.1]), np.array(["v", "v", "v"]), "confident")
    np.testing.assert_allclose(confident, [0.925])
    with pytest.raises(ValueError, match="unknown video rule"):
        metrics.video_scores(frames, videos, "median")


def test_confident_rule_matches_the_published_rule_on_random_videos() -> None:
    rng = np.random.default_rng(5)
    frames = rng.beta(0.5, 0.5, size=400)
    videos = rng.integers(0, 30, size=400)
    ids, scores = metrics.video_scores(frames, videos, "confident")
    expected = [seferbekov(frames[videos == video]) for video in ids]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    empty_ids, empty_scores = metrics.video_scores(np.array([]), np.array([]), "confident")
    assert len(empty_ids) == 0 and len(empty_scores) == 0


def test_confident_rule_validates_parameters() -> None:
    with pytest.raises(ValueError, match="real_below <= fake_above"):
        metrics.ConfidentRule(fake_above=0.1, real_below=0.2)
    with pytest.raises(ValueError, match="fractions"):
        metrics.ConfidentRule(fake_fraction=1.0)
