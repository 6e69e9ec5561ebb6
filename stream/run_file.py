"""`fakeweb run`: annotate a video file frame by frame into an H.264 file and a JSON-lines result log."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from models.classifier import Classifier
from stream.file_source import FileSource
from stream.pipeline import FrameResult, PipelineConfig, StreamPipeline
from stream.sinks import FaceRecord, JsonlResultSink, VideoFileSink
from stream.timing import StageTimes


@dataclass
class RunSummary:
    """What a file run did: frames, faces, verdicts, tracks and wall time."""

    output: Path
    frames: int = 0
    frames_with_faces: int = 0
    track_ids: set[int] = field(default_factory=set)
    verdicts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        if result.faces:
            self.frames_with_faces += 1
        for face in result.faces:
            self.track_ids.add(face.track_id)
            self.verdicts[face.verdict] += 1

    def describe(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        verdicts = ", ".join(f"{name} {count}" for name, count in sorted(self.verdicts.items())) or "none"
        return (
            f"{self.output}: {self.frames} frames ({fps:.1f} fps), faces in {self.frames_with_faces} frames, "
            f"{len(self.track_ids)} tracks; face-frames by verdict: {verdicts}"
        )


def result_records(result: FrameResult) -> list[FaceRecord]:
    return [
        FaceRecord(
            stream=result.stream_id,
            frame=result.index,
            pts=result.pts_seconds,
            track_id=face.track_id,
            box=face.box.as_list(),
            probability=None if face.probability is None else round(face.probability, 4),
            verdict=face.verdict,
        )
        for face in result.faces
    ]


def annotate_file(
    input_path: Path,
    output_path: Path,
    config: PipelineConfig,
    classifier: Classifier,
    results_path: Path | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run the pipeline over every frame of `input_path`, writing the annotated video and optional results."""
    summary = RunSummary(output_path)
    started = time.perf_counter()
    with FileSource(input_path, stream_id=input_path.stem) as source:
        pipeline = StreamPipeline(source.stream_id, config, classifier.predict)
        results = JsonlResultSink(results_path) if results_path else None
        try:
            with VideoFileSink(output_path, source.video_info) as video:
                bar = tqdm(total=source.frame_count or None, unit="frame", disable=not progress, leave=False)
                for frame in source.frames():
                    result = pipeline.process(frame, StageTimes())
                    video.write(frame.image, frame.pts, frame.time_base)
                    if results is not None:
                        results.write(result_records(result))
                    summary.add(result)
                    bar.update(1)
                bar.close()
        finally:
            pipeline.close()
            if results is not None:
                results.close()
    summary.seconds = time.perf_counter() - started
    return summary
