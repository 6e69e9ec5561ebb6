"""BlazeFace short against full range (and full range over tiles): faces found and cost per call, on the shared
clips and photos as they are and placed small in larger frames (a camera a few metres away). Not part of
`fakeweb bench`: it needs `../shared/data`. Method and results: docs/performance.md, "Detector range".

    nice -n 10 python -m stream.bench.detector_range [--data ../shared/data] [--every 2] [--json F]

There is no ground truth: the faces to find were checked by eye (`STAGE_SHOTS`, `PHOTOS`); moving faces are
followed by FaceMesh from a first box, and scenes built from the frames carry the boxes along. A detection finds
a face when it holds that face's centre and no other's and is at most twice as wide; a box holding two or more
centres is merged; any other detection is "other" (a false alarm or a face nobody listed: the pianist, the
audience).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from models.blazeface import RawFaces, suppression_clusters, weighted_nms
from models.detector import DetectorConfig, FaceDetector
from models.geometry import Box, Detection
from models.landmarks import FaceMesher
from stream.bench.procstat import load_average

Scene = tuple[np.ndarray, list[Box]]
"""An RGB image and the reference boxes of the faces to find in it."""

# Hand-checked boxes (x, y, side) of the faces to find. Moving frontal faces are followed by FaceMesh from a first
# box; in the still shots (a fixed camera, people moving by a few pixels) and the photos the box is fixed, checked
# on the frames. The stage clip's frames 20-81 pan across a blurred audience: no countable faces, not used.
FOLLOWED = "followed"
FIXED = "fixed"
STAGE_SHOTS = {
    "stage: singer far (0-19)": (0, 20, FIXED, [(519, 53, 46)]),
    "stage: singer close (82-210)": (82, 211, FOLLOWED, [(136, 57, 95)]),
    "stage: two side by side (211-274)": (211, 275, FIXED, [(306, 57, 66), (362, 98, 84)]),
}
PHOTOS = {
    "two_people.jpg": [(785, 88, 171), (231, 57, 174)],
    "obama_and_biden.jpg": [(1143, 402, 198), (731, 423, 221)],
    "kit_with_rose.jpg": [(264, 97, 100), (73, 120, 99)],
    "biden.jpg": [(416, 239, 338)],
    "obama-720p.jpg": [(571, 92, 183)],
}
TALKING_HEAD = (141, 91, 186)


def _box(x: float, y: float, side: float) -> Box:
    return Box(x, y, x + side, y + side)


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def fixed(frames: list[np.ndarray], seeds: list[tuple[int, int, int]]) -> list[Scene]:
    return [(frame, [_box(*seed) for seed in seeds]) for frame in frames]


def follow(frames: list[np.ndarray], seeds: list[tuple[int, int, int]]) -> list[Scene]:
    """Each seeded face followed through `frames` by FaceMesh (three passes on the first frame to settle)."""
    scenes: list[Scene] = []
    boxes = [_box(*seed) for seed in seeds]
    with FaceMesher() as mesher:
        for index, frame in enumerate(frames):
            for _ in range(3 if index == 0 else 1):
                for face, box in enumerate(boxes):
                    points = mesher.landmarks(frame, face, box)
                    if points is None:
                        raise RuntimeError(f"FaceMesh lost face {face} in frame {index}")
                    boxes[face] = Box(*points.min(axis=0), *points.max(axis=0))
            scenes.append((frame, list(boxes)))
    return scenes


def place(scene: Scene, scale: float, canvas: tuple[int, int], at: tuple[float, float]) -> Scene:
    """`scene` resized by `scale` onto a plain textured (width, height) canvas, its centre at `at` (fractions);
    cut around its faces where it is larger than the canvas."""
    image, boxes = scene
    width, height = canvas
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation)
    faces = np.mean([b.center for b in boxes], axis=0) * scale
    x0, y0 = (
        int(np.clip(at[i] * side - size / 2, 0, side - size))
        if size <= side
        else -int(np.clip(faces[i] - side / 2, 0, size - side))
        for i, size, side in ((0, small.shape[1], width), (1, small.shape[0], height))
    )
    out = _background(width, height).copy()
    part = small[max(0, -y0) : max(0, -y0) + height, max(0, -x0) : max(0, -x0) + width]
    out[max(0, y0) : max(0, y0) + part.shape[0], max(0, x0) : max(0, x0) + part.shape[1]] = part
    moved = [Box(b.x1 * scale + x0, b.y1 * scale + y0, b.x2 * scale + x0, b.y2 * scale + y0) for b in boxes]
    return out, moved


@functools.cache
def _background(width: int, height: int) -> np.ndarray:
    rows = np.linspace(70, 150, height, dtype=np.float32)[:, None, None]
    noise = np.random.default_rng(0).normal(0.0, 5.0, (height, width, 1)).astype(np.float32)
    return np.clip(rows + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)


class Scenes:
    """`make` applied to each source when it is read: the 1080p frames are not all held at once."""

    def __init__(
        self, sources: Sequence[Any], make: Callable[[Any], Scene] | None = None, meshed: bool = False
    ) -> None:
        self.sources, self.make = sources, make or (lambda scene: scene)
        self.meshed = meshed
        """Whether the references were followed by FaceMesh (hand-fixed boxes say nothing of box offsets)."""

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Scene:
        return self.make(self.sources[index])

    def __iter__(self) -> Iterator[Scene]:
        return (self.make(source) for source in self.sources)


def side_by_side(left: Scene, right: Scene) -> Scene:
    """Two scenes each scaled to half of a 1920x1080 frame's width, side by side."""
    one = place(left, 960 / left[0].shape[1], (960, 1080), (0.5, 0.5))
    two = place(right, 960 / right[0].shape[1], (960, 1080), (0.5, 0.5))
    shifted = [Box(b.x1 + 960, b.y1, b.x2 + 960, b.y2) for b in two[1]]
    return np.hstack([one[0], two[0]]), one[1] + shifted


def face_width(scenes: Iterable[Scene]) -> float:
    return statistics.median(b.width for _, boxes in scenes for b in boxes)


SPOTS = [(x, y) for y in (0.35, 0.5, 0.65) for x in (0.25, 0.5, 0.75)]
"""Where the scenes go, frame after frame: the models' anchor grids are coarse, so vary the position."""


def sized(scenes: list[Scene], fraction: float, canvas: tuple[int, int], meshed: bool) -> Scenes:
    """The scenes scaled so that their median face is `fraction` of the canvas' longer side, placed in turn at
    each of `SPOTS`."""
    scale = fraction * max(canvas) / face_width(scenes)
    return Scenes(
        list(enumerate(scenes)),
        lambda item: place(item[1], scale, canvas, SPOTS[item[0] % len(SPOTS)]),
        meshed,
    )


LIVE = (1280, 720)
"""The largest frame the live service processes (`max_width` x `max_height`): cameras are shrunk to it."""
ONE_FACE = (3, 4, 5, 6, 8, 10, 13, 18, 25, 35)
TWO_FACES = (5, 8, 12, 18, 25)
"""Face widths swept, in % of the frame's longer side (the detectors see the frame shrunk to 128 or 192)."""


def scenarios(data: Path, every: int) -> dict[str, Scenes]:
    talking = follow(decode(data / "video" / "talking_head.mp4"), [TALKING_HEAD])[::every]
    stage_frames = decode(data / "video" / "two_people_stage.mp4")
    stage = {
        name: (follow if how == FOLLOWED else fixed)(stage_frames[start:stop], seeds)[::every]
        for name, (start, stop, how, seeds) in STAGE_SHOTS.items()
    }
    pair = stage["stage: two side by side (211-274)"]
    photos = []
    for name, seeds in PHOTOS.items():
        image = cv2.cvtColor(cv2.imread(str(data / "images" / name)), cv2.COLOR_BGR2RGB)
        photos.append(fixed([image], seeds)[0])
    return {
        "talking_head 480x360": Scenes(talking, meshed=True),
        "talking_head in 640x480 (webcam)": Scenes(
            talking, lambda scene: place(scene, 640 / 480, (640, 480), (0.5, 0.5)), meshed=True
        ),
        **{name: Scenes(scenes, meshed=STAGE_SHOTS[name][2] == FOLLOWED) for name, scenes in stage.items()},
        "photos (5, 8 faces)": Scenes(photos),
        **{f"1 face, {p}% of 1280x720": sized(talking, p / 100, LIVE, True) for p in ONE_FACE},
        **{f"2 side by side, {p}% of 1280x720": sized(pair, p / 100, LIVE, False) for p in TWO_FACES},
        **{
            f"1 face, {p}% of 1080x1920 (DFDC-like)": sized(talking, p / 100, (1080, 1920), True)
            for p in (5, 8)
        },
        "two clips side by side, 1920x1080": Scenes(
            list(zip(talking[:: max(1, len(talking) // len(pair))], pair, strict=False)),
            lambda two: side_by_side(*two),
        ),
    }


class Tiled:
    """Full range on the whole frame and on square tiles along its longer side (overlapping), the candidates of
    every pass suppressed together: smaller faces for 3x the cost on a 16:9 frame. Not used by the service."""

    def __init__(self) -> None:
        self.full = FaceDetector(DetectorConfig(range="full"))

    def candidates(self, image: np.ndarray) -> RawFaces:
        height, width = image.shape[:2]
        side, long = min(width, height), max(width, height)
        count = int(np.ceil(long / side))
        parts = [self.full.candidates(image)]
        for start in np.linspace(0, long - side, count).astype(int) if count > 1 else ():
            x, y = (start, 0) if width > height else (0, start)
            raw = self.full.candidates(image[y : y + side, x : x + side])
            parts.append(RawFaces(raw.boxes + [x, y, x, y], raw.scores, raw.keypoints + [x, y]))
        return RawFaces(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("boxes", "scores", "keypoints"))
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        faces = weighted_nms(self.candidates(image))
        found = []
        for box, score, points in zip(faces.boxes, faces.scores, faces.keypoints, strict=True):
            x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
            x2, y2 = min(float(width), float(box[2])), min(float(height), float(box[3]))
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                found.append(Detection(Box(x1, y1, x2, y2), float(score), points))
        return found


@dataclass
class Tally:
    frames: int = 0
    faces: int = 0
    found: int = 0
    frames_all_found: int = 0
    merged: int = 0
    other: int = 0
    nms_mixed: int = 0
    """Suppression clusters whose candidates sit on different reference faces (weighted NMS blending faces)."""
    offsets: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def _holds(box: Box, face: Box) -> bool:
    x, y = face.center
    return box.x1 <= x <= box.x2 and box.y1 <= y <= box.y2


def measure(detector: FaceDetector | Tiled, scenes: Scenes) -> Tally:
    tally = Tally()
    for _ in range(3):
        detector.detect(scenes[0][0])
    for image, faces in scenes:
        start, cpu = time.perf_counter(), time.thread_time()
        found = detector.detect(image)
        tally.cpu.append(time.thread_time() - cpu)
        tally.wall.append(time.perf_counter() - start)
        tally.frames += 1
        tally.faces += len(faces)
        matched = set()
        for detection in found:
            inside = [i for i, face in enumerate(faces) if _holds(detection.box, face)]
            if len(inside) >= 2:
                tally.merged += 1
            elif (
                len(inside) == 1
                and inside[0] not in matched
                and detection.box.width <= 2 * faces[inside[0]].width
            ):
                matched.add(inside[0])
                face = faces[inside[0]]
                tally.offsets.append(
                    float(np.hypot(*np.subtract(detection.box.center, face.center)) / face.width)
                )
            else:
                tally.other += 1
        tally.found += len(matched)
        tally.frames_all_found += len(matched) == len(faces)
        raw = detector.candidates(image)
        for cluster in suppression_clusters(raw):
            owners = [
                [i for i, face in enumerate(faces) if _holds(Box(*box), face)] for box in raw.boxes[cluster]
            ]
            tally.nms_mixed += len({inside[0] for inside in owners if len(inside) == 1}) >= 2
    return tally


def run(data: Path, every: int) -> list[dict[str, object]]:
    detectors: dict[str, FaceDetector | Tiled] = {
        "short": FaceDetector(DetectorConfig(range="short")),
        "full": FaceDetector(DetectorConfig(range="full")),
        "full+tiles": Tiled(),
    }
    rows: list[dict[str, object]] = []
    for name, scenes in scenarios(data, every).items():
        height, width = scenes[0][0].shape[:2]
        for range_name, detector in detectors.items():
            t = measure(detector, scenes)
            rows.append(
                {
                    "scene": name,
                    "size": f"{width}x{height}",
                    "face_px": round(face_width(scenes)),
                    "range": range_name,
                    "frames": t.frames,
                    "faces": t.faces,
                    "recall": round(100.0 * t.found / t.faces, 1),
                    "all_found": round(100.0 * t.frames_all_found / t.frames, 1),
                    "merged": t.merged,
                    "other": t.other,
                    "nms_mixed": t.nms_mixed,
                    "offset": round(100.0 * statistics.median(t.offsets), 1)
                    if t.offsets and scenes.meshed
                    else "-",
                    "cpu_ms": round(1000.0 * statistics.median(t.cpu), 2),
                    "wall_ms": round(1000.0 * statistics.median(t.wall), 2),
                }
            )
            print("| " + " | ".join(str(value) for value in rows[-1].values()) + " |", flush=True)
    return rows


HEADER = (
    "| scene | frame | face px | range | frames | faces | recall % | frames with all | merged | other | NMS mixed "
    "| centre offset % | ms CPU | ms wall |"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--every", type=int, default=2, help="use every Nth video frame (default 2)")
    parser.add_argument("--json", type=Path, help="write the rows and the load average here")
    args = parser.parse_args(argv)
    before = load_average()
    print(HEADER)
    print("|" + " --- |" * (HEADER.count("|") - 1))
    rows = run(args.data, args.every)
    after = load_average()
    print(f"load average (1 min): {before[0]:.2f} before, {after[0]:.2f} after")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_average": [before[0], after[0]]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
