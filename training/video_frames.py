"""Frames of video files for training and evaluation (PyAV): frame counts, evenly spread indices, decoding.

A frame is addressed by its index in decode order (0 = the first decoded frame), not by timestamp, so sampling is
the same whatever the container's time base.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from models.errors import InputError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})


def frame_count(path: Path) -> int:
    """Number of video frames: from the container's header when it says, else by decoding the whole stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))
    except (av.error.FFmpegError, OSError) as exc:  # av.error.FileNotFoundError is both
        raise InputError(f"{path}: cannot read video ({exc})") from exc


def spread(count: int, n: int) -> list[int]:
    """`n` frame indices spread evenly over `count` frames, first and last included (all when `count <= n`)."""
    if n < 1:
        raise ValueError(f"frames per video must be >= 1, got {n}")
    if count <= n:
        return list(range(count))
    if n == 1:
        return [count // 2]
    return [int(i) for i in np.round(np.linspace(0, count - 1, n))]


def read_frames(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    """RGB uint8 frames at `indices` (any order, repeats allowed), decoding the video once up to the last one."""
    wanted = set(indices)
    found: dict[int, np.ndarray] = {}
    if wanted:
        last = max(wanted)
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(container.decode(stream)):
                    if index in wanted:
                        found[index] = frame.to_ndarray(format="rgb24")
                    if index >= last:
                        break
        except (av.error.FFmpegError, OSError, IndexError) as exc:
            raise InputError(f"{path}: cannot decode video ({exc})") from exc
    missing = sorted(wanted - set(found))
    if missing:
        raise InputError(f"{path}: the video ends before frame {missing[0]}")
    return [found[i] for i in indices]
