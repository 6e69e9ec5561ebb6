"""A disk cache of face crops, so epochs and later runs never re-decode video or re-run the face detector.

For a list of samples (images or video frames), the cache holds each sample's serving crop (`data.face_crop`:
the serving detector, `crop_face`), whether a face was found, and for real crops with a face the FaceMesh
landmarks that self-blending needs (`sbi.CropLandmarker` on the same square cut at 256 px, scaled to the crop:
FaceMesh needs more pixels than a small model input has).

Layout: `<cache dir>/<key, 24 hex digits>/index.json` and `shard-00000.npz`, ... of at most 1,000 crops each (arrays `images`
(n, S, S, 3) uint8, `labels` (n,) int32, `faces` (n,) bool, `landmarks` (n, 468, 2) float32, NaN where none).
The key hashes the data root, the crop spec, the detector settings and the samples (path, frame, label, and
each file's size and modification time), so a changed spec, frame sampling or file builds a new entry. An entry
is written to a temporary folder and renamed into place, so a crashed build leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.detector import DetectorConfig, FaceDetector
from models.landmarks import NUM_LANDMARKS
from models.preprocess import CropSpec, crop_face
from training.data import REAL, CropSet, Sample, face_crop, sample_images
from training.sbi import CropLandmarker

SCHEMA = "fakeweb-crops/1"
LANDMARK_SIDE = 256
INDEX_NAME = "index.json"
SHARD_SIZE = 1000


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/fakeweb/crops`, by default `~/.cache/fakeweb/crops`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fakeweb" / "crops"


def _relative(path: Path, root: Path) -> str:
    return (path.relative_to(root) if path.is_relative_to(root) else path).as_posix()


def cache_key(samples: Sequence[Sample], root: Path, spec: CropSpec, detector: DetectorConfig) -> str:
    """Hex sha256 of everything the cached crops depend on."""
    root = root.resolve()
    files = {}
    for path in sorted({s.path for s in samples}):
        stat = path.stat()
        files[_relative(path.resolve(), root)] = [stat.st_size, stat.st_mtime_ns]
    description = {
        "schema": SCHEMA,
        "root": str(root),
        "crop": [spec.size, spec.margin],
        "detector": [detector.range, detector.min_confidence],
        "samples": [[_relative(s.path.resolve(), root), s.frame, s.label] for s in samples],
        "files": files,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode("utf-8")).hexdigest()


def cached_crops(
    samples: Sequence[Sample],
    root: Path,
    spec: CropSpec,
    detector: DetectorConfig,
    cache_dir: Path,
    progress: bool = False,
) -> CropSet:
    """The crops (with landmarks) of `samples`, in order: read from the cache, or built and stored first."""
    key = cache_key(samples, root, spec, detector)
    folder = cache_dir / key[:24]
    if (folder / INDEX_NAME).is_file():
        try:
            return _load(folder, key, len(samples))
        except (OSError, ValueError, KeyError) as exc:
            print(f"crop cache {folder} is unreadable ({exc}); rebuilding")
            shutil.rmtree(folder, ignore_errors=True)
    _build(samples, spec, detector, folder, key, progress)
    return _load(folder, key, len(samples))


def _load(folder: Path, key: str, count: int) -> CropSet:
    index = json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))
    if index.get("schema") != SCHEMA or index.get("key") != key or index.get("count") != count:
        raise ValueError("index does not match the samples")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("images", "labels", "faces", "landmarks")}
    for shard in index["shards"]:
        with np.load(folder / shard["file"]) as arrays:
            for name, values in parts.items():
                values.append(arrays[name])
    if sum(len(images) for images in parts["images"]) != count:
        raise ValueError("shards hold a different number of crops than the index")
    return CropSet(*(np.concatenate(parts[name]) for name in ("images", "labels", "faces", "landmarks")))


def _build(
    samples: Sequence[Sample], spec: CropSpec, config: DetectorConfig, folder: Path, key: str, progress: bool
) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
    try:
        shards: list[dict[str, Any]] = []
        images = sample_images(samples)
        with FaceDetector(config) as detector, CropLandmarker() as landmarker:
            bar = tqdm(total=len(samples), desc="face crops", unit="img", disable=not progress)
            for start in range(0, len(samples), SHARD_SIZE):
                chunk = samples[start : start + SHARD_SIZE]
                arrays = _crop_chunk(chunk, images, spec, detector, landmarker, bar)
                name = f"shard-{len(shards):05d}.npz"
                np.savez(staging / name, **arrays)
                shards.append({"file": name, "count": len(chunk)})
            bar.close()
        index = {"schema": SCHEMA, "key": key, "count": len(samples), "shards": shards}
        (staging / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        try:
            staging.rename(folder)
        except OSError:  # another run stored the same entry meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _crop_chunk(
    chunk: Sequence[Sample],
    images: Iterator[np.ndarray],
    spec: CropSpec,
    detector: FaceDetector,
    landmarker: CropLandmarker,
    bar: tqdm,
) -> dict[str, np.ndarray]:
    crops = np.zeros((len(chunk), spec.size, spec.size, 3), dtype=np.uint8)
    faces = np.zeros(len(chunk), dtype=bool)
    landmarks = np.full((len(chunk), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
    for index, sample in enumerate(chunk):
        rgb = next(images)
        crops[index], box = face_crop(rgb, spec, detector)
        faces[index] = box is not None
        if sample.label == REAL and box is not None:
            points = landmarker(crop_face(rgb, box, CropSpec(LANDMARK_SIDE, spec.margin)))
            if points is not None:
                landmarks[index] = points * (spec.size / LANDMARK_SIDE)
        bar.update(1)
    labels = np.array([s.label for s in chunk], dtype=np.int32)
    return {"images": crops, "labels": labels, "faces": faces, "landmarks": landmarks}
