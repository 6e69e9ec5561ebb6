"""Example grids of synthetic fakes and degradations from real photos, and `grid`, which lays out images (also
for TensorBoard).

    python -m training.synth.examples --data ../shared/data/faces --out docs/synthetic
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.detector import FaceDetector
from models.preprocess import CropSpec, crop_face
from training.crop_cache import LANDMARK_SIDE
from training.data import IMAGE_SUFFIXES, face_crop, read_image
from training.sbi import CropLandmarker, seeded_rng
from training.synth import KINDS, degrade, synthesize

FOLDERS = ("ciplab-real-and-fake/real", "pixabay-portraits")  # under --data
COLUMNS = 6
DEGRADED_ROWS = 2


def grid(images: Sequence[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Equal-sized images in rows of `columns`, `gap` white pixels apart: one (H, W, 3) uint8 image.

    Images are RGB uint8 or (H, W) masks, uint8 or float in [0, 1]; missing cells of the last row stay white.
    """
    if not images or columns < 1:
        raise ValueError("need at least one image and one column")
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        if image.shape[:2] != (height, width):
            raise ValueError(f"image {index} is {image.shape[:2]}, the first {(height, width)}")
        if image.dtype != np.uint8:
            image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        out[top : top + height, left : left + width] = image
    return out


def face_crops(paths: Sequence[Path], spec: CropSpec) -> tuple[np.ndarray, np.ndarray]:
    """Serving crops (N, S, S, 3) uint8 and FaceMesh landmarks (N, 468, 2) float32 of the images in which both
    were found, made as the crop cache makes them (landmarks on a LANDMARK_SIDE px cut, scaled)."""
    crops, landmarks = [], []
    with FaceDetector() as detector, CropLandmarker() as landmarker:
        for path in paths:
            rgb = read_image(path)
            crop, box = face_crop(rgb, spec, detector)
            points = (
                None if box is None else landmarker(crop_face(rgb, box, CropSpec(LANDMARK_SIDE, spec.margin)))
            )
            if points is not None:
                crops.append(crop)
                landmarks.append(points * (spec.size / LANDMARK_SIDE))
    return np.array(crops, dtype=np.uint8), np.array(landmarks, dtype=np.float32)


def _spread_files(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)]


def _write(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")
    print(f"{path}: {path.stat().st_size // 1024} KiB")


def write_examples(crops: np.ndarray, landmarks: np.ndarray, out: Path, seed: int) -> None:
    """One grid per kind (rows: real, donor for swaps, fake, mask; COLUMNS faces) and one of degradations
    (rows: real, then DEGRADED_ROWS degraded copies)."""
    out.mkdir(parents=True, exist_ok=True)
    count = len(crops)
    if count < 2:
        raise ValueError(f"need at least two faces, got {count}")
    for k, kind in enumerate(KINDS):
        rows: list[list[np.ndarray]] = [[], [], [], []]
        for column in range(COLUMNS):
            target = (k * COLUMNS + column) % count
            donor = (target + 1 + column) % count
            if donor == target:
                donor = (donor + 1) % count
            fake, mask = synthesize(
                kind,
                crops[target],
                landmarks[target],
                crops[donor],
                landmarks[donor],
                seeded_rng(seed, k, column),
            )
            for row, image in zip(rows, (crops[target], crops[donor], fake, mask), strict=True):
                row.append(image)
        shown = [rows[0], rows[2], rows[3]] if kind == "self_blend" else rows
        _write(out / f"{kind}.png", grid([image for row in shown for image in row], COLUMNS))
    reals = [crops[(len(KINDS) * COLUMNS + column) % count] for column in range(COLUMNS)]
    degraded = [
        degrade(real, seeded_rng(seed, len(KINDS), row, c))
        for row in range(DEGRADED_ROWS)
        for c, real in enumerate(reals)
    ]
    _write(out / "degrade.png", grid(reals + degraded, COLUMNS))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/faces"), help="holds " + ", ".join(FOLDERS)
    )
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic"))
    parser.add_argument("--per-folder", type=int, default=16, help="photos read from each folder")
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = [path for folder in FOLDERS for path in _spread_files(args.data / folder, args.per_folder)]
    crops, landmarks = face_crops(paths, CropSpec(args.size))
    order = seeded_rng(args.seed).permutation(len(crops))  # mix the folders
    write_examples(crops[order], landmarks[order], args.out, args.seed)


if __name__ == "__main__":
    main()
