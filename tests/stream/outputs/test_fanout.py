"""The one fan-out of processed frames: every sink in order, a failing sink isolated (counted, logged sparingly), and
the metrics sink the live service and `fakeweb run` share."""

from __future__ import annotations

import numpy as np
import pytest

from models.geometry import Box
from stream.outputs.fanout import LOG_EVERY, Fanout, FrameMetrics
from stream.outputs.metrics import Metrics
from stream.pipeline.pipeline import FaceResult, FrameResult
from stream.pipeline.scoring import Verdict
from stream.pipeline.tracker import TrackState
from stream.runtime.timing import StageTimes
from stream.sources.frames import Frame


def processed(index: int = 0, verdicts: tuple[str, ...] = ()) -> tuple[Frame, FrameResult]:
    frame = Frame("cam", index, np.zeros((4, 4, 3), np.uint8), capture_time=0.0)
    faces = [
        FaceResult(n, Box(0, 0, 2, 2), TrackState.CONFIRMED, None, Verdict(verdict))
        for n, verdict in enumerate(verdicts)
    ]
    times = StageTimes()
    times.add("detect", 0.01)
    return frame, FrameResult("cam", index, None, 0.0, faces, times)


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        self.calls.append(f"{self.name}{result.index}")


class Broken:
    def on_result(self, frame: Frame, result: FrameResult) -> None:
        raise RuntimeError("sink bug")


def test_sinks_get_each_frame_in_the_order_they_were_added() -> None:
    calls: list[str] = []
    outputs = Fanout("cam", [Recorder("a", calls)])
    outputs.on_result(*processed(0))
    outputs.add(Recorder("b", calls))
    outputs.on_result(*processed(1))
    assert calls == ["a0", "a1", "b1"]
    assert [type(sink).__name__ for sink in outputs.sinks] == ["Recorder", "Recorder"]


def test_a_failing_sink_is_counted_and_logged_sparingly_and_never_stops_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    outputs = Fanout("cam", [Recorder("a", calls), Broken(), Recorder("b", calls)])
    for index in range(2 * LOG_EVERY):
        outputs.on_result(*processed(index))
    assert len(calls) == 4 * LOG_EVERY
    assert outputs.failures == {"Broken": 2 * LOG_EVERY}
    logged = [record for record in caplog.records if "output Broken failed" in record.getMessage()]
    assert [record.getMessage() for record in logged] == [
        "cam: output Broken failed (1 failures so far)",
        f"cam: output Broken failed ({LOG_EVERY} failures so far)",
        f"cam: output Broken failed ({2 * LOG_EVERY} failures so far)",
    ]
    assert all(record.exc_info for record in logged)


def test_reraise_gives_every_sink_the_frame_then_raises_the_first_failure_unlogged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    outputs = Fanout("file", [Broken(), Recorder("a", calls)], reraise=True)
    with pytest.raises(RuntimeError, match="sink bug"):
        outputs.on_result(*processed(0))
    assert calls == ["a0"] and outputs.failures == {"Broken": 1}
    assert not caplog.records


@pytest.mark.parametrize("delivered_on_result", [False, True])
def test_frame_metrics_count_frames_faces_stages_and_maybe_latency(delivered_on_result: bool) -> None:
    metrics = Metrics()
    sink = FrameMetrics(metrics, "file", delivered_on_result)
    sink.on_result(*processed(0, ("real", "real", "manipulated")))
    sink.on_result(*processed(1))
    sample = metrics.registry.get_sample_value
    assert sample("fakeweb_frames_total", {"stream": "file", "outcome": "processed"}) == 2
    assert sample("fakeweb_faces_total", {"verdict": "real"}) == 2
    assert sample("fakeweb_faces_total", {"verdict": "manipulated"}) == 1
    assert sample("fakeweb_stage_duration_seconds_count", {"stage": "detect"}) == 2
    latencies = sample("fakeweb_end_to_end_latency_seconds_count", {"stream": "file"})
    assert latencies == (2 if delivered_on_result else 0)
    sink.observe_end_to_end(0.05)  # what a live stream's feed reports once a frame is encoded
    assert sample("fakeweb_end_to_end_latency_seconds_count", {"stream": "file"}) == latencies + 1
