"""Video files as a frame source, and the PyAV open/decode steps that network sources reuse.

`open_video` and `VideoDecoder` know nothing about files: an RTSP source calls
`open_video(url, options, timeout)` and iterates a `VideoDecoder` the same way, with its own reconnect policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from models.errors import InputError
from stream.sources.frames import Frame, FrameSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a sink needs to reproduce a video stream's geometry and timing.

    `rate` is the nominal frame rate and `time_base` the unit of frame pts; either may be None when unknown.
    `frame_count` is an estimate from the container (None when it gives none).
    """

    width: int
    height: int
    rate: Fraction | None
    time_base: Fraction | None
    frame_count: int | None = None
    codec: str = ""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"video size must be positive, got {self.width}x{self.height}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"frame rate must be positive, got {self.rate}")
        if self.time_base is not None and self.time_base <= 0:
            raise ValueError(f"time base must be positive, got {self.time_base}")

    @property
    def fps(self) -> float | None:
        return None if self.rate is None else float(self.rate)

    @staticmethod
    def of_stream(stream: VideoStream) -> VideoInfo:
        """Read the info of an opened PyAV video stream."""
        rate = stream.average_rate or stream.guessed_rate or None
        time_base = stream.time_base or None
        frame_count = stream.frames or None
        if stream.duration and rate and time_base:
            # The duration honours edit lists, which packet counts (stream.frames) do not.
            frame_count = round(stream.duration * time_base * rate)
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            rate=rate,
            time_base=time_base,
            frame_count=frame_count,
            codec=stream.codec_context.name,
        )


def _reason(error: Exception) -> str:
    """FFmpeg's own words for an error, without the errno and the repeated file name."""
    return str(getattr(error, "strerror", None) or error)


def open_video(
    target: str | Path,
    options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] | None = None,
) -> tuple[InputContainer, VideoStream]:
    """Open a file or URL and its first video stream; any failure is an `InputError`.

    Decoding uses slice threads only: FFmpeg's frame threads hold back one frame per extra thread (two frames,
    67 ms at 30 fps, with three threads) before the first comes out, a delay a live source cannot afford and
    that no latency metric sees (frames are stamped when decoded). Slice threads help streams sent in slices.
    """
    try:
        container = av.open(str(target), mode="r", options=options or {}, timeout=timeout)
    except (av.FFmpegError, OSError) as error:
        raise InputError(f"cannot open video {target}: {_reason(error)}") from error
    if not container.streams.video:
        container.close()
        raise InputError(f"no video stream in {target}")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    return container, stream


class VideoDecoder:
    """Demuxes a container's video stream and decodes it to RGB, skipping packets the codec rejects.

    Rejected packets are counted in `decode_errors`; demuxer errors (a broken container, a network timeout)
    propagate to the caller, which decides whether they end the input.
    """

    def __init__(self, container: InputContainer, stream: VideoStream) -> None:
        self.container = container
        self.stream = stream
        self.decode_errors = 0

    def images(self) -> Iterator[tuple[np.ndarray, int | None]]:
        """(RGB uint8 image, pts in the stream's time base) per frame, until the end of the input."""
        for packet in self.container.demux(self.stream):
            try:
                decoded = self.stream.decode(packet)
            except av.FFmpegError as error:
                self.decode_errors += 1
                logger.debug("skipped a corrupt packet at pts %s: %s", packet.pts, _reason(error))
                continue
            for frame in decoded:
                yield frame.to_ndarray(format="rgb24"), frame.pts


class FileSource(FrameSource):
    """Frames of a video file, optionally paced to real time and looped like a live camera.

    With `loop`, pts keep increasing across passes (each pass continues one frame after the last), as a
    camera's would. With `realtime`, each frame waits until its pts, counted from the first frame, is due.
    `clock` and `sleep` are injectable for tests. Iterate `frames()` once.
    """

    def __init__(
        self,
        path: str | Path,
        stream_id: str | None = None,
        *,
        realtime: bool = False,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.stream_id = stream_id if stream_id is not None else self.path.stem
        self.realtime = realtime
        self.loop = loop
        self._clock = clock
        self._sleep = sleep
        if not self.path.is_file():
            raise InputError(f"video file not found: {self.path}")
        self._container, self._stream = open_video(self.path)
        self._decoder = VideoDecoder(self._container, self._stream)
        self.video_info = VideoInfo.of_stream(self._stream)
        self._closed = False

    @property
    def fps(self) -> float | None:
        return self.video_info.fps

    @property
    def frame_count(self) -> int | None:
        """Estimated frames in one pass of the file (None when the container does not say)."""
        return self.video_info.frame_count

    @property
    def width(self) -> int:
        return self.video_info.width

    @property
    def height(self) -> int:
        return self.video_info.height

    @property
    def time_base(self) -> Fraction | None:
        return self.video_info.time_base

    @property
    def decode_errors(self) -> int:
        """Corrupt packets skipped so far, plus one if the container itself broke off."""
        return self._decoder.decode_errors

    def _frame_step(self) -> int:
        """One frame's duration in pts units (at least 1)."""
        rate, time_base = self.video_info.rate, self.video_info.time_base
        if rate is None or time_base is None:
            return 1
        return max(1, round(1 / (rate * time_base)))

    def _one_pass(self) -> Iterator[tuple[np.ndarray, int | None]]:
        """Decoded images of the file from its current position; a broken container ends the pass."""
        try:
            yield from self._decoder.images()
        except av.FFmpegError as error:
            self._decoder.decode_errors += 1
            logger.warning("%s: stopped reading at a broken container: %s", self.path, _reason(error))

    def frames(self) -> Iterator[Frame]:
        index = 0
        offset = 0
        last_pts: int | None = None
        started: tuple[float, float] | None = None  # (wall clock, media seconds) of the first frame
        while True:
            pass_start = index
            for image, raw_pts in self._one_pass():
                if raw_pts is None:
                    pts = None
                else:
                    if index == pass_start and last_pts is not None:
                        offset = last_pts + self._frame_step() - raw_pts
                    pts = raw_pts + offset
                    last_pts = pts
                if self.realtime:
                    media = self._media_seconds(index, pts)
                    if started is None:
                        started = (self._clock(), media)
                    delay = started[0] + (media - started[1]) - self._clock()
                    if delay > 0:
                        self._sleep(delay)
                yield Frame(self.stream_id, index, image, self._clock(), pts, self.time_base)
                index += 1
            if not self.loop or index == pass_start:
                break
            self._container.seek(0)
        if self.decode_errors:
            logger.warning("%s: skipped %d corrupt packets", self.path, self.decode_errors)

    def _media_seconds(self, index: int, pts: int | None) -> float:
        """A frame's time in the media: from its pts, else from its index and the frame rate."""
        if pts is not None and self.time_base is not None:
            return float(pts * self.time_base)
        return index / self.fps if self.fps else 0.0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()

    def __enter__(self) -> FileSource:
        return self
