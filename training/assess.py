"""Choosing a trained model's calibration and threshold on validation, and measuring it once on the test split.

Metrics are reported for the whole split and per held-out set: the data set's own reals against its own fakes,
every synthetic kind against all test reals, and the false-alarm rate on the reals of each origin, so a set
that is easy to tell apart from another cannot hide behind the total.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from training.calibration import Platt, fit_platt, fold_into_model, threshold_for_false_alarms
from training.data import REAL
from training.metrics import summarize
from training.pipeline import eval_dataset
from training.prepare import DATA_ORIGIN, DEGRADE_SEED_OFFSET, SPLIT_SEEDS, Part, PreparedData, degraded
from training.tag_metrics import per_tag

CALIBRATION_SET = "validation split (degraded as in training), reals and their synthetic fakes"


def evaluate(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, tags: list[str | None]
) -> dict[str, Any]:
    """`training.metrics.summarize` at `threshold`, plus the same per tag (`training.tag_metrics.per_tag`)."""
    return {
        **summarize(labels, probabilities, threshold),
        "per_tag": per_tag(labels, probabilities, tags, threshold),
    }


def held_out_sets(part: Part, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """Per held-out set: `data` (the data set's own reals vs its own fakes), each synthetic kind vs every real
    of the split, and `reals/<origin>` (false alarms on the reals of each origin)."""
    labels = part.crops.labels
    origins = np.array(part.origins)
    real = labels == REAL
    sets: dict[str, Any] = {}
    own = origins == DATA_ORIGIN
    if (own & ~real).any() and (own & real).any():
        sets[DATA_ORIGIN] = summarize(labels[own], probabilities[own], threshold)
    for origin in sorted(set(origins[~real]) - {DATA_ORIGIN}):
        chosen = real | (origins == origin)
        sets[origin] = summarize(labels[chosen], probabilities[chosen], threshold)
    for origin in sorted(set(origins[real])):
        scores = probabilities[real & (origins == origin)]
        sets[f"reals/{origin}"] = {
            "n_real": len(scores),
            "false_alarm_rate": float(np.mean(scores >= threshold)),
            "mean_probability": float(np.mean(scores)),
        }
    return sets


def predict(model: tf.keras.Model, part: Part) -> np.ndarray:
    """The model's probabilities for a part's crops, in order."""
    scores = model.predict(eval_dataset(part.crops), verbose=0)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def calibrate(model: tf.keras.Model, data: PreparedData, false_alarm_rate: float) -> tuple[Platt, float]:
    """Fit Platt scaling on validation, fold it into `model`, and choose the threshold for `false_alarm_rate`
    on the calibrated validation reals. Returns the map and the threshold."""
    val = data.parts["val"]
    platt = fit_platt(val.crops.labels, predict(model, val))
    fold_into_model(model, platt)
    reals = val.select(np.flatnonzero(val.crops.labels == REAL))
    return platt, threshold_for_false_alarms(predict(model, reals), false_alarm_rate)


def assess(
    model: tf.keras.Model, data: PreparedData, threshold: float, degrade: float, seed: int
) -> dict[str, Any]:
    """Validation and test metrics at `threshold`; test also degraded as in training when `degrade` > 0."""
    val, test = data.parts["val"], data.parts["test"]
    val_scores, test_scores = predict(model, val), predict(model, test)
    metrics: dict[str, Any] = {
        "val": evaluate(val.crops.labels, val_scores, threshold, val.tags),
        "test": evaluate(test.crops.labels, test_scores, threshold, test.tags),
        "test_sets": held_out_sets(test, test_scores, threshold),
    }
    if degrade > 0:
        worse = degraded(test, degrade, seed + SPLIT_SEEDS["test"] + DEGRADE_SEED_OFFSET)
        worse_scores = predict(model, worse)
        metrics["test_degraded"] = evaluate(worse.crops.labels, worse_scores, threshold, worse.tags)
        metrics["test_degraded_sets"] = held_out_sets(worse, worse_scores, threshold)
    return metrics
