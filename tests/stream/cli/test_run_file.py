"""`fakeweb run`'s summary line: the processing speed, never to be read as the output's frame rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli.run_file import RunSummary


@pytest.mark.parametrize(
    ("frame_rate", "speed"),
    [(29.5, "(59.7 frames/s, 2.0x real time)"), (None, "(59.7 frames/s)")],
    ids=["rate known", "rate unknown"],
)
def test_summary_gives_processing_speed_and_real_time_factor(frame_rate: float | None, speed: str) -> None:
    summary = RunSummary(Path("out.mp4"), frames=209, seconds=3.5, frame_rate=frame_rate)
    assert summary.describe().startswith(f"out.mp4: 209 frames processed in 3.5 s {speed}, faces in 0 frames")
