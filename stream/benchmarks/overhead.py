"""The pipeline's measured per-frame cost against the sum of its kernels' costs.

First each kernel the pipeline uses is timed alone (as in `kernels`). Then one stream runs unpaced through
`StreamPipeline` on this thread, decoding as FileSource does and publishing and VP8-encoding each frame as the
live path does, and the run counts how often each kernel ran (detector runs, faces cropped, classifier calls by
batch size, FaceMesh inferences, faces drawn with a mesh or a box). The expected cost of a frame is the sum of those
counts times the kernels' times; overhead is the measured wall time per frame over that sum, minus one.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from models.classifier import Classifier
from stream.benchmarks.calls import (
    Call,
    Inputs,
    load_inputs,
    make_classify,
    pipeline_kernels,
    stream_encode,
)
from stream.benchmarks.procstat import cpu_seconds
from stream.benchmarks.report import Report, Table, pipeline_settings, time_kernel
from stream.file_source import FileSource
from stream.overlay import wants_mesh
from stream.pipeline import PipelineConfig, StreamPipeline
from stream.timing import StageTimes

_COMPONENTS = ("decode", "detect", "track", "crop", "classify", "mesh", "draw", "encode")


class _CountingClassifier:
    """The classifier's predict, counting calls by batch size."""

    def __init__(self, classifier: Classifier) -> None:
        self._predict = classifier.predict
        self.batches: Counter[int] = Counter()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.batches[len(crops)] += 1
        return self._predict(crops)


@dataclass(frozen=True)
class Cost:
    """One kernel call: mean wall ms and process CPU ms."""

    wall: float
    cpu: float


def kernel_cost(make: Callable[[], Call], repeat: int) -> Cost:
    """The cost of one call of a fresh kernel instance."""
    calls = time_kernel(make, repeat)
    return Cost(calls.timing.mean, calls.cpu_ms)


def _kernel_costs(
    inputs: Inputs, config: PipelineConfig, classifier: Classifier, batches: set[int], repeat: int
) -> dict[str, Cost]:
    makers = pipeline_kernels(inputs, config.detector, config.crop)
    for batch in sorted(batches):
        makers[f"classify b{batch}"] = partial(make_classify, classifier, inputs, batch)
    return {name: kernel_cost(make, repeat) for name, make in makers.items()}


def run_overhead(
    clip: Path, config: PipelineConfig, classifier: Classifier, max_frames: int = 300, repeat: int = 60
) -> Report:
    """Run the pipeline on `clip`, then time its kernels alone; report per-frame cost against their sum."""
    report = Report("overhead", pipeline_settings(clip, config, classifier, max_frames))
    counting = _CountingClassifier(classifier)
    counts: Counter[str] = Counter()
    frames: list[StageTimes] = []
    walls: list[float] = []
    pipeline = StreamPipeline("bench", config, counting)
    encode: Callable[[np.ndarray, int], object] | None = None
    cpu_before = cpu_seconds()
    try:
        with FileSource(clip, stream_id="bench", loop=True) as source:
            iterator = source.frames()
            for index in range(max_frames):
                times = StageTimes()
                started = time.perf_counter()
                with times.measure("decode"):
                    frame = next(iterator)
                result = pipeline.process(frame, times)
                with times.measure("encode"):
                    if encode is None:
                        encode = stream_encode(frame.image.shape[1], frame.image.shape[0])
                    encode(frame.image, index)
                walls.append(time.perf_counter() - started)
                frames.append(times)
                counts["detect"] += "detect" in result.times.seconds
                meshed = sum(wants_mesh(config.overlay, face.verdict) for face in result.faces)
                counts["draw mesh"] += meshed
                counts["draw box"] += len(result.faces) - meshed
    finally:
        counts["mesh"] = pipeline.mesh_runs
        pipeline.close()
    cpu = cpu_seconds() - cpu_before
    counts["decode"] = counts["encode"] = len(frames)
    for batch, calls in counting.batches.items():
        counts[f"classify b{batch}"] = calls
        counts["crop"] += batch * calls
    inputs = load_inputs(clip, 60, config.crop)
    costs = _kernel_costs(inputs, config, classifier, set(counting.batches), repeat)
    n = len(frames)
    wall = 1000.0 * sum(walls) / n
    expected_wall = sum(counts[name] * cost.wall for name, cost in costs.items()) / n
    expected_cpu = sum(counts[name] * cost.cpu for name, cost in costs.items()) / n
    overhead = {"wall": wall / expected_wall - 1.0, "cpu": 1000.0 * cpu / n / expected_cpu - 1.0}
    report.tables.append(_table(frames, walls, counts, costs, 1000.0 * cpu / n))
    report.tables[0].notes.insert(
        0,
        f"overhead over the sum of the kernels (target <= 15 %): wall {100 * overhead['wall']:.1f} %,"
        f" CPU {100 * overhead['cpu']:.1f} % ({1000.0 * cpu / n:.2f} ms measured, {expected_cpu:.2f} ms kernels).",
    )
    report.results = {
        "kernels": {
            name: {"wall_ms": round(c.wall, 3), "cpu_ms": round(c.cpu, 3)} for name, c in costs.items()
        },
        "kernel_calls": dict(counts),
        "frames": n,
        "wall_ms_per_frame": round(wall, 3),
        "cpu_ms_per_frame": round(1000.0 * cpu / n, 3),
        "kernels_wall_ms_per_frame": round(expected_wall, 3),
        "kernels_cpu_ms_per_frame": round(expected_cpu, 3),
        "overhead": {key: round(value, 4) for key, value in overhead.items()},
    }
    return report.finish()


def _table(
    frames: list[StageTimes], walls: list[float], counts: Counter[str], costs: dict[str, Cost], cpu_ms: float
) -> Table:
    """Per component: kernel calls per frame, the kernels' wall and CPU ms, the pipeline stage's wall ms."""
    n = len(frames)
    table = Table(
        f"Pipeline per-frame cost against the sum of its kernels ({n} frames, ms per frame)",
        ["component", "calls/frame", "kernels ms", "pipeline ms", "difference", "kernels CPU ms"],
    )
    wall_by: dict[str, float] = defaultdict(float)
    cpu_by: dict[str, float] = defaultdict(float)
    calls_by: dict[str, float] = defaultdict(float)
    for name, cost in costs.items():
        component = name.split(" ")[0]
        wall_by[component] += counts[name] * cost.wall / n
        cpu_by[component] += counts[name] * cost.cpu / n
        calls_by[component] += counts[name] / n
    stages_total = 0.0
    for component in _COMPONENTS:
        measured = float(np.mean([times.seconds.get(component, 0.0) for times in frames])) * 1000.0
        stages_total += measured
        expected = wall_by[component]
        table.add(component, calls_by[component], expected, measured, measured - expected, cpu_by[component])
    wall = 1000.0 * sum(walls) / n
    table.add("untimed glue", None, 0.0, wall - stages_total, wall - stages_total, 0.0)
    expected_wall, expected_cpu = sum(wall_by.values()), sum(cpu_by.values())
    table.add("total wall", None, expected_wall, wall, wall - expected_wall, None)
    table.add("total CPU", None, None, cpu_ms, cpu_ms - expected_cpu, expected_cpu)
    table.notes.append(
        "classify kernels by batch size: "
        + ", ".join(
            f"{name[9:]} {cost.wall:.2f} ms" for name, cost in costs.items() if name.startswith("classify")
        )
    )
    return table
