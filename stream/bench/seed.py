"""The pipeline against the seed design on the same clip: per-stage milliseconds, frames/s and their ratio.

Each design runs one stream, unpaced, as it is built. The seed design does everything on one thread: decode
(PyAV, as FileSource), process, encode for one viewer with aiortc's VP8 encoder from the RGB frame. Ours runs as
the live path does (`threaded.run_threaded`: decode thread, worker, the stream's encoder thread, the classifier
called directly); frames/s counts encoded (delivered) frames. Frames per CPU-second compares the designs
without the threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder

from models.classifier import Classifier
from stream.bench.baseline import SeedPipeline
from stream.bench.calls import VIDEO_TIME_BASE
from stream.bench.report import Report, Table, pipeline_settings
from stream.bench.threaded import run_threaded
from stream.pipeline.pipeline import PipelineConfig, StreamPipeline
from stream.runtime.timing import STAGES, StageTimes
from stream.sources.file_source import FileSource
from stream.sources.frames import Frame

ProcessFn = Callable[[Frame, StageTimes], int]
"""Annotates one frame in place, timing its stages; returns the number of faces found."""


@dataclass
class DesignResult:
    """Per-frame stage timings of one design over a clip."""

    name: str
    frames: list[StageTimes]
    wall_seconds: float
    cpu_seconds: float
    faces: int
    dropped: int = 0
    """Frames processed but replaced in the encoder's slot before it took them (not delivered, not counted)."""

    def stage_ms(self, stage: str) -> tuple[float, float]:
        """(mean, p95) milliseconds per frame spent in `stage` (0 for frames where it did not run)."""
        values = np.array([times.seconds.get(stage, 0.0) for times in self.frames]) * 1000.0
        if not len(values):
            return 0.0, 0.0
        return float(values.mean()), float(np.percentile(values, 95))

    def total_ms(self) -> tuple[float, float]:
        values = np.array([times.total() for times in self.frames]) * 1000.0
        if not len(values):
            return 0.0, 0.0
        return float(values.mean()), float(np.percentile(values, 95))

    @property
    def fps(self) -> float:
        return len(self.frames) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def frames_per_cpu_second(self) -> float:
        """Frames per second of process CPU time (all threads): the throughput on a machine of its own."""
        return len(self.frames) / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "frames": len(self.frames),
            "dropped": self.dropped,
            "faces": self.faces,
            "fps": round(self.fps, 2),
            "frames_per_cpu_second": round(self.frames_per_cpu_second, 2),
            "stages_ms": {stage: [round(v, 3) for v in self.stage_ms(stage)] for stage in STAGES},
            "total_ms": [round(v, 3) for v in self.total_ms()],
        }


def run_design(name: str, clip: Path, max_frames: int, process: ProcessFn) -> DesignResult:
    """Decode, process, publish and VP8-encode up to `max_frames` frames of `clip` (looped), timing each stage."""
    frames: list[StageTimes] = []
    faces = 0
    encoder = Vp8Encoder()
    with FileSource(clip, stream_id=name, loop=True) as source:
        iterator = source.frames()
        started, cpu_started = time.perf_counter(), time.process_time()
        for index in range(max_frames):
            times = StageTimes()
            with times.measure("decode"):
                frame = next(iterator)
            faces += process(frame, times)
            with times.measure("encode"):
                video_frame = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
                video_frame.pts, video_frame.time_base = index * 3000, VIDEO_TIME_BASE
                encoder.encode(video_frame)
            frames.append(times)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return DesignResult(name, frames, wall, cpu, faces)


def stage_table(results: list[DesignResult], title: str) -> Table:
    """Mean and p95 ms per frame for each stage of each design; totals, frames/s and faces."""
    columns = ["stage"]
    for result in results:
        columns += [f"{result.name} mean", f"{result.name} p95"]
    table = Table(title, columns)
    for stage in STAGES:
        table.add(stage, *[value for result in results for value in result.stage_ms(stage)])
    table.add("total", *[value for result in results for value in result.total_ms()])
    table.add("frames/s", *[value for result in results for value in (result.fps, None)])
    table.add(
        "frames/CPU-s", *[value for result in results for value in (result.frames_per_cpu_second, None)]
    )
    table.add("faces", *[value for result in results for value in (result.faces, None)])
    return table


def run_seed(clip: Path, config: PipelineConfig, classifier: Classifier, max_frames: int = 300) -> Report:
    """The pipeline and the seed design on `clip`; the report holds both tables and the frames/s ratio."""
    report = Report("seed", pipeline_settings(clip, config, classifier, max_frames))
    pipeline = StreamPipeline("bench", config, classifier.predict)
    try:
        run = run_threaded(clip, max_frames, pipeline)
        ours = DesignResult(
            "fakeweb", run.delivered, run.wall_seconds, run.cpu_seconds, run.faces, run.dropped
        )
    finally:
        pipeline.close()
    seed = SeedPipeline(classifier.package, classifier.package.manifest.threshold)
    try:
        theirs = run_design("seed", clip, max_frames, lambda f, t: seed.process(f.image, t))
    finally:
        seed.close()
    ratio = ours.fps / theirs.fps if theirs.fps > 0 else None
    cpu_ratio = (
        ours.frames_per_cpu_second / theirs.frames_per_cpu_second
        if theirs.frames_per_cpu_second > 0
        else None
    )
    table = stage_table([ours, theirs], "Pipeline vs seed design, one stream unpaced (ms per frame)")
    if ratio is not None and cpu_ratio is not None:
        table.notes.append(
            f"fakeweb: {ours.dropped} processed frames replaced in the encoder's slot (not delivered, not counted)."
        )
        table.notes.append(
            f"speed-up over the seed design: {ratio:.1f}x frames/s, {cpu_ratio:.1f}x frames per CPU-second"
            " (target >= 20x)"
        )
    report.tables.append(table)
    report.results = {
        "designs": [ours.to_dict(), theirs.to_dict()],
        "speedup": None if ratio is None else round(ratio, 2),
        "speedup_cpu": None if cpu_ratio is None else round(cpu_ratio, 2),
    }
    return report.finish()
