"""Metrics per tag of the samples (CIPLAB difficulty, FF++ method, synthetic kind, a folder of extra reals): one
schema for the training metrics in a package's manifest and for the `fakeweb eval` report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.data import REAL
from training.metrics import summarize


def per_tag(
    labels: np.ndarray, probabilities: np.ndarray, tags: Sequence[str | None], threshold: float
) -> dict[str, Any]:
    """`summarize` of each tag's samples, completed with every sample of the class the tag lacks (the fakes of a
    method against all reals, a set of reals against all fakes); a tag holding both classes stands alone.

    Each entry names what completed it under "versus": "all real", "all fake" or None. Untagged samples only
    complete others.
    """
    tagged = np.array(tags, dtype=object)
    result: dict[str, Any] = {}
    for tag in sorted({tag for tag in tags if tag is not None}):
        in_tag = tagged == tag
        present = set(labels[in_tag].tolist())
        versus = None if len(present) == 2 else "all fake" if present == {REAL} else "all real"
        chosen = in_tag | ~np.isin(labels, list(present))
        result[tag] = {"versus": versus, **summarize(labels[chosen], probabilities[chosen], threshold)}
    return result
