"""Labelled face images: data-set readers, a group-disjoint stratified split, and face crops for training.

A sample carries a group id (an identity or source video): splitting keeps every group on one side, so no
person or video is both trained on and evaluated on.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from models.detector import FaceDetector
from models.errors import InputError
from models.geometry import Box
from models.preprocess import CropSpec, crop_face

REAL, FAKE = 0, 1
LABEL_NAMES = ("real", "fake")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DIFFICULTIES = ("easy", "mid", "hard")
_CIPLAB_FAKE = re.compile(r"^(easy|mid|hard)_")  # easy_12_0101; one file in the set has three flag digits


@dataclass(frozen=True)
class Sample:
    """One labelled image: label 0 real / 1 fake, the group it belongs to, an optional difficulty tag."""

    path: Path
    label: int
    group: str
    difficulty: str | None = None

    def __post_init__(self) -> None:
        if self.label not in (REAL, FAKE):
            raise ValueError(f"label must be 0 (real) or 1 (fake), got {self.label}")


@dataclass(frozen=True)
class Split:
    """Train, validation and test samples; no group appears in two of them."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


@dataclass(frozen=True)
class CropSet:
    """Face crops (N, S, S, 3) uint8 RGB with labels (N,) int32; `no_face` crops used the whole image."""

    images: np.ndarray
    labels: np.ndarray
    no_face: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be (N, S, S, 3) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {self.labels.shape}")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_folders(root: Path) -> tuple[Path, Path]:
    real, fake = root / "real", root / "fake"
    for folder in (real, fake):
        if not folder.is_dir():
            raise InputError(f"{root}: expected folders real/ and fake/, {folder.name}/ is missing")
    return real, fake


def read_ciplab(root: Path | str) -> list[Sample]:
    """CIPLAB "Real and Fake Face Detection": `real/*.jpg` and `fake/{easy,mid,hard}_N_ABCD.jpg`.

    Every image is its own group (the set has no identity labels); difficulty is easy/mid/hard, "real" for
    reals.
    """
    real, fake = _label_folders(Path(root))
    samples = [Sample(path, REAL, f"real/{path.stem}", "real") for path in _image_files(real)]
    for path in _image_files(fake):
        match = _CIPLAB_FAKE.match(path.stem)
        if match is None:
            raise InputError(f"{path}: CIPLAB fake names look like easy_12_0101.jpg")
        samples.append(Sample(path, FAKE, f"fake/{path.stem}", match.group(1)))
    if not samples:
        raise InputError(f"{root}: no images under real/ or fake/")
    return samples


def read_real_fake_folders(root: Path | str) -> list[Sample]:
    """Images anywhere under `root/real/` and `root/fake/`.

    A file in a subfolder belongs to the group named by its first subfolder (`real/id07/x.jpg` -> "id07"),
    so a real video and its fakes share a group when their folders share a name; a file directly in real/ or
    fake/ is its own group.
    """
    samples: list[Sample] = []
    for label, folder in enumerate(_label_folders(Path(root))):
        for path in _image_files(folder):
            parts = path.relative_to(folder).parts
            group = parts[0] if len(parts) > 1 else f"{LABEL_NAMES[label]}/{path.stem}"
            samples.append(Sample(path, label, group))
    if not samples:
        raise InputError(f"{root}: no images under real/ or fake/")
    return samples


def subsample(samples: Sequence[Sample], max_images: int, seed: int) -> list[Sample]:
    """At most `max_images` samples drawn per label in proportion (at least one of each label present)."""
    if max_images >= len(samples):
        return list(samples)
    rng = np.random.default_rng(seed)
    chosen: list[Sample] = []
    for label in (REAL, FAKE):
        pool = [s for s in samples if s.label == label]
        if not pool:
            continue
        keep = max(1, round(max_images * len(pool) / len(samples)))
        chosen.extend(
            pool[i] for i in sorted(rng.choice(len(pool), size=min(keep, len(pool)), replace=False))
        )
    return chosen


def split_by_group(samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Seeded split of whole groups into train/val/test, stratified by each group's labels and difficulties.

    The fractions are of groups within each stratum; a stratum of at least three groups gives val and test at
    least one group each when their fraction is positive.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"need 0 <= val, test and val + test < 1, got {val_fraction}, {test_fraction}")
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.group].append(sample)
    strata: dict[tuple[tuple[int, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for name in sorted(groups):
        members = groups[name]
        key = (
            tuple(sorted({s.label for s in members})),
            tuple(sorted({s.difficulty for s in members if s.difficulty is not None})),
        )
        strata[key].append(name)
    rng = np.random.default_rng(seed)
    parts: tuple[list[Sample], list[Sample], list[Sample]] = ([], [], [])
    for key in sorted(strata):
        names = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        n_test = _share(len(names), test_fraction)
        n_val = _share(len(names), val_fraction)
        for index, name in enumerate(names):
            part = 2 if index < n_test else 1 if index < n_test + n_val else 0
            parts[part].extend(groups[name])
    return Split(*parts)


def _share(count: int, fraction: float) -> int:
    share = int(round(count * fraction))
    return max(share, 1) if fraction > 0 and count >= 3 else share


def face_box(image: np.ndarray, detector: FaceDetector) -> Box | None:
    """The highest-scoring face box in an RGB image, or None."""
    detections = detector.detect(image)
    return detections[0].box if detections else None


def load_crops(
    samples: Sequence[Sample], spec: CropSpec, detector: FaceDetector, progress: bool = False
) -> CropSet:
    """Read each image, detect its face and cut the serving crop.

    Without a face the whole image, squared and unpadded (margin 0), stands in for the crop and is counted.
    """
    images = np.zeros((len(samples), spec.size, spec.size, 3), dtype=np.uint8)
    no_face = 0
    for index, sample in enumerate(tqdm(samples, desc="face crops", unit="img", disable=not progress)):
        bgr = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{sample.path}: cannot read image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        box = face_box(rgb, detector)
        if box is None:
            no_face += 1
            box = Box(0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
            images[index] = crop_face(rgb, box, CropSpec(spec.size, 0.0))
        else:
            images[index] = crop_face(rgb, box, spec)
    labels = np.array([s.label for s in samples], dtype=np.int32)
    return CropSet(images, labels, no_face)
