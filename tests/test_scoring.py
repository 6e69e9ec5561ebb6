"""Tests for stream.scoring: EMA, classification schedule and verdict hysteresis."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from stream.scoring import ScoringConfig, TrackScorer, Verdict, next_verdict

R, S, M, U = Verdict.REAL, Verdict.SUSPECT, Verdict.MANIPULATED, Verdict.UNKNOWN

# Exact binary fractions, so boundaries are hit exactly: SUSPECT from 0.25, MANIPULATED from 0.5,
# back to SUSPECT below 0.375, back to REAL below 0.125.
EXACT = ScoringConfig(threshold=0.5, suspect_margin=0.25, hysteresis=0.125, ema_alpha=1.0)


def verdicts(scorer: TrackScorer, probabilities: list[float]) -> list[Verdict]:
    return [scorer.update(1, p, frame).verdict for frame, p in enumerate(probabilities)]


def changes(sequence: list[Verdict]) -> int:
    return sum(a is not b for a, b in pairwise(sequence))


def test_ema_smoothing_numerically() -> None:
    scorer = TrackScorer(ScoringConfig(ema_alpha=0.4))
    smoothed = [scorer.update(7, p, frame).probability for frame, p in enumerate([0.9, 0.1, 0.5])]
    assert smoothed == pytest.approx([0.9, 0.4 * 0.1 + 0.6 * 0.9, 0.4 * 0.5 + 0.6 * 0.58])
    assert smoothed[2] == pytest.approx(0.548)
    score = scorer.get(7)
    assert score.samples == 3 and score.last_classified == 2


def test_unseen_and_forgotten_tracks_are_unknown_and_due() -> None:
    scorer = TrackScorer()
    assert (scorer.get(3).probability, scorer.get(3).verdict, scorer.get(3).samples) == (None, U, 0)
    scorer.update(3, 0.9, 0)
    scorer.update(4, 0.1, 0)
    assert (scorer.get(3).verdict, scorer.get(4).verdict) == (M, R)
    scorer.forget([3, 99])
    assert scorer.get(3).verdict is U and scorer.due(3, 1)
    assert scorer.get(4).verdict is R and not scorer.due(4, 1)


@pytest.mark.parametrize(
    ("classified_at", "frame", "due"),
    [
        ([], 0, True),
        ([0], 0, False),
        ([0], 9, False),
        ([0], 10, True),
        ([0, 12], 21, False),
        ([0, 12], 22, True),
    ],
)
def test_due_schedule(classified_at: list[int], frame: int, due: bool) -> None:
    scorer = TrackScorer(ScoringConfig(classify_every=10))
    for index in classified_at:
        scorer.update(1, 0.5, index)
    assert scorer.due(1, frame) is due


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        ([0.0, 0.125, 0.25, 0.375, 0.5, 0.625], [R, R, S, S, M, M]),
        ([1.0, 0.5, 0.375, 0.25, 0.125, 0.0], [M, M, M, S, S, R]),
        ([0.1, 0.9, 0.1], [R, M, R]),
        ([0.3, 0.2, 0.124], [S, S, R]),
    ],
)
def test_monotone_sequences_cross_bands(probabilities: list[float], expected: list[Verdict]) -> None:
    assert verdicts(TrackScorer(EXACT), probabilities) == expected


@pytest.mark.parametrize(
    ("previous", "probability", "expected"),
    [
        (U, 0.3, S),
        (U, 0.5, M),
        (R, 0.2499, R),
        (R, 0.25, S),
        (S, 0.125, S),
        (S, 0.1249, R),
        (M, 0.375, M),
        (M, 0.3749, S),
        (M, 0.1, R),
        (R, 0.8, M),
    ],
)
def test_next_verdict_boundaries(previous: Verdict, probability: float, expected: Verdict) -> None:
    assert next_verdict(previous, probability, EXACT) is expected


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_hysteresis_prevents_flicker_around_threshold(alpha: float) -> None:
    oscillating = [0.53, 0.47] * 10
    steady = verdicts(TrackScorer(ScoringConfig(ema_alpha=alpha, hysteresis=0.05)), oscillating)
    assert steady[0] is M and changes(steady) == 0  # one change in all: UNKNOWN -> MANIPULATED
    flickering = verdicts(TrackScorer(ScoringConfig(ema_alpha=alpha, hysteresis=0.0)), oscillating)
    assert changes(flickering) >= 10


@pytest.mark.parametrize("probability", [-0.01, 1.01, float("nan"), float("inf")])
def test_update_rejects_invalid_probability(probability: float) -> None:
    scorer = TrackScorer()
    with pytest.raises(ValueError):
        scorer.update(1, probability, 0)
    assert scorer.get(1).samples == 0


@pytest.mark.parametrize(
    ("kwargs", "valid"),
    [
        ({}, True),
        (
            {
                "threshold": 0.9,
                "classify_every": 1,
                "ema_alpha": 1.0,
                "suspect_margin": 0.0,
                "hysteresis": 0.0,
            },
            True,
        ),
        ({"threshold": 0.0}, False),
        ({"threshold": 1.0}, False),
        ({"classify_every": 0}, False),
        ({"ema_alpha": 0.0}, False),
        ({"ema_alpha": 1.1}, False),
        ({"suspect_margin": -0.1}, False),
        ({"hysteresis": -0.01}, False),
        ({"threshold": 0.2, "suspect_margin": 0.15, "hysteresis": 0.05}, False),
    ],
)
def test_config_validation(kwargs: dict[str, Any], valid: bool) -> None:
    if valid:
        ScoringConfig(**kwargs)
    else:
        with pytest.raises(ValueError):
            ScoringConfig(**kwargs)
