"""VideoFileSink round trips (frame count, pts, duration, colours) and the JSON-lines result schema."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from clips import ClipTruth

from stream.outputs.sinks import FaceRecord, JsonlResultSink, VideoFileSink
from stream.sources.file_source import FileSource, VideoInfo


def read_back(path: Path) -> tuple[list[int | None], Fraction, list[np.ndarray], float]:
    """pts, time base, RGB images and stream duration in seconds of an MP4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None and stream.duration is not None
        duration = float(stream.duration * stream.time_base)
        frames = list(container.decode(stream))
        return (
            [f.pts for f in frames],
            stream.time_base,
            [f.to_ndarray(format="rgb24") for f in frames],
            duration,
        )


def solid(rgb: tuple[int, int, int], width: int = 64, height: int = 48) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = rgb
    return image


def test_round_trip_keeps_frame_count_pts_and_duration(
    tmp_path: Path, moving_face_video: tuple[Path, ClipTruth]
) -> None:
    path, truth = moving_face_video
    out = tmp_path / "annotated.mp4"
    with FileSource(path) as source, VideoFileSink(out, source.video_info) as sink:
        inputs = list(source.frames())
        for frame in inputs:
            sink.write(frame.image, frame.pts, frame.time_base)
        assert sink.frames_written == truth.frame_count
    pts_in, tb_in, images_in, duration_in = read_back(path)
    pts_out, tb_out, images_out, duration_out = read_back(out)
    assert len(pts_out) == len(pts_in) == truth.frame_count
    np.testing.assert_allclose(
        [float(p * tb_out) for p in pts_out if p is not None],
        [float(p * tb_in) for p in pts_in if p is not None],
    )
    assert duration_out == pytest.approx(duration_in, abs=1e-3)
    for image_in, image_out in zip(images_in, images_out, strict=True):
        assert np.abs(image_in.astype(int) - image_out.astype(int)).mean() < 6


def test_ntsc_time_base_and_late_start_are_kept(tmp_path: Path) -> None:
    time_base = Fraction(1, 11988)
    info = VideoInfo(64, 48, Fraction(2997, 100), time_base)
    pts = [10214 + 400 * i for i in range(20)]
    with VideoFileSink(tmp_path / "ntsc.mp4", info) as sink:
        for i, p in enumerate(pts):
            sink.write(solid((10 * i, 100, 50)), p, time_base)
    pts_out, tb_out, _, duration = read_back(tmp_path / "ntsc.mp4")
    assert tb_out == time_base and pts_out == pts
    assert duration == pytest.approx(20 * 400 / 11988, abs=1e-3)


def test_missing_pts_follow_the_frame_rate(tmp_path: Path) -> None:
    with VideoFileSink(tmp_path / "nopts.mp4", VideoInfo(64, 48, Fraction(25), None)) as sink:
        for i in range(12):
            sink.write(solid((i, i, i)))
    pts_out, tb_out, _, _ = read_back(tmp_path / "nopts.mp4")
    assert [float(p * tb_out) for p in pts_out if p is not None] == pytest.approx([i / 25 for i in range(12)])


def test_pts_in_another_time_base_are_rescaled_and_repeats_moved_forward(tmp_path: Path) -> None:
    info = VideoInfo(64, 48, Fraction(30), Fraction(1, 30000))
    given = [0, 3000, 6000, 6000, 12000]  # 1/90000: 0, 1/30, 2/30, a repeat, 4/30 seconds
    with VideoFileSink(tmp_path / "rescaled.mp4", info) as sink:
        for p in given:
            sink.write(solid((200, 0, 0)), p, Fraction(1, 90000))
    pts_out, tb_out, _, _ = read_back(tmp_path / "rescaled.mp4")
    assert tb_out == Fraction(1, 30000)
    assert pts_out == [0, 1000, 2000, 2001, 4000]


@pytest.mark.parametrize("rgb", [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
def test_colours_survive_encoding_in_rgb_order(tmp_path: Path, rgb: tuple[int, int, int]) -> None:
    with VideoFileSink(tmp_path / "colour.mp4", VideoInfo(64, 48, Fraction(25), None)) as sink:
        for _ in range(3):
            sink.write(solid(rgb))
    _, _, images, _ = read_back(tmp_path / "colour.mp4")
    assert len(images) == 3
    np.testing.assert_allclose(images[1].reshape(-1, 3).mean(axis=0), rgb, atol=12)


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    with VideoFileSink(tmp_path / "odd.mp4", VideoInfo(63, 47, Fraction(25), None)) as sink:
        for _ in range(4):
            sink.write(solid((0, 0, 255), width=63, height=47))
    _, _, images, _ = read_back(tmp_path / "odd.mp4")
    assert len(images) == 4 and images[0].shape == (48, 64, 3)


def test_bad_frames_are_refused(tmp_path: Path) -> None:
    with VideoFileSink(tmp_path / "bad.mp4", VideoInfo(64, 48, Fraction(25), None)) as sink:
        sink.write(solid((1, 2, 3)))
        with pytest.raises(ValueError, match="differs"):
            sink.write(solid((1, 2, 3), width=32, height=24))
        with pytest.raises(ValueError, match="uint8 RGB"):
            sink.write(solid((1, 2, 3)).astype(np.float32))
    sink.close()


SCHEMA = {"stream", "frame", "pts", "track_id", "box", "probability", "verdict"}


def records_for(frame: int, count: int) -> list[FaceRecord]:
    return [
        FaceRecord(
            "cam-1", frame, frame / 25 if frame else None, track, [10.0 * track, 20, 50.5, 80], 0.25, "real"
        )
        for track in range(count)
    ]


def test_jsonl_lines_follow_the_schema_and_are_flushed_per_frame(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    written: list[FaceRecord] = []
    with JsonlResultSink(path) as sink:
        for frame, faces in enumerate([1, 0, 2]):
            records = records_for(frame, faces)
            sink.write(records)
            written += records
            assert len(path.read_text().splitlines()) == len(written)
        sink.write([FaceRecord("cam-1", 3, 0.12, 7, (1, 2, 3, 4), None, "unscored")])
        assert sink.records_written == 4
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        values: dict[str, Any] = json.loads(line)
        assert set(values) == SCHEMA
        assert isinstance(values["stream"], str) and isinstance(values["verdict"], str)
        assert isinstance(values["frame"], int) and isinstance(values["track_id"], int)
        assert values["pts"] is None or isinstance(values["pts"], float)
        assert values["probability"] is None or isinstance(values["probability"], float)
        assert len(values["box"]) == 4 and all(isinstance(v, float) for v in values["box"])
    assert [FaceRecord.from_json(line) for line in lines[:3]] == written
    assert json.loads(lines[0])["pts"] is None and json.loads(lines[1])["pts"] == pytest.approx(0.08)
    assert json.loads(lines[3])["probability"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {"box": [1, 2, 3]},
        {"box": [5, 2, 3, 4]},
        {"box": [1, 2, math.nan, 4]},
        {"probability": 1.5},
        {"probability": math.nan},
        {"frame": -1},
        {"pts": math.inf},
    ],
)
def test_face_record_rejects_invalid_values(changes: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "stream": "s",
        "frame": 0,
        "pts": 0.0,
        "track_id": 1,
        "box": [0, 0, 1, 1],
        "probability": 0.5,
        "verdict": "real",
    }
    with pytest.raises(ValueError):
        FaceRecord(**(values | changes))


@pytest.mark.parametrize(
    "line", ['{"stream": "s"}', json.dumps({**json.loads(records_for(1, 1)[0].to_json()), "x": 1})]
)
def test_from_json_requires_exactly_the_schema(line: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        FaceRecord.from_json(line)
