"""Videos of a model's held-out faces, to measure verdicts the way users meet them (`fakeweb run`).

`python -m training.heldout_clips --model PKG --out DIR` re-derives the test split from the package's recorded
training arguments (the same readers, split rule and seed), and writes H.264 clips of it: per origin of real faces
(the data set's own reals and each `--extra-reals` folder) `heldout-<origin>.mp4`, and of the data set's own
fakes `heldout-fakes-<origin>.mp4`. Each photo in turn is letterboxed to 640x480 and slowly zoomed for one second,
as a camera sees a still face; none was trained on, and nor was any video frame. `--photos FOLDER` adds a clip of
every photo in a folder (`photos-<folder>.mp4`, `--seconds-per-photo` each). `fakeweb run CLIP` then reports
face-frames by verdict and the scores shown.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from models.package import ModelPackage
from training.data import FRAMES_PER_VIDEO, REAL, Sample, image_files, read_image
from training.prepare import origin, split_samples
from training.video_frames import spread

WIDTH, HEIGHT, RATE = 640, 480, 30
FRAMES_PER_PHOTO = 30
ZOOM = 0.06  # each photo grows by 6% over its second
FACE_SHARE = 0.55  # a photo fills at most this share of the frame height: a face a webcam's distance away


def heldout_photos(arguments: dict[str, Any]) -> dict[str, list[Sample]]:
    """The test split's photos of a training run given its recorded `arguments`, by clip name: the reals of each
    origin (`heldout-<origin>`) and the data set's own fakes (`heldout-fakes-<origin>`); no video frames."""
    defaults = {
        "synthetic": 0.0,
        "frames_per_video": FRAMES_PER_VIDEO,
        "extra_reals": [],
        "reviewed": [],
        "reviewed_weight": 1,
        "max_images": None,
    }
    args = argparse.Namespace(**{**defaults, **arguments})
    args.data = Path(args.data)
    args.extra_reals = [Path(folder) for folder in args.extra_reals]
    args.reviewed = [Path(folder) for folder in args.reviewed]
    extra = {folder.name for folder in args.extra_reals}
    by_clip: dict[str, list[Sample]] = defaultdict(list)
    for sample in split_samples(args).test:
        if sample.frame is None:
            kind = "heldout" if sample.label == REAL else "heldout-fakes"
            by_clip[f"{kind}-{origin(sample, extra)}"].append(sample)
    return dict(by_clip)


def folder_photos(folder: Path) -> list[Sample]:
    """Every image below `folder`, in path order, as real samples; SystemExit when there is none."""
    images = image_files(folder)
    if not images:
        raise SystemExit(f"no images in {folder}")
    return [Sample(path, REAL, path.stem) for path in images]


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


def write_clip(samples: list[Sample], path: Path, frames_per_photo: int = FRAMES_PER_PHOTO) -> int:
    """`frames_per_photo` frames per photo (one second by default), zooming slowly, H.264 (yuv420p, CRF 23);
    returns the number of frames written."""
    frames = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for sample in samples:
            photo = read_image(sample.path)
            for step in range(frames_per_photo):
                image = _frame(photo, 1.0 + ZOOM * step / frames_per_photo)
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
    parser.add_argument(
        "--photos", type=Path, action="append", default=[], help="also a clip of every photo in this folder"
    )
    parser.add_argument("--seconds-per-photo", type=int, default=5, help="for --photos (default 5)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    recorded = ModelPackage.load(args.model).manifest.provenance["arguments"]
    for name, samples in sorted(heldout_photos(recorded).items()):
        chosen = [samples[i] for i in spread(len(samples), args.per_origin)]
        frames = write_clip(chosen, args.out / f"{name}.mp4")
        print(f"{args.out / name}.mp4: {len(chosen)} of {len(samples)} held-out photos, {frames} frames")
    for folder in args.photos:
        photos = folder_photos(folder)
        path = args.out / f"photos-{folder.name}.mp4"
        frames = write_clip(photos, path, RATE * args.seconds_per_photo)
        print(f"{path}: {len(photos)} photos, {frames} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
