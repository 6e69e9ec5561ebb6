"""The benchmark's default clip: one real face (the shipped reference face) moving over a textured background.

640x480 at 30 fps by default, H.264 (yuv420p, no B-frames, keyframe every 30 frames) in MP4, so the same file
can be read as a file, paced like a camera, or served by an RTSP server. Built from `models/reference_face.jpg`
with OpenCV and PyAV only (no dev dependency).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from models.reference import reference_face

DEFAULT_SIZE = (640, 480)
DEFAULT_FPS = 30
DEFAULT_SECONDS = 10.0
FACE_FRACTION = 0.45
"""Side of the pasted face square as a fraction of the frame height (BlazeFace short range finds it)."""


def _background(width: int, height: int) -> np.ndarray:
    """A vertical grey ramp with fixed mild noise: texture for the encoder, no face."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 160, height, dtype=np.float32)[:, None, None]
    noise = rng.normal(0.0, 6.0, (height, width, 3)).astype(np.float32)
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def _feather(size: int) -> np.ndarray:
    """(size, size, 1) float32 alpha: an ellipse fading to 0 at the square's edge, so no hard border."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2.0
    radius = np.hypot((x - centre) / (0.5 * size), (y - centre) / (0.56 * size))
    return np.clip((1.0 - radius) / 0.12, 0.0, 1.0)[..., None]


def face_frame(
    t: float, background: np.ndarray, face: np.ndarray, face_size: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The frame at phase `t` in [0, 1]: the face drifting left-right on a gentle wave; and its top-left corner."""
    height, width = background.shape[:2]
    cx = width * (0.5 + 0.25 * math.sin(2 * math.pi * t))
    cy = height * (0.5 + 0.06 * math.sin(4 * math.pi * t))
    x0 = min(max(round(cx - face_size / 2), 0), width - face_size)
    y0 = min(max(round(cy - face_size / 2), 0), height - face_size)
    resized = cv2.resize(face, (face_size, face_size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    alpha = _feather(face_size)
    image = background.copy()
    region = image[y0 : y0 + face_size, x0 : x0 + face_size].astype(np.float32)
    image[y0 : y0 + face_size, x0 : x0 + face_size] = (alpha * resized + (1 - alpha) * region).astype(
        np.uint8
    )
    return image, (x0, y0)


def make_face_clip(
    path: Path, size: tuple[int, int] = DEFAULT_SIZE, fps: int = DEFAULT_FPS, seconds: float = DEFAULT_SECONDS
) -> Path:
    """Write the one-face clip to `path` (H.264 MP4) and return `path`. One pass of the motion per clip."""
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"clip size must be even, got {width}x{height}")
    count = max(1, round(fps * seconds))
    background = _background(width, height)
    face = reference_face()
    face_size = round(height * FACE_FRACTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=Fraction(fps), options={"bf": "0", "g": "30", "preset": "veryfast", "crf": "23"}
        )
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index in range(count):
            image, _ = face_frame(index / count, background, face, face_size)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def default_clip(cache_dir: Path) -> Path:
    """The default clip in `cache_dir`, made on first use."""
    width, height = DEFAULT_SIZE
    path = cache_dir / f"face_{width}x{height}_{DEFAULT_FPS}fps.mp4"
    if not path.is_file():
        partial = path.with_suffix(".partial.mp4")
        make_face_clip(partial)
        partial.replace(path)
    return path
