"""`StreamEncoder`: packets PyAV's VP8 decoder reads back, keyframes on time and on request, the newest frame wins,
a clean close. Real libvpx on small frames; the clock is injected where keyframe timing is checked."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import av
import numpy as np
import pytest

from stream.outputs.encoder import VIDEO_TIME_BASE, EncodedFrame, EncoderSettings, StreamEncoder
from stream.outputs.feed import yuv420p_frame

SIZE = (96, 64)  # width, height


def image(index: int) -> np.ndarray:
    """A smooth RGB gradient whose brightness changes with `index` (easy on the encoder, checkable after decode)."""
    width, height = SIZE
    x = np.linspace(0, 120, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 60, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(x + y + 4 * index, (height, width, 3)).astype(np.uint8)


class Collector:
    """Encoded frames as they come, with a way to wait for a number of them."""

    def __init__(self) -> None:
        self.frames: list[EncodedFrame] = []
        self._condition = threading.Condition()

    def __call__(self, frame: EncodedFrame) -> None:
        with self._condition:
            self.frames.append(frame)
            self._condition.notify_all()

    def wait(self, count: int) -> list[EncodedFrame]:
        with self._condition:
            assert self._condition.wait_for(lambda: len(self.frames) >= count, 10), (
                f"{len(self.frames)} frames"
            )
            return list(self.frames)


@pytest.fixture
def started() -> Iterator[Callable[..., tuple[StreamEncoder, Collector]]]:
    encoders: list[StreamEncoder] = []

    def start(**kwargs: object) -> tuple[StreamEncoder, Collector]:
        collector = Collector()
        encoder = StreamEncoder("test", collector, **kwargs)  # type: ignore[arg-type]
        encoder.start()
        encoders.append(encoder)
        return encoder, collector

    yield start
    for encoder in encoders:
        encoder.close()


def encode_one_by_one(encoder: StreamEncoder, collector: Collector, indices: range) -> list[EncodedFrame]:
    for count, index in enumerate(indices, start=len(collector.frames) + 1):
        encoder.submit(yuv420p_frame(image(index)), capture_time=float(index))
        collector.wait(count)
    return collector.frames


def test_packets_decode_with_pyav_in_90_khz(started: Callable[..., tuple[StreamEncoder, Collector]]) -> None:
    encoder, collector = started()
    frames = encode_one_by_one(encoder, collector, range(10))
    decoder = av.CodecContext.create("vp8", "r")
    decoded = [picture for frame in frames for picture in decoder.decode(frame.packet)]
    assert len(decoded) == 10
    for index, picture in enumerate(decoded):
        assert (picture.width, picture.height) == SIZE
        difference = np.abs(picture.to_ndarray(format="rgb24").astype(int) - image(index)).mean()
        assert difference < 6, f"frame {index} decodes to its image (mean difference {difference:.1f})"
    assert [frame.sequence for frame in frames] == list(range(10))
    assert [frame.capture_time for frame in frames] == [float(i) for i in range(10)]
    assert frames[0].keyframe and not any(frame.keyframe for frame in frames[1:])
    assert all(frame.packet.time_base == VIDEO_TIME_BASE for frame in frames)
    pts = [frame.packet.pts for frame in frames if frame.packet.pts is not None]
    assert len(pts) == 10 and pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:], strict=False))
    assert encoder.stats.frames == 10 and encoder.stats.keyframes == 1 and encoder.stats.cpu_seconds > 0


def test_keyframes_every_interval_and_on_request_at_most_every_gap(
    started: Callable[..., tuple[StreamEncoder, Collector]],
) -> None:
    now = [0.0]
    settings = EncoderSettings(keyframe_interval=2.0, min_keyframe_gap=0.5)
    encoder, collector = started(settings=settings, clock=lambda: now[0])

    def keyframe_at(seconds: float) -> bool:
        now[0] = seconds
        return encode_one_by_one(encoder, collector, range(1))[-1].keyframe

    assert keyframe_at(0.0), "the first frame"
    assert not keyframe_at(0.1)
    encoder.request_keyframe()
    assert encoder.keyframe_requested
    assert not keyframe_at(0.3), "a request within min_keyframe_gap of the last keyframe waits"
    assert keyframe_at(0.5) and not encoder.keyframe_requested
    assert not keyframe_at(1.0) and not keyframe_at(2.4)
    assert keyframe_at(2.5), "keyframe_interval after the last one"


def test_the_newest_frame_wins_while_the_encoder_is_busy(
    started: Callable[..., tuple[StreamEncoder, Collector]],
) -> None:
    busy, release = threading.Event(), threading.Event()

    def slow_encode(seconds: float) -> None:
        busy.set()
        assert release.wait(10)

    encoder, collector = started(on_encode=slow_encode)
    encoder.submit(yuv420p_frame(image(0)), 0.0)
    assert busy.wait(10)
    for index in range(1, 5):
        encoder.submit(yuv420p_frame(image(index)), float(index))
    release.set()
    frames = collector.wait(2)
    assert [frame.capture_time for frame in frames] == [0.0, 4.0]
    assert encoder.dropped == 3


def test_close_stops_the_thread_and_later_frames_are_ignored() -> None:
    collector = Collector()
    encoder = StreamEncoder("closing", collector)
    encoder.close()  # never started: nothing to stop
    encoder = StreamEncoder("closing", collector)
    encoder.start()
    encoder.submit(yuv420p_frame(image(0)), 0.0)
    collector.wait(1)
    encoder.close()
    assert not any(thread.name == "encoder-closing" for thread in threading.enumerate())
    encoder.submit(yuv420p_frame(image(1)), 1.0)
    encoder.close()
    assert len(collector.frames) == 1


def test_a_new_frame_size_restarts_with_a_keyframe(
    started: Callable[..., tuple[StreamEncoder, Collector]],
) -> None:
    encoder, collector = started()
    encode_one_by_one(encoder, collector, range(2))
    encoder.submit(yuv420p_frame(np.zeros((48, 64, 3), np.uint8)), 2.0)
    frame = collector.wait(3)[-1]
    assert frame.keyframe
    (picture,) = av.CodecContext.create("vp8", "r").decode(frame.packet)
    assert (picture.width, picture.height) == (64, 48)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bitrate": 1000}, "bitrate must be >= 50000"),
        ({"keyframe_interval": 1.0, "min_keyframe_gap": 2.0}, "min_keyframe_gap <= keyframe_interval"),
        ({"min_keyframe_gap": -1.0}, "0 <= min_keyframe_gap"),
    ],
)
def test_settings_are_checked(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EncoderSettings(**settings)  # type: ignore[arg-type]
