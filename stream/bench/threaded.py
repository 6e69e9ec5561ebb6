"""One stream of a clip, unpaced, threaded as the live path runs it.

Decoding runs on a thread of its own, the pipeline on this (the worker's) thread (calling the classifier it was
given directly, where the service goes through its `ClassifierBatcher`), and each annotated frame is
published as yuv420p to the stream's `StreamEncoder`, which encodes the newest frame on its own thread. The decode
thread hands frames over a two-frame queue and waits when it is full (a file, unlike a camera, can wait), so
every frame is processed; the encoder keeps the newest frame, as live, so a few may be replaced unencoded.
Given a `RolePinning` with a split, the threads are pinned by role as the service's are (this one as a worker).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from stream.outputs.encoder import EncodedFrame, StreamEncoder
from stream.outputs.feed import yuv420p_frame
from stream.pipeline.pipeline import FrameResult, StreamPipeline
from stream.runtime.affinity import RolePinning
from stream.runtime.timing import StageTimes
from stream.sources.file_source import FileSource
from stream.sources.frames import Frame

_DRAIN_SECONDS = 10.0
"""How long to wait for the encoder to finish the submitted frames (one it failed on never finishes)."""


@dataclass
class ThreadedRun:
    """The measured frames of a threaded run: stage times of the delivered (encoded) ones, counts, costs."""

    delivered: list[StageTimes]
    processed: int
    dropped: int
    """Frames processed but replaced in the encoder's slot before it took them (not delivered)."""
    wall_seconds: float
    cpu_seconds: float
    """Process CPU time, all threads."""
    faces: int


def run_threaded(
    clip: Path,
    frames: int,
    pipeline: StreamPipeline,
    warmup: int = 0,
    on_processed: Callable[[FrameResult], None] | None = None,
    pinning: RolePinning | None = None,
) -> ThreadedRun:
    """`warmup` frames of `clip` (looped), then `frames` measured ones; see the module doc.

    The measurement starts once the warm-up frames are decoded, processed and encoded, with the decode thread
    held before the first measured frame. `on_processed` sees every frame's result (warm-up ones too: their
    `index` is below `warmup`) on this thread, right after the pipeline. The threads run in their roles of
    `pinning` (unpinned without one).
    """
    pinning = pinning or RolePinning()
    handoff: queue.Queue[tuple[Frame, StageTimes] | None] = queue.Queue(maxsize=2)
    stop, measuring = threading.Event(), threading.Event()

    def decode() -> None:
        with FileSource(clip, stream_id="fakeweb", loop=True) as source:
            iterator = source.frames()
            for index in range(warmup + frames):
                if index == warmup:
                    measuring.wait()
                if stop.is_set():
                    break
                times = StageTimes()
                with times.measure("decode"):
                    frame = replace(next(iterator), index=index)
                while not stop.is_set():
                    try:
                        handoff.put((frame, times), timeout=0.5)
                        break
                    except queue.Full:
                        continue
        if not stop.is_set():  # else the worker is gone and the queue may stay full
            handoff.put(None)

    pending: dict[int, StageTimes] = {}
    delivered: list[StageTimes] = []
    encode_seconds: list[float] = []

    def on_frame(encoded: EncodedFrame) -> None:  # on the encoder thread, right after `on_encode`
        times = pending.pop(int(encoded.capture_time))
        times.add("encode", encode_seconds[-1])
        if encoded.capture_time >= warmup:
            delivered.append(times)

    encoder = StreamEncoder("fakeweb", on_frame, on_encode=encode_seconds.append, pinning=pinning)
    decoder = threading.Thread(target=pinning.runs_as("codec", decode), name="bench-decode", daemon=True)
    faces = processed = dropped_in_warmup = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    encoder.start()
    decoder.start()
    try:
        with pinning.role("model"):  # this thread is the worker
            if warmup == 0:
                measuring.set()
            while (item := handoff.get()) is not None:
                frame, times = item
                result = pipeline.process(frame, times)
                # The conversion to yuv420p happens on the worker; the encoder adds its own time.
                with times.measure("encode"):
                    published = yuv420p_frame(frame.image)
                pending[frame.index] = times
                encoder.submit(published, float(frame.index))  # the index rides as the capture time
                processed += 1
                if on_processed is not None:
                    on_processed(result)
                if frame.index >= warmup:
                    faces += len(result.faces)
                if processed == warmup:
                    _drain(encoder, processed)
                    dropped_in_warmup = encoder.dropped
                    started, cpu_started = time.perf_counter(), time.process_time()
                    measuring.set()
            _drain(encoder, processed)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        stop.set()
        measuring.set()
        encoder.close()
        decoder.join()
    return ThreadedRun(delivered, processed - warmup, encoder.dropped - dropped_in_warmup, wall, cpu, faces)


def _drain(encoder: StreamEncoder, submitted: int) -> None:
    """Wait until the encoder has encoded or replaced every submitted frame."""
    deadline = time.monotonic() + _DRAIN_SECONDS
    while encoder.stats.frames + encoder.dropped < submitted and time.monotonic() < deadline:
        time.sleep(0.001)
