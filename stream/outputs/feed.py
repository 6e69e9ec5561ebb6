"""A stream's annotated video for its viewers: frames from the worker thread, encoded once, packets on the event loop.

`publish` (any thread: the worker's annotated frames, a camera's placeholders) converts the image to yuv420p and
hands it to the stream's `StreamEncoder` (the newest frame wins), only while someone watches; as a `ResultSink`
(`stream.outputs.fanout`) the feed publishes every processed frame. Encoded frames come back to the event loop, where the last
`backlog` of them wait for the viewers' tracks (`stream.outputs.viewer.ViewerTrack`), which take them in order or skip to a
keyframe.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError

from stream.outputs.encoder import EncodedFrame, EncoderSettings, StreamEncoder
from stream.runtime.affinity import RolePinning
from stream.sources.frames import Frame

if TYPE_CHECKING:
    from stream.pipeline.pipeline import FrameResult

DEFAULT_BACKLOG = 3
"""Encoded frames kept for viewers (100 ms at 30 fps): a viewer delayed by a short event-loop stall catches up in
order; one further behind skips to a keyframe."""


def yuv420p_frame(image: np.ndarray) -> av.VideoFrame:
    """An RGB image as the yuv420p frame libvpx takes as is (odd edges cropped: 4:2:0 needs even sizes).

    Converted with OpenCV on the publishing thread: cheaper than swscale (`frame.reformat`) in the encoder.
    """
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    i420: np.ndarray = cv2.cvtColor(image[:height, :width], cv2.COLOR_RGB2YUV_I420).astype(
        np.uint8, copy=False
    )
    return av.VideoFrame.from_ndarray(i420, format="yuv420p")


class AnnotatedFeed:
    """The encoded annotated video of one stream. `publish` is called from any thread; the rest on the loop.

    `on_ready(seconds)` runs on the loop once per encoded frame: capture to encoded and ready for every viewer.
    The encoder's thread runs in the "codec" role of `pinning` (unpinned without one).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        settings: EncoderSettings | None = None,
        on_ready: Callable[[float], None] | None = None,
        on_encode: Callable[[float], None] | None = None,
        backlog: int = DEFAULT_BACKLOG,
        pinning: RolePinning | None = None,
    ) -> None:
        if backlog < 1:
            raise ValueError(f"backlog must be >= 1, got {backlog}")
        self._loop = loop
        self.encoder = StreamEncoder(name, self._from_encoder, settings, on_encode, pinning=pinning)
        self._on_ready = on_ready
        self._backlog: deque[EncodedFrame] = deque(maxlen=backlog)
        self._newest = -1
        self._changed = asyncio.Event()
        self._viewers = 0
        self._closed = False

    @property
    def viewers(self) -> int:
        """Viewer tracks taking frames now."""
        return self._viewers

    def start(self) -> None:
        self.encoder.start()

    def publish(self, frame: Frame) -> None:
        """Thread-safe: encode `frame`'s image next, unless nobody watches."""
        if self._viewers and not self._closed:
            self.encoder.submit(yuv420p_frame(frame.image), frame.capture_time)

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        """Worker thread: the processed frame, annotated, is the next to encode."""
        self.publish(frame)

    def _from_encoder(self, frame: EncodedFrame) -> None:
        try:
            self._loop.call_soon_threadsafe(self._add, frame)
        except RuntimeError:  # the loop closed at shutdown: nobody is watching any more
            pass

    def _add(self, frame: EncodedFrame) -> None:
        self._backlog.append(frame)
        self._newest = frame.sequence
        self._changed.set()  # wakes every waiting viewer; new waiters wait for the next frame
        self._changed.clear()
        if self._on_ready is not None:
            self._on_ready(time.monotonic() - frame.capture_time)

    def join(self) -> int:
        """A viewer starts taking frames: the sequence to wait after. Requests a keyframe for it."""
        self._viewers += 1
        self.encoder.request_keyframe()
        return self._newest

    def leave(self) -> None:
        self._viewers -= 1

    def request_keyframe(self) -> None:
        self.encoder.request_keyframe()

    async def newer_than(self, sequence: int) -> list[EncodedFrame]:
        """The kept frames after `sequence`, oldest first, once there is one; MediaStreamError once closed."""
        while self._newest <= sequence and not self._closed:
            await self._changed.wait()
        if self._closed:
            raise MediaStreamError
        return [frame for frame in self._backlog if frame.sequence > sequence]

    async def close(self) -> None:
        """End every viewer's video and stop the encoder."""
        self._closed = True
        self._changed.set()
        await asyncio.to_thread(self.encoder.close)
