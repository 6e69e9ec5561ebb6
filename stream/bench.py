"""`fakeweb bench`: per-stage milliseconds of the pipeline on a clip, and the seed design on the same clip."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.classifier import Classifier
from stream.baseline import SeedPipeline
from stream.file_source import FileSource
from stream.frames import Frame
from stream.pipeline import PipelineConfig, StreamPipeline
from stream.sinks import VideoFileSink
from stream.timing import STAGES, StageTimes


@dataclass
class BenchResult:
    """Per-frame stage timings of one design over a clip."""

    name: str
    frames: list[StageTimes]
    wall_seconds: float
    faces: int

    def stage_ms(self, stage: str) -> tuple[float, float]:
        """(mean, p95) milliseconds per frame spent in `stage` (0 for frames where it did not run)."""
        values = np.array([times.seconds.get(stage, 0.0) for times in self.frames]) * 1000.0
        if not len(values):
            return 0.0, 0.0
        return float(values.mean()), float(np.percentile(values, 95))

    def total_ms(self) -> tuple[float, float]:
        values = np.array([times.total() for times in self.frames]) * 1000.0
        return float(values.mean()), float(np.percentile(values, 95))

    @property
    def fps(self) -> float:
        return len(self.frames) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "frames": len(self.frames),
            "faces": self.faces,
            "fps": round(self.fps, 2),
            "stages_ms": {stage: [round(v, 3) for v in self.stage_ms(stage)] for stage in STAGES},
            "total_ms": [round(v, 3) for v in self.total_ms()],
        }


def timed_frames(source: FileSource, max_frames: int) -> Iterator[tuple[Frame, StageTimes]]:
    """Frames from `source` with the decode time of each recorded, up to `max_frames`."""
    iterator = source.frames()
    for _ in range(max_frames):
        times = StageTimes()
        started = time.perf_counter()
        frame = next(iterator, None)
        if frame is None:
            return
        times.add("decode", time.perf_counter() - started)
        yield frame, times


def bench_design(
    name: str, clip: Path, max_frames: int, process: Callable[[Frame, StageTimes], int]
) -> BenchResult:
    """Decode, process and encode up to `max_frames` frames of `clip`, timing every stage."""
    frames: list[StageTimes] = []
    faces = 0
    with tempfile.TemporaryDirectory() as folder, FileSource(clip, stream_id=name) as source:
        with VideoFileSink(Path(folder) / "bench.mp4", source.video_info) as sink:
            started = time.perf_counter()
            for frame, times in timed_frames(source, max_frames):
                faces += process(frame, times)
                with times.measure("encode"):
                    sink.write(frame.image, frame.pts, frame.time_base)
                frames.append(times)
            wall = time.perf_counter() - started
    return BenchResult(name, frames, wall, faces)


def format_table(results: list[BenchResult]) -> str:
    header = f"{'stage':<10}" + "".join(f"{r.name + ' mean':>18}{'p95':>9}" for r in results)
    lines = [header, "-" * len(header)]
    for stage in STAGES:
        row = f"{stage:<10}"
        for result in results:
            mean, p95 = result.stage_ms(stage)
            row += f"{mean:>15.2f} ms{p95:>9.2f}"
        lines.append(row)
    lines.append("-" * len(header))
    row = f"{'total':<10}"
    for result in results:
        mean, p95 = result.total_ms()
        row += f"{mean:>15.2f} ms{p95:>9.2f}"
    lines.append(row)
    lines.append(f"{'frames/s':<10}" + "".join(f"{r.fps:>18.1f}{'':>9}" for r in results))
    lines.append(f"{'faces':<10}" + "".join(f"{r.faces:>18d}{'':>9}" for r in results))
    return "\n".join(lines)


def run_bench(
    clip: Path,
    config: PipelineConfig,
    classifier: Classifier,
    max_frames: int = 300,
    baseline: bool = True,
    json_path: Path | None = None,
) -> list[BenchResult]:
    """Benchmark the pipeline (and the seed design) on `clip`; print a table and optionally write JSON."""
    pipeline = StreamPipeline("bench", config, classifier.predict)

    def process(frame: Frame, times: StageTimes) -> int:
        return len(pipeline.process(frame, times).faces)

    try:
        results = [bench_design("fakeweb", clip, max_frames, process)]
    finally:
        pipeline.close()
    if baseline:
        seed = SeedPipeline(classifier.package, classifier.package.manifest.threshold)
        try:
            results.append(bench_design("seed", clip, max_frames, lambda f, t: seed.process(f.image, t)))
        finally:
            seed.close()
    print(
        f"clip: {clip}  frames: {len(results[0].frames)}  model: {classifier.version} ({classifier.backend})"
    )
    print(format_table(results))
    report: dict[str, object] = {"clip": str(clip), "model": classifier.version, "results": []}
    report["results"] = [result.to_dict() for result in results]
    if baseline and results[1].fps > 0:
        speedup = results[0].fps / results[1].fps
        report["speedup"] = round(speedup, 2)
        print(f"speed-up over the seed design: {speedup:.1f}x frames/s")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return results
