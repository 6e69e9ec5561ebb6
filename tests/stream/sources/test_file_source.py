"""FileSource and open_video against generated clips, broken inputs and the shared talking head."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from clips import ClipTruth, audio_only_file, color_clip, corrupt_copy, truncated_copy

from models.errors import InputError
from stream.sources.file_source import FileSource, VideoInfo, open_video


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_frames_match_the_generated_clip(moving_face_video: tuple[Path, ClipTruth]) -> None:
    path, truth = moving_face_video
    with FileSource(path) as source:
        assert source.stream_id == "moving_face"
        assert (source.width, source.height) == (truth.width, truth.height)
        assert source.fps == pytest.approx(float(truth.fps))
        assert source.frame_count == truth.frame_count
        frames = list(source.frames())
        assert source.decode_errors == 0
    assert len(frames) == truth.frame_count
    assert [frame.index for frame in frames] == list(range(truth.frame_count))
    for frame in frames:
        assert frame.stream_id == "moving_face"
        assert frame.image.shape == (truth.height, truth.width, 3) and frame.image.dtype == np.uint8
        assert frame.time_base == source.time_base
        assert frame.seconds == pytest.approx(frame.index / truth.fps, abs=1e-6)
    captures = [frame.capture_time for frame in frames]
    assert captures == sorted(captures)


@pytest.mark.parametrize("rgb", [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
def test_channels_decode_in_rgb_order(tmp_path: Path, rgb: tuple[int, int, int]) -> None:
    with FileSource(color_clip(tmp_path, rgb)) as source:
        images = [frame.image for frame in source.frames()]
    assert len(images) == 10
    np.testing.assert_allclose(images[5].reshape(-1, 3).mean(axis=0), rgb, atol=12)


def make_missing(folder: Path) -> Path:
    return folder / "missing.mp4"


def make_text(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("this is not a video\n")
    return path


def make_empty(folder: Path) -> Path:
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return path


def make_audio(folder: Path) -> Path:
    return audio_only_file(folder / "silence.wav")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (make_missing, "video file not found"),
        (make_text, "cannot open video"),
        (make_empty, "cannot open video"),
        (make_audio, "no video stream"),
    ],
)
def test_unreadable_inputs_raise_a_one_line_input_error(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as raised:
        FileSource(path)
    message = str(raised.value)
    assert reason in message and str(path) in message
    assert "\n" not in message and "Errno" not in message


def test_a_truncated_mp4_without_its_index_cannot_be_opened(
    tmp_path: Path, moving_face_video: tuple[Path, ClipTruth]
) -> None:
    path = truncated_copy(moving_face_video[0], tmp_path / "truncated.mp4")
    with pytest.raises(InputError, match="cannot open video .*Invalid data"):
        FileSource(path)


def test_corrupt_packets_are_skipped_and_counted(
    tmp_path: Path, moving_face_video: tuple[Path, ClipTruth]
) -> None:
    path, truth = moving_face_video
    reference = FileSource(path)
    intact = list(reference.frames())
    reference.close()
    with FileSource(corrupt_copy(path, tmp_path / "corrupt.mp4")) as source:
        frames = list(source.frames())
        errors = source.decode_errors
    assert errors > 0
    assert 10 <= len(frames) < truth.frame_count
    pts = [frame.pts for frame in frames]
    assert pts == sorted(set(pts))
    assert [frame.index for frame in frames] == list(range(len(frames)))
    # Frames before the garbled bytes decode exactly as in the intact file.
    np.testing.assert_array_equal(frames[5].image, intact[5].image)


def test_loop_keeps_pts_increasing_by_one_frame(moving_face_video: tuple[Path, ClipTruth]) -> None:
    path, truth = moving_face_video
    with FileSource(path, loop=True) as source:
        frames = list(itertools.islice(source.frames(), 2 * truth.frame_count + 5))
    assert [frame.index for frame in frames] == list(range(2 * truth.frame_count + 5))
    seconds = np.array([frame.seconds for frame in frames])
    np.testing.assert_allclose(np.diff(seconds), 1 / float(truth.fps), atol=1e-6)
    np.testing.assert_array_equal(frames[truth.frame_count + 3].image, frames[3].image)


def test_realtime_paces_frames_to_their_pts(moving_face_video: tuple[Path, ClipTruth]) -> None:
    path, truth = moving_face_video
    clock = FakeClock()
    with FileSource(path, realtime=True, clock=clock, sleep=clock.sleep) as source:
        frames = list(itertools.islice(source.frames(), 10))
    offsets = [frame.capture_time - frames[0].capture_time for frame in frames]
    np.testing.assert_allclose(offsets, [i / float(truth.fps) for i in range(10)], atol=1e-9)
    assert len(clock.sleeps) == 9


def test_without_realtime_nothing_sleeps(moving_face_video: tuple[Path, ClipTruth]) -> None:
    clock = FakeClock()
    with FileSource(moving_face_video[0], clock=clock, sleep=clock.sleep) as source:
        assert len(list(source.frames())) == moving_face_video[1].frame_count
    assert clock.sleeps == []


def test_close_is_idempotent(moving_face_video: tuple[Path, ClipTruth]) -> None:
    source = FileSource(moving_face_video[0], stream_id="cam")
    with source:
        assert next(iter(source.frames())).stream_id == "cam"
    source.close()


def test_open_video_reports_an_unreachable_url_as_input_error() -> None:
    with pytest.raises(InputError, match="cannot open video rtsp://127.0.0.1:9/none: .*refused"):
        open_video("rtsp://127.0.0.1:9/none", options={"rtsp_transport": "tcp"}, timeout=(2.0, 2.0))


@pytest.mark.parametrize(
    "fields",
    [
        {"width": 0, "height": 10, "rate": Fraction(25), "time_base": None},
        {"width": 10, "height": 10, "rate": Fraction(0), "time_base": None},
        {"width": 10, "height": 10, "rate": None, "time_base": Fraction(-1, 25)},
    ],
)
def test_video_info_rejects_impossible_values(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        VideoInfo(**fields)  # type: ignore[arg-type]


@pytest.mark.shared_data
def test_shared_talking_head_decodes_every_frame(shared_data: Path) -> None:
    path = shared_data / "video" / "talking_head.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with FileSource(path) as source:
        assert (source.width, source.height) == (480, 360)
        assert source.fps == pytest.approx(29.97, abs=0.01)
        frames = list(source.frames())
        assert source.decode_errors == 0
    # 266 packets, but the MP4 edit list drops the first 57: the duration-based estimate is exact here.
    assert len(frames) == source.frame_count == 209
    assert frames[-1].seconds == pytest.approx(208 * 1001 / 30000)


def test_every_packet_gives_its_frame_at_once(moving_face_video: tuple[Path, ClipTruth]) -> None:
    """No frame is held back by the decoder (frame threading would hold back two): live sources need that."""
    container, stream = open_video(moving_face_video[0])
    try:
        packets = [packet for packet in container.demux(stream) if packet.size][:10]
        frames_after_each = [len(stream.decode(packet)) for packet in packets]
    finally:
        container.close()
    assert frames_after_each == [1] * len(packets)
