"""Calibrated probabilities and a threshold for a stated false-alarm rate, both fitted on validation.

Platt scaling maps the model's logit z to `sigmoid(slope * z + intercept)`, fitted by maximum likelihood on
validation labels. The classifier ends in `Dense(1, activation="sigmoid")`, so the map folds into that layer
(weights times slope, bias times slope plus intercept): the exported model outputs calibrated probabilities and
serving needs no extra step. The threshold is then the calibrated score that flags at most a given share of
validation reals: a live stream is almost always real faces, so the false-alarm rate is what users feel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from scipy.optimize import minimize

PROBABILITY_EPS = 1e-7
OUTPUT_LAYER = "probability"


@dataclass(frozen=True)
class Platt:
    """`calibrated = sigmoid(slope * logit(p) + intercept)`."""

    slope: float
    intercept: float

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw model probabilities."""
        logits = _logit(np.asarray(probabilities, dtype=np.float64))
        return 1.0 / (1.0 + np.exp(-(self.slope * logits + self.intercept)))

    def describe(self, false_alarm_rate: float, fitted_on: str) -> dict[str, Any]:
        """The manifest's `calibration` entry."""
        return {
            "method": "platt",
            **asdict(self),
            "applied": "inside the model (folded into its last layer)",
            "false_alarm_rate": false_alarm_rate,
            "fitted_on": fitted_on,
        }


def _logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(labels: np.ndarray, probabilities: np.ndarray) -> Platt:
    """Maximum-likelihood Platt scaling of raw probabilities against 0/1 labels (both classes needed).

    The slope is kept positive, so calibration never reverses the ranking.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    z = _logit(np.asarray(probabilities, dtype=np.float64).reshape(-1))
    if y.shape != z.shape or not (0 < y.sum() < len(y)):
        raise ValueError("Platt scaling needs labels and probabilities of equal length with both classes")

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        log_slope, intercept = params
        slope = math.exp(log_slope)
        t = slope * z + intercept
        # log(1 + exp(-t)) for fakes and log(1 + exp(t)) for reals, computed stably
        value = float(np.mean(np.logaddexp(0.0, np.where(y == 1, -t, t))))
        residual = (1.0 / (1.0 + np.exp(-t)) - y) / len(y)
        return value, np.array([float(np.sum(residual * z)) * slope, float(np.sum(residual))])

    result = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B", bounds=[(-6.0, 4.0), (-20.0, 20.0)])
    return Platt(slope=math.exp(float(result.x[0])), intercept=float(result.x[1]))


def threshold_for_false_alarms(real_scores: np.ndarray, rate: float) -> float:
    """The lowest score threshold (`score >= t` is fake) that flags at most `rate` of `real_scores`."""
    scores = np.sort(np.asarray(real_scores, dtype=np.float64).reshape(-1))
    if not len(scores) or not 0.0 < rate < 1.0:
        raise ValueError(f"need real scores and a rate in (0, 1), got {len(scores)} scores and {rate}")
    allowed = math.floor(rate * len(scores))  # reals that may lie at or above the threshold
    highest_kept = scores[len(scores) - allowed - 1]
    threshold = float(np.nextafter(highest_kept, np.inf))
    return min(max(threshold, PROBABILITY_EPS), 1.0 - PROBABILITY_EPS)


def fold_into_model(model: tf.keras.Model, platt: Platt) -> None:
    """Fold the Platt map into the model's last sigmoid Dense layer (named `probability`), in place."""
    layer = model.get_layer(OUTPUT_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * platt.slope, bias * platt.slope + platt.intercept])
