"""Prometheus metrics of the service and of file runs, on a registry passed in (never the global one).

`Metrics` owns every collector; callers use its intention-revealing methods and never touch collectors. Label
values for streams come from `StreamLabels`, which keeps their number bounded. `docs/metrics.md` lists every
metric. Stage histograms carry no stream label on purpose: 8 stages x up to 35 stream labels x 15 series would
be about 4,200 series, and a stage's cost depends on the machine and the model far more than on the stream;
per-stream latency is the end-to-end histogram.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from wsgiref.simple_server import WSGIServer

from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.aiohttp import make_aiohttp_handler

from models.errors import FakewebError
from stream.pipeline.scoring import Verdict
from stream.runtime.timing import STAGES, StageTimes

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
"""Seconds, dense around the 33 ms frame budget of 30 fps video."""
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Crops per classifier call; the classifier pads each call up to one of these sizes."""

FRAME_OUTCOMES = ("processed", "dropped_stale", "dropped_overload", "decode_error")
STREAM_STATES = ("connecting", "live", "reconnecting", "offline")
"""The values of `stream.sources.rtsp.CameraState`; browser and file streams are connecting or live."""
QUEUE_STAGES = ("detect", "classify")
"""Where items wait: frames before a stream's pipeline, crops before the classifier batcher."""
MODEL_RELOAD_RESULTS = ("swapped", "rejected")
RTSP_OUT_OUTCOMES = ("sent", "dropped_replaced", "dropped_disconnected")
"""What became of a frame handed to a stream's RTSP publisher (`stream.outputs.rtsp_out`)."""
VERDICTS = tuple(verdict.value for verdict in Verdict)

StreamKind = Literal["camera", "browser", "file"]
BROWSER_LABEL = "browser"
FILE_LABEL = "file"
OTHER_LABEL = "other"
RESERVED_LABELS = frozenset({BROWSER_LABEL, FILE_LABEL, OTHER_LABEL})
DEFAULT_MAX_CAMERAS = 32


class StreamLabels:
    """Bounded `stream` label values: cameras by id up to a cap, everything else aggregated.

    A camera keeps its id as label while fewer than `max_cameras` cameras hold one; later cameras are "other"
    for their whole life (labels never change under a running stream). Every browser peer is "browser", every
    file "file". `release` frees a camera's slot when it is removed. Thread-safe.
    """

    def __init__(self, max_cameras: int = DEFAULT_MAX_CAMERAS) -> None:
        if max_cameras < 0:
            raise ValueError(f"max_cameras must be >= 0, got {max_cameras}")
        self.max_cameras = max_cameras
        self._labelled: set[str] = set()
        self._overflow: set[str] = set()
        self._lock = threading.Lock()

    def label_for(self, stream_id: str, kind: StreamKind) -> str:
        """The `stream` label value of a stream of this kind (the same one each time until released)."""
        if kind == "browser":
            return BROWSER_LABEL
        if kind == "file":
            return FILE_LABEL
        if kind != "camera":
            raise ValueError(f"unknown stream kind {kind!r}; expected camera, browser or file")
        if stream_id in RESERVED_LABELS:
            raise ValueError(f"camera id {stream_id!r} is a reserved metric label")
        with self._lock:
            if stream_id in self._labelled:
                return stream_id
            if stream_id not in self._overflow and len(self._labelled) < self.max_cameras:
                self._labelled.add(stream_id)
                return stream_id
            if stream_id not in self._overflow:
                self._overflow.add(stream_id)
                logger.warning(
                    "camera %s is labelled %r in metrics: over %d cameras",
                    stream_id,
                    OTHER_LABEL,
                    self.max_cameras,
                )
            return OTHER_LABEL

    def release(self, stream_id: str) -> str | None:
        """Forget a removed stream; returns the label it alone held (to pass to `Metrics.forget_stream`)."""
        with self._lock:
            self._overflow.discard(stream_id)
            if stream_id in self._labelled:
                self._labelled.remove(stream_id)
                return stream_id
            return None


@dataclass(frozen=True)
class _StreamSeries:
    """The children of one stream label, resolved once."""

    end_to_end: Histogram
    frames: dict[str, Counter]
    reconnects: Counter


class Metrics:
    """Every FakeWeb metric on one registry. Thread-safe; label children are resolved once and cached.

    Stream arguments are label values from `StreamLabels.label_for`, never raw ids.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self._stage_seconds = Histogram(
            "fakeweb_stage_duration_seconds",
            "Time one frame spent in one pipeline stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._end_to_end = Histogram(
            "fakeweb_end_to_end_latency_seconds",
            "Time from a frame's capture (leaving the decoder) to the annotated frame encoded (for viewers or a file).",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._batch_size = Histogram(
            "fakeweb_classifier_batch_size",
            "Face crops per classifier call.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self._batch_seconds = Histogram(
            "fakeweb_classifier_batch_duration_seconds",
            "Duration of one classifier call.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._frames = Counter(
            "fakeweb_frames", "Frames by stream and outcome.", ["stream", "outcome"], registry=reg
        )
        self._faces = Counter(
            "fakeweb_faces",
            "Faces in processed frames by the verdict shown (once per face per frame).",
            ["verdict"],
            registry=reg,
        )
        self._reconnects = Counter(
            "fakeweb_reconnects", "Reconnections to a lost source.", ["stream"], registry=reg
        )
        self._rejected = Counter(
            "fakeweb_requests_rejected",
            "HTTP or WebRTC requests refused, by reason.",
            ["reason"],
            registry=reg,
        )
        self._model_reloads = Counter(
            "fakeweb_model_reloads", "Model reload attempts by result.", ["result"], registry=reg
        )
        self._queue_depth = Gauge(
            "fakeweb_queue_depth",
            "Items waiting before a stage, summed over streams.",
            ["stage"],
            registry=reg,
        )
        self._streams = Gauge("fakeweb_streams", "Streams by state.", ["state"], registry=reg)
        self._viewers = Gauge("fakeweb_viewers", "Connected viewers.", registry=reg)
        self._model_info = Gauge(
            "fakeweb_model_info",
            "The classifier in use (value 1).",
            ["version", "backend", "device"],
            registry=reg,
        )
        self._model_loaded = Gauge(
            "fakeweb_model_loaded", "1 when a classifier is loaded, else 0.", registry=reg
        )
        self._rtsp_out_frames = Counter(
            "fakeweb_rtsp_out_frames",
            "Annotated frames handed to RTSP out, by stream and outcome: sent to the media server, replaced by a "
            "newer one before the publisher took it, or dropped while not connected.",
            ["stream", "outcome"],
            registry=reg,
        )
        self._rtsp_out_reconnects = Counter(
            "fakeweb_rtsp_out_reconnects",
            "RTSP out publications opened again after a lost or refused connection.",
            ["stream"],
            registry=reg,
        )
        self._rtsp_out_connected = Gauge(
            "fakeweb_rtsp_out_connected",
            "Streams publishing to the media server now (0 while reconnecting).",
            ["stream"],
            registry=reg,
        )
        self._rtsp_out_encode = Histogram(
            "fakeweb_rtsp_out_encode_duration_seconds",
            "H.264 encode and send of one frame published over RTSP (all streams).",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._events = Counter(
            "fakeweb_events",
            "Events opened, by stream and the verdict that opened them (manipulated, or suspect for long enough).",
            ["stream", "verdict"],
            registry=reg,
        )
        self._event_reviews = Counter(
            "fakeweb_event_reviews",
            "Operators' reviews of events: correct (the face was manipulated) or real (a false alarm).",
            ["outcome"],
            registry=reg,
        )
        self._event_write_failures = Counter(
            "fakeweb_event_write_failures",
            "Event writes the disk refused (full or read-only) or the writer dropped: the service goes on.",
            registry=reg,
        )
        self._threads_pinned = Gauge(
            "fakeweb_threads_pinned",
            "1 while the model and codec threads are pinned to separate CPUs, else 0.",
            registry=reg,
        )

        self._stages = {stage: self._stage_seconds.labels(stage) for stage in STAGES}
        self._verdicts = {verdict: self._faces.labels(verdict) for verdict in VERDICTS}
        self._queues = {stage: self._queue_depth.labels(stage) for stage in QUEUE_STAGES}
        self._reloads = {result: self._model_reloads.labels(result) for result in MODEL_RELOAD_RESULTS}
        self._states = {state: self._streams.labels(state) for state in STREAM_STATES}
        self._stream_series: dict[str, _StreamSeries] = {}
        self._publishing: set[str] = set()
        """Stream labels with RTSP out series."""
        self._model_lock = threading.Lock()

    def _series(self, stream: str) -> _StreamSeries:
        series = self._stream_series.get(stream)
        if series is None:
            series = _StreamSeries(
                end_to_end=self._end_to_end.labels(stream),
                frames={outcome: self._frames.labels(stream, outcome) for outcome in FRAME_OUTCOMES},
                reconnects=self._reconnects.labels(stream),
            )
            self._stream_series[stream] = series
        return series

    def forget_stream(self, stream: str) -> None:
        """Drop the series of a label no stream uses any more (see `StreamLabels.release`)."""
        if self._stream_series.pop(stream, None) is None:
            return
        self._end_to_end.remove(stream)
        self._reconnects.remove(stream)
        for outcome in FRAME_OUTCOMES:
            self._frames.remove(stream, outcome)
        for verdict in ("manipulated", "suspect"):
            with contextlib.suppress(KeyError):  # a stream that never opened an event has no such series
                self._events.remove(stream, verdict)
        if stream in self._publishing:
            self._publishing.discard(stream)
            self._rtsp_out_reconnects.remove(stream)
            self._rtsp_out_connected.remove(stream)
            for outcome in RTSP_OUT_OUTCOMES:
                self._rtsp_out_frames.remove(stream, outcome)

    def observe_stages(self, times: StageTimes) -> None:
        """Each stage's seconds of one frame, into that stage's histogram (all streams together)."""
        stages = self._stages
        for stage, seconds in times.seconds.items():
            stages[stage].observe(seconds)

    def observe_encode(self, seconds: float) -> None:
        """One frame's encode: once per frame of a stream, whatever the number of viewers."""
        self._stages["encode"].observe(seconds)

    def observe_end_to_end(self, stream: str, seconds: float) -> None:
        """Capture to encoded of one frame (for its viewers in the service, into the file in a file run)."""
        self._series(stream).end_to_end.observe(seconds)

    def count_frame(self, stream: str, outcome: str, n: int = 1) -> None:
        """`n` frames with `outcome`: processed, dropped_stale, dropped_overload or decode_error."""
        counter = self._series(stream).frames.get(outcome)
        if counter is None:
            raise ValueError(f"unknown frame outcome {outcome!r}; expected one of {FRAME_OUTCOMES}")
        counter.inc(n)

    def _publishing_series(self, stream: str) -> None:
        """Create a stream label's RTSP out series at once, so that they are all exported from the start."""
        if stream not in self._publishing:
            self._publishing.add(stream)
            self._series(stream)  # forget_stream removes both together
            self._rtsp_out_reconnects.labels(stream)
            self._rtsp_out_connected.labels(stream)
            for outcome in RTSP_OUT_OUTCOMES:
                self._rtsp_out_frames.labels(stream, outcome)

    def count_rtsp_out(self, stream: str, what: str, n: int = 1) -> None:
        """`n` of `what` on a stream's RTSP out: one of `RTSP_OUT_OUTCOMES`, or "reconnects"."""
        self._publishing_series(stream)
        if what == "reconnects":
            self._rtsp_out_reconnects.labels(stream).inc(n)
        elif what in RTSP_OUT_OUTCOMES:
            self._rtsp_out_frames.labels(stream, what).inc(n)
        else:
            raise ValueError(
                f"unknown RTSP out count {what!r}; expected reconnects or one of {RTSP_OUT_OUTCOMES}"
            )

    def set_rtsp_out_connected(self, connected: Mapping[str, int]) -> None:
        """Streams publishing now, by stream label (every label that publishes, 0 included)."""
        for stream, count in connected.items():
            self._publishing_series(stream)
            self._rtsp_out_connected.labels(stream).set(count)

    def observe_rtsp_out_encode(self, seconds: float) -> None:
        """One published frame's H.264 encode and send."""
        self._rtsp_out_encode.observe(seconds)

    def count_event(self, stream: str, verdict: str) -> None:
        """An event opened on `stream` by `verdict` (manipulated or suspect)."""
        if verdict not in ("manipulated", "suspect"):
            raise ValueError(f"events open on manipulated or suspect, not {verdict!r}")
        self._events.labels(stream, verdict).inc()

    def count_review(self, outcome: str) -> None:
        """An operator reviewed an event: correct or real."""
        if outcome not in ("correct", "real"):
            raise ValueError(f"review outcomes are correct and real, not {outcome!r}")
        self._event_reviews.labels(outcome).inc()

    def count_event_write_failure(self) -> None:
        self._event_write_failures.inc()

    def count_faces(self, verdict: str, n: int = 1) -> None:
        """`n` faces shown with `verdict` in one processed frame."""
        counter = self._verdicts.get(verdict)
        if counter is None:
            raise ValueError(f"unknown verdict {verdict!r}; expected one of {VERDICTS}")
        counter.inc(n)

    def observe_batch(self, size: int, seconds: float) -> None:
        """One classifier call on `size` crops that took `seconds`."""
        self._batch_size.observe(size)
        self._batch_seconds.observe(seconds)

    def set_queue_depth(self, stage: str, depth: int) -> None:
        """Items now waiting before `stage` (one of `QUEUE_STAGES`), summed over streams."""
        gauge = self._queues.get(stage)
        if gauge is None:
            raise ValueError(f"unknown queue stage {stage!r}; expected one of {QUEUE_STAGES}")
        gauge.set(depth)

    def set_stream_states(self, counts: Mapping[str, int]) -> None:
        """Streams per state now; states absent from `counts` read 0."""
        unknown = set(counts) - set(STREAM_STATES)
        if unknown:
            raise ValueError(f"unknown stream states {sorted(unknown)}; expected some of {STREAM_STATES}")
        for state, gauge in self._states.items():
            gauge.set(counts.get(state, 0))

    def set_viewers(self, n: int) -> None:
        self._viewers.set(n)

    def count_reconnect(self, stream: str) -> None:
        self._series(stream).reconnects.inc()

    def count_rejected(self, reason: str) -> None:
        """A refused request; `reason` is a fixed word chosen in code (never user input)."""
        self._rejected.labels(reason).inc()

    def set_model(self, version: str, backend: str, device: str) -> None:
        """The classifier now in use; replaces the previous one's info series."""
        with self._model_lock:
            self._model_info.clear()
            self._model_info.labels(version, backend, device).set(1)

    def set_model_loaded(self, loaded: bool) -> None:
        self._model_loaded.set(1 if loaded else 0)

    def set_threads_pinned(self, pinned: bool) -> None:
        """Whether the threads are pinned by role now (`pin_threads`, `stream.runtime.cpu_split`)."""
        self._threads_pinned.set(1 if pinned else 0)

    def count_model_reload(self, result: Literal["swapped", "rejected"]) -> None:
        counter = self._reloads.get(result)
        if counter is None:
            raise ValueError(f"unknown reload result {result!r}; expected one of {MODEL_RELOAD_RESULTS}")
        counter.inc()


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """An aiohttp handler serving `registry` in the Prometheus text format (route it at GET /metrics)."""
    return make_aiohttp_handler(registry)


class MetricsServer:
    """A running /metrics endpoint (see `start_metrics_server`); `close()` or leaving `with` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_metrics_server(port: int, registry: CollectorRegistry, host: str = "127.0.0.1") -> MetricsServer:
    """Serve `registry` at http://host:port/metrics from a daemon thread (port 0 picks a free port)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise FakewebError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return MetricsServer(server, thread)
