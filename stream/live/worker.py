"""One thread per stream: take the newest input frame, run the pipeline, hand the annotated frame on.

Input arrives from an RTSP reader thread or a WebRTC receive task through a `LatestSlot`, so a slow pipeline drops
stale frames (counted) instead of building a backlog.

Workers may share a `gate` (a `FairGate`: one permit per frame that may be processed at once, across all
streams, handed out in turn). A worker takes its newest frame only once it holds a permit, so with more streams
than cores a frame waits as a replaceable item in its slot, not half-processed on a starved thread: each
processed frame takes about its own processing time whatever the number of streams, and the others are dropped.
A frame replaced while its worker waits for a permit is dropped for overload (the service is saturated); one
replaced while the worker processes the frame before is stale (this stream's pipeline is slower than its input).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.pipeline.pipeline import FaceResult, FrameResult, StreamPipeline
from stream.runtime.affinity import RolePinning
from stream.runtime.latest import LatestSlot, SlotClosed
from stream.runtime.thread_names import WORKER, stream_thread_name
from stream.runtime.timing import StageTimes
from stream.sources.frames import DecodedFrame, Frame

logger = logging.getLogger(__name__)

FrameInput = Frame | DecodedFrame
"""A frame ready for the pipeline, or a decoded picture that the worker converts when it takes it."""
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


class FairGate:
    """Permits to process a frame, handed out in the order they were asked for.

    A worker that has just finished a frame queues behind the workers already waiting (a plain semaphore lets
    it take the permit straight back, starving the others).
    """

    def __init__(self, permits: int) -> None:
        if permits < 1:
            raise ValueError(f"permits must be >= 1, got {permits}")
        self.permits = permits
        self._lock = threading.Lock()
        self._free = permits
        self._waiting: deque[threading.Event] = deque()

    def acquire(self, wanted: Callable[[], bool], poll: float = 0.5) -> bool:
        """Wait for a permit while `wanted()` (asked every `poll` s); False, holding none, once it is not."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        while not turn.wait(poll):
            if not wanted():
                with self._lock:
                    if turn.is_set():  # handed over just now: pass it on
                        self._release_locked()
                    else:
                        self._waiting.remove(turn)
                return False
        return True

    def release(self) -> None:
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        if self._waiting:
            self._waiting.popleft().set()  # straight to the longest waiting worker
        else:
            self._free += 1


class StreamWorker:
    """Runs `pipeline` over the newest frames put into `submit`, calling `on_output` for each processed frame, on
    thread `worker-<stream id>` in the "model" role of `pinning` (unpinned without one)."""

    def __init__(
        self,
        pipeline: StreamPipeline,
        on_output: OutputFn,
        gate: FairGate | None = None,
        pinning: RolePinning | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._gate = gate
        self.stream_id = pipeline.stream_id
        self._on_output = on_output
        self._slot: LatestSlot[FrameInput] = LatestSlot()
        self._thread = threading.Thread(
            target=(pinning or RolePinning()).runs_as("model", self._run),
            name=stream_thread_name(WORKER, self.stream_id),
            daemon=True,
        )
        self.stats = StreamStats()

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: FrameInput) -> None:
        """Offer a frame; never blocks. An unprocessed older frame is dropped and counted."""
        self.stats.received += 1
        self._slot.put(item)

    @property
    def dropped(self) -> int:
        """Frames replaced before the worker took them: stale plus overload."""
        return self._slot.dropped

    @property
    def dropped_stale(self) -> int:
        """Frames replaced while the worker processed the frame before."""
        return self._slot.dropped - self._slot.dropped_held  # read in this order: never above the true count

    @property
    def dropped_overload(self) -> int:
        """Frames replaced while the worker waited for a permit of the gate."""
        return self._slot.dropped_held

    @property
    def queue_depth(self) -> int:
        return self._slot.depth

    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._gate is None:
                        item = self._slot.get(timeout=1.0)
                        if item is not None:
                            self._process(item)
                    elif self._slot.wait(timeout=1.0) and self._gate.acquire(lambda: not self._slot.closed):
                        try:
                            item = self._slot.get(timeout=0)  # the newest, taken only now
                            if item is not None:
                                self._process(item)
                        finally:
                            self._gate.release()
                except SlotClosed:
                    return
        finally:
            self.pipeline.close()

    def _process(self, item: FrameInput) -> None:
        times = StageTimes()
        try:
            frame = item.to_frame(times) if isinstance(item, DecodedFrame) else item
            result = self.pipeline.process(frame, times)
            self._on_output(frame, result)
        except Exception:  # one bad frame must not stop the stream
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
