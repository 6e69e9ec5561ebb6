"""Videos of a model's held-out real faces, to measure false alarms the way users meet them (`fakeweb run`).

`python -m training.heldout_clips --model PKG --out DIR` re-derives the test split from the package's recorded
training arguments (the same readers, split rule and seed), and writes one H.264 clip per origin of real faces
(the data set's own reals and each `--extra-reals` folder): every held-out real photo in turn, letterboxed to
640x480 and slowly zoomed for one second, as a camera sees a still face. The photos were never trained on, and
nor was any video frame; `fakeweb run CLIP` then reports face-frames by verdict.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import av
import cv2
import numpy as np

from models.package import ModelPackage
from training.data import FRAMES_PER_VIDEO, REAL, Sample, read_image
from training.prepare import origin, split_samples

WIDTH, HEIGHT, RATE = 640, 480, 30
FRAMES_PER_PHOTO = 30
ZOOM = 0.06  # each photo grows by 6% over its second
FACE_SHARE = 0.55  # a photo fills at most this share of the frame height: a face a webcam's distance away


def heldout_reals(model: Path) -> dict[str, list[Sample]]:
    """The test split's real samples of the package's training run, by origin (its recorded arguments)."""
    recorded = ModelPackage.load(model).manifest.provenance["arguments"]
    defaults = {"synthetic": 0.0, "frames_per_video": FRAMES_PER_VIDEO, "extra_reals": []}
    args = argparse.Namespace(**{**defaults, **recorded})
    args.data = Path(args.data)
    args.extra_reals = [Path(folder) for folder in args.extra_reals]
    split = split_samples(args)
    extra = {folder.name for folder in args.extra_reals}
    by_origin: dict[str, list[Sample]] = defaultdict(list)
    for sample in split.test:
        if sample.label == REAL and sample.frame is None:
            by_origin[origin(sample, extra)].append(sample)
    return dict(by_origin)


def _frame(photo: np.ndarray, zoom: float) -> np.ndarray:
    """The photo scaled to FACE_SHARE of the frame height times `zoom`, centred on a grey background."""
    scale = FACE_SHARE * HEIGHT / photo.shape[0] * zoom
    width, height = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
    if width > WIDTH:
        width, height = WIDTH, max(1, round(height * WIDTH / width))
    resized = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    frame = np.full((HEIGHT, WIDTH, 3), 96, dtype=np.uint8)
    top, left = (HEIGHT - height) // 2, (WIDTH - width) // 2
    frame[top : top + height, left : left + width] = resized
    return frame


def write_clip(samples: list[Sample], path: Path) -> int:
    """One second per photo, zooming slowly, H.264 (yuv420p, CRF 23); returns the number of frames written."""
    frames = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for sample in samples:
            photo = read_image(sample.path)
            for step in range(FRAMES_PER_PHOTO):
                image = _frame(photo, 1.0 + ZOOM * step / FRAMES_PER_PHOTO)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
                frames += 1
        container.mux(stream.encode(None))
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.heldout_clips", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", type=Path, required=True, help="model package whose test split to use")
    parser.add_argument("--out", type=Path, required=True, help="folder for the clips")
    parser.add_argument("--per-origin", type=int, default=60, help="photos per clip, spread over the split")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, samples in sorted(heldout_reals(args.model).items()):
        chosen = [
            samples[i]
            for i in np.linspace(0, len(samples) - 1, min(args.per_origin, len(samples))).astype(int)
        ]
        path = args.out / f"heldout-{name}.mp4"
        frames = write_clip(chosen, path)
        print(f"{path}: {len(chosen)} of {len(samples)} held-out real photos, {frames} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
