"""The one fan-out of processed frames to their outputs, shared by the live service and `fakeweb run`.

Every output is a `ResultSink`: one method, `on_result(frame, result)`, called on the thread that processed the
frame (a live stream's worker, the file run's loop) with the annotated frame and what the pipeline found. Adding an
output is adding a sink: `outputs.add(sink)`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stream.outputs.metrics import Metrics
    from stream.pipeline.pipeline import FrameResult
    from stream.sources.frames import Frame

logger = logging.getLogger(__name__)

LOG_EVERY = 100
"""A failing sink is logged at its first failure and then at every this many."""


class ResultSink(Protocol):
    """An output of processed frames: the annotated video, verdicts, results, metrics."""

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        """Take one processed frame (its image annotated in place); must not keep the image past the call
        unless it copies or encodes it."""


class Fanout:
    """Hands each processed frame to every sink in the order they were added.

    A sink that raises never stops the others: its failures are counted (`failures`, by sink class) and logged
    (the first, then every `LOG_EVERY`th). With `reraise`, nothing is logged and the first failure is raised
    once every sink has had the frame: a file run must end on a failed write, as its caller reports.
    """

    def __init__(self, name: str, sinks: Iterable[ResultSink] = (), reraise: bool = False) -> None:
        self.name = name
        self.failures: Counter[str] = Counter()
        self._sinks = tuple(sinks)
        self._reraise = reraise

    @property
    def sinks(self) -> tuple[ResultSink, ...]:
        return self._sinks

    def add(self, sink: ResultSink) -> None:
        """Any thread: `sink` gets the frames processed from now on."""
        self._sinks = (
            *self._sinks,
            sink,
        )  # a new tuple: a frame being handed out keeps the sinks it started with

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        failure: Exception | None = None
        for sink in self._sinks:
            try:
                sink.on_result(frame, result)
            except Exception as exc:  # noqa: BLE001 - one output must not cost the others theirs
                self._count(sink)
                failure = failure or exc
        if failure is not None and self._reraise:
            raise failure

    def _count(self, sink: ResultSink) -> None:
        """Count (and maybe log) the failure being handled."""
        kind = type(sink).__name__
        self.failures[kind] += 1
        failures = self.failures[kind]
        if not self._reraise and (failures == 1 or failures % LOG_EVERY == 0):
            logger.exception("%s: output %s failed (%d failures so far)", self.name, kind, failures)


class FrameMetrics:
    """A sink recording each processed frame: its stage times, one more frame processed, its faces by verdict.

    End-to-end latency (capture to delivered) goes to `observe_end_to_end`: a live stream's feed calls it once a
    frame is encoded for the viewers; with `delivered_on_result` (a file run, whose earlier sinks have written
    the frame) each result is observed as delivered.
    """

    def __init__(self, metrics: Metrics, label: str, delivered_on_result: bool = False) -> None:
        self.metrics = metrics
        self.label = label
        self._delivered_on_result = delivered_on_result

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        metrics = self.metrics
        metrics.observe_stages(result.times)
        if self._delivered_on_result:
            self.observe_end_to_end(time.monotonic() - result.capture_time)
        metrics.count_frame(self.label, "processed")
        for verdict, count in Counter(face.verdict.value for face in result.faces).items():
            metrics.count_faces(verdict, count)

    def observe_end_to_end(self, seconds: float) -> None:
        """A frame of this stream delivered `seconds` after its capture."""
        self.metrics.observe_end_to_end(self.label, seconds)
