"""stream/outputs/metrics.py: naming conventions, buckets, bounded labels, and the two ways /metrics is served."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import urllib.request

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from project_paths import ROOT
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from models.errors import FakewebError
from stream.outputs.metrics import (
    FRAME_OUTCOMES,
    STREAM_STATES,
    Metrics,
    StreamLabels,
    metrics_handler,
    start_metrics_server,
)
from stream.runtime.timing import STAGES, StageTimes
from stream.sources.rtsp import CameraState

DOCS = ROOT / "docs" / "metrics.md"
# The frame budget's buckets from the product requirements, in seconds.
REQUIRED_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, math.inf]


def exercised() -> Metrics:
    """Metrics with every method called once, so every family and label set shows up."""
    metrics = Metrics()
    times = StageTimes()
    for stage in STAGES:
        times.add(stage, 0.004)
    metrics.observe_stages(times)
    metrics.observe_end_to_end("cam1", 0.03)
    for outcome in FRAME_OUTCOMES:
        metrics.count_frame("cam1", outcome)
    metrics.count_faces("manipulated", 2)
    metrics.observe_batch(3, 0.012)
    metrics.set_queue_depth("classify", 5)
    metrics.set_stream_states({"live": 2, "offline": 1})
    metrics.set_viewers(4)
    metrics.count_reconnect("cam1")
    metrics.count_rejected("max_viewers")
    metrics.set_model("v1", "tflite", "cpu")
    metrics.set_model_loaded(True)
    metrics.count_model_reload("swapped")
    metrics.count_rtsp_out("cam1", "sent", 30)
    metrics.count_rtsp_out("cam1", "reconnects")
    metrics.set_rtsp_out_connected({"cam1": 1})
    metrics.observe_rtsp_out_encode(0.003)
    metrics.count_event("cam1", "manipulated")
    metrics.count_event_write_failure()
    metrics.count_review("real")
    return metrics


def families(registry: CollectorRegistry) -> dict[str, Metric]:
    """The exposed families by name, parsed back from the text format (without the client's `_created`)."""
    text = generate_latest(registry).decode()
    parsed = text_string_to_metric_families(text)
    return {family.name: family for family in parsed if not family.name.endswith("_created")}


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_names_follow_prometheus_conventions() -> None:
    found = families(exercised().registry)
    assert found
    for name, family in found.items():
        assert name.startswith("fakeweb_"), name
        assert not re.search(r"_(ms|milliseconds|us|minutes|hours)(_|$)", name), f"{name}: not a base unit"
        values = [s.name for s in family.samples]
        if family.type == "counter":
            assert all(v == f"{name}_total" for v in values), (name, values)
        else:
            assert not name.endswith("_total"), f"{name} is a {family.type} named like a counter"
        if family.type == "histogram":
            assert name.endswith("_seconds") or name == "fakeweb_classifier_batch_size", name


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    documented = set(
        re.findall(r"^\| `(fakeweb_[a-z_]+)` \|", DOCS.read_text(encoding="utf-8"), re.MULTILINE)
    )
    exposed = {
        f"{name}_total" if family.type == "counter" else name
        for name, family in families(exercised().registry).items()
    }
    assert documented == exposed


def bucket_bounds(registry: CollectorRegistry, family: str) -> dict[str, list[float]]:
    """le bounds per label set (without le) of a histogram family."""
    bounds: dict[str, list[float]] = {}
    for sample in families(registry)[family].samples:
        if sample.name.endswith("_bucket"):
            key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            bounds.setdefault(key, []).append(float(sample.labels["le"]))
    return bounds


LATENCY_HISTOGRAMS = [
    "fakeweb_stage_duration_seconds",
    "fakeweb_end_to_end_latency_seconds",
    "fakeweb_classifier_batch_duration_seconds",
]


@pytest.mark.parametrize("family", LATENCY_HISTOGRAMS)
def test_latency_buckets_surround_the_frame_budget(family: str) -> None:
    for bounds in bucket_bounds(exercised().registry, family).values():
        assert bounds == REQUIRED_BUCKETS


def test_batch_size_buckets_are_the_classifier_buckets() -> None:
    (bounds,) = bucket_bounds(exercised().registry, "fakeweb_classifier_batch_size").values()
    assert bounds == [1, 2, 4, 8, 16, 32, math.inf]


def test_stage_times_land_in_their_buckets() -> None:
    metrics = Metrics()
    times = StageTimes()
    times.add("detect", 0.030)
    times.add("encode", 0.0005)
    metrics.observe_stages(times)
    reg = metrics.registry
    name = "fakeweb_stage_duration_seconds_bucket"
    assert sample_value(reg, name, stage="detect", le="0.02") == 0
    assert sample_value(reg, name, stage="detect", le="0.033") == 1
    assert sample_value(reg, name, stage="encode", le="0.001") == 1
    assert sample_value(reg, "fakeweb_stage_duration_seconds_count", stage="mesh") == 0


def test_a_stream_encode_is_the_encode_stage() -> None:
    metrics = Metrics()
    metrics.observe_encode(0.004)
    reg = metrics.registry
    assert sample_value(reg, "fakeweb_stage_duration_seconds_bucket", stage="encode", le="0.0025") == 0
    assert sample_value(reg, "fakeweb_stage_duration_seconds_bucket", stage="encode", le="0.005") == 1


def test_every_stage_is_exposed_before_any_frame() -> None:
    reg = Metrics().registry
    for stage in STAGES:
        assert sample_value(reg, "fakeweb_stage_duration_seconds_count", stage=stage) == 0


def test_a_stream_label_shows_every_outcome_from_its_first_frame() -> None:
    metrics = Metrics()
    metrics.count_frame("cam1", "processed", 3)
    for outcome in FRAME_OUTCOMES:
        expected = 3 if outcome == "processed" else 0
        assert (
            sample_value(metrics.registry, "fakeweb_frames_total", stream="cam1", outcome=outcome) == expected
        )


def test_unknown_values_are_refused() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_frame("cam1", "lost")
    with pytest.raises(ValueError, match="verdict"):
        metrics.count_faces("fake")
    with pytest.raises(ValueError, match="queue stage"):
        metrics.set_queue_depth("mesh", 1)
    with pytest.raises(ValueError, match="stream states"):
        metrics.set_stream_states({"sleeping": 1})
    with pytest.raises(ValueError, match="RTSP out"):
        metrics.count_rtsp_out("cam1", "lost")


def test_a_publishing_stream_shows_every_rtsp_out_series_and_forgetting_it_removes_them() -> None:
    metrics = Metrics()
    metrics.set_rtsp_out_connected({"cam1": 0, "cam2": 1})
    metrics.count_rtsp_out("cam1", "dropped_disconnected", 4)
    assert sample_value(metrics.registry, "fakeweb_rtsp_out_frames_total", stream="cam1", outcome="sent") == 0
    assert (
        sample_value(
            metrics.registry, "fakeweb_rtsp_out_frames_total", stream="cam1", outcome="dropped_disconnected"
        )
        == 4
    )
    assert sample_value(metrics.registry, "fakeweb_rtsp_out_reconnects_total", stream="cam1") == 0
    assert sample_value(metrics.registry, "fakeweb_rtsp_out_connected", stream="cam2") == 1
    metrics.forget_stream("cam1")
    text = generate_latest(metrics.registry).decode()
    assert 'stream="cam1"' not in text and 'fakeweb_rtsp_out_connected{stream="cam2"} 1.0' in text


def test_stream_states_are_the_camera_states_and_absent_ones_read_zero() -> None:
    assert set(STREAM_STATES) == {state.value for state in CameraState}
    metrics = Metrics()
    metrics.set_stream_states({"live": 2, "offline": 1})
    metrics.set_stream_states({"live": 3})
    reg = metrics.registry
    assert sample_value(reg, "fakeweb_streams", state="live") == 3
    assert sample_value(reg, "fakeweb_streams", state="offline") == 0
    assert sample_value(reg, "fakeweb_streams", state="connecting") == 0


def test_model_info_is_replaced_not_accumulated() -> None:
    metrics = Metrics()
    assert not families(metrics.registry)["fakeweb_model_info"].samples
    metrics.set_model("v1", "tflite", "cpu")
    metrics.set_model("v2", "savedmodel", "hpu")
    info = families(metrics.registry)["fakeweb_model_info"].samples
    assert [(s.labels, s.value) for s in info] == [
        ({"version": "v2", "backend": "savedmodel", "device": "hpu"}, 1)
    ]


def test_cameras_beyond_the_cap_are_other_and_keep_their_label() -> None:
    labels = StreamLabels(max_cameras=2)
    assert labels.label_for("a", "camera") == "a"
    assert labels.label_for("b", "camera") == "b"
    assert labels.label_for("c", "camera") == "other"
    assert labels.label_for("a", "camera") == "a"
    assert labels.release("a") == "a"
    # A freed slot goes to the next new camera; "c" stays "other" while it runs, so its series never jump.
    assert labels.label_for("c", "camera") == "other"
    assert labels.label_for("d", "camera") == "d"
    assert labels.release("c") is None
    assert labels.label_for("e", "camera") == "other"


def test_browsers_and_files_are_aggregated() -> None:
    labels = StreamLabels(max_cameras=0)
    assert {labels.label_for(f"browser-{i}", "browser") for i in range(50)} == {"browser"}
    assert labels.label_for("clip", "file") == "file"
    assert labels.release("browser-1") is None


def test_reserved_ids_and_bad_arguments() -> None:
    labels = StreamLabels()
    for reserved in ("other", "browser", "file"):
        with pytest.raises(ValueError, match="reserved"):
            labels.label_for(reserved, "camera")
    with pytest.raises(ValueError, match="kind"):
        labels.label_for("x", "rtsp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_cameras"):
        StreamLabels(max_cameras=-1)


def test_forget_stream_removes_its_series_only() -> None:
    metrics = Metrics()
    for stream in ("cam1", "cam2"):
        metrics.observe_end_to_end(stream, 0.02)
        metrics.count_reconnect(stream)
    metrics.forget_stream("cam1")
    metrics.forget_stream("never-seen")
    text = generate_latest(metrics.registry).decode()
    assert 'stream="cam1"' not in text
    assert sample_value(metrics.registry, "fakeweb_reconnects_total", stream="cam2") == 1
    metrics.count_reconnect("cam1")
    assert sample_value(metrics.registry, "fakeweb_reconnects_total", stream="cam1") == 1


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    assert first.registry is not second.registry
    assert REGISTRY.get_sample_value("fakeweb_model_loaded") is None
    shared = CollectorRegistry()
    assert Metrics(shared).registry is shared


def test_aiohttp_handler_serves_the_registry() -> None:
    metrics = exercised()

    async def fetch() -> tuple[int, str, str]:
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(metrics.registry))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get("/metrics")
            return response.status, response.headers["Content-Type"], await response.text()

    status, content_type, text = asyncio.run(fetch())
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "fakeweb_viewers 4.0" in text


def test_metrics_server_serves_until_closed() -> None:
    metrics = exercised()
    with start_metrics_server(0, metrics.registry) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"fakeweb_model_loaded 1.0" in response.read()
        with pytest.raises(FakewebError, match="cannot serve metrics"):
            start_metrics_server(server.port, metrics.registry)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
        pass
