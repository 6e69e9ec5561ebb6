"""The pipeline's measured per-frame cost against the sum of its kernels' costs, and where the difference lies.

One stream runs unpaced through `StreamPipeline`, each time after `warmup` untimed frames (the kernels alone are
timed warm too): on this thread, decoding as FileSource does and publishing and VP8-encoding each frame as the
live path does; then threaded as the live path runs it (`threaded.run_threaded`: decode thread, worker, the
stream's encoder thread; process CPU time of all threads), unpinned and, given two CPUs, pinned by role as
`pin_threads = "on"` pins the service's (`stream.runtime.affinity`) and as served by default (`"auto"`: pinned while the
load allows, `stream.runtime.cpu_split`). The runs record which kernels each frame ran
(detector runs, faces cropped, classifier calls by batch size, FaceMesh inferences, faces drawn with a mesh or a
box, frames encoded). Then, without the pipeline:
- alone: each kernel is timed back to back (as in `kernels`); the expected cost of a frame is the sum of the
  recorded counts times these times, and overhead is the measured cost over that sum, minus one;
- in order: the same kernel instances replay the one-thread run's calls frame by frame, in the pipeline's
  order. Against "alone" this is what running several kernels in turn costs by itself; against it, the
  pipeline's own cost (its Python, copies and hand-offs) is what is left.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from models.classifier import Classifier
from stream.bench.calls import (
    Call,
    Inputs,
    load_inputs,
    make_classify,
    pipeline_kernels,
    stream_encode,
)
from stream.bench.procstat import cpu_seconds
from stream.bench.report import Report, Table, pipeline_settings, time_kernel
from stream.bench.threaded import run_threaded
from stream.pipeline.overlay import OverlayConfig, wants_mesh
from stream.pipeline.pipeline import FrameResult, PipelineConfig, StreamPipeline
from stream.runtime.affinity import CpuSplit, RolePinning
from stream.runtime.cpu_split import start_pinning, stop_pinning
from stream.runtime.timing import StageTimes
from stream.sources.file_source import FileSource

_COMPONENTS = ("decode", "detect", "track", "crop", "classify", "mesh", "draw", "encode")


class _CountingClassifier:
    """The classifier's predict, recording the batch size of each call."""

    def __init__(self, classifier: Classifier) -> None:
        self._predict = classifier.predict
        self.batches: list[int] = []

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.batches.append(len(crops))
        return self._predict(crops)


@dataclass(frozen=True)
class Cost:
    """Wall ms and process CPU ms: of one kernel call, or of one frame."""

    wall: float
    cpu: float


def kernel_cost(make: Callable[[], Call], repeat: int) -> Cost:
    """The cost of one call of a fresh kernel instance, back to back with itself."""
    calls = time_kernel(make, repeat)
    return Cost(calls.timing.mean, calls.cpu_ms)


@dataclass
class PipelineRun:
    """One measured run of the pipeline: per frame its wall seconds, stage times and kernel calls in order."""

    walls: list[float]
    stages: list[StageTimes]
    calls: list[list[str]]
    cpu_seconds: float

    @property
    def frames(self) -> int:
        return len(self.walls)

    def counts(self) -> Counter[str]:
        return Counter(name for frame in self.calls for name in frame)


class _CallRecorder:
    """The kernels each processed frame ran between decode and encode, in the pipeline's order, read from the
    pipeline and its counting classifier right after the frame."""

    def __init__(
        self, pipeline: StreamPipeline, counting: _CountingClassifier, overlay: OverlayConfig
    ) -> None:
        self._pipeline, self._counting, self._overlay = pipeline, counting, overlay
        self._mesh_runs = pipeline.mesh_runs

    def __call__(self, result: FrameResult) -> list[str]:
        mesh_runs, self._mesh_runs = self._pipeline.mesh_runs - self._mesh_runs, self._pipeline.mesh_runs
        batches = list(self._counting.batches)
        self._counting.batches.clear()
        meshed = sum(wants_mesh(self._overlay, face.verdict.value) for face in result.faces)
        return [
            *(["detect"] if "detect" in result.times.seconds else []),
            *(["crop"] * sum(batches)),
            *(f"classify b{batch}" for batch in batches),
            *(["mesh"] * mesh_runs),
            *(["draw mesh"] * meshed),
            *(["draw box"] * (len(result.faces) - meshed)),
        ]


def run_pipeline(
    clip: Path, config: PipelineConfig, classifier: Classifier, frames: int, warmup: int
) -> PipelineRun:
    """`warmup` untimed frames, then `frames` measured ones, through the pipeline, publish and encode."""
    counting = _CountingClassifier(classifier)
    pipeline = StreamPipeline("bench", config, counting)
    record = _CallRecorder(pipeline, counting, config.overlay)
    run = PipelineRun([], [], [], 0.0)
    try:
        with FileSource(clip, stream_id="bench", loop=True) as source:
            encode = stream_encode(source.width, source.height)
            iterator = source.frames()

            def step(index: int, into: PipelineRun) -> None:
                times = StageTimes()
                started = time.perf_counter()
                with times.measure("decode"):
                    frame = next(iterator)
                result = pipeline.process(frame, times)
                with times.measure("encode"):
                    encode(frame.image, index)
                into.walls.append(time.perf_counter() - started)
                into.stages.append(times)
                into.calls.append(["decode", *record(result), "encode"])

            for index in range(warmup):
                step(index, PipelineRun([], [], [], 0.0))
            cpu_before = cpu_seconds()
            for index in range(warmup, warmup + frames):
                step(index, run)
            run.cpu_seconds = cpu_seconds() - cpu_before
    finally:
        pipeline.close()
    return run


def run_live_threads(
    clip: Path,
    config: PipelineConfig,
    classifier: Classifier,
    frames: int,
    warmup: int,
    pin: str = "off",
) -> tuple[Counter[str], float, int]:
    """The kernel calls, process CPU seconds and pin switches of `frames` frames after `warmup`, threaded as the
    live path (decode thread, worker, the stream's encoder thread: `threaded.run_threaded`), its threads pinned
    by role as the `pin` setting of `pin_threads` would (`on`, `off` or `auto`) on this process's CPUs."""
    counting = _CountingClassifier(classifier)
    pipeline = StreamPipeline("bench", config, counting)
    record = _CallRecorder(pipeline, counting, config.overlay)
    counts: Counter[str] = Counter()

    def on_processed(result: FrameResult) -> None:
        calls = record(result)
        if result.index >= warmup:
            counts.update(calls)

    pinning = RolePinning()
    splitter = start_pinning(pin, frozenset(os.sched_getaffinity(0)), pinning)
    try:
        run = run_threaded(clip, frames, pipeline, warmup, on_processed, pinning)
    finally:
        stop_pinning(splitter, pinning)
        pipeline.close()
    counts["decode"], counts["encode"] = run.processed, len(run.delivered)
    return counts, run.cpu_seconds, 0 if splitter is None else splitter.switches


def replay_in_order(
    calls: list[list[str]], makers: dict[str, Callable[[], Call]]
) -> tuple[Cost, dict[str, float]]:
    """The recorded calls run by fresh kernel instances, frame by frame: the cost per frame, and the wall ms
    per frame of each kernel."""
    instances = {name: make() for name, make in makers.items()}
    for instance in instances.values():
        instance(0)
    inputs: dict[str, itertools.count[int]] = defaultdict(partial(itertools.count, 1))
    wall_by: dict[str, float] = defaultdict(float)
    cpu_before, started = cpu_seconds(), time.perf_counter()
    for frame in calls:
        for name in frame:
            call_started = time.perf_counter()
            instances[name](next(inputs[name]))
            wall_by[name] += time.perf_counter() - call_started
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    n = len(calls)
    return Cost(1000.0 * wall / n, 1000.0 * cpu / n), {name: 1000.0 * s / n for name, s in wall_by.items()}


def _kernel_makers(
    inputs: Inputs, config: PipelineConfig, classifier: Classifier, counts: Counter[str]
) -> dict[str, Callable[[], Call]]:
    makers = pipeline_kernels(inputs, config.detector, config.crop)
    for name in counts:
        if name.startswith("classify b"):
            makers[name] = partial(make_classify, classifier, inputs, int(name.removeprefix("classify b")))
    return makers


def _percent(measured: float, baseline: float) -> float:
    return measured / baseline - 1.0


def run_overhead(
    clip: Path,
    config: PipelineConfig,
    classifier: Classifier,
    max_frames: int = 600,
    repeat: int = 60,
    warmup: int = 30,
) -> Report:
    """Run the pipeline on `clip` on one thread and threaded as live, then its kernels alone and in the
    pipeline's order; report the costs per frame and the overheads between them."""
    report = Report("overhead", {**pipeline_settings(clip, config, classifier, max_frames), "warmup": warmup})
    run = run_pipeline(clip, config, classifier, max_frames, warmup)
    counts = run.counts()
    threaded = {"live threads, unpinned": run_live_threads(clip, config, classifier, max_frames, warmup)}
    if CpuSplit.of(os.sched_getaffinity(0)) is not None:
        for pin, name in (("on", "live threads, pinned"), ("auto", "live threads, auto")):
            threaded[name] = run_live_threads(clip, config, classifier, max_frames, warmup, pin)
    every_count = sum((calls for calls, _, _ in threaded.values()), counts)
    n = run.frames
    makers = _kernel_makers(load_inputs(clip, 60, config.crop), config, classifier, every_count)
    alone = {name: kernel_cost(makers[name], repeat) for name in every_count}
    in_order, in_order_by = replay_in_order(run.calls, makers)
    summed = Cost(
        sum(counts[name] * cost.wall for name, cost in alone.items()) / n,
        sum(counts[name] * cost.cpu for name, cost in alone.items()) / n,
    )
    measured = Cost(1000.0 * sum(run.walls) / n, 1000.0 * run.cpu_seconds / n)
    threads = {
        name: _threaded_cost(calls, cpu, alone, switches) for name, (calls, cpu, switches) in threaded.items()
    }
    overhead = {"wall": _percent(measured.wall, summed.wall), "cpu": _percent(measured.cpu, summed.cpu)}
    in_order_over_alone = {
        "wall": _percent(in_order.wall, summed.wall),
        "cpu": _percent(in_order.cpu, summed.cpu),
    }
    pipeline_over_in_order = {
        "wall": _percent(measured.wall, in_order.wall),
        "cpu": _percent(measured.cpu, in_order.cpu),
    }
    table = _table(run, counts, alone, in_order_by, (summed, in_order, measured))
    for name, cost in threads.items():
        table.add(f"{name} CPU", None, cost["kernels_cpu_ms_per_frame"], None, cost["cpu_ms_per_frame"], None)
    table.notes[:0] = [
        "overhead over the sum of the kernels alone (target <= 15 %), CPU: "
        + "; ".join(
            f"{name.replace('live threads', 'threaded as the live path')} {100 * cost['overhead_cpu']:.1f} %"
            f" ({cost['cpu_ms_per_frame']:.2f} ms measured, {cost['kernels_cpu_ms_per_frame']:.2f} ms kernels"
            + (f", {cost['pin_switches']} switches of the split" if name.endswith("auto") else "")
            + ")"
            for name, cost in threads.items()
        )
        + f"; on one thread {100 * overhead['cpu']:.1f} % ({measured.cpu:.2f} ms measured,"
        f" {summed.cpu:.2f} ms kernels; wall {100 * overhead['wall']:.1f} %).",
        f"of which the kernels themselves, run in the pipeline's order: CPU {100 * in_order_over_alone['cpu']:.1f} %"
        f" over alone ({in_order.cpu:.2f} ms); the pipeline over them in that order: CPU"
        f" {100 * pipeline_over_in_order['cpu']:.1f} %, wall {100 * pipeline_over_in_order['wall']:.1f} %.",
    ]
    report.tables.append(table)
    report.results = {
        "kernels": {
            name: {"wall_ms": round(c.wall, 3), "cpu_ms": round(c.cpu, 3)} for name, c in alone.items()
        },
        "kernel_calls": dict(counts),
        "frames": n,
        "wall_ms_per_frame": round(measured.wall, 3),
        "cpu_ms_per_frame": round(measured.cpu, 3),
        "kernels_wall_ms_per_frame": round(summed.wall, 3),
        "kernels_cpu_ms_per_frame": round(summed.cpu, 3),
        "in_order_wall_ms_per_frame": round(in_order.wall, 3),
        "in_order_cpu_ms_per_frame": round(in_order.cpu, 3),
        "overhead": _rounded(overhead),
        "in_order_over_alone": _rounded(in_order_over_alone),
        "pipeline_over_in_order": _rounded(pipeline_over_in_order),
        **{name.replace(" ", "_").replace(",", ""): cost for name, cost in threads.items()},
    }
    return report.finish()


def _threaded_cost(
    calls: Counter[str], cpu_seconds: float, alone: dict[str, Cost], switches: int
) -> dict[str, Any]:
    """A threaded run's frames, kernel calls, CPU ms per frame measured and of its kernels alone, overhead, and
    how often its CPU split changed (`auto` only).

    A frame replaced in the encoder's slot was published (converted to yuv420p) but not encoded: its publish is
    in the measured CPU but not in the kernels' sum, which overstates the overhead by that little.
    """
    frames = calls["decode"]
    measured = 1000.0 * cpu_seconds / frames
    kernels = sum(calls[name] * cost.cpu for name, cost in alone.items()) / frames
    return {
        "frames": frames,
        "encoded": calls["encode"],
        "kernel_calls": dict(calls),
        "cpu_ms_per_frame": round(measured, 3),
        "kernels_cpu_ms_per_frame": round(kernels, 3),
        "overhead_cpu": round(_percent(measured, kernels), 4),
        "pin_switches": switches,
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in values.items()}


def _table(
    run: PipelineRun,
    counts: Counter[str],
    alone: dict[str, Cost],
    in_order_by: dict[str, float],
    totals: tuple[Cost, Cost, Cost],
) -> Table:
    """Per component: kernel calls per frame, wall ms per frame alone, in the pipeline's order and in the
    pipeline (its stage), and the kernels' CPU ms alone; then the totals."""
    n = run.frames
    table = Table(
        f"Pipeline per-frame cost against its kernels ({n} frames, ms per frame)",
        ["component", "calls/frame", "alone ms", "in order ms", "pipeline ms", "alone CPU ms"],
    )
    wall_by: dict[str, float] = defaultdict(float)
    cpu_by: dict[str, float] = defaultdict(float)
    calls_by: dict[str, float] = defaultdict(float)
    order_by: dict[str, float] = defaultdict(float)
    for name, cost in alone.items():
        component = name.split(" ")[0]
        wall_by[component] += counts[name] * cost.wall / n
        cpu_by[component] += counts[name] * cost.cpu / n
        calls_by[component] += counts[name] / n
        order_by[component] += in_order_by.get(name, 0.0)
    stages_total = 0.0
    for component in _COMPONENTS:
        measured = float(np.mean([times.seconds.get(component, 0.0) for times in run.stages])) * 1000.0
        stages_total += measured
        table.add(
            component,
            calls_by[component],
            wall_by[component],
            order_by[component],
            measured,
            cpu_by[component],
        )
    summed, in_order, measured_total = totals
    table.add("untimed glue", None, 0.0, 0.0, measured_total.wall - stages_total, 0.0)
    table.add("total wall", None, summed.wall, in_order.wall, measured_total.wall, None)
    table.add("total CPU", None, summed.cpu, in_order.cpu, measured_total.cpu, None)
    table.notes.append(
        "classify kernels by batch size: "
        + ", ".join(
            f"{name[9:]} {cost.wall:.2f} ms" for name, cost in alone.items() if name.startswith("classify")
        )
    )
    return table
