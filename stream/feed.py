"""Annotated frames from a worker thread to WebRTC senders on the event loop, newest frame wins."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


def yuv420p_frame(image: np.ndarray) -> av.VideoFrame:
    """An RGB image as the yuv420p frame encoders take as is (odd edges cropped: 4:2:0 needs even sizes).

    Every viewer's encoder receives the same frame object. An rgb24 frame would be converted by each encoder
    with `frame.reformat`, whose cached swscale context is not safe across threads: two viewers of one stream
    crashed the process. Converting once here with OpenCV is also cheaper than one conversion per viewer.
    """
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    i420: np.ndarray = cv2.cvtColor(image[:height, :width], cv2.COLOR_RGB2YUV_I420).astype(
        np.uint8, copy=False
    )
    return av.VideoFrame.from_ndarray(i420, format="yuv420p")


class AnnotatedFeed:
    """The latest annotated frame of one stream. `publish` is called from the worker thread; tracks await `next`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._frame: av.VideoFrame | None = None
        self._capture_time = 0.0
        self._sequence = 0
        self._changed = asyncio.Condition()
        self._closed = False

    def publish(self, image: np.ndarray, capture_time: float) -> None:
        """Thread-safe: make `image` (RGB uint8) the frame every viewer sends next."""
        frame = yuv420p_frame(image)
        try:
            self._loop.call_soon_threadsafe(self._set, frame, capture_time)
        except RuntimeError:  # the loop closed at shutdown: nobody is watching any more
            pass

    def _set(self, frame: av.VideoFrame, capture_time: float) -> None:
        self._frame, self._capture_time = frame, capture_time
        self._sequence += 1
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def next(self, after: int) -> tuple[int, av.VideoFrame, float]:
        """Wait for a frame newer than sequence `after`; raise MediaStreamError once the feed is closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._sequence > after or self._closed)
        if self._closed or self._frame is None:
            raise MediaStreamError
        return self._sequence, self._frame, self._capture_time

    async def close(self) -> None:
        self._closed = True
        await self._notify()


class AnnotatedTrack(MediaStreamTrack):
    """A stream's annotated frames as a video track; stale frames are skipped, never queued.

    Create one per stream and give each viewer `MediaRelay().subscribe(track, buffered=False)`: the frame objects
    are shared by all viewers, so this track alone stamps their pts.
    """

    kind = "video"

    def __init__(self, feed: AnnotatedFeed, on_sent: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self._feed = feed
        self._sequence = 0
        self._start: float | None = None
        self._on_sent = on_sent

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._sequence, frame, capture_time = await self._feed.next(self._sequence)
        now = time.monotonic()
        if self._start is None:
            self._start = now
        frame.pts = int((now - self._start) * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        if self._on_sent is not None:
            self._on_sent(now - capture_time)
        return frame
