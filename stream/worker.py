"""One thread per stream: take the newest input frame, run the pipeline, hand the annotated frame on.

Input arrives from an RTSP reader thread or a WebRTC receive task through a `LatestSlot`, so a slow pipeline drops
stale frames (counted) instead of building a backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from stream.frames import Frame
from stream.latest import LatestSlot, SlotClosed
from stream.pipeline import FaceResult, FrameResult, StreamPipeline
from stream.timing import StageTimes

logger = logging.getLogger(__name__)


class PendingFrame(Protocol):
    """An input not yet converted to a `Frame` (e.g. a WebRTC frame, converted on the worker, not the loop)."""

    def to_frame(self, times: StageTimes) -> Frame: ...


FrameInput = Frame | PendingFrame
OutputFn = Callable[[Frame, FrameResult], None]


@dataclass
class StreamStats:
    """Counters of one stream, read by the API and the metrics."""

    received: int = 0
    processed: int = 0
    errors: int = 0
    fps: float = 0.0
    last_frame_at: float | None = None
    faces: list[FaceResult] = field(default_factory=list)


class StreamWorker:
    """Runs `pipeline` over the newest frames put into `submit`, calling `on_output` for each processed frame."""

    def __init__(self, pipeline: StreamPipeline, on_output: OutputFn) -> None:
        self.pipeline = pipeline
        self.stream_id = pipeline.stream_id
        self._on_output = on_output
        self._slot: LatestSlot[FrameInput] = LatestSlot()
        self._thread = threading.Thread(target=self._run, name=f"worker-{self.stream_id}", daemon=True)
        self.stats = StreamStats()

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: FrameInput) -> None:
        """Offer a frame; never blocks. An unprocessed older frame is dropped and counted."""
        self.stats.received += 1
        self._slot.put(item)

    @property
    def dropped_stale(self) -> int:
        return self._slot.dropped

    @property
    def queue_depth(self) -> int:
        return self._slot.depth

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._slot.get(timeout=1.0)
                except SlotClosed:
                    return
                if item is not None:
                    self._process(item)
        finally:
            self.pipeline.close()

    def _process(self, item: FrameInput) -> None:
        times = StageTimes()
        try:
            frame = item if isinstance(item, Frame) else item.to_frame(times)
            result = self.pipeline.process(frame, times)
            self._on_output(frame, result)
        except Exception:  # noqa: BLE001 - one bad frame must not stop the stream
            self.stats.errors += 1
            if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                logger.exception(
                    "stream %s: frame failed (%d errors so far)", self.stream_id, self.stats.errors
                )
            return
        now = time.monotonic()
        if self.stats.last_frame_at is not None:
            interval = max(now - self.stats.last_frame_at, 1e-6)
            self.stats.fps = 0.9 * self.stats.fps + 0.1 / interval if self.stats.fps else 1.0 / interval
        self.stats.last_frame_at = now
        self.stats.processed += 1
        self.stats.faces = result.faces

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking frames, finish the current one, release the pipeline and join the thread."""
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
