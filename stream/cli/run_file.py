"""`fakeweb run`: annotate a video file frame by frame into an H.264 file and a JSON-lines result log.

The file's frames go through the pipeline one by one (no thread, no frame dropped) to the same fan-out of outputs
as a live stream's (`stream.outputs.fanout`): the video file, the metrics, the results file and the run's summary.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.classifier import Classifier
from stream.outputs.fanout import Fanout, FrameMetrics
from stream.outputs.metrics import FILE_LABEL, Metrics
from stream.outputs.sinks import JsonlResultSink, VideoFileSink
from stream.pipeline.pipeline import ClassifyFn, FrameResult, PipelineConfig, StreamPipeline
from stream.runtime.timing import StageTimes
from stream.sources.file_source import FileSource
from stream.sources.frames import Frame


@dataclass
class RunSummary:
    """What a file run did: frames, faces, verdicts, the scores shown (the smoothed probabilities the verdicts
    rest on), tracks, wall time and the video's frame rate (if known)."""

    output: Path
    frames: int = 0
    frames_with_faces: int = 0
    track_ids: set[int] = field(default_factory=set)
    verdicts: Counter[str] = field(default_factory=Counter)
    scores_shown: int = 0
    score_sum: float = 0.0
    score_max: float = 0.0
    seconds: float = 0.0
    frame_rate: float | None = None

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        self.frames += 1
        if result.faces:
            self.frames_with_faces += 1
        for face in result.faces:
            self.track_ids.add(face.track_id)
            self.verdicts[face.verdict.value] += 1
            if face.probability is not None:
                self.scores_shown += 1
                self.score_sum += face.probability
                self.score_max = max(self.score_max, face.probability)

    def speed(self) -> str:
        """Processing speed (not the video's frame rate): frames/s, and the multiple of real time if known."""
        processed = self.frames / self.seconds if self.seconds > 0 else 0.0
        text = f"{processed:.1f} frames/s"
        if self.frame_rate:
            text += f", {processed / self.frame_rate:.1f}x real time"
        return text

    def describe(self) -> str:
        verdicts = ", ".join(f"{name} {count}" for name, count in sorted(self.verdicts.items())) or "none"
        return (
            f"{self.output}: {self.frames} frames processed in {self.seconds:.1f} s ({self.speed()}), "
            f"faces in {self.frames_with_faces} frames, {len(self.track_ids)} tracks; "
            f"face-frames by verdict: {verdicts}{self._scores()}"
        )

    def _scores(self) -> str:
        if not self.scores_shown:
            return ""
        return f"; scores shown: mean {self.score_sum / self.scores_shown:.2f}, max {self.score_max:.2f}"


class _PacingSleep:
    """FileSource's real-time sleep, remembering how long it slept so decode times exclude the pacing."""

    def __init__(self) -> None:
        self.slept = 0.0

    def __call__(self, seconds: float) -> None:
        started = time.perf_counter()
        time.sleep(seconds)
        self.slept += time.perf_counter() - started


def _decoded(source: FileSource, pacing: _PacingSleep) -> Iterator[tuple[Frame, StageTimes]]:
    """Frames of `source` with their decode time recorded."""
    frames = source.frames()
    while True:
        times = StageTimes()
        pacing.slept = 0.0
        started = time.perf_counter()
        frame = next(frames, None)
        if frame is None:
            return
        times.add("decode", time.perf_counter() - started - pacing.slept)
        yield frame, times


def _observed(classify: ClassifyFn, metrics: Metrics) -> ClassifyFn:
    """`classify`, recording each call's batch size and duration."""

    def run(crops: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        probabilities = classify(crops)
        metrics.observe_batch(len(crops), time.perf_counter() - started)
        return probabilities

    return run


def annotate_file(
    input_path: Path,
    output_path: Path,
    config: PipelineConfig,
    classifier: Classifier,
    results_path: Path | None = None,
    progress: bool = True,
    realtime: bool = False,
    metrics: Metrics | None = None,
) -> RunSummary:
    """Run the pipeline over every frame of `input_path`, writing the annotated video and optional results.

    `realtime` paces the file at its frame rate like a live camera; `metrics` observes every frame.
    """
    summary = RunSummary(output_path)
    started = time.perf_counter()
    pacing = _PacingSleep()
    with contextlib.ExitStack() as closing:
        source = closing.enter_context(
            FileSource(input_path, stream_id=input_path.stem, realtime=realtime, sleep=pacing)
        )
        rate = source.video_info.rate
        summary.frame_rate = float(rate) if rate else None
        classify: ClassifyFn = classifier.predict
        if metrics is not None:
            classify = _observed(classify, metrics)
            metrics.set_model(classifier.version, classifier.backend, classifier.device)
            metrics.set_model_loaded(True)
            metrics.set_stream_states({"live": 1})
        pipeline = StreamPipeline(source.stream_id, config, classify)
        closing.callback(pipeline.close)
        results = closing.enter_context(JsonlResultSink(results_path)) if results_path else None
        video = closing.enter_context(VideoFileSink(output_path, source.video_info))
        outputs = Fanout(source.stream_id, [video], reraise=True)  # a failed write ends the run
        if metrics is not None:
            outputs.add(
                FrameMetrics(metrics, FILE_LABEL, delivered_on_result=True)
            )  # after the video: written
        if results is not None:
            outputs.add(results)
        outputs.add(summary)
        bar = tqdm(total=source.frame_count or None, unit="frame", disable=not progress, leave=False)
        for frame, times in _decoded(source, pacing):
            outputs.on_result(frame, pipeline.process(frame, times))
            bar.update(1)
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
