"""Calibration: Platt scaling improves log loss of an over-confident model, keeps its ranking, folds into the
model's last layer; the threshold keeps false alarms on reals at the stated rate."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training.calibration import Platt, fit_platt, fold_into_model, threshold_for_false_alarms
from training.metrics import log_loss, roc_auc


def overconfident(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and the probabilities of a model whose logits are 4x too large and shifted towards 'fake'."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 4000)
    true_logits = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    return labels, 1.0 / (1.0 + np.exp(-(4.0 * true_logits + 2.0)))


def test_platt_improves_log_loss_and_keeps_the_ranking() -> None:
    labels, raw = overconfident(seed=0)
    platt = fit_platt(labels, raw)
    assert platt.slope == pytest.approx(0.5, rel=0.15) and platt.intercept == pytest.approx(-1.0, abs=0.2)
    held_labels, held_raw = overconfident(seed=1)  # fitted on one sample, judged on another
    calibrated = platt.apply(held_raw)
    assert log_loss(held_labels, calibrated) < 0.8 * log_loss(held_labels, held_raw)
    assert roc_auc(held_labels, calibrated) == pytest.approx(roc_auc(held_labels, held_raw))


def test_platt_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(np.zeros(5), np.full(5, 0.3))


def test_threshold_flags_at_most_the_stated_share_of_reals() -> None:
    reals = np.random.default_rng(2).uniform(0, 1, 1000)
    for rate in (0.01, 0.05, 0.2):
        threshold = threshold_for_false_alarms(reals, rate)
        assert np.mean(reals >= threshold) <= rate
        assert np.mean(reals >= threshold * 0.98) > rate * 0.8  # and not far more cautious than asked
    assert threshold_for_false_alarms(np.array([0.1, 0.2, 0.3]), 0.01) > 0.3  # too few reals: flag none
    with pytest.raises(ValueError):
        threshold_for_false_alarms(np.array([]), 0.01)


def test_folding_into_the_model_equals_applying_the_map() -> None:
    inputs = tf.keras.Input((4,))
    outputs = tf.keras.layers.Dense(1, activation="sigmoid", name="probability")(inputs)
    model = tf.keras.Model(inputs, outputs)
    features = np.random.default_rng(3).normal(size=(16, 4)).astype(np.float32)
    raw = model(features).numpy().reshape(-1)
    platt = Platt(slope=0.4, intercept=-0.7)
    fold_into_model(model, platt)
    np.testing.assert_allclose(model(features).numpy().reshape(-1), platt.apply(raw), atol=1e-5)
