"""Synthetic test videos built from skimage's astronaut photo, with the face boxes they contain.

Clips are H.264 in MP4 with no B-frames and a keyframe every 30 frames, so an RTSP server can also serve them.
Frame `i` has pts `i` in a time base of `1 / fps` (the MP4 muxer may store a finer time base).
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage.data import astronaut

from models.geometry import Box

# Square around the astronaut's face in the 512x512 photo (y1, y2, x1, x2), and the BlazeFace box of the face
# relative to that square (x1, y1, x2, y2), measured with models.detector.FaceDetector (and on its mirror).
FACE_CROP = (30, 230, 125, 325)
FACE_IN_CROP = (0.25, 0.22, 0.75, 0.73)


@dataclass(frozen=True)
class ClipTruth:
    """What a synthetic clip holds: per frame, face id -> face box in pixels (ids are stable over frames)."""

    width: int
    height: int
    fps: Fraction
    faces: list[dict[int, Box]]

    @property
    def frame_count(self) -> int:
        return len(self.faces)

    @property
    def time_base(self) -> Fraction:
        return 1 / self.fps

    def boxes(self, index: int) -> list[Box]:
        """Face boxes of frame `index`, by face id."""
        return [self.faces[index][face_id] for face_id in sorted(self.faces[index])]


def face_crop(mirrored: bool = False) -> np.ndarray:
    """The square RGB crop around the astronaut's face."""
    y1, y2, x1, x2 = FACE_CROP
    crop = astronaut()[y1:y2, x1:x2]
    return np.ascontiguousarray(crop[:, ::-1] if mirrored else crop)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A grey vertical gradient with mild fixed noise: no face, some texture for the encoder."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(70, 150, height, dtype=np.float32)[:, None, None]
    noise = rng.normal(0.0, 6.0, (height, width, 3)).astype(np.float32)
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def paste_face(image: np.ndarray, crop: np.ndarray, center: tuple[float, float], size: int) -> Box:
    """Paste `crop` as a `size` px square centred at `center`, kept inside `image`; return its face box."""
    height, width = image.shape[:2]
    if size > min(width, height):
        raise ValueError(f"a {size}px face does not fit a {width}x{height} frame")
    x0 = min(max(round(center[0] - size / 2), 0), width - size)
    y0 = min(max(round(center[1] - size / 2), 0), height - size)
    image[y0 : y0 + size, x0 : x0 + size] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    fx1, fy1, fx2, fy2 = FACE_IN_CROP
    return Box(x0 + fx1 * size, y0 + fy1 * size, x0 + fx2 * size, y0 + fy2 * size)


def write_h264(path: Path, images: Iterable[np.ndarray], fps: Fraction) -> Path:
    """Encode RGB frames to an H.264 MP4 (yuv420p, no B-frames, GOP 30); frame i gets pts i in 1/fps."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"bf": "0", "g": "30", "preset": "veryfast"}
        )
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / fps
        for index, image in enumerate(images):
            if index == 0:
                stream.height, stream.width = image.shape[:2]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def moving_face_clip(
    folder: Path, size: tuple[int, int] = (320, 240), fps: int = 25, seconds: float = 2.0
) -> tuple[Path, ClipTruth]:
    """One face drifting left to right along a gentle wave, growing from 40% to 60% of the frame height."""
    width, height = size
    crop = face_crop()
    base = background(width, height)
    count = round(fps * seconds)
    images: list[np.ndarray] = []
    faces: list[dict[int, Box]] = []
    for index in range(count):
        t = index / max(count - 1, 1)
        face_size = round(height * (0.4 + 0.2 * t))
        center = (width * (0.3 + 0.4 * t), height * (0.5 + 0.08 * math.sin(2 * math.pi * t)))
        image = base.copy()
        faces.append({0: paste_face(image, crop, center, face_size)})
        images.append(image)
    path = write_h264(folder / "moving_face.mp4", images, Fraction(fps))
    return path, ClipTruth(width, height, Fraction(fps), faces)


def two_faces_clip(
    folder: Path, size: tuple[int, int] = (480, 360), fps: int = 25, seconds: float = 3.0
) -> tuple[Path, ClipTruth]:
    """Face 0 sways on the left all along; face 1 (mirrored) shows on the right from 1/3 to 2/3 of it."""
    width, height = size
    crop, mirrored = face_crop(), face_crop(mirrored=True)
    base = background(width, height, seed=1)
    count = round(fps * seconds)
    face_size = round(height * 0.4)
    images: list[np.ndarray] = []
    faces: list[dict[int, Box]] = []
    for index in range(count):
        t = index / max(count - 1, 1)
        image = base.copy()
        boxes = {
            0: paste_face(
                image, crop, (width * (0.25 + 0.05 * math.sin(2 * math.pi * t)), height * 0.5), face_size
            )
        }
        if count // 3 <= index < 2 * count // 3:
            boxes[1] = paste_face(image, mirrored, (width * 0.72, height * (0.45 + 0.1 * t)), face_size)
        faces.append(boxes)
        images.append(image)
    path = write_h264(folder / "two_faces.mp4", images, Fraction(fps))
    return path, ClipTruth(width, height, Fraction(fps), faces)


def color_clip(
    folder: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (64, 48), frames: int = 10, fps: int = 25
) -> Path:
    """A clip of one solid colour, to check channel order after decoding."""
    width, height = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = rgb
    name = "color_{:02x}{:02x}{:02x}.mp4".format(*rgb)
    return write_h264(folder / name, (image for _ in range(frames)), Fraction(fps))


def corrupt_copy(path: Path, out: Path, start: float = 0.4, length: float = 0.2, seed: int = 0) -> Path:
    """Copy `path` with its bytes from `start` to `start + length` (fractions of the size) made noise."""
    data = bytearray(path.read_bytes())
    first, count = int(len(data) * start), int(len(data) * length)
    data[first : first + count] = (
        np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    )
    out.write_bytes(bytes(data))
    return out


def truncated_copy(path: Path, out: Path, keep: float = 0.5) -> Path:
    """Copy only the first `keep` fraction of the bytes of `path`."""
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def audio_only_file(path: Path, seconds: float = 0.5, rate: int = 8000) -> Path:
    """A silent mono WAV file: a valid media file with no video stream."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return path
