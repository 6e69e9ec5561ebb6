"""Labelled face images: data-set readers, a group-disjoint stratified split, and face crops for training.

A sample is an image file or one frame of a video file. It carries a group id (an identity or source video):
splitting keeps every group on one side, so no person or video is both trained on and evaluated on.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from models.detector import FaceDetector
from models.errors import InputError
from models.geometry import Box
from models.preprocess import CropSpec, crop_face
from training.video_frames import VIDEO_SUFFIXES, frame_count, read_frames, spread

REAL, FAKE = 0, 1
LABEL_NAMES = ("real", "fake")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DIFFICULTIES = ("easy", "mid", "hard")
_CIPLAB_FAKE = re.compile(r"^(easy|mid|hard)_")  # easy_12_0101; one file in the set has three flag digits
FRAMES_PER_VIDEO = 8
DFDC_METADATA = "metadata.json"
FFPP_ORIGINAL_TAG = "original"


@dataclass(frozen=True)
class Sample:
    """One labelled image: label 0 real / 1 fake, the group it belongs to, an optional difficulty (or method)
    tag, and for a video file the index of the frame (in decode order) that is the image."""

    path: Path
    label: int
    group: str
    difficulty: str | None = None
    frame: int | None = None

    def __post_init__(self) -> None:
        if self.label not in (REAL, FAKE):
            raise ValueError(f"label must be 0 (real) or 1 (fake), got {self.label}")
        if self.frame is not None and self.frame < 0:
            raise ValueError(f"frame must be >= 0, got {self.frame}")


@dataclass(frozen=True)
class Split:
    """Train, validation and test samples; no group appears in two of them."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


@dataclass(frozen=True)
class CropSet:
    """Face crops (N, S, S, 3) uint8 RGB, labels (N,) int32 and whether a face was found (N,) bool (without one
    the crop is the whole image); optionally FaceMesh landmarks (N, 468, 2) float32 in crop pixels, NaN where
    none were computed or found."""

    images: np.ndarray
    labels: np.ndarray
    faces: np.ndarray
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be (N, S, S, 3) uint8, got {self.images.shape} {self.images.dtype}"
            )
        count = len(self.images)
        if self.labels.shape != (count,) or self.faces.shape != (count,):
            raise ValueError(
                f"labels and faces must have shape ({count},), got {self.labels.shape}, {self.faces.shape}"
            )
        if self.landmarks is not None and (self.landmarks.ndim != 3 or len(self.landmarks) != count):
            raise ValueError(f"landmarks must be ({count}, K, 2), got {self.landmarks.shape}")

    @property
    def no_face(self) -> int:
        """How many crops are whole images because no face was found."""
        return int(np.count_nonzero(~self.faces))

    def select(self, indices: Sequence[int] | np.ndarray) -> CropSet:
        """The crops at `indices`, in that order."""
        index = np.asarray(indices, dtype=np.int64)
        landmarks = None if self.landmarks is None else self.landmarks[index]
        return CropSet(self.images[index], self.labels[index], self.faces[index], landmarks)


def image_files(folder: Path) -> list[Path]:
    """The image files below `folder` (any depth), in path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_folders(root: Path, require_fakes: bool = True) -> list[Path]:
    real, fake = root / "real", root / "fake"
    for folder in (real, fake) if require_fakes else (real,):
        if not folder.is_dir():
            raise InputError(f"{root}: expected folders real/ and fake/, {folder.name}/ is missing")
    return [real, fake] if fake.is_dir() else [real]


def read_ciplab(root: Path | str) -> list[Sample]:
    """CIPLAB "Real and Fake Face Detection": `real/*.jpg` and `fake/{easy,mid,hard}_N_ABCD.jpg`.

    Every image is its own group (the set has no identity labels); difficulty is easy/mid/hard, "real" for
    reals.
    """
    real, fake = _label_folders(Path(root))
    samples = [Sample(path, REAL, f"real/{path.stem}", "real") for path in image_files(real)]
    for path in image_files(fake):
        match = _CIPLAB_FAKE.match(path.stem)
        if match is None:
            raise InputError(f"{path}: CIPLAB fake names look like easy_12_0101.jpg")
        samples.append(Sample(path, FAKE, f"fake/{path.stem}", match.group(1)))
    if not samples:
        raise InputError(f"{root}: no images under real/ or fake/")
    return samples


def read_real_fake_folders(root: Path | str, require_fakes: bool = True) -> list[Sample]:
    """Images anywhere under `root/real/` and `root/fake/` (fake/ may be absent unless `require_fakes`).

    A file in a subfolder belongs to the group named by its first subfolder (`real/id07/x.jpg` -> "id07"),
    so a real video and its fakes share a group when their folders share a name; a file directly in real/ or
    fake/ is its own group.
    """
    samples: list[Sample] = []
    for label, folder in enumerate(_label_folders(Path(root), require_fakes)):
        for path in image_files(folder):
            parts = path.relative_to(folder).parts
            group = parts[0] if len(parts) > 1 else f"{LABEL_NAMES[label]}/{path.stem}"
            samples.append(Sample(path, label, group))
    if not samples:
        raise InputError(f"{root}: no images under real/ or fake/")
    return samples


REVIEWED = "reviewed"
"""The tag (and origin) of the crops of a reviewed-events data set (`fakeweb events export`)."""


def read_reviewed(root: Path | str) -> list[Sample]:
    """A reviewed-events export: `real/` and `fake/` crops named `<event id>-crop-<n>.jpg`. The crops of one
    event (one face) form a group, so they stay on one side of a split; every sample is tagged `reviewed`."""
    samples = [
        Sample(sample.path, sample.label, f"{REVIEWED}/{sample.path.stem.rsplit('-crop-', 1)[0]}", REVIEWED)
        for sample in read_real_fake_folders(root, require_fakes=False)
    ]
    return samples


_NAME_TOKENS = re.compile(r"[^A-Za-z]+")


def source_group(path: Path) -> str:
    """The group of a photo in a folder of real faces: the letters of its file name, numbers dropped.

    Public photo sets number the photos of one subject, model or photographer (`0_0_aidai_0014.jpg` ->
    "aidai", `a-smile-2127788_1280.jpg` -> "a-smile"), so photos that share the words of their name stay on
    one side of a split. A name of numbers only is its own group.
    """
    words = [word.lower() for word in _NAME_TOKENS.split(path.stem) if word]
    return "-".join(words) if words else path.stem


def read_real_folder(root: Path | str) -> list[Sample]:
    """Every image under `root` as a real face, grouped by `source_group` and tagged with the folder's name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of real face images")
    samples = [
        Sample(path, REAL, f"{root.name}/{source_group(path)}", root.name) for path in image_files(root)
    ]
    if not samples:
        raise InputError(f"{root}: no images")
    return samples


def _video_samples(
    path: Path, label: int, group: str, tag: str | None, frames_per_video: int
) -> list[Sample]:
    indices = spread(frame_count(path), frames_per_video)
    if not indices:
        raise InputError(f"{path}: the video has no frames")
    return [Sample(path, label, group, tag, index) for index in indices]


def read_dfdc(root: Path | str, frames_per_video: int = FRAMES_PER_VIDEO) -> list[Sample]:
    """DFDC training layout: folders (`dfdc_train_part_N/`, anywhere under `root`) of videos, each folder with a
    `metadata.json` mapping file names to `{"label": "REAL" | "FAKE", "original": real file name | null}`.

    `frames_per_video` frames spread evenly over each video are the samples. Group: a fake's `original`, a
    real's own file name, so a real video and every fake made from it fall on one side of a split. DFDC lists no
    actor ids, and one actor may star in several originals: for a strict identity split, hold out whole part
    folders instead. Tag: none.
    """
    root = Path(root)
    metadata_files = sorted(root.rglob(DFDC_METADATA))
    if not metadata_files:
        raise InputError(f"{root}: no {DFDC_METADATA} (DFDC layout: folders of videos with {DFDC_METADATA})")
    samples: list[Sample] = []
    for metadata_path in metadata_files:
        try:
            entries = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{metadata_path}: cannot read ({exc})") from exc
        for name in sorted(entries):
            entry, path = entries[name], metadata_path.parent / name
            label = {"REAL": REAL, "FAKE": FAKE}.get(str(entry.get("label", "")).upper())
            original = entry.get("original")
            if label is None or (label == FAKE and not original):
                raise InputError(f"{metadata_path}: {name} needs label REAL or FAKE, and a fake its original")
            if not path.is_file():
                raise InputError(f"{metadata_path}: {name} is listed but missing")
            group = Path(original if label == FAKE else name).stem
            samples += _video_samples(path, label, group, None, frames_per_video)
    return samples


class _Identities:
    """Union-find over identity ids: ids seen in one file name end up in one group."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        parent = self._parent.setdefault(item, item)
        if parent != item:
            parent = self._parent[item] = self.find(parent)
        return parent

    def join(self, items: Sequence[str]) -> None:
        roots = sorted({self.find(item) for item in items})
        for other in roots[1:]:
            self._parent[other] = roots[0]


def ffpp_ids(path: Path) -> list[str]:
    """Identity ids in a FaceForensics++ file name: `000.mp4` -> [000], `000_003.mp4` (target 000, source 003)
    -> [000, 003], DeepFakeDetection `01_02__scene__X.mp4` -> [01, 02], `01__scene.mp4` -> [01]."""
    return path.stem.split("__")[0].split("_")


def read_ffpp(
    root: Path | str, frames_per_video: int = FRAMES_PER_VIDEO, compression: str = "c23"
) -> list[Sample]:
    """FaceForensics++ layout: reals in `original_sequences/*/<compression>/videos/`, fakes in
    `manipulated_sequences/<method>/<compression>/videos/`.

    `frames_per_video` frames spread evenly over each video are the samples. Group: every identity id in a
    file name (`ffpp_ids`) joins one group, transitively, so an original, each fake it is the target or source
    of, and the other original of that pair share a group (FF++'s own splits keep such pairs together). Tag:
    the method name for fakes, "original" for reals.
    """
    root = Path(root)
    videos: list[tuple[Path, int, str]] = []
    for pattern, label in (("original_sequences/*", REAL), ("manipulated_sequences/*", FAKE)):
        for folder in sorted(root.glob(pattern)):
            tag = FFPP_ORIGINAL_TAG if label == REAL else folder.name
            for path in _videos(folder / compression / "videos"):
                videos.append((path, label, tag))
    if not videos:
        raise InputError(
            f"{root}: no videos in original_sequences/*/{compression}/videos or "
            f"manipulated_sequences/*/{compression}/videos"
        )
    identities = _Identities()
    for path, _, _ in videos:
        identities.join(ffpp_ids(path))
    samples: list[Sample] = []
    for path, label, tag in videos:
        group = identities.find(ffpp_ids(path)[0])
        samples += _video_samples(path, label, group, tag, frames_per_video)
    return samples


def _videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


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


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def sample_images(samples: Sequence[Sample]) -> Iterator[np.ndarray]:
    """Each sample's RGB image in order; consecutive frames of one video are decoded in one pass."""
    for (path, is_frame), run in itertools.groupby(samples, key=lambda s: (s.path, s.frame is not None)):
        if is_frame:
            yield from read_frames(path, [s.frame for s in run if s.frame is not None])
        else:
            yield from (read_image(s.path) for s in run)


def face_crop(rgb: np.ndarray, spec: CropSpec, detector: FaceDetector) -> tuple[np.ndarray, Box | None]:
    """The serving crop of the image's best face and its box; without a face the whole image, squared and
    unpadded (margin 0), and None."""
    box = face_box(rgb, detector)
    if box is None:
        whole = Box(0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
        return crop_face(rgb, whole, CropSpec(spec.size, 0.0)), None
    return crop_face(rgb, box, spec), box


def load_crops(
    samples: Sequence[Sample], spec: CropSpec, detector: FaceDetector, progress: bool = False
) -> CropSet:
    """Read each image (or video frame), detect its face and cut the serving crop (see `face_crop`)."""
    images = np.zeros((len(samples), spec.size, spec.size, 3), dtype=np.uint8)
    faces = np.zeros(len(samples), dtype=bool)
    rgbs = sample_images(samples)
    for index in tqdm(range(len(samples)), desc="face crops", unit="img", disable=not progress):
        images[index], box = face_crop(next(rgbs), spec, detector)
        faces[index] = box is not None
    labels = np.array([s.label for s in samples], dtype=np.int32)
    return CropSet(images, labels, faces)
