"""N concurrent streams paced at their frame rate through the live service, each encoded once for its viewers.

The streams are built by `stream.live.service.LiveService` exactly as `fakeweb serve` builds them (`stream.live.route`): a
worker thread per stream behind a latest-frame slot, the cross-stream `ClassifierBatcher`, the stream's
`AnnotatedFeed` encoding VP8 once on its encoder thread. Inputs are RTSP cameras added through
`LiveService.add_camera` (a reader thread each, as in serve) or video files paced by
`FileSource(realtime=True, loop=True)` on a feeder thread each, offered to a `LiveService.add_fed_stream` route. Each viewer
takes the shared packets through its own `ViewerTrack` and packetises them with aiortc's `Vp8Encoder.pack`, as
`RTCRtpSender` does; end-to-end latency runs from the frame's capture (leaving the decoder) to packetised.

The service reports to a `Metrics` subclass that also keeps what the benchmark needs: worker stage times, encode
times and each stream's capture-to-encoded latency. All figures go into fixed-size histograms, so a long run does
not grow the memory it measures.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError

from stream.bench.histogram import Histogram
from stream.bench.procstat import ProcessSampler, Sample, thread_cpu_seconds
from stream.bench.report import Report, Table
from stream.config import ServiceConfig
from stream.live.cameras import CameraList
from stream.live.reload import ModelHolder
from stream.live.service import LiveService, LiveStream
from stream.outputs.metrics import Metrics
from stream.outputs.viewer import ViewerTrack
from stream.runtime.affinity import RolePinning
from stream.runtime.thread_names import FEEDER, stream_thread_name
from stream.runtime.timing import STAGES, StageTimes
from stream.sources.file_source import FileSource

WORKER_STAGES = tuple(stage for stage in STAGES if stage != "encode")
"""Stages of the worker thread; encoding runs on each stream's encoder thread."""


@dataclass(frozen=True)
class LiveSettings:
    """Streams from `clip` (paced, looped) or from `rtsp` URLs (used in turn); times in seconds."""

    config: ServiceConfig
    streams: int = 4
    seconds: float = 60.0
    warmup: float = 5.0
    viewers: int = 1
    clip: Path | None = None
    rtsp: tuple[str, ...] = ()
    window: float = 10.0
    sample_period: float = 1.0
    switch_interval: float | None = None
    """Python's GIL switch interval during the run (`sys.setswitchinterval`); None keeps it (5 ms default)."""

    def __post_init__(self) -> None:
        if (self.clip is None) == (not self.rtsp):
            raise ValueError("give either a clip or RTSP URLs")
        if self.streams < 1 or self.viewers < 1 or self.seconds <= 0 or self.warmup < 0 or self.window <= 0:
            raise ValueError("streams and viewers must be >= 1, seconds and window > 0, warmup >= 0")


@dataclass
class Recording:
    """The measured span: nothing is recorded before `begin` (warm-up) or after `end`."""

    window: float
    begin: float | None = None
    end: float | None = None

    def window_at(self, now: float) -> int | None:
        """Index of the window `now` falls in; None outside the measured span."""
        if self.begin is None or now < self.begin or (self.end is not None and now >= self.end):
            return None
        return int((now - self.begin) // self.window)


class RecordingMetrics(Metrics):
    """The service's metrics, also recording worker stage times (per processed frame), encode times (per encoded
    frame, all streams), each stream's capture-to-encoded latency, and when the threads were pinned."""

    def __init__(self, recording: Recording) -> None:
        super().__init__()
        self.recording = recording
        self.stages = {stage: Histogram() for stage in (*STAGES, "total")}
        self.ready_latency: dict[str, Histogram] = defaultdict(Histogram)
        self.pin_changes: list[tuple[float, bool]] = []
        """(monotonic time, pinned) at each change of the CPU split, the first when the service starts."""
        self._lock = threading.Lock()

    def set_threads_pinned(self, pinned: bool) -> None:
        super().set_threads_pinned(pinned)
        self.pin_changes.append((time.monotonic(), pinned))

    def pinned_seconds(self) -> float:
        """Seconds of the measured span during which the threads were pinned by role."""
        begin, end = self.recording.begin, self.recording.end
        assert begin is not None and end is not None
        total = 0.0
        for (at, pinned), (until, _) in zip(
            self.pin_changes, [*self.pin_changes[1:], (end, False)], strict=True
        ):
            if pinned:
                total += max(0.0, min(until, end) - max(at, begin))
        return total

    def pin_switches(self) -> int:
        """Changes of the CPU split during the measured span."""
        begin, end = self.recording.begin, self.recording.end
        assert begin is not None and end is not None
        return sum(1 for at, _ in self.pin_changes[1:] if begin <= at < end)

    def observe_stages(self, times: StageTimes) -> None:
        super().observe_stages(times)
        if self.recording.window_at(time.monotonic()) is None:
            return
        with self._lock:  # called by every stream's worker thread
            for stage in WORKER_STAGES:
                self.stages[stage].add(times.seconds.get(stage, 0.0))
            self.stages["total"].add(times.total())

    def observe_encode(self, seconds: float) -> None:
        super().observe_encode(seconds)
        if self.recording.window_at(time.monotonic()) is None:
            return
        with self._lock:  # called by every stream's encoder thread
            self.stages["encode"].add(seconds)

    def observe_end_to_end(self, stream: str, seconds: float) -> None:
        super().observe_end_to_end(stream, seconds)
        if self.recording.window_at(time.monotonic()) is not None:
            self.ready_latency[stream].add(seconds)


@dataclass
class Viewer:
    """What one viewer sent in the measured span: capture-to-packetised latency (also per window), skipped frames."""

    latency: Histogram = field(default_factory=Histogram)
    windows: dict[int, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    skipped: int = 0


class FileFeeder:
    """A feeder thread: a looped clip paced at its frame rate, each frame offered to `submit`; it decodes, so it
    runs in the "codec" role of `pinning`, as a camera's reader would."""

    def __init__(
        self, clip: Path, stream_id: str, submit: Callable[[Any], None], delay: float, pinning: RolePinning
    ) -> None:
        self._source = FileSource(clip, stream_id, realtime=True, loop=True)
        self._submit = submit
        self._delay = delay
        self._stopping = threading.Event()
        self.frames = 0
        self._thread = threading.Thread(
            target=pinning.runs_as("codec", self._run),
            name=stream_thread_name(FEEDER, stream_id),
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self._stopping.wait(self._delay):
            return
        for frame in self._source.frames():
            if self._stopping.is_set():
                return
            self._submit(frame)
            self.frames += 1

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._source.close()


async def _view(stream: LiveStream, recording: Recording, viewer: Viewer) -> None:
    """Take the stream's shared packets through a viewer track and packetise each, as an RTCRtpSender does."""
    track = ViewerTrack(stream.feed)
    packetiser = Vp8Encoder()
    try:
        while True:
            try:
                frame = await track.next_frame()
            except MediaStreamError:
                return
            skipped = track.skipped
            packetiser.pack(frame.packet)
            done = time.monotonic()
            window = recording.window_at(done)
            if window is not None:
                viewer.latency.add(done - frame.capture_time)
                viewer.windows[window].add(done - frame.capture_time)
                viewer.skipped += track.skipped - skipped
    finally:
        track.stop()


@dataclass
class _Counts:
    """Per-stream counters at one instant."""

    source: int
    processed: int
    stale: int
    overload: int
    errors: int
    decode_errors: int
    encoded: int
    keyframes: int
    encode_cpu: float
    published: int
    publish_dropped: int
    publish_reconnects: int

    @staticmethod
    def of(stream: LiveStream, feeder: FileFeeder | None) -> _Counts:
        reader = stream.reader.stats if stream.reader is not None else None
        stats = stream.worker.stats
        encoder = stream.feed.encoder.stats
        publisher = stream.route.publisher
        return _Counts(
            source=feeder.frames if feeder is not None else (reader.frames if reader else 0),
            processed=stats.processed,
            stale=stream.worker.dropped_stale,
            overload=stream.worker.dropped_overload,
            errors=stats.errors,
            decode_errors=reader.decode_errors if reader else 0,
            encoded=encoder.frames,
            keyframes=encoder.keyframes,
            encode_cpu=encoder.cpu_seconds,
            published=publisher.stats.sent if publisher else 0,
            publish_dropped=publisher.stats.dropped_disconnected + publisher.dropped_replaced
            if publisher
            else 0,
            publish_reconnects=publisher.stats.reconnects if publisher else 0,
        )

    def minus(self, other: _Counts) -> _Counts:
        return _Counts(*(a - b for a, b in zip(vars(self).values(), vars(other).values(), strict=True)))


@dataclass
class _Run:
    """Everything measured, handed from the run to the report."""

    settings: LiveSettings
    duration: float
    streams: list[LiveStream]
    counts: dict[str, _Counts]
    viewers: dict[str, list[Viewer]]
    metrics: RecordingMetrics
    samples: list[Sample]
    cpu_seconds: float
    thread_cpu: dict[str, float]


async def _start_streams(
    settings: LiveSettings, service: LiveService, recording: Recording
) -> tuple[list[LiveStream], dict[str, FileFeeder], dict[str, list[Viewer]], list[asyncio.Task[None]]]:
    streams: list[LiveStream] = []
    feeders: dict[str, FileFeeder] = {}
    viewers: dict[str, list[Viewer]] = {}
    tasks: list[asyncio.Task[None]] = []
    for index in range(settings.streams):
        if settings.clip is not None:
            stream = service.add_fed_stream(f"bench-{index}", f"bench-{index}")
            # Staggered starts: the streams' frames interleave rather than arrive together.
            delay = index / (settings.streams * 30.0)
            feeders[stream.stream_id] = FileFeeder(
                settings.clip, stream.stream_id, stream.route.offer, delay, service.pinning
            )
        else:
            described = await service.add_camera(f"bench {index}", settings.rtsp[index % len(settings.rtsp)])
            stream = service.streams[described["id"]]
        streams.append(stream)
        viewers[stream.stream_id] = [Viewer() for _ in range(settings.viewers)]
        for viewer in viewers[stream.stream_id]:
            tasks.append(asyncio.ensure_future(_view(stream, recording, viewer)))
    for feeder in feeders.values():
        feeder.start()
    return streams, feeders, viewers, tasks


async def _run(settings: LiveSettings, holder: ModelHolder, progress: Callable[[str], None]) -> _Run:
    recording = Recording(settings.window)
    metrics = RecordingMetrics(recording)
    sampler = ProcessSampler(settings.sample_period)
    with tempfile.TemporaryDirectory(prefix="fakeweb-bench-") as folder:
        service = LiveService(settings.config, holder, metrics, CameraList(Path(folder) / "cameras.json"))
        await service.start()
        feeders: dict[str, FileFeeder] = {}
        tasks: list[asyncio.Task[None]] = []
        try:
            streams, feeders, viewers, tasks = await _start_streams(settings, service, recording)
            progress(f"{settings.streams} streams started; warming up {settings.warmup:g} s")
            await asyncio.sleep(settings.warmup)
            before = {s.stream_id: _Counts.of(s, feeders.get(s.stream_id)) for s in streams}
            threads_before = thread_cpu_seconds()
            sampler.start()
            recording.begin = time.monotonic()
            progress(f"measuring {settings.seconds:g} s")
            await asyncio.sleep(settings.seconds)
            recording.end = time.monotonic()
            sampler.stop()
            after = {s.stream_id: _Counts.of(s, feeders.get(s.stream_id)) for s in streams}
            threads_after = thread_cpu_seconds()
        finally:
            for feeder in feeders.values():
                await asyncio.to_thread(feeder.stop)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await service.close()
    return _Run(
        settings=settings,
        duration=recording.end - recording.begin,
        streams=streams,
        counts={stream_id: after[stream_id].minus(before[stream_id]) for stream_id in after},
        viewers=viewers,
        metrics=metrics,
        samples=sampler.samples,
        cpu_seconds=sampler.cpu_seconds,
        thread_cpu={name: seconds - threads_before.get(name, 0.0) for name, seconds in threads_after.items()},
    )


def run_live(
    settings: LiveSettings, holder: ModelHolder, progress: Callable[[str], None] | None = None
) -> Report:
    """Run the streams for warm-up plus `seconds` and report."""
    previous = sys.getswitchinterval()
    if settings.switch_interval is not None:
        sys.setswitchinterval(settings.switch_interval)
    config = settings.config
    report = Report(
        "live",
        {
            "source": settings.clip.name if settings.clip is not None else "rtsp",
            "streams": settings.streams,
            "viewers": settings.viewers,
            "seconds": settings.seconds,
            "warmup": settings.warmup,
            "model": holder.version,
            "backend": holder.backend,
            "detect_every": config.detect_every,
            "mesh_every": config.mesh_every,
            "classify_every": config.classify_every,
            "mesh_for": config.mesh_for,
            "switch_interval_ms": round(sys.getswitchinterval() * 1000.0, 3),
        },
    )
    try:
        run = asyncio.run(_run(settings, holder, progress or (lambda message: None)))
    finally:
        sys.setswitchinterval(previous)
    _fill(report, run)
    return report.finish()


def _fill(report: Report, run: _Run) -> None:
    streams_table, per_stream, delivered = _streams_table(run)
    process_table, process = _process_table(run, sum(delivered) * run.duration)
    report.tables += [
        streams_table,
        _encode_table(run, per_stream),
        *([_publish_table(run)] if run.settings.config.rtsp_out_url else []),
        _stage_table(run),
        process_table,
        _thread_table(run),
        _window_table(run),
    ]
    everyone = Histogram()
    for viewer in (v for vs in run.viewers.values() for v in vs):
        everyone.merge(viewer.latency)
    report.results = {
        "streams": per_stream,
        "delivered_fps_min": round(min(delivered), 2),
        "end_to_end": everyone.timing().to_dict(),
        "stages": {stage: histogram.timing().to_dict() for stage, histogram in run.metrics.stages.items()},
        "process": process,
        "thread_cpu_seconds": {name: round(seconds, 2) for name, seconds in run.thread_cpu.items()},
        "samples": [vars(sample) for sample in run.samples],
    }


def _streams_table(run: _Run) -> tuple[Table, dict[str, Any], list[float]]:
    settings, duration = run.settings, run.duration
    table = Table(
        f"Per stream ({settings.streams} streams, {settings.viewers} VP8 viewer(s) each, {duration:.0f} s)",
        ["stream", "source fps", "processed fps", "delivered fps", "e2e p50 ms", "e2e p99 ms", "ready p99 ms"]
        + ["stale", "overload", "not encoded", "viewer skip", "errors", "decode err"],
    )
    per_stream: dict[str, Any] = {}
    delivered_all: list[float] = []
    everyone = Histogram()
    for stream in run.streams:
        count = run.counts[stream.stream_id]
        latency = Histogram()
        for viewer in run.viewers[stream.stream_id]:
            latency.merge(viewer.latency)
        everyone.merge(latency)
        delivered = latency.count / settings.viewers / duration
        delivered_all.append(delivered)
        e2e, ready = latency.timing(), run.metrics.ready_latency[stream.label].timing()
        drops = {
            "stale_in_worker_slot": count.stale,
            "overload_waiting_for_a_permit": count.overload,
            "replaced_before_encode": max(count.processed - count.encoded, 0),
            "viewer_skipped": sum(viewer.skipped for viewer in run.viewers[stream.stream_id]),
            "pipeline_errors": count.errors,
            "decode_errors": count.decode_errors,
        }
        table.add(
            stream.stream_id,
            count.source / duration,
            count.processed / duration,
            delivered,
            e2e.p50,
            e2e.p99,
            ready.p99,
            *drops.values(),
        )
        per_stream[stream.stream_id] = {
            "source_fps": round(count.source / duration, 2),
            "processed_fps": round(count.processed / duration, 2),
            "delivered_fps": round(delivered, 2),
            "end_to_end": e2e.to_dict(),
            "capture_to_ready": ready.to_dict(),
            "drops": drops,
            "encode": {
                "encoded_fps": round(count.encoded / duration, 2),
                "keyframes": count.keyframes,
                "cpu_ms_per_frame": round(1000.0 * count.encode_cpu / count.encoded, 3)
                if count.encoded
                else None,
                "cpu_percent": round(100.0 * count.encode_cpu / duration, 2),
            },
        }
    overall = everyone.timing()
    table.notes += [
        "e2e: capture to packetised by a viewer; ready: capture to encoded, ready for every viewer (the service's"
        " end-to-end metric); stale: replaced in the worker's slot while it processed the previous frame; overload:"
        " replaced while the worker waited for a processing permit (all busy with other streams); not encoded:"
        " processed but replaced in the encoder's slot; viewer skip: encoded frames a viewer passed over (all"
        " viewers of the stream).",
        f"all streams: delivered fps min {min(delivered_all):.1f}, e2e p50 {overall.p50:.1f} ms,"
        f" p99 {overall.p99:.1f} ms (target: >= 29 fps, p99 <= 50 ms).",
    ]
    return table, per_stream, delivered_all


def _encode_table(run: _Run, per_stream: dict[str, Any]) -> Table:
    table = Table(
        "Encoding per stream (once for all its viewers, on its encoder thread)",
        ["stream", "viewers", "encoded fps", "keyframes", "CPU ms / frame", "% of one core"],
    )
    for stream_id, figures in per_stream.items():
        encode = figures["encode"]
        table.add(
            stream_id,
            run.settings.viewers,
            encode["encoded_fps"],
            encode["keyframes"],
            encode["cpu_ms_per_frame"],
            encode["cpu_percent"],
        )
    return table


def _publish_table(run: _Run) -> Table:
    table = Table(
        "RTSP out per stream (H.264, once per stream, on its rtsp-out thread)",
        ["stream", "published fps", "dropped", "reconnects"],
    )
    for stream_id, counts in run.counts.items():
        table.add(
            stream_id, counts.published / run.duration, counts.publish_dropped, counts.publish_reconnects
        )
    table.notes.append(
        "dropped: replaced by a newer frame before the publisher took it, or while not connected; the "
        "publishers' CPU is the rtsp-out row of the thread table."
    )
    return table


def _stage_table(run: _Run) -> Table:
    table = Table("Stage ms per frame (all streams)", ["stage", "mean", "p50", "p99"])
    for stage, histogram in run.metrics.stages.items():
        timing = histogram.timing()
        table.add(stage, timing.mean, timing.p50, timing.p99)
    table.notes.append(
        "per processed frame in the worker threads, except encode: wall time per encoded frame on the streams'"
        " encoder threads (total: the worker's). decode happens on the reader/feeder thread for these sources."
    )
    return table


def _slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    t, v = np.array(points, dtype=np.float64).T
    return float(np.polyfit(t, v, 1)[0] * 60.0)


def _process_table(run: _Run, frames: float) -> tuple[Table, dict[str, Any]]:
    rss = [sample.rss_mib for sample in run.samples]
    timing = run.metrics.stages["encode"].timing()
    slope = _slope_per_minute([(sample.t, sample.rss_mib) for sample in run.samples])
    process: dict[str, Any] = {
        "cpu_percent": round(100.0 * run.cpu_seconds / run.duration, 1),
        "cpu_ms_per_delivered_frame": round(1000.0 * run.cpu_seconds / frames, 2) if frames else None,
        "rss_mib_first": round(rss[0], 1) if rss else None,
        "rss_mib_last": round(rss[-1], 1) if rss else None,
        "rss_mib_max": round(max(rss), 1) if rss else None,
        "rss_mib_per_minute": None if slope is None else round(slope, 2),
        "encode": timing.to_dict(),
        "pinned_percent": round(100.0 * run.metrics.pinned_seconds() / run.duration, 1),
        "pin_switches": run.metrics.pin_switches(),
    }
    table = Table("Process", ["measure", "value"])
    table.add("CPU % (100 = one core)", process["cpu_percent"])
    table.add("CPU ms per delivered frame", process["cpu_ms_per_delivered_frame"])
    table.add(
        "RSS MiB first / last / max",
        f"{process['rss_mib_first']} / {process['rss_mib_last']} / {process['rss_mib_max']}",
    )
    table.add("RSS slope MiB/min", process["rss_mib_per_minute"])
    table.add("VP8 encode wall ms mean / p99 (per stream frame)", f"{timing.mean:.2f} / {timing.p99:.2f}")
    table.add(
        f"threads pinned by role, % of the time (pin_threads {run.settings.config.pin_threads})",
        process["pinned_percent"],
    )
    table.add("switches of the CPU split", process["pin_switches"])
    return table, process


def _thread_table(run: _Run) -> Table:
    table = Table("CPU by thread group", ["threads", "CPU s", "% of one core", "ms per processed frame"])
    processed = sum(count.processed for count in run.counts.values()) or 1
    for name, seconds in sorted(run.thread_cpu.items(), key=lambda item: -item[1]):
        if seconds > 0.005 * run.duration:
            table.add(name, seconds, 100.0 * seconds / run.duration, 1000.0 * seconds / processed)
    table.notes.append(
        "worker: pipeline (detect, track, crop, mesh, draw, publish); native: threads not started by Python"
        " (TFLite and codec threads); encoder: the streams' VP8 encoders (one each, for all viewers);"
        " asyncio: the default executor; MainThread: the event loop (viewers packetise there); feeder /"
        " rtsp-read: decode; rtsp-out: the H.264 publishers (RTSP out)."
    )
    return table


def _window_table(run: _Run) -> Table:
    settings = run.settings
    table = Table(
        f"Over time ({settings.window:g} s windows, all streams)",
        ["from s", "delivered fps/stream", "e2e p50 ms", "e2e p99 ms", "CPU %", "RSS MiB"],
    )
    viewers = [viewer for stream_viewers in run.viewers.values() for viewer in stream_viewers]
    count = max(1, math.ceil(settings.seconds / settings.window - 1e-9))
    for index in range(count):
        last = index == count - 1
        start, stop = index * settings.window, run.duration if last else (index + 1) * settings.window
        latency = Histogram()
        for viewer in viewers:
            for number, histogram in viewer.windows.items():
                if number == index or (
                    last and number > index
                ):  # the run's last instants join the last window
                    latency.merge(histogram)
        samples = [s for s in run.samples if start < s.t <= stop]
        cpu = float(np.mean([s.cpu_percent for s in samples])) if samples else None
        timing = latency.timing()
        fps = latency.count / len(viewers) / (stop - start)
        table.add(f"{start:.1f}", fps, timing.p50, timing.p99, cpu, samples[-1].rss_mib if samples else None)
    return table
