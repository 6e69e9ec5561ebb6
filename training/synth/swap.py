"""Fakes from two real faces: a target crop gets parts of a donor crop (eyes, nose, mouth: CIPLAB's
photoshopped faces) or the donor's whole inner face (a face swap), placed by their FaceMesh landmarks.

Both return the fake and a float32 mask in [0, 1]: the donor's weight in each pixel for alpha blends, the
pasted region for Poisson blends (which also shift colours slightly around it). Outside the mask (and, for
Poisson blends, its bounding box) the fake equals the target exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.landmarks import NUM_LANDMARKS
from training.sbi import BROWS, INNER, PARTS
from training.synth.warp import fit, piecewise_affine_maps, warp_maps

# Region swap: which parts (sbi.PARTS: left eye and brow, right eye and brow, nose, lips), the pasted region
# around each, how it is placed and blended.
PART_COUNT_WEIGHTS = (0.4, 0.25, 0.15, 0.2)  # 1, 2, 3 or all 4 parts (CIPLAB's flags: any non-empty subset)
PART_GROWTH = (1.05, 1.35)  # the region is the part's points scaled about their centre by this
SHAPES = (
    "hull",
    "ellipse",
    "box",
)  # a region is the points' hull, the ellipse or the rotated box around them
SHAPE_WEIGHTS = (0.5, 0.25, 0.25)
SIMILARITY = 0.5  # probability of a similarity fit of the part's points (else a full affine fit)
JITTER = (0.04, 0.05)  # placement error: a move of up to this fraction of the region's size, scale 1 +- this
FEATHER = (0.01, 0.12)  # mask blur sigma as a fraction of the region's size: from a hard cut to a soft fade
COLOUR_STRENGTH = (0.5, 1.0)  # how far the LAB mean/std transfer takes the donor's colours to the target's
# Face swap: the region replaced, its blend, and the donor's resolution.
FACE_REGIONS = {  # name: scale of its hull about its centre (then cut to the face's outline)
    "inner": (1.1, 1.3),  # brows, eyes, nose and mouth
    "below_brows": (0.9, 1.0),  # the face below the brows
    "face": (0.85, 0.95),  # the whole face
}
POISSON = 0.4  # probability of Poisson blending (cv2.seamlessClone) instead of a soft alpha blend
FACE_FEATHER = (0.01, 0.04)  # as FEATHER, for the alpha blend
RESAMPLE = (0.5, 1.2, 2.0)  # probability and factors of down-up scaling the donor (a model's render size)
MIN_REGION_PIXELS = 16  # smaller regions (mostly outside the crop) are not colour-matched


def check_crop(image: np.ndarray, landmarks: np.ndarray, name: str) -> None:
    """Raise ValueError unless `image` is a square (S, S, 3) uint8 crop with finite (468, 2) landmarks."""
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a square (S, S, 3) uint8 {name} crop, got {image.shape} {image.dtype}")
    if landmarks.shape != (NUM_LANDMARKS, 2) or not np.isfinite(landmarks).all():
        raise ValueError(f"expected finite ({NUM_LANDMARKS}, 2) {name} landmarks, got {landmarks.shape}")


def _grown(points: np.ndarray, factor: float) -> np.ndarray:
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    return centre + (points - centre) * factor


def _region(points: np.ndarray, side: int, shape: str = "hull") -> np.ndarray:
    """A (side, side) float32 mask in [0, 1] (anti-aliased edge) of a shape around `points` (see SHAPES): their
    hull, the ellipse fitted to them grown to hold them all, or their smallest rotated box."""
    mask = np.zeros((side, side), dtype=np.uint8)
    if shape == "ellipse":
        (cx, cy), (width, height), angle = cv2.fitEllipse(points.astype(np.float32))
        cos, sin = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        relative = points - (cx, cy)
        along, across = relative @ (cos, sin), relative @ (-sin, cos)
        reach = float(np.sqrt((along / max(width, 1e-3)) ** 2 + (across / max(height, 1e-3)) ** 2).max())
        centre = (round(cx * 16), round(cy * 16))
        axes = (round(width * reach * 16), round(height * reach * 16))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, (255,), -1, cv2.LINE_AA, shift=4)
        return mask.astype(np.float32) / 255.0
    outline = cv2.boxPoints(cv2.minAreaRect(points.astype(np.float32))) if shape == "box" else points
    hull = cv2.convexHull(np.round(outline * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, (255,), lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _feather(region: np.ndarray, fraction: float) -> np.ndarray:
    sigma = max(fraction * float(np.sqrt(region.sum())), 0.3)
    return np.clip(cv2.GaussianBlur(region, (0, 0), sigma), 0.0, 1.0)


def lab(image: np.ndarray) -> np.ndarray:
    """RGB in [0, 255] (any dtype) as float32 CIE LAB."""
    return cv2.cvtColor(np.clip(image, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def match_colour(
    source: np.ndarray, target_lab: np.ndarray, region: np.ndarray, strength: float
) -> np.ndarray:
    """Float32 RGB `source` with its LAB mean and standard deviation inside `region` (> 0.5) moved by
    `strength` (0: none, 1: all the way) to the target's there (`target_lab`: the target in `lab`); unchanged if
    the region is tiny."""
    inside = (region > 0.5).astype(np.uint8)
    if cv2.countNonZero(inside) < MIN_REGION_PIXELS:
        return source
    source_lab = lab(source)
    source_mean, source_std = (v[:, 0] for v in cv2.meanStdDev(source_lab, mask=inside))
    target_mean, target_std = (v[:, 0] for v in cv2.meanStdDev(target_lab, mask=inside))
    gain = np.clip(target_std / np.maximum(source_std, 1e-3), 0.5, 2.0)
    matched = (source_lab - source_mean) * gain + target_mean
    shifted = source_lab + strength * (matched - source_lab)
    return cv2.cvtColor(shifted.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0


def _jitter(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 2x3 map of a small placement error: scale about the points' centre and move."""
    size = float(np.ptp(points, axis=0).max())
    scale = 1.0 + rng.uniform(-JITTER[1], JITTER[1])
    centre = points.mean(axis=0)
    move = rng.uniform(-JITTER[0], JITTER[0], 2) * size
    return np.hstack([np.eye(2) * scale, ((1 - scale) * centre + move)[:, None]])


def _then(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2x3 map `second` after `first`."""
    return np.vstack([second, [0, 0, 1]])[:2] @ np.vstack([first, [0, 0, 1]])


def _blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return alpha[..., None] * np.clip(top, 0, 255) + (1.0 - alpha[..., None]) * base


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def region_swap(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The target crop with 1-4 of its parts (an eye with its brow, the nose, the mouth) replaced by the donor's:
    each fitted by the part's landmarks, colour-matched to the target in its region (cut to both faces' outlines),
    blended through the region feathered from a hard cut to a soft fade. Returns the uint8 fake and the float32
    blend mask.

    The donor must be another face than the target (the caller's duty); crops are square uint8 with FaceMesh
    landmarks (468, 2) in their pixels, and may differ in size.
    """
    check_crop(target, target_landmarks, "target")
    check_crop(donor, donor_landmarks, "donor")
    side = target.shape[0]
    count = int(rng.choice(len(PART_COUNT_WEIGHTS), p=PART_COUNT_WEIGHTS)) + 1
    chosen = sorted(rng.choice(len(PARTS), size=count, replace=False))
    fake, mask = target.astype(np.float32), np.zeros((side, side), dtype=np.float32)
    source, target_lab = donor.astype(np.float32), lab(target)
    # no region reaches past the target's face outline, nor brings what lies past the donor's
    face = _region(target_landmarks, side)
    donor_face = _region(donor_landmarks, donor.shape[0])
    for part in chosen:
        target_points, donor_points = target_landmarks[PARTS[part]], donor_landmarks[PARTS[part]]
        region_points = _grown(target_points, rng.uniform(*PART_GROWTH))
        region = _region(region_points, side, SHAPES[rng.choice(len(SHAPES), p=SHAPE_WEIGHTS)]) * face
        placement = fit(donor_points, target_points, rng.random() < SIMILARITY)
        placement = _then(placement, _jitter(region_points, rng))
        region = region * cv2.warpAffine(donor_face, placement, (side, side), flags=cv2.INTER_LINEAR)
        alpha = _feather(region, rng.uniform(*FEATHER))
        strength = rng.uniform(*COLOUR_STRENGTH)
        x, y, width, height = cv2.boundingRect((alpha > 0).astype(np.uint8))
        if not width:  # the part lies outside the crop or outside the donor's face
            continue
        window = np.s_[y : y + height, x : x + width]  # the rest of the crop stays as it is
        moved = placement - np.array([[0, 0, x], [0, 0, y]])
        pasted = cv2.warpAffine(
            source, moved, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        pasted = match_colour(pasted, target_lab[window], region[window], strength)
        fake[window] = _blend(fake[window], pasted, alpha[window])
        mask[window] += alpha[window] * (1.0 - mask[window])
    return _to_uint8(fake), mask


def _face_region(landmarks: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    name = list(FACE_REGIONS)[int(rng.integers(len(FACE_REGIONS)))]
    if name == "inner":
        points = landmarks[INNER]
    elif name == "below_brows":
        points = landmarks[landmarks[:, 1] >= landmarks[BROWS, 1].min()]
    else:
        points = landmarks
    return _region(_grown(points, rng.uniform(*FACE_REGIONS[name])), side) * _region(landmarks, side)


def _resample(image: np.ndarray, factor: float) -> np.ndarray:
    side = image.shape[0]
    small = cv2.resize(image, (max(1, round(side / factor)),) * 2, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)


def face_swap(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The target crop with the donor's inner face (the inner parts, the face below the brows or the whole face,
    at random): warped piecewise-affinely so every donor landmark lands on the target's, sometimes down-up
    scaled, colour-matched, then alpha-blended through a feathered mask or Poisson-blended. Returns the uint8
    fake and the float32 mask (the alpha, or the pasted region for a Poisson blend).

    The donor must be another face than the target (the caller's duty); crops are square uint8 with FaceMesh
    landmarks (468, 2) in their pixels, and may differ in size.
    """
    check_crop(target, target_landmarks, "target")
    check_crop(donor, donor_landmarks, "donor")
    side = target.shape[0]
    region = _face_region(target_landmarks, side, rng)
    maps = piecewise_affine_maps(
        target_landmarks.astype(np.float64), donor_landmarks.astype(np.float64), side
    )
    pasted = warp_maps(donor.astype(np.float32), maps)
    if rng.random() < RESAMPLE[0]:
        pasted = _resample(pasted, rng.uniform(*RESAMPLE[1:]))
    pasted = match_colour(pasted, lab(target), region, rng.uniform(*COLOUR_STRENGTH))
    if rng.random() < POISSON:
        inside = (region > 0.5).astype(np.uint8) * 255
        x, y, width, height = cv2.boundingRect(inside)
        if width and height:
            centre = (x + width // 2, y + height // 2)  # puts the mask's box back where it is
            # a copy of the mask: seamlessClone writes into it
            fake = cv2.seamlessClone(_to_uint8(pasted), target, inside.copy(), centre, cv2.NORMAL_CLONE)
            return fake, (inside > 0).astype(np.float32)
    alpha = _feather(region, rng.uniform(*FACE_FEATHER))
    return _to_uint8(_blend(target.astype(np.float32), pasted, alpha)), alpha
