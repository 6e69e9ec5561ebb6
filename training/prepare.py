"""The data a training run uses: samples read, split by group, cropped through the cache, and validation and test
completed with fixed synthetic fakes of their own reals and fixed degradations.

Every crop keeps its origin: "data" (the `--data` set's own images), the name of an `--extra-reals` folder,
"reviewed" (a `--reviewed` export of operators' reviewed events), or the synthetic kind that made it. Held-out sets are reported per origin, so a collection that is easy to tell
apart from another cannot pass for a detector.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.detector import DetectorConfig
from models.errors import FakewebError
from models.preprocess import CropSpec
from training.crop_cache import cached_crops, default_cache_dir
from training.data import (
    FAKE,
    FRAMES_PER_VIDEO,
    LABEL_NAMES,
    REAL,
    REVIEWED,
    CropSet,
    Sample,
    Split,
    read_ciplab,
    read_dfdc,
    read_ffpp,
    read_real_fake_folders,
    read_real_folder,
    read_reviewed,
    split_by_group,
    subsample,
)
from training.pipeline import SYNTHETIC_KINDS, RealPool, degrade_fixed, real_pool

FORMATS = ("ciplab", "dfdc", "ffpp", "folders")
"""The data-set layouts `--format` names (`read_format`)."""
VIDEO_FORMATS = frozenset({"dfdc", "ffpp"})
DATA_ORIGIN = "data"
# Fixed synthetic fakes and degradations of validation and test crops come from these seeds (plus --seed).
SPLIT_SEEDS = {"val": 1_000_003, "test": 2_000_003}
DEGRADE_SEED_OFFSET = 17


class TrainingError(FakewebError):
    """Training options or data that cannot produce a model."""


def label_counts(labels: np.ndarray | list[int]) -> dict[str, int]:
    counts = Counter(LABEL_NAMES[int(label)] for label in labels)
    return {name: counts.get(name, 0) for name in LABEL_NAMES}


@dataclass(frozen=True)
class Part:
    """One split's crops, each crop's tag (difficulty, method or kind), origin and group."""

    crops: CropSet
    tags: list[str | None]
    origins: list[str]
    groups: list[str]

    def select(self, indices: np.ndarray) -> Part:
        return Part(
            self.crops.select(indices),
            [self.tags[i] for i in indices],
            [self.origins[i] for i in indices],
            [self.groups[i] for i in indices],
        )

    def with_crops(self, crops: CropSet) -> Part:
        return Part(crops, self.tags, self.origins, self.groups)


@dataclass(frozen=True)
class PreparedData:
    """Everything training needs from the data: the three parts and the pool of training reals to synthesise
    from. Validation and test already hold their fixed synthetic fakes."""

    parts: dict[str, Part]
    pool: RealPool
    has_fakes: bool
    no_face: dict[str, int]


def read_format(
    root: Path, data_format: str, frames_per_video: int = FRAMES_PER_VIDEO, require_fakes: bool = True
) -> list[Sample]:
    """The samples of the data set at `root` in one of `FORMATS`: `frames_per_video` frames of each video
    (dfdc, ffpp); the fake/ folder optional unless `require_fakes` (folders)."""
    if data_format in VIDEO_FORMATS:
        reader = read_dfdc if data_format == "dfdc" else read_ffpp
        return reader(root, frames_per_video=frames_per_video)
    if data_format == "folders":
        return read_real_fake_folders(root, require_fakes=require_fakes)
    return read_ciplab(root)


def read_samples(args: argparse.Namespace) -> list[Sample]:
    """The samples of `--data` in `--format` (fake/ optional for folders with --synthetic), then every
    `--extra-reals` folder and every `--reviewed` export."""
    samples = read_format(args.data, args.format, args.frames_per_video, require_fakes=args.synthetic == 0)
    for folder in args.extra_reals:
        samples += read_real_folder(folder)
    for folder in args.reviewed:
        samples += read_reviewed(folder)
    return samples


def split_samples(args: argparse.Namespace) -> Split:
    """The samples of the run (`read_samples`, at most `--max-images`) split by group with the run's fractions
    and seed: the same split every time for the same arguments."""
    try:
        samples = read_samples(args)
        if args.max_images is not None:
            samples = subsample(samples, args.max_images, args.seed)
        return split_by_group(samples, args.val_fraction, args.test_fraction, args.seed)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def origin(sample: Sample, extra_folders: set[str]) -> str:
    """A sample's origin: "reviewed" for operators' reviewed events, the name of the extra-reals folder it came
    from, else "data"."""
    tag = sample.difficulty
    if tag == REVIEWED:
        return REVIEWED
    return tag if tag is not None and tag in extra_folders and sample.label == REAL else DATA_ORIGIN


def oversampled(part: Part, origin_name: str, times: int) -> Part:
    """`part` with the crops of `origin_name` repeated `times` times in all (a training weight)."""
    chosen = [index for index, name in enumerate(part.origins) if name == origin_name]
    if times <= 1 or not chosen:
        return part
    return part.select(np.concatenate([np.arange(len(part.origins)), np.repeat(chosen, times - 1)]))


def with_fixed_fakes(part: Part, kinds: tuple[str, ...], seed: int, every_kind: bool) -> Part:
    """`part` plus synthetic fakes of its reals (with landmarks), donors from `part`: one per real and kind
    (`every_kind`, for a report per kind) or one per real, the kinds in turn (balanced, for calibration)."""
    pool = real_pool(part.crops, part.groups)
    if not len(pool.images):
        return part
    fakes, names = pool.fixed_fakes(kinds, seed, every_kind)
    crops = part.crops
    combined = CropSet(
        np.concatenate([crops.images, fakes]),
        np.concatenate([crops.labels, np.full(len(fakes), FAKE, dtype=np.int32)]),
        np.concatenate([crops.faces, np.ones(len(fakes), dtype=bool)]),
    )
    tags: list[str | None] = [*part.tags, *names]
    return Part(combined, tags, part.origins + names, part.groups + ["synthetic"] * len(fakes))


def degraded(part: Part, probability: float, seed: int) -> Part:
    """`part` with each crop degraded with `probability` (fixed by `seed`)."""
    crops = part.crops
    images = degrade_fixed(crops.images, probability, seed)
    return part.with_crops(CropSet(images, crops.labels, crops.faces, crops.landmarks))


def prepare_data(
    args: argparse.Namespace, spec: CropSpec, detector: DetectorConfig, kinds: tuple[str, ...]
) -> PreparedData:
    """Read, subsample and split the samples, crop them (through the cache), add fixed synthetic fakes of
    `kinds` to validation (one per real) and test (one per real and kind), degrade validation as training is,
    and check every part can be scored."""
    split = split_samples(args)
    has_fakes = any(s.label == FAKE for part in (split.train, split.val, split.test) for s in part)
    if not has_fakes and args.synthetic == 0:
        raise TrainingError("the data holds no fake images; add some or train with --synthetic")
    extra = {folder.name for folder in args.extra_reals}
    ordered = split.train + split.val + split.test
    cache_dir = args.cache_dir or default_cache_dir()
    crops = cached_crops(ordered, args.data, spec, detector, cache_dir, progress=True)
    parts: dict[str, Part] = {}
    start = 0
    for name, part_samples in (("train", split.train), ("val", split.val), ("test", split.test)):
        part = Part(
            crops.select(range(start, start + len(part_samples))),
            [s.difficulty for s in part_samples],
            [origin(s, extra) for s in part_samples],
            [s.group for s in part_samples],
        )
        start += len(part_samples)
        if name == "train":
            part = oversampled(part, REVIEWED, args.reviewed_weight)
        if name != "train" and args.synthetic > 0:
            part = with_fixed_fakes(part, kinds, args.seed + SPLIT_SEEDS[name], every_kind=name == "test")
        if name == "val" and args.degrade > 0:
            part = degraded(part, args.degrade, args.seed + SPLIT_SEEDS[name] + DEGRADE_SEED_OFFSET)
        counts = label_counts(part.crops.labels)
        if counts["real"] == 0 or (counts["fake"] == 0 and (name != "train" or args.synthetic == 0)):
            raise TrainingError(
                f"the {name} split has {counts}; it needs both real and fake images (use more data)"
            )
        parts[name] = part
    train = parts["train"]
    pool = real_pool(train.crops, train.groups)
    if args.synthetic > 0 and not len(pool.images):
        raise TrainingError("--synthetic needs training reals whose face mesh was found; none was")
    no_face = {name: part.crops.no_face for name, part in parts.items()}
    return PreparedData(parts, pool, has_fakes, no_face)


def fixed_kinds(recipe: dict[str, float]) -> tuple[str, ...]:
    """The kinds of a recipe in their canonical order."""
    return tuple(kind for kind in SYNTHETIC_KINDS if kind in recipe)
