"""tf.data input pipelines: seeded augmentation, training batches with a share of self-blended fakes, and
evaluation batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from models.landmarks import NUM_LANDMARKS
from training import sbi
from training.data import REAL, CropSet

EVAL_BATCH_SIZE = 64
SHIFT_FRACTION = 0.06
BRIGHTNESS_DELTA = 0.08 * 255.0
CONTRAST_RANGE = (0.85, 1.15)
MAX_BLEND_FRACTION = 0.5  # each fake comes with its real, and a batch keeps at least one labelled crop
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


@dataclass(frozen=True)
class BlendPool:
    """Real crops (N, S, S, 3) uint8 with their landmarks (N, 468, 2) float32: what self-blending can use."""

    images: np.ndarray
    landmarks: np.ndarray

    def blend_fixed(self, seed: int) -> np.ndarray:
        """One fixed self-blended fake per crop (`sbi.blend_fixed`)."""
        return sbi.blend_fixed(self.images, self.landmarks, seed)


def blend_pool(crops: CropSet) -> BlendPool:
    """The real crops of `crops` whose landmarks were found."""
    if crops.landmarks is None:
        return BlendPool(crops.images[:0], np.zeros((0, NUM_LANDMARKS, 2), dtype=np.float32))
    usable = np.flatnonzero((crops.labels == REAL) & np.isfinite(crops.landmarks).all(axis=(1, 2)))
    return BlendPool(crops.images[usable], crops.landmarks[usable])


@dataclass(frozen=True)
class TrainingBatches:
    """One epoch of augmented training batches: every labelled crop once, plus in each full batch
    `blended_per_batch` fresh self-blended fakes and the reals they were made from."""

    dataset: tf.data.Dataset
    steps: int
    images: int
    blended_per_batch: int


def training_batches(
    crops: CropSet, batch_size: int, seed: int, blend_fraction: float = 0.0, pool: BlendPool | None = None
) -> TrainingBatches:
    """Shuffled (reshuffled each epoch) and augmented; `blend_fraction` of each batch self-blended from `pool`.

    A batch holds `k = round(blend_fraction * batch_size)` self-blended fakes, each with the real of `pool` it
    was made from (`sbi.blended_pairs`), and `batch_size - 2k` (at least one) labelled crops; the epoch ends with
    the labelled crops. Fixed by `seed`, different in every epoch.
    """
    if not 0.0 <= blend_fraction < MAX_BLEND_FRACTION:
        raise ValueError(f"the self-blended fraction must be in [0, 0.5), got {blend_fraction}")
    count = len(crops.images)
    elements = tf.data.Dataset.from_tensor_slices((crops.images, crops.labels.astype(np.float32))).shuffle(
        count, seed=seed, reshuffle_each_iteration=True
    )
    usable = pool is not None and len(pool.images) > 0
    blended = min(round(blend_fraction * batch_size), (batch_size - 1) // 2) if usable else 0
    if pool is not None and blended:
        labelled = batch_size - 2 * blended
        choice = tf.data.Dataset.from_tensor_slices(
            tf.constant([0] * labelled + [1] * (2 * blended), dtype=tf.int64)
        ).repeat()
        pairs = sbi.blended_pairs(pool.images, pool.landmarks, seed)
        images = count + (count // labelled) * 2 * blended
        # The mix ends when the labelled crops do, after exactly `images` elements; take() tells Keras so.
        elements = tf.data.Dataset.choose_from_datasets(
            [elements, pairs], choice, stop_on_empty_dataset=True
        ).take(images)
    else:
        images = count
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = (
        tf.data.Dataset.zip((elements, seeds))
        .map(lambda pair, s: augment(pair[0], pair[1], s), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return TrainingBatches(dataset, -(-images // batch_size), images, blended)


def eval_dataset(crops: CropSet) -> tf.data.Dataset:
    """(float32 crops, labels) in order, unaugmented."""
    return (
        tf.data.Dataset.from_tensor_slices((crops.images, crops.labels.astype(np.float32)))
        .map(lambda image, label: (tf.cast(image, tf.float32), label))
        .batch(EVAL_BATCH_SIZE)
    )
