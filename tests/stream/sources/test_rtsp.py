"""RtspCamera against a real GStreamer RTSP server in a child process: no mocks of network or FFmpeg."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from clips import ClipTruth
from rtsp_server import RtspTestServer, free_port, gst_rtsp_missing

from stream.runtime.backoff import Backoff
from stream.sources.frames import Frame
from stream.sources.rtsp import (
    CameraState,
    RtspCamera,
    RtspConfig,
    placeholder_image,
    redact_url,
)

# Small timeouts so each failure shows within a second; FFmpeg gives up a read after ~2 x read_timeout.
FAST = RtspConfig(
    open_timeout=1.0,
    read_timeout=0.3,
    stall_timeout=0.5,
    backoff_schedule=(0.1,),
    reset_after=0.5,
    placeholder_fps=10.0,
)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; return the seconds it took, fail after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not {what} after {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - start


class Recorder:
    """Collects what a camera hands out, from the camera's threads."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.placeholders: list[Frame] = []
        self.states: list[CameraState] = []

    def camera(self, url: str, config: RtspConfig = FAST, camera_id: str = "cam1") -> RtspCamera:
        return RtspCamera(
            camera_id,
            url,
            self.frames.append,
            self.states.append,
            config,
            on_placeholder=self.placeholders.append,
        )


def camera_threads(camera_id: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.endswith(f"-{camera_id}")]


@pytest.fixture(scope="session")
def gst() -> None:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def server(gst: None, moving_face_video: tuple[Path, ClipTruth]) -> Iterator[RtspTestServer]:
    """The 320x240, 25 fps face clip served in a loop; killed (even when frozen) after the test."""
    with RtspTestServer(moving_face_video[0]) as running:
        yield running


@pytest.fixture
def cameras() -> Iterator[list[RtspCamera]]:
    """Cameras a test starts; each must stop cleanly afterwards."""
    started: list[RtspCamera] = []
    yield started
    for camera in started:
        assert camera.stop(timeout=5.0), f"{camera!r} did not stop"


def start(camera: RtspCamera, cameras: list[RtspCamera]) -> RtspCamera:
    cameras.append(camera)
    camera.start()
    return camera


# Pure parts.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://user:pass@host/path", "rtsp://***@host/path"),
        ("rtsp://user:pass@10.0.0.7:554/Streaming/101?x=1", "rtsp://***@10.0.0.7:554/Streaming/101?x=1"),
        ("rtsp://user@host", "rtsp://***@host"),
        ("rtsp://admin:p@ss@host/live", "rtsp://***@host/live"),
        ("rtsp://u:p%40x@host:554/", "rtsp://***@host:554/"),
        ("rtsp://host:554/path", "rtsp://host:554/path"),
        (
            "rtsp://host/cam?channel=1&user=admin&password=x",
            "rtsp://host/cam?channel=1&user=***&password=***",
        ),
        ("rtsp://host/cam?token=abc#frag", "rtsp://host/cam?token=***#frag"),
        ("cannot open 'rtsp://u:p@h/x': refused", "cannot open 'rtsp://***@h/x': refused"),
        ("a@b.c wrote rtsp://h/x", "a@b.c wrote rtsp://h/x"),
        ("", ""),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_backoff_steps_repeat_the_last_and_start_over_after_a_long_run() -> None:
    backoff = Backoff((1.0, 5.0, 60.0), reset_after=10.0)
    assert [backoff.after_failure(None) for _ in range(4)] == [1.0, 5.0, 60.0, 60.0]
    assert backoff.after_failure(3.0) == 60.0  # live, but not long enough
    assert backoff.after_failure(10.0) == 1.0
    assert backoff.after_failure(None) == 5.0


def test_default_backoff_schedule() -> None:
    backoff = Backoff(RtspConfig().backoff_schedule, reset_after=10.0)
    assert [backoff.after_failure(None) for _ in range(22)] == [1.0] * 5 + [5.0] * 5 + [10.0] * 10 + [
        60.0
    ] * 2


@pytest.mark.parametrize(
    "bad",
    [
        {"read_timeout": 0.0},
        {"stall_timeout": -1.0},
        {"backoff_schedule": ()},
        {"backoff_schedule": (1.0, -1.0)},
        {"offline_after": 0},
        {"max_width": 0},
        {"placeholder_size": (640, 0)},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RtspConfig(**bad)  # type: ignore[arg-type]


def test_placeholder_is_dark_with_text() -> None:
    image = placeholder_image(640, 480, ["RECONNECTING", "cam1"])
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    assert np.median(image) < 40 and image.max() > 150


# Against a real server.


def test_frames_arrive_and_camera_goes_live(server: RtspTestServer, cameras: list[RtspCamera]) -> None:
    recorder = Recorder()
    camera = start(recorder.camera(server.url), cameras)
    wait_for(lambda: len(recorder.frames) >= 20, 5.0, "20 frames")
    assert recorder.states[:2] == [CameraState.CONNECTING, CameraState.LIVE]
    assert camera.state is CameraState.LIVE
    frames = recorder.frames[:20]
    assert all(frame.image.shape == (240, 320, 3) and frame.stream_id == "cam1" for frame in frames)
    assert [frame.index for frame in frames] == list(range(20))
    times = [frame.capture_time for frame in frames]
    assert times == sorted(times)
    assert frames[0].time_base == Fraction(1, 90000)
    pts = [frame.pts for frame in frames[1:] if frame.pts is not None]  # the first frame has none
    assert len(pts) == 19 and pts == sorted(set(pts))
    stats = camera.stats
    assert stats.frames >= 20 and stats.reconnects == 0 and stats.last_error is None
    assert 10 < stats.fps < 60

    assert camera.stop(timeout=2.0)
    assert camera.state is CameraState.OFFLINE and recorder.states[-1] is CameraState.OFFLINE
    assert not camera_threads("cam1")


def test_killed_server_reconnects_with_placeholders_until_it_is_back(
    server: RtspTestServer, cameras: list[RtspCamera]
) -> None:
    recorder = Recorder()
    camera = start(recorder.camera(server.url), cameras)
    wait_for(lambda: camera.state is CameraState.LIVE, 5.0, "live")

    server.kill()
    wait_for(lambda: camera.state is CameraState.RECONNECTING, 1.0, "reconnecting after the kill")
    wait_for(lambda: len(recorder.placeholders) >= 3, 2.0, "showing placeholders")
    placeholder = recorder.placeholders[-1]
    assert placeholder.image.shape == (240, 320, 3)  # the last frame's size
    assert placeholder.stream_id == "cam1" and np.median(placeholder.image) < 40
    frames_while_down = len(recorder.frames)

    server.start()  # same port, same camera object
    wait_for(lambda: camera.state is CameraState.LIVE, 3.0, "live again after the restart")
    wait_for(lambda: len(recorder.frames) > frames_while_down + 5, 2.0, "frames again")
    stats = camera.stats
    assert stats.reconnects >= 1 and stats.last_error is not None
    indices = [frame.index for frame in recorder.frames]
    assert indices == list(range(len(indices)))  # counting on across the reconnect
    assert recorder.states[:4] == [
        CameraState.CONNECTING,
        CameraState.LIVE,
        CameraState.RECONNECTING,
        CameraState.LIVE,
    ]


def test_frozen_server_is_detected_and_recovered(server: RtspTestServer, cameras: list[RtspCamera]) -> None:
    recorder = Recorder()
    camera = start(recorder.camera(server.url), cameras)
    wait_for(lambda: camera.state is CameraState.LIVE, 5.0, "live")

    server.stop_process()
    # The watchdog fires stall_timeout (0.5 s) after the last frame; FFmpeg's read timeout after ~0.6 s.
    wait_for(lambda: camera.state is not CameraState.LIVE, 1.5, "out of LIVE after SIGSTOP")
    wait_for(lambda: len(recorder.placeholders) >= 2, 1.0, "showing placeholders")

    server.cont()
    wait_for(lambda: camera.state is CameraState.LIVE, 4.0, "live again after SIGCONT")
    assert camera.stats.reconnects >= 1


def test_refused_url_follows_the_backoff_schedule(gst: None, cameras: list[RtspCamera]) -> None:
    schedule = (0.1, 0.2, 0.3)
    config = RtspConfig(open_timeout=1.0, read_timeout=0.3, backoff_schedule=schedule, offline_after=3)
    recorder = Recorder()
    camera = start(recorder.camera(f"rtsp://127.0.0.1:{free_port()}/cam", config), cameras)
    attempts: list[float] = []
    deadline = time.monotonic() + 3.0
    while len(attempts) < 5 and time.monotonic() < deadline:
        last = camera.stats.last_attempt_time
        if last is not None and (not attempts or last != attempts[-1]):
            attempts.append(last)
        time.sleep(0.002)
    assert len(attempts) == 5, attempts
    gaps = np.diff(attempts)
    expected = np.array([0.1, 0.2, 0.3, 0.3])  # the last step repeats
    assert np.all(gaps >= expected - 0.005) and np.all(gaps < expected + 0.15), gaps
    wait_for(lambda: camera.state is CameraState.OFFLINE, 1.0, "offline after 3 quick retries")
    assert recorder.states[:3] == [CameraState.CONNECTING, CameraState.RECONNECTING, CameraState.OFFLINE]
    assert not recorder.frames and recorder.placeholders
    stats = camera.stats
    assert stats.reconnects >= 4 and stats.last_error == "Connection refused"


def test_a_camera_that_is_down_says_why_and_when_it_retries(cameras: list[RtspCamera]) -> None:
    config = RtspConfig(open_timeout=1.0, read_timeout=0.3, backoff_schedule=(0.5,))
    refused = start(Recorder().camera(f"rtsp://127.0.0.1:{free_port()}/cam", config), cameras)
    unknown = start(Recorder().camera("rtsp://no-such-host.invalid/cam", config, "cam2"), cameras)
    for camera in (refused, unknown):
        wait_for(partial(_waiting_to_retry, camera), 3.0, f"{camera!r} waiting to retry")
        assert camera.state is CameraState.RECONNECTING and 0 <= (camera.stats.retry_in or 0) <= 0.5
    assert refused.stats.last_error == "Connection refused"
    assert (unknown.stats.last_error or "").startswith("cannot resolve host no-such-host.invalid: ")
    assert refused.stop(timeout=2.0) and refused.stats.retry_in is None


def _waiting_to_retry(camera: RtspCamera) -> bool:
    return camera.stats.retry_in is not None


@pytest.mark.parametrize("blocked_in", ["read", "open"])
def test_stop_interrupts_a_blocked_camera(server: RtspTestServer, blocked_in: str) -> None:
    # No watchdog help: only FFmpeg's timeouts (open 1 s, read ~2 x 0.4 s) can unblock the reader.
    config = RtspConfig(open_timeout=1.0, read_timeout=0.4, stall_timeout=30.0)
    recorder = Recorder()
    camera = recorder.camera(server.url, config, camera_id="blocked")
    if blocked_in == "open":
        server.stop_process()  # the kernel still accepts the connection; the RTSP handshake never answers
    camera.start()
    try:
        if blocked_in == "read":
            wait_for(lambda: camera.state is CameraState.LIVE, 5.0, "live")
            server.stop_process()
        time.sleep(0.2)  # let the reader block
        started = time.monotonic()
        assert camera.stop(timeout=3.0)
        elapsed = time.monotonic() - started
    finally:
        camera.stop(timeout=3.0)
    assert elapsed < 1.3, elapsed
    assert not camera_threads("blocked")
    assert camera.state is CameraState.OFFLINE


def test_large_frames_are_downscaled_to_the_cap(server: RtspTestServer, cameras: list[RtspCamera]) -> None:
    config = RtspConfig(open_timeout=1.0, read_timeout=0.3, max_width=160, max_height=100)
    recorder = Recorder()
    start(recorder.camera(server.url, config), cameras)
    wait_for(lambda: len(recorder.frames) >= 3, 5.0, "3 frames")
    assert {frame.image.shape for frame in recorder.frames[:3]} == {(100, 133, 3)}  # 320x240 at 100/240


def test_credentials_never_reach_the_logs(
    server: RtspTestServer, cameras: list[RtspCamera], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.url.replace("rtsp://", "rtsp://bob:hunter2@")
    config = RtspConfig(open_timeout=1.0, read_timeout=0.3, backoff_schedule=(0.05,), offline_after=2)
    recorder = Recorder()
    camera = start(recorder.camera(url, config), cameras)
    wait_for(lambda: camera.state is CameraState.LIVE, 5.0, "live with credentials in the URL")
    server.kill()  # then refused attempts, whose FFmpeg errors quote the URL
    wait_for(lambda: camera.state is CameraState.OFFLINE, 2.0, "offline")
    camera.stop(timeout=2.0)

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) >= 4  # connecting, live, reconnecting, offline, stopped
    assert any("rtsp://***@127.0.0.1" in message for message in messages)
    for text in [*messages, repr(camera), camera.display_url, str(camera.stats)]:
        assert "hunter2" not in text and "bob" not in text, text


def test_a_failing_consumer_does_not_stop_the_camera(
    server: RtspTestServer, cameras: list[RtspCamera], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(frame: Frame) -> None:
        raise RuntimeError("consumer bug")

    camera = start(RtspCamera("cam1", server.url, broken, config=FAST), cameras)
    # Counted after the callback returns: wait for the failures themselves, not for the frames before them.
    wait_for(lambda: camera.stats.callback_errors >= 10, 5.0, "10 failed callbacks")
    assert camera.state is CameraState.LIVE
    assert camera.stats.frames >= 10
    assert sum("callback failed" in record.getMessage() for record in caplog.records) == 1
