"""tf.data input pipelines: seeded degradation and augmentation, training batches with a share of synthetic
fakes made from real crops (self-blended, region-swapped, face-swapped), and evaluation batches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from models.landmarks import NUM_LANDMARKS
from training import sbi, synth
from training.data import REAL, CropSet

EVAL_BATCH_SIZE = 64
SHIFT_FRACTION = 0.06
BRIGHTNESS_DELTA = 0.08 * 255.0
CONTRAST_RANGE = (0.85, 1.15)
MAX_SYNTHETIC_FRACTION = 0.5  # each fake comes with its real, and a batch keeps at least one labelled crop
AUGMENTATION = "horizontal flip, shift up to 6%, brightness +-8%, contrast 0.85-1.15"


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Flip, shift up to 6% (detector jitter, black fill as in crop_face), small brightness/contrast change.

    Stateless, so a seed reproduces them.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    size = int(image.shape[0])
    pad = max(1, round(size * SHIFT_FRACTION))
    image = tf.cast(image, tf.float32)
    image = tf.image.pad_to_bounding_box(image, pad, pad, size + 2 * pad, size + 2 * pad)
    image = tf.image.stateless_random_crop(image, (size, size, 3), seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS_DELTA, seeds[2])
    image = tf.image.stateless_random_contrast(image, *CONTRAST_RANGE, seeds[3])
    return tf.clip_by_value(image, 0.0, 255.0), label


SYNTHETIC_KINDS = synth.KINDS
DEFAULT_RECIPE = "self_blend=1,region_swap=1,face_swap=1"
DONOR_CANDIDATES = 8
POSE_STRIDE = 8  # every 8th FaceMesh point: 59 points describe the pose well enough


def parse_recipe(text: str) -> dict[str, float]:
    """`kind=weight,...` (e.g. "self_blend=2,face_swap=1") as kind -> share of the synthetic fakes."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, weight = item.partition("=")
        if kind not in SYNTHETIC_KINDS:
            raise ValueError(f"unknown synthetic kind {kind!r}; choose from {', '.join(SYNTHETIC_KINDS)}")
        try:
            weights[kind] = float(weight or 1.0)
        except ValueError:
            raise ValueError(f"{item!r}: the weight must be a number") from None
        if weights[kind] < 0:
            raise ValueError(f"{item!r}: the weight must be >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"{text!r} names no synthetic kind with a positive weight")
    return {kind: weight / total for kind, weight in weights.items() if weight > 0}


def pose_signature(landmarks: np.ndarray) -> np.ndarray:
    """(N, 468, 2) landmarks -> (N, 2 * POSE_POINTS) shapes with position and size removed: faces turned or
    tilted alike have close signatures."""
    points = landmarks[:, ::POSE_STRIDE].astype(np.float64)
    centred = points - points.mean(axis=1, keepdims=True)
    scale = np.sqrt((centred**2).sum(axis=(1, 2), keepdims=True) / centred.shape[1])
    return (centred / np.maximum(scale, 1e-6)).reshape(len(points), 2 * points.shape[1])


@dataclass(frozen=True)
class RealPool:
    """Real crops (N, S, S, 3) uint8 with landmarks (N, 468, 2) float32 and source-group ids (N,): what fakes
    are synthesised from. A swap's donor is drawn from the pool with another group, so both donors of a fake
    lie on one side of a split when the pool is one split's reals."""

    images: np.ndarray
    landmarks: np.ndarray
    groups: np.ndarray
    poses: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "poses", pose_signature(self.landmarks))

    def donor(self, index: int, rng: np.random.Generator) -> int:
        """Of DONOR_CANDIDATES random crops of other groups than `index`'s, the one posed most like it (any
        other crop if all share one group): a donor turned the other way makes a smeared, too easy fake."""
        count = len(self.images)
        candidates = rng.integers(count, size=DONOR_CANDIDATES)
        candidates = candidates[self.groups[candidates] != self.groups[index]]
        if not len(candidates):
            others = np.flatnonzero(self.groups != self.groups[index])
            if len(others):
                return int(rng.choice(others))
            return (index + 1 + int(rng.integers(count - 1))) % count if count > 1 else index
        distances = np.linalg.norm(self.poses[candidates] - self.poses[index], axis=1)
        return int(candidates[int(np.argmin(distances))])

    def fake(self, index: int, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A synthetic fake of crop `index` and its mask (`synth.synthesize`)."""
        other = self.donor(index, rng)
        return synth.synthesize(
            kind, self.images[index], self.landmarks[index], self.images[other], self.landmarks[other], rng
        )

    def fixed_fakes(
        self, kinds: tuple[str, ...], seed: int, every_kind: bool
    ) -> tuple[np.ndarray, list[str]]:
        """Fixed fakes and their kinds: of each crop one per kind (`every_kind`), or one in all, the kinds taken
        in turn; the fake of crop i and kind k comes from `seeded_rng(seed, k, i)`."""
        jobs = [
            (index, kind)
            for index in range(len(self.images))
            for kind in (kinds if every_kind else (kinds[index % len(kinds)],))
        ]
        fakes = np.zeros((len(jobs), *self.images.shape[1:]), dtype=np.uint8)
        for row, (index, kind) in enumerate(jobs):
            fakes[row] = self.fake(index, kind, sbi.seeded_rng(seed, SYNTHETIC_KINDS.index(kind), index))[0]
        return fakes, [kind for _, kind in jobs]


def real_pool(crops: CropSet, groups: list[str]) -> RealPool:
    """The real crops of `crops` whose landmarks were found, with their groups as integer ids."""
    ids = np.unique(np.asarray(groups, dtype=object), return_inverse=True)[1] if groups else np.zeros(0)
    if crops.landmarks is None:
        empty = np.zeros((0, NUM_LANDMARKS, 2), dtype=np.float32)
        return RealPool(crops.images[:0], empty, np.zeros(0, dtype=np.int64))
    usable = np.flatnonzero((crops.labels == REAL) & np.isfinite(crops.landmarks).all(axis=(1, 2)))
    return RealPool(crops.images[usable], crops.landmarks[usable], ids[usable].astype(np.int64))


def synthetic_pairs(pool: RealPool, recipe: dict[str, float], seed: int) -> tf.data.Dataset:
    """Endless (crop uint8, label) elements alternating a real (0.0) and a synthetic fake of it (1.0), the kind
    drawn by `recipe`'s shares: as in the self-blending paper, each fake comes with its own real, so the pair
    differs only by the manipulation. Fixed by `seed`, different in every iteration (epoch)."""
    if not len(pool.images):
        raise ValueError("need real crops with landmarks to synthesise fakes")
    kinds, shares = list(recipe), np.array(list(recipe.values()))

    def pair(index: np.ndarray, pair_seed: np.ndarray) -> np.ndarray:
        rng = sbi.seeded_rng(pair_seed)
        kind = kinds[int(rng.choice(len(kinds), p=shares))]
        return np.stack([pool.images[int(index)], pool.fake(int(index), kind, rng)[0]])

    def pair_tensor(index: tf.Tensor, pair_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.numpy_function(pair, [index, pair_seed], tf.uint8, stateful=False)
        images.set_shape((2, *pool.images.shape[1:]))
        return images, tf.constant([0.0, 1.0])

    indices = (
        tf.data.Dataset.range(len(pool.images))
        .shuffle(len(pool.images), seed=seed, reshuffle_each_iteration=True)
        .repeat()
    )
    seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
    return (
        tf.data.Dataset.zip((indices, seeds)).map(pair_tensor, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    )


def _maybe_degraded(crop: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """`synth.degrade(crop)` with `probability`, else the crop itself."""
    return synth.degrade(crop, rng) if rng.random() < probability else crop


def degrade_fixed(images: np.ndarray, probability: float, seed: int) -> np.ndarray:
    """Each crop degraded (`synth.degrade`) with `probability`, crop i from `seeded_rng(seed, i)`."""
    out = images.copy()
    for index, image in enumerate(images):
        out[index] = _maybe_degraded(image, probability, sbi.seeded_rng(seed, index))
    return out


def _degrade_tensor(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    def degrade(crop: np.ndarray, crop_seed: np.ndarray) -> np.ndarray:
        return _maybe_degraded(crop, probability, sbi.seeded_rng(crop_seed))

    degraded = tf.numpy_function(degrade, [image, seed], tf.uint8, stateful=False)
    degraded.set_shape(image.shape)
    return degraded


@dataclass(frozen=True)
class TrainingBatches:
    """One epoch of augmented training batches: every labelled crop once, plus in each full batch
    `synthetic_per_batch` fresh synthetic fakes and the reals they were made from."""

    dataset: tf.data.Dataset
    steps: int
    images: int
    synthetic_per_batch: int


def training_batches(
    crops: CropSet,
    batch_size: int,
    seed: int,
    synthetic_fraction: float = 0.0,
    pool: RealPool | None = None,
    recipe: dict[str, float] | None = None,
    degrade_probability: float = 0.0,
) -> TrainingBatches:
    """Shuffled (reshuffled each epoch), degraded with `degrade_probability` and augmented batches, a share
    `synthetic_fraction` of each synthesised from `pool` by `recipe` (default: self-blending only).

    A batch holds `k = round(synthetic_fraction * batch_size)` synthetic fakes, each with the real of `pool` it
    was made from (`synthetic_pairs`), and `batch_size - 2k` (at least one) labelled crops; the epoch ends with
    the labelled crops. Degradation comes before augmentation and hits reals and fakes alike. Fixed by `seed`,
    different in every epoch.
    """
    if not 0.0 <= synthetic_fraction < MAX_SYNTHETIC_FRACTION:
        raise ValueError(f"the synthetic fraction must be in [0, 0.5), got {synthetic_fraction}")
    if not 0.0 <= degrade_probability <= 1.0:
        raise ValueError(f"the degradation probability must be in [0, 1], got {degrade_probability}")
    count = len(crops.images)
    elements = tf.data.Dataset.from_tensor_slices((crops.images, crops.labels.astype(np.float32))).shuffle(
        count, seed=seed, reshuffle_each_iteration=True
    )
    usable = pool is not None and len(pool.images) > 0
    synthetic = min(round(synthetic_fraction * batch_size), (batch_size - 1) // 2) if usable else 0
    if pool is not None and synthetic:
        labelled = batch_size - 2 * synthetic
        choice = tf.data.Dataset.from_tensor_slices(
            tf.constant([0] * labelled + [1] * (2 * synthetic), dtype=tf.int64)
        ).repeat()
        pairs = synthetic_pairs(pool, recipe or {"self_blend": 1.0}, seed)
        images = count + (count // labelled) * 2 * synthetic
        # The mix ends when the labelled crops do, after exactly `images` elements; take() tells Keras so.
        elements = tf.data.Dataset.choose_from_datasets(
            [elements, pairs], choice, stop_on_empty_dataset=True
        ).take(images)
    else:
        images = count
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    if degrade_probability > 0:
        degrade_seeds = tf.data.Dataset.random(seed=seed + 2, rerandomize_each_iteration=True).batch(2)
        elements = tf.data.Dataset.zip((elements, degrade_seeds)).map(
            lambda pair, s: (_degrade_tensor(pair[0], s, degrade_probability), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = (
        tf.data.Dataset.zip((elements, seeds))
        .map(lambda pair, s: augment(pair[0], pair[1], s), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return TrainingBatches(dataset, -(-images // batch_size), images, synthetic)


def eval_dataset(crops: CropSet) -> tf.data.Dataset:
    """(float32 crops, labels) in order, unaugmented."""
    return (
        tf.data.Dataset.from_tensor_slices((crops.images, crops.labels.astype(np.float32)))
        .map(lambda image, label: (tf.cast(image, tf.float32), label))
        .batch(EVAL_BATCH_SIZE)
    )
