"""Synthetic fakes made from real face crops alone, and degradations applied to reals and fakes alike.

Kinds (`KINDS`, made by `synthesize`):
- "self_blend": a crop blended with an altered copy of itself (`training.sbi`); the donor is ignored.
- "region_swap": 1-4 parts (an eye with its brow, the nose, the mouth) pasted from a donor face, as in CIPLAB's
  photoshopped faces (`swap.region_swap`).
- "face_swap": the donor's inner face warped onto the target's landmarks and alpha- or Poisson-blended
  (`swap.face_swap`).

Every function is pure numpy/OpenCV (and PyAV for H.264) and deterministic for a given
`numpy.random.Generator` state. Crops are square (S, S, 3) uint8 RGB with (468, 2) FaceMesh landmarks in crop
pixels; a donor must be another face than its target, which the caller guarantees.
"""

from __future__ import annotations

import numpy as np

from training import sbi
from training.synth.degradations import degrade
from training.synth.swap import face_swap, region_swap

KINDS = ("self_blend", "region_swap", "face_swap")

__all__ = ["KINDS", "degrade", "face_swap", "region_swap", "synthesize"]


def synthesize(
    kind: str,
    target: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """A fake of `kind` made from the target crop (and the donor's, which must show another face) and its
    float32 (S, S) mask in [0, 1]: where, and how strongly, the fake departs from the target."""
    if kind == "self_blend":
        return sbi.self_blend_with_mask(target, target_landmarks, rng)
    if kind == "region_swap":
        return region_swap(target, target_landmarks, donor, donor_landmarks, rng)
    if kind == "face_swap":
        return face_swap(target, target_landmarks, donor, donor_landmarks, rng)
    raise ValueError(f"unknown synthetic kind {kind!r}; choose from {', '.join(KINDS)}")
