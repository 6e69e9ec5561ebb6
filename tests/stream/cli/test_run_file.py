"""`fakeweb run`'s summary line: the processing speed, never to be read as the output's frame rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.geometry import Box
from stream.cli.run_file import RunSummary
from stream.pipeline.pipeline import FaceResult, FrameResult
from stream.pipeline.scoring import Verdict
from stream.pipeline.tracker import TrackState
from stream.runtime.timing import StageTimes
from stream.sources.frames import Frame


@pytest.mark.parametrize(
    ("frame_rate", "speed"),
    [(29.5, "(59.7 frames/s, 2.0x real time)"), (None, "(59.7 frames/s)")],
    ids=["rate known", "rate unknown"],
)
def test_summary_gives_processing_speed_and_real_time_factor(frame_rate: float | None, speed: str) -> None:
    summary = RunSummary(Path("out.mp4"), frames=209, seconds=3.5, frame_rate=frame_rate)
    assert summary.describe().startswith(f"out.mp4: 209 frames processed in 3.5 s {speed}, faces in 0 frames")


def test_summary_counts_verdicts_and_the_scores_shown() -> None:
    """Unknown faces show no score and count in no mean; the mean and max are of the scores on the video."""
    summary = RunSummary(Path("out.mp4"))
    frame = Frame("file", 0, np.zeros((4, 4, 3), np.uint8), capture_time=0.0)
    for index, faces in enumerate([[(None, "unknown")], [(0.2, "real"), (0.9, "manipulated")], []]):
        results = [
            FaceResult(n, Box(0, 0, 2, 2), TrackState.CONFIRMED, p, Verdict(v))
            for n, (p, v) in enumerate(faces)
        ]
        summary.on_result(frame, FrameResult("file", index, None, 0.0, results, StageTimes()))
    described = summary.describe()
    assert "faces in 2 frames, 2 tracks" in described
    assert described.endswith(
        "face-frames by verdict: manipulated 1, real 1, unknown 1; scores shown: mean 0.55, max 0.90"
    )


def test_summary_without_scores_says_nothing_of_them() -> None:
    assert "scores shown" not in RunSummary(Path("out.mp4"), frames=3).describe()
