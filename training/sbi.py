"""Self-blended images (Shiohara & Yamasaki, CVPR 2022): manipulated faces made from real faces alone.

A real crop is blended with an altered, slightly moved copy of itself inside a soft mask drawn from its face
mesh, so the only evidence of manipulation is what every face swap or edit leaves: a blending boundary and a
mismatch of colour and sharpness inside it. Landmarks are FaceMesh's 468 points, found in static mode on the
crop (`CropLandmarker`); `self_blend` is deterministic for a given `numpy.random.Generator` state.

Deviations from the paper, for 128 px crops and FaceMesh: masks are convex hulls of FaceMesh points (whole face,
face below the brows, inner face, or 1-4 enlarged parts: eyes, nose, mouth); down-up scaling is by 1.5-3
instead of 2 or 4; the colour and frequency changes go to the source only, so outside the mask the fake equals
the real crop exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import mediapipe as mp
import numpy as np

from models.landmarks import NUM_LANDMARKS

_MESH = mp.solutions.face_mesh


def _points(*connection_sets: Iterable[tuple[int, int]]) -> np.ndarray:
    return np.array(sorted({index for edges in connection_sets for edge in edges for index in edge}))


PARTS = (
    _points(_MESH.FACEMESH_LEFT_EYE, _MESH.FACEMESH_LEFT_EYEBROW),
    _points(_MESH.FACEMESH_RIGHT_EYE, _MESH.FACEMESH_RIGHT_EYEBROW),
    _points(_MESH.FACEMESH_NOSE),
    _points(_MESH.FACEMESH_LIPS),
)
BROWS = _points(_MESH.FACEMESH_LEFT_EYEBROW, _MESH.FACEMESH_RIGHT_EYEBROW)
INNER = np.concatenate(PARTS)

# Mask: which hull, drawn at MASK_SIDE px whatever the crop size, moved with the source, deformed elastically.
HULLS = ("face", "below_brows", "inner", "parts")
HULL_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
PART_GROWTH = (1.1, 1.6)  # each part's hull is scaled about its centre, as photo edits replace a whole region
MASK_SIDE = 256
ELASTIC_ALPHA = (
    50.0 * MASK_SIDE / 380
)  # albumentations ElasticTransform(alpha=50, sigma=7) at the paper's 380 px
ELASTIC_SIGMA = 7.0 * MASK_SIDE / 380
# Soft mask (the paper's dynamic blend): resized to a random 192-256 px per side, blurred by an odd kernel of
# 5-25 px, eroded to its full-strength core, blurred again (sigma 5-45), scaled by a random blend ratio.
BLUR_SIDES = (192, 256)
BLUR_KERNELS = (5, 25)
BLUR_SIGMAS = (5, 45)
CORE_TOLERANCE = 1e-4  # the core is where the first blur is within this of its peak (float32 noise aside)
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
# Source: colour (RGB shift with probability 0.3, HSV shift, brightness/contrast), then one of down-up scaling
# or sharpening, then a small move and scale.
RGB_SHIFT = (0.3, 20.0)
HUE_SHIFT_DEGREES = 8.0
SATURATION_SHIFT = 0.1
VALUE_SHIFT = 0.1
BRIGHTNESS = 0.1
CONTRAST = 0.1
DOWNSCALE = (1.5, 3.0)
SHARPEN_ALPHA = (0.2, 0.5)
SHARPEN_LIGHTNESS = (0.5, 1.0)
TRANSLATE = (0.03, 0.015)  # fraction of the side, x and y
SCALE = (0.95, 1 / 0.95)


class CropLandmarker:
    """FaceMesh in static mode on face crops: (468, 2) float32 (x, y) in crop pixels, or None.

    Not thread-safe; one instance per thread.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        self._mesh = _MESH.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_confidence,
        )

    def __call__(self, crop: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return None
        points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)
        return points[:NUM_LANDMARKS] * np.array([crop.shape[1], crop.shape[0]], dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> CropLandmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _grown(points: np.ndarray, factor: float) -> np.ndarray:
    centre = points.mean(axis=0)
    return centre + (points - centre) * factor


def hull_mask(landmarks: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A (side, side) float32 0/1 mask: the convex hull of all landmarks or of a random subset of them.

    `landmarks` are in the pixels of a `side` px square.
    """
    kind = HULLS[rng.choice(len(HULLS), p=HULL_WEIGHTS)]
    if kind == "face":
        regions = [landmarks]
    elif kind == "below_brows":
        regions = [landmarks[landmarks[:, 1] >= landmarks[BROWS, 1].min()]]
    elif kind == "inner":
        regions = [landmarks[INNER]]
    else:
        chosen = rng.choice(len(PARTS), size=rng.integers(1, len(PARTS) + 1), replace=False)
        regions = [_grown(landmarks[PARTS[i]], rng.uniform(*PART_GROWTH)) for i in sorted(chosen)]
    mask = np.zeros((side, side), dtype=np.uint8)
    for points in regions:
        hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, (1,), lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def _move(rng: np.random.Generator) -> np.ndarray:
    """A 2x3 affine map of a unit square: scale about the centre, then move by up to TRANSLATE of the side."""
    scale = rng.uniform(*SCALE)
    tx, ty = (rng.uniform(-limit, limit) for limit in TRANSLATE)
    return np.array([[scale, 0.0, (1 - scale) / 2 + tx], [0.0, scale, (1 - scale) / 2 + ty]])


def _warp(image: np.ndarray, move: np.ndarray, border: int) -> np.ndarray:
    side = image.shape[0]
    return cv2.warpAffine(image, move * np.array([1.0, 1.0, side]), (side, side), borderMode=border)


def _elastic(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = mask.shape
    dx, dy = (
        cv2.GaussianBlur(rng.uniform(-1, 1, (height, width)).astype(np.float32), (0, 0), ELASTIC_SIGMA)
        * ELASTIC_ALPHA
        for _ in range(2)
    )
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(mask, grid_x + dx, grid_y + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _odd_kernel(rng: np.random.Generator, largest: int) -> int:
    """An odd kernel side from BLUR_KERNELS, at most `largest` (itself at least 3)."""
    high = max(3, min(BLUR_KERNELS[1], largest))
    low = min(BLUR_KERNELS[0], high)
    return int(rng.integers(low // 2, high // 2 + 1)) * 2 + 1


def soft_mask(mask: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's blend mask from a 0/1 mask: blurred, eroded to its full-strength core, blurred again, resized
    to `side`, peak scaled by a random blend ratio; zero wherever the second blur does not reach.

    Kernels are capped at the mask's inscribed radius, so small masks (an eye, the mouth) keep a core.
    """
    height, width = (int(rng.integers(BLUR_SIDES[0], BLUR_SIDES[1] + 1)) for _ in range(2))
    resized = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    binary = (resized >= 0.5).astype(np.uint8)
    radius = float(cv2.distanceTransform(binary, cv2.DIST_L2, 3).max()) if binary.any() else 0.0
    largest = int(radius)
    kernel = _odd_kernel(rng, largest)
    blurred = cv2.GaussianBlur(resized, (kernel, kernel), 0)
    core = (blurred >= blurred.max() * (1 - CORE_TOLERANCE)).astype(np.float32) if binary.any() else resized
    kernel = _odd_kernel(rng, largest)
    soft = cv2.GaussianBlur(core, (kernel, kernel), float(rng.integers(BLUR_SIGMAS[0], BLUR_SIGMAS[1] + 1)))
    soft = cv2.resize(soft / max(float(soft.max()), 1e-12), (side, side), interpolation=cv2.INTER_LINEAR)
    return np.clip(soft, 0.0, 1.0) * BLEND_RATIOS[rng.integers(len(BLEND_RATIOS))]


def _alter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB shift (sometimes), HSV shift, brightness/contrast, on float32 RGB in [0, 255]."""
    if rng.random() < RGB_SHIFT[0]:
        image = image + rng.uniform(-RGB_SHIFT[1], RGB_SHIFT[1], 3).astype(np.float32)
    hsv = cv2.cvtColor(np.clip(image, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-HUE_SHIFT_DEGREES, HUE_SHIFT_DEGREES)) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] + rng.uniform(-SATURATION_SHIFT, SATURATION_SHIFT), 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + rng.uniform(-VALUE_SHIFT, VALUE_SHIFT), 0.0, 1.0)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    mean = float(image.mean())
    contrast = 1.0 + rng.uniform(-CONTRAST, CONTRAST)
    return (image - mean) * contrast + mean + rng.uniform(-BRIGHTNESS, BRIGHTNESS) * 255.0


def _alter_frequency(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down-up scaling (nearest down, linear up) or sharpening, on float32 RGB."""
    height, width = image.shape[:2]
    if rng.random() < 0.5:
        factor = rng.uniform(*DOWNSCALE)
        small = cv2.resize(
            image,
            (max(1, round(width / factor)), max(1, round(height / factor))),
            interpolation=cv2.INTER_NEAREST,
        )
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    alpha, lightness = rng.uniform(*SHARPEN_ALPHA), rng.uniform(*SHARPEN_LIGHTNESS)
    effect = np.full((3, 3), -1.0, dtype=np.float32)
    effect[1, 1] = 8.0 + lightness
    identity = np.zeros((3, 3), dtype=np.float32)
    identity[1, 1] = 1.0
    return cv2.filter2D(image, -1, (1 - alpha) * identity + alpha * effect, borderType=cv2.BORDER_REFLECT_101)


def self_blend_with_mask(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`self_blend`, also returning the (S, S) float32 blend mask: output = mask * source + (1 - mask) * image."""
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a square (S, S, 3) uint8 crop, got {image.shape} {image.dtype}")
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 2) landmarks, got {landmarks.shape}")
    side = image.shape[0]
    mask = hull_mask(landmarks * (MASK_SIDE / side), MASK_SIDE, rng)
    source = _alter_frequency(_alter_colour(image.astype(np.float32), rng), rng)
    move = _move(rng)
    source = _warp(source, move, cv2.BORDER_REFLECT_101)
    mask = _warp(mask, move, cv2.BORDER_CONSTANT)
    blend = soft_mask(_elastic(mask, rng), side, rng)[..., None]
    blended = blend * np.clip(source, 0, 255) + (1.0 - blend) * image.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8), blend[..., 0]


def self_blend(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A self-blended fake of a real (S, S, 3) uint8 crop with its (468, 2) landmarks in crop pixels."""
    return self_blend_with_mask(image, landmarks, rng)[0]


def seeded_rng(*seed: int | np.ndarray) -> np.random.Generator:
    """A generator from integers of any sign (tf.data seeds are int64)."""
    parts = [np.atleast_1d(np.asarray(s, dtype=np.int64)).astype(np.uint64) for s in seed]
    return np.random.default_rng(np.concatenate(parts))
