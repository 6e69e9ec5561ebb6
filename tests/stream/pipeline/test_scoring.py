"""Tests for stream.pipeline.scoring: EMA, classification schedule, minimum evidence, bands relative to the threshold and
hysteresis, and the policy's promises over random score sequences."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest

from stream.pipeline.scoring import ScoringConfig, TrackScore, TrackScorer, Verdict, next_verdict

R, S, M, U = Verdict.REAL, Verdict.SUSPECT, Verdict.MANIPULATED, Verdict.UNKNOWN

# Exact binary fractions, so boundaries are hit exactly: SUSPECT from 0.25, MANIPULATED from 0.5,
# back to REAL below 0.125. One sample is enough evidence and one sample at 0.5 makes MANIPULATED.
EXACT = ScoringConfig(
    threshold=0.5, suspect_band=0.5, hysteresis_band=0.25, ema_alpha=1.0, min_samples=1, manipulated_after=1
)
THRESHOLDS = (0.05, 0.5, 0.95)


def scores(scorer: TrackScorer, probabilities: list[float]) -> list[TrackScore]:
    return [scorer.update(1, p, frame) for frame, p in enumerate(probabilities)]


def verdicts(scorer: TrackScorer, probabilities: list[float]) -> list[Verdict]:
    return [score.verdict for score in scores(scorer, probabilities)]


def changes(sequence: list[Verdict]) -> int:
    return sum(a is not b for a, b in pairwise(sequence))


def test_ema_smoothing_numerically() -> None:
    scorer = TrackScorer(ScoringConfig(ema_alpha=0.4))
    smoothed = [score.smoothed for score in scores(scorer, [0.9, 0.1, 0.5])]
    assert smoothed == pytest.approx([0.9, 0.4 * 0.1 + 0.6 * 0.9, 0.4 * 0.5 + 0.6 * 0.58])
    assert smoothed[2] == pytest.approx(0.548)
    score = scorer.get(1)
    assert score.samples == 3 and score.last_classified == 2
    assert score.probability == score.smoothed, "the score shown is the smoothed one"


def test_unseen_and_forgotten_tracks_are_unknown_and_due() -> None:
    scorer = TrackScorer(ScoringConfig(min_samples=1, manipulated_after=1))
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


@pytest.mark.parametrize("min_samples", [1, 2, 3, 5])
def test_unknown_without_a_score_until_min_samples(min_samples: int) -> None:
    config = ScoringConfig(min_samples=min_samples, manipulated_after=1, ema_alpha=1.0)
    track = scores(TrackScorer(config), [1.0] * 6)
    assert [score.verdict for score in track] == [U] * (min_samples - 1) + [M] * (7 - min_samples)
    assert [score.probability for score in track] == [None] * (min_samples - 1) + [1.0] * (7 - min_samples)
    assert all(score.smoothed == 1.0 for score in track), "the evidence is kept while unknown"


def test_a_single_spike_is_never_manipulated() -> None:
    config = ScoringConfig(threshold=0.5, ema_alpha=1.0, min_samples=1, manipulated_after=2)
    assert verdicts(TrackScorer(config), [0.1, 0.1, 0.99, 0.1, 0.99, 0.99, 0.99, 0.2]) == [
        R, R, S, R, S, M, M, R,
    ]  # fmt: skip


def test_defaults_need_three_samples_and_two_in_a_row_at_the_threshold() -> None:
    config = ScoringConfig(threshold=0.5, ema_alpha=1.0)
    assert (config.min_samples, config.manipulated_after) == (3, 2)
    assert verdicts(TrackScorer(config), [0.9, 0.9, 0.9]) == [U, U, M]
    assert verdicts(TrackScorer(config), [0.1, 0.1, 0.9, 0.9]) == [U, U, S, M]
    assert verdicts(TrackScorer(config), [0.1, 0.1, 0.1]) == [U, U, R]


@pytest.mark.parametrize(
    ("probabilities", "expected"),
    [
        ([0.0, 0.125, 0.25, 0.375, 0.5, 0.625], [R, R, S, S, M, M]),
        ([1.0, 0.5, 0.375, 0.25, 0.125, 0.0], [M, M, S, S, S, R]),
        ([0.1, 0.9, 0.1], [R, M, R]),
        ([0.3, 0.2, 0.124], [S, S, R]),
    ],
)
def test_monotone_sequences_cross_bands(probabilities: list[float], expected: list[Verdict]) -> None:
    assert verdicts(TrackScorer(EXACT), probabilities) == expected


@pytest.mark.parametrize(
    ("previous", "probability", "streak", "expected"),
    [
        (U, 0.3, 0, S),
        (U, 0.5, 1, M),
        (U, 0.2, 0, R),
        (R, 0.2499, 0, R),
        (R, 0.25, 0, S),
        (S, 0.125, 0, S),
        (S, 0.1249, 0, R),
        (M, 0.4999, 0, S),  # no hysteresis below the threshold: the shown score is below it
        (M, 0.125, 0, S),
        (M, 0.1, 0, R),
        (R, 0.8, 1, M),
    ],
)
def test_next_verdict_boundaries(
    previous: Verdict, probability: float, streak: int, expected: Verdict
) -> None:
    assert next_verdict(previous, probability, EXACT, streak) is expected


def test_next_verdict_needs_the_run_for_manipulated() -> None:
    config = ScoringConfig(threshold=0.5, manipulated_after=3)
    assert [next_verdict(R, 0.9, config, streak) for streak in (1, 2, 3, 4)] == [S, S, M, M]


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_bands_are_fractions_of_the_threshold(threshold: float) -> None:
    config = ScoringConfig(threshold=threshold)
    assert config.suspect_from == pytest.approx(0.7 * threshold)
    assert config.real_below == pytest.approx(0.6 * threshold)
    assert 0.0 < config.real_below < config.suspect_from < config.threshold < 1.0
    below, suspect, above = 0.5 * threshold, 0.8 * threshold, threshold + 0.5 * (1 - threshold)
    assert verdicts(TrackScorer(config), [below] * 3) == [U, U, R]
    assert verdicts(TrackScorer(config), [suspect] * 3) == [U, U, S]
    assert verdicts(TrackScorer(config), [above] * 3) == [U, U, M]


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_hysteresis_prevents_flicker_around_the_suspect_band(alpha: float) -> None:
    common: dict[str, Any] = {"ema_alpha": alpha, "min_samples": 1}
    oscillating = [0.37, 0.33] * 10  # around the suspect band's start, 0.35
    steady = verdicts(TrackScorer(ScoringConfig(hysteresis_band=0.1, **common)), oscillating)
    assert steady[0] is S and changes(steady) == 0
    flickering = verdicts(TrackScorer(ScoringConfig(hysteresis_band=0.0, **common)), oscillating)
    assert changes(flickering) >= 10


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_the_run_rule_prevents_flicker_around_the_threshold(alpha: float) -> None:
    oscillating = [0.53, 0.47] * 10
    config = ScoringConfig(ema_alpha=alpha, min_samples=1, manipulated_after=2)
    steady = verdicts(TrackScorer(config), oscillating)
    assert steady[0] is S and changes(steady) <= 2  # with smoothing, the first two scores are above 0.5
    assert set(steady[4:]) == {S}
    one_sample = verdicts(
        TrackScorer(ScoringConfig(ema_alpha=alpha, min_samples=1, manipulated_after=1)), oscillating
    )
    assert changes(one_sample) >= 10


def random_walks(rng: random.Random, count: int, length: int) -> list[list[float]]:
    """Score sequences of several kinds: uniform noise, slow random walks, and reals with rare spikes."""
    walks = []
    for k in range(count):
        kind = k % 3
        if kind == 0:
            walks.append([rng.random() for _ in range(length)])
        elif kind == 1:
            p, walk = rng.random(), []
            for _ in range(length):
                p = min(1.0, max(0.0, p + rng.gauss(0.0, 0.08)))
                walk.append(p)
            walks.append(walk)
        else:
            walks.append(
                [rng.random() if rng.random() < 0.05 else rng.random() * 0.05 for _ in range(length)]
            )
    return walks


@pytest.mark.parametrize("threshold", [*THRESHOLDS, 0.1, 0.3, 0.8])
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"min_samples": 1, "manipulated_after": 1},
        {"min_samples": 5, "manipulated_after": 3, "ema_alpha": 1.0},
        {"suspect_band": 0.0, "hysteresis_band": 0.0, "ema_alpha": 0.9},
        {"suspect_band": 0.8, "hysteresis_band": 0.19, "ema_alpha": 0.2},
    ],
)
def test_policy_properties_over_random_sequences(threshold: float, settings: dict[str, Any]) -> None:
    """What a user reads never contradicts itself, whatever the scores:

    - "unknown" exactly while there are fewer than `min_samples` samples, and then no score is shown;
    - "manipulated" only with the shown score at or above the threshold, and only after `manipulated_after`
      smoothed scores in a row at or above it (so never before the minimum evidence, never on one spike);
    - "real" never with a score in the suspect band or above; "suspect" never below the hysteresis floor;
    - the shown score is the smoothed one, i.e. the EMA of the samples.
    """
    config = ScoringConfig(threshold=threshold, **settings)
    rng = random.Random(f"{threshold}-{sorted(settings.items())}")
    for walk in random_walks(rng, count=30, length=60):
        scorer = TrackScorer(config)
        history: list[float] = []
        ema: float | None = None
        for frame, sample in enumerate(walk):
            score = scorer.update(1, sample, frame)
            ema = sample if ema is None else config.ema_alpha * sample + (1 - config.ema_alpha) * ema
            assert score.smoothed is not None and score.smoothed == pytest.approx(ema)
            history.append(score.smoothed)
            shown = score.probability
            if score.samples < config.min_samples:
                assert score.verdict is U and shown is None
                continue
            assert score.verdict is not U and shown == score.smoothed
            assert shown is not None
            if score.verdict is M:
                assert shown >= threshold
                assert len(history) >= max(config.min_samples, config.manipulated_after)
                assert all(p >= threshold for p in history[-config.manipulated_after :])
            if score.verdict is R:
                assert shown < config.suspect_from
            if score.verdict is S:
                assert shown >= config.real_below
            run = history[-config.manipulated_after :]
            if len(run) == config.manipulated_after and all(p >= threshold for p in run):
                assert score.verdict is M, "enough evidence at or above the threshold is manipulated"


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
                "min_samples": 1,
                "manipulated_after": 1,
                "suspect_band": 0.0,
                "hysteresis_band": 0.0,
            },
            True,
        ),
        ({"threshold": 0.05}, True),
        ({"threshold": 0.95}, True),
        ({"threshold": 0.001, "suspect_band": 0.9, "hysteresis_band": 0.09}, True),
        ({"threshold": 0.0}, False),
        ({"threshold": 1.0}, False),
        ({"classify_every": 0}, False),
        ({"min_samples": 0}, False),
        ({"manipulated_after": 0}, False),
        ({"ema_alpha": 0.0}, False),
        ({"ema_alpha": 1.1}, False),
        ({"ema_alpha": float("nan")}, False),
        ({"suspect_band": -0.1}, False),
        ({"hysteresis_band": -0.01}, False),
        ({"suspect_band": 0.9, "hysteresis_band": 0.1}, False),
        ({"suspect_band": float("nan")}, False),
    ],
)
def test_config_validation(kwargs: dict[str, Any], valid: bool) -> None:
    if valid:
        ScoringConfig(**kwargs)
    else:
        with pytest.raises(ValueError):
            ScoringConfig(**kwargs)


@pytest.mark.parametrize("threshold", [0.001, *THRESHOLDS, 0.999])
def test_default_settings_are_valid_for_any_threshold(threshold: float) -> None:
    config = ScoringConfig(threshold=threshold)
    assert 0.0 < config.real_below < config.suspect_from < threshold
