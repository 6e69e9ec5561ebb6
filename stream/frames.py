"""The frame that travels through the pipeline, and the interface every video source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass
class Frame:
    """One decoded RGB frame with where and when it came from.

    `capture_time` is `time.monotonic()` when the frame left the decoder; end-to-end latency is measured from it.
    `pts` is in units of `time_base` (seconds = pts * time_base), None when the source has no timestamps.
    """

    stream_id: str
    index: int
    image: np.ndarray
    capture_time: float
    pts: int | None = None
    time_base: Fraction | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"frame image must be (H, W, 3) uint8 RGB, got {self.image.shape} {self.image.dtype}"
            )

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def seconds(self) -> float | None:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)


class FrameSource(ABC):
    """A stream of frames: a file, an RTSP camera or a WebRTC track. Iterate it; close it when done."""

    stream_id: str

    @property
    @abstractmethod
    def fps(self) -> float | None:
        """Nominal frame rate, None when unknown."""

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Decoded frames in order; ends at end of input."""

    @abstractmethod
    def close(self) -> None:
        """Release the input; safe to call twice."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
