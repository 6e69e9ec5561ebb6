"""The frame that travels through the pipeline, the one conversion of a decoded picture into it, and the interface
every video source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from stream.runtime.timing import StageTimes


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


def fitted_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The (width, height) a width x height picture is processed at: as is when it fits within max_width x
    max_height, else shrunk to fit with its aspect kept, each side rounded to the nearest pixel (at least 1)."""
    scale = min(max_width / width, max_height / height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def rgb_within(picture: av.VideoFrame, max_width: int, max_height: int) -> np.ndarray:
    """`picture` as an RGB image of `fitted_size`, converted and downscaled in one swscale pass (bilinear).

    The one conversion of camera and browser frames. CPU time per frame (PyAV 18, OpenCV 4.11): 1920x1080 to
    1280x720, 3.0 ms against 7.6 ms for an RGB conversion then OpenCV's INTER_AREA; 1280x720 to 640x360, 0.75
    against 0.70 ms (INTER_AREA is quick at whole ratios only). The RGB intermediate at full size is not made.
    """
    width, height = fitted_size(picture.width, picture.height, max_width, max_height)
    return picture.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")


@dataclass(frozen=True)
class DecodedFrame:
    """A picture as decoded (a camera's or a browser's), not yet RGB: `to_frame` converts it on the thread that
    takes it, timed as the `decode` stage, so a frame dropped before anyone takes it costs its decode only."""

    stream_id: str
    index: int
    picture: av.VideoFrame
    capture_time: float
    max_width: int
    max_height: int
    pts: int | None = None
    time_base: Fraction | None = None

    def to_frame(self, times: StageTimes) -> Frame:
        with times.measure("decode"):
            image = rgb_within(self.picture, self.max_width, self.max_height)
        return Frame(self.stream_id, self.index, image, self.capture_time, self.pts, self.time_base)


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
