"""An RTSP camera that never gives up: a reader thread that reconnects with backoff; placeholders while down.

Each `RtspCamera` runs two threads. The reader opens the stream with PyAV over TCP, decodes and hands each
picture on; on any failure it reconnects after the next step of a backoff schedule. The watchdog marks a LIVE
camera that has delivered no frame for `stall_timeout` as RECONNECTING (the reader then drops that connection)
and, while the camera is not LIVE, renders a dark "offline" placeholder at `placeholder_fps` and hands it to
`on_placeholder`.

Placeholders go to their own callback, so the frame consumer (the detection pipeline) only ever sees camera
pictures, while the consumer of `on_placeholder` (what the viewer shows) can tell them apart without a flag on
`Frame`.

Callbacks run on the camera's threads (`on_state` also on the caller's, from `start` and `stop`). The reader
keeps no queue and never waits for a consumer: the frame callback must return at once (put the frame in a
latest-frame-wins slot and let the pipeline take it from there). The frame consumer is one of two kinds:
`on_decoded` gets `DecodedFrame`s and converts only the frames it takes (converting to RGB and downscaling cost
twice the decode of a 720p frame, so under overload a reader that converted every frame would fall behind the
camera, a lag that no latency measured from the decoder shows); `on_frame` gets every frame converted by the
reader.

URLs may carry credentials (`rtsp://user:pass@host/path`); every log line and `repr` shows `redact_url(url)`.
A `file:` URL is played at its frame rate (a recorded camera) and starts over when it ends.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import TypeVar
from urllib.parse import urlsplit

import av
import cv2
import numpy as np

from models.errors import InputError
from stream.runtime.affinity import RolePinning
from stream.runtime.backoff import Backoff
from stream.runtime.thread_names import RTSP_READER, RTSP_WATCHER, stream_thread_name
from stream.runtime.timing import StageTimes
from stream.sources.file_source import open_video
from stream.sources.frames import DecodedFrame, Frame, fitted_size

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BACKOFF: tuple[float, ...] = (1.0,) * 5 + (5.0,) * 5 + (10.0,) * 10 + (60.0,)
"""Seconds to wait before each reconnect attempt; the last step repeats forever."""

_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][\w.-]*?(?:user|pass|pwd|token|auth|secret|key|sig)[\w.-]*=)[^&#\s'\"]*"
)
_FPS_WINDOW = 30  # frames over which `CameraStats.fps` is measured


def redact_url(text: str) -> str:
    """Hide the credentials of every URL in `text`: user info and credential-like query values become ***.

    `rtsp://user:pass@host/path?channel=1&password=x` -> `rtsp://***@host/path?channel=1&password=***`.
    Works on a bare URL and on any message that quotes one (FFmpeg's errors do).
    """
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub("***@", text))


class CameraState(str, Enum):
    """What the UI shows for a camera.

    CONNECTING: started, first connection not made yet. LIVE: frames are arriving. RECONNECTING: the
    connection failed or stalled; quick retries are running. OFFLINE: not started, stopped by the user, or
    `offline_after` attempts in a row have failed; a started camera keeps retrying at the slowest backoff
    step and goes LIVE again when the stream comes back.
    """

    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


@dataclass(frozen=True)
class RtspConfig:
    """How a camera connects, gives up on a connection, retries and sizes its frames.

    Timeouts are in seconds. FFmpeg aborts a read after about twice `read_timeout` without data (measured
    with PyAV 18), so a frozen server is noticed, and `stop()` returns, within about that long; a connection
    attempt gives up after `open_timeout`. The watchdog marks a LIVE camera RECONNECTING after `stall_timeout`
    without a frame. After a failure the reader waits `backoff_schedule[n]` before attempt n + 1 (the last
    step repeats); the count starts over once a connection has stayed LIVE for `reset_after`. The camera is
    OFFLINE once more than `offline_after` attempts in a row have failed. `options` are extra FFmpeg
    options, over the low-latency TCP defaults.
    """

    open_timeout: float = 5.0
    read_timeout: float = 2.0
    stall_timeout: float = 5.0
    backoff_schedule: tuple[float, ...] = DEFAULT_BACKOFF
    reset_after: float = 10.0
    offline_after: int = 20
    max_width: int = 1280
    max_height: int = 720
    placeholder_fps: float = 2.0
    placeholder_size: tuple[int, int] = (640, 480)
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("open_timeout", "read_timeout", "stall_timeout", "placeholder_fps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.backoff_schedule or min(self.backoff_schedule) < 0:
            raise ValueError(f"backoff_schedule must be non-empty and >= 0, got {self.backoff_schedule}")
        if self.reset_after < 0 or self.offline_after < 1:
            raise ValueError(
                f"need reset_after >= 0 and offline_after >= 1, got {self.reset_after}, {self.offline_after}"
            )
        if min(self.max_width, self.max_height, *self.placeholder_size) < 1:
            raise ValueError(
                f"sizes must be positive, got {self.max_width}x{self.max_height}, {self.placeholder_size}"
            )

    @property
    def ffmpeg_options(self) -> dict[str, str]:
        """Options passed to `av.open`: TCP, no probing (opens in ~0.05 s instead of ~1 s), then `options`."""
        return {"rtsp_transport": "tcp", "analyzeduration": "0", "probesize": "32", **self.options}


@dataclass(frozen=True)
class CameraStats:
    """A snapshot of a camera's counters; times are in the camera's clock (`time.monotonic` by default).

    `reconnects` counts connection attempts after the first one; `fps` is measured over the last frames of the
    current connection (0 when not LIVE); `last_error` is the credential-free reason of the last failure (kept
    after the camera is LIVE again); `retry_in` is the seconds until the next connection attempt, None while
    one is under way or the camera is stopped.
    """

    frames: int
    placeholders: int
    reconnects: int
    decode_errors: int
    callback_errors: int
    last_frame_time: float | None
    last_attempt_time: float | None
    fps: float
    last_error: str | None
    retry_in: float | None


class _Pace:
    """Plays a file at its frame rate: the seconds to wait before each frame, from its timestamp.

    A jump of more than `max_jump` seconds (a broken or looping file) starts the count over instead of
    stalling the reader or bursting.
    """

    def __init__(self, rate: Fraction | None, max_jump: float = 1.0) -> None:
        self.period = 1 / float(rate) if rate else None  # for frames without a timestamp
        self.max_jump = max_jump
        self._start: tuple[float, float] | None = None  # (monotonic time, frame time) the count starts from
        self._last = 0.0

    def wait(self, frame_time: float | None) -> float:
        if frame_time is None:
            if self.period is None:
                return 0.0
            frame_time = self._last + self.period
        self._last = frame_time
        now = time.monotonic()
        if self._start is None:
            self._start = (now, frame_time)
        wait = self._start[0] + frame_time - self._start[1] - now
        if not -self.max_jump <= wait <= self.max_jump:
            self._start, wait = (now, frame_time), 0.0
        return max(wait, 0.0)


def placeholder_image(width: int, height: int, lines: Sequence[str]) -> np.ndarray:
    """A dark RGB frame with `lines` of text centred on it: what a viewer sees while a camera is not live."""
    image = np.full((height, width, 3), 24, dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(width, height) / 480)
    thickness = max(1, round(2 * scale))
    line_height = round(40 * scale)
    top = (height - line_height * (len(lines) - 1)) // 2
    for number, line in enumerate(lines):
        (text_width, text_height), _ = cv2.getTextSize(line, font, scale, thickness)
        origin = ((width - text_width) // 2, top + number * line_height + text_height // 2)
        cv2.putText(image, line, origin, font, scale, (200, 200, 200), thickness, cv2.LINE_AA)
    return image


def _describe(error: BaseException) -> str:
    """A short, credential-free reason for a failed open or read."""
    if isinstance(error, InputError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, av.ExitError):
        return "timed out"  # the only interrupt PyAV requests is its timeout
    if isinstance(error, (av.FFmpegError, OSError)) and error.strerror:
        return redact_url(error.strerror)
    return redact_url(f"{type(error).__name__}: {error}")


def _unresolved(url: str) -> str | None:
    """Why the host of a network `url` cannot be resolved; None when it can (or `url` names no host).

    FFmpeg reports a name that does not resolve as a bare "Input/output error": this says which name failed.
    """
    host = urlsplit(url).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        return f"cannot resolve host {host}: {getattr(error, 'strerror', None) or error}"
    return None


class RtspCamera:
    """One RTSP camera read on its own threads; `start()` it, `stop()` it, read `state` and `stats` any time.

    Every picture goes to exactly one of `on_frame` (converted: RGB, at most max_width x max_height) and
    `on_decoded` (as a `DecodedFrame`, converted by whoever takes it): `capture_time` from `clock`, `index`
    counting across reconnects, `pts` in the camera's time base, restarting at each connection. `on_state` gets
    each state change. `on_placeholder` gets placeholder frames while the camera runs and is not LIVE (the size
    of the last camera frame, `index` counting placeholders, no pts). Callbacks must be quick; an exception
    from one is counted and logged once, and the camera carries on. `clock` must tick in seconds like
    `time.monotonic`. The reader thread runs in the "codec" role of `pinning` (unpinned without one).
    """

    def __init__(
        self,
        camera_id: str,
        url: str,
        on_frame: Callable[[Frame], None] | None = None,
        on_state: Callable[[CameraState], None] | None = None,
        config: RtspConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_placeholder: Callable[[Frame], None] | None = None,
        on_decoded: Callable[[DecodedFrame], None] | None = None,
        pinning: RolePinning | None = None,
    ) -> None:
        if (on_frame is None) == (on_decoded is None):
            raise ValueError("give exactly one of on_frame and on_decoded")
        self.camera_id = camera_id
        self._url = url
        self.display_url = redact_url(url)
        self.config = config or RtspConfig()
        self._on_frame = on_frame
        self._on_state = on_state
        self._on_placeholder = on_placeholder
        self._on_decoded = on_decoded
        self._is_file = urlsplit(url).scheme == "file"  # played at its frame rate, like a camera
        self._clock = clock
        self._pinning = pinning or RolePinning()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # nudges the watchdog on state changes
        self._threads: list[threading.Thread] = []
        self._state = CameraState.OFFLINE
        self._stale: str | None = None  # why the watchdog gave up on the current connection
        self._live_since: float | None = None
        self._frame_times: deque[float] = deque(maxlen=_FPS_WINDOW)
        self._size = self.config.placeholder_size
        self._frames = self._placeholders = self._reconnects = 0
        self._decode_errors = self._callback_errors = 0
        self._last_frame_time: float | None = None
        self._last_attempt_time: float | None = None
        self._next_attempt_time: float | None = None
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"RtspCamera({self.camera_id!r}, {self.display_url!r}, state={self.state.value})"

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def stats(self) -> CameraStats:
        with self._lock:
            times = self._frame_times
            live = self._state is CameraState.LIVE and len(times) > 1 and times[-1] > times[0]
            retry_at = self._next_attempt_time
            return CameraStats(
                frames=self._frames,
                placeholders=self._placeholders,
                reconnects=self._reconnects,
                decode_errors=self._decode_errors,
                callback_errors=self._callback_errors,
                last_frame_time=self._last_frame_time,
                last_attempt_time=self._last_attempt_time,
                fps=(len(times) - 1) / (times[-1] - times[0]) if live else 0.0,
                last_error=self._last_error,
                retry_in=None if retry_at is None else max(0.0, retry_at - self._clock()),
            )

    def start(self) -> None:
        """Start reading in the background; the camera is CONNECTING until its first frame."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self._stopping.clear()
        with self._lock:
            self._set_state(CameraState.CONNECTING, f"connecting to {self.display_url}")
        self._threads = [
            threading.Thread(
                target=self._pinning.runs_as("codec", self._read_forever),
                name=stream_thread_name(RTSP_READER, self.camera_id),
                daemon=True,
            ),
            threading.Thread(
                target=self._watch, name=stream_thread_name(RTSP_WATCHER, self.camera_id), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop reading and join the threads; True when they have ended.

        A read blocked on a silent server ends at its timeout, so the default `timeout` allows
        `open_timeout` or twice `read_timeout`, whichever is longer, plus one second.
        """
        if timeout is None:
            timeout = max(self.config.open_timeout, 2 * self.config.read_timeout) + 1.0
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stopped = not self.running
        with self._lock:
            self._next_attempt_time = None
            if stopped:
                self._set_state(CameraState.OFFLINE, "stopped")
            else:
                self._set_state(
                    CameraState.OFFLINE, f"reader still blocked after {timeout:g} s", logging.WARNING
                )
        return stopped

    # The reader thread.

    def _read_forever(self) -> None:
        """Connect, read until failure, wait the next backoff step, repeat until stopped."""
        backoff = Backoff(self.config.backoff_schedule, self.config.reset_after)
        while not self._stopping.is_set():
            with self._lock:
                self._last_attempt_time = self._clock()
                self._next_attempt_time = None
                self._stale = None
                self._live_since = None
                self._frame_times.clear()
            reason = self._read_connection()
            if self._stopping.is_set():
                return
            with self._lock:
                live_for = None if self._live_since is None else self._clock() - self._live_since
                delay = backoff.after_failure(live_for)
                self._last_error = reason
                self._next_attempt_time = self._clock() + delay
                if backoff.failures > self.config.offline_after:
                    self._set_state(
                        CameraState.OFFLINE, f"{reason}; retrying every {delay:g} s", logging.WARNING
                    )
                else:
                    self._set_state(
                        CameraState.RECONNECTING, f"{reason}; retrying in {delay:g} s", logging.WARNING
                    )
            if self._stopping.wait(delay):
                return
            with self._lock:
                self._reconnects += 1

    def _read_connection(self) -> str:
        """Open the stream and deliver its frames until it fails, stalls or the camera stops; say why."""
        try:
            container, stream = open_video(
                self._url, self.config.ffmpeg_options, (self.config.open_timeout, self.config.read_timeout)
            )
        except Exception as error:  # noqa: BLE001 - refused, timed out, not a video, unknown host: retry later
            return self._open_failure(error)
        opened = self._clock()
        pace = _Pace(stream.average_rate) if self._is_file else None
        try:
            for packet in container.demux(stream):
                if self._stopping.is_set():
                    return "stopped"
                try:
                    decoded = stream.decode(packet)
                except av.FFmpegError:
                    with self._lock:
                        self._decode_errors += 1
                    continue
                for video_frame in decoded:
                    if pace is not None and self._stopping.wait(pace.wait(video_frame.time)):
                        return "stopped"
                    if not self._deliver(video_frame, stream.time_base):
                        return self._stale or "stopped"
                if self._clock() - max(opened, self._last_frame_time or opened) > self.config.stall_timeout:
                    return f"no frame for {self.config.stall_timeout:g} s"
            return "the stream ended"
        except Exception as error:  # noqa: BLE001 - any failure of a connection means: reconnect
            return _describe(error)
        finally:
            container.close()

    def _open_failure(self, error: Exception) -> str:
        """Why opening the stream failed, naming the host when its name does not resolve."""
        cause = error.__cause__ if isinstance(error, InputError) else error
        if not self._is_file and getattr(cause, "errno", None) == errno.EIO:
            return _unresolved(self._url) or _describe(error)
        return _describe(error)

    def _deliver(self, video_frame: av.VideoFrame, time_base: Fraction | None) -> bool:
        """Hand one picture to `on_decoded`, or converted to `on_frame`; False when the connection is to be
        dropped instead."""
        now = self._clock()
        config = self.config
        size = fitted_size(video_frame.width, video_frame.height, config.max_width, config.max_height)
        with self._lock:
            if self._stale is not None or self._stopping.is_set():
                return False
            index = self._frames
            self._frames += 1
            self._last_frame_time = now
            self._frame_times.append(now)
            self._size = size
            if self._state is not CameraState.LIVE:
                self._live_since = now
                self._set_state(CameraState.LIVE, f"live at {size[0]}x{size[1]}")
        decoded = DecodedFrame(
            self.camera_id,
            index,
            video_frame,
            now,
            config.max_width,
            config.max_height,
            video_frame.pts,
            time_base,
        )
        if self._on_decoded is not None:
            self._call(self._on_decoded, decoded)
        elif self._on_frame is not None:
            self._call(self._on_frame, decoded.to_frame(StageTimes()))
        return True

    # The watchdog thread.

    def _watch(self) -> None:
        """Mark a stalled LIVE camera RECONNECTING; emit placeholders while not LIVE."""
        period = 1.0 / self.config.placeholder_fps
        stall = self.config.stall_timeout
        while not self._stopping.is_set():
            self._wake.clear()  # a state change from here on cuts the wait below short
            now = self._clock()
            with self._lock:
                state, last = self._state, self._last_frame_time
                if state is CameraState.LIVE and last is not None and now - last >= stall:
                    self._stale = f"no frame for {stall:g} s"
                    self._set_state(CameraState.RECONNECTING, self._stale, logging.WARNING)
                    continue
            if state is CameraState.LIVE:
                wait = (last or now) + stall - now
            else:
                self._emit_placeholder(state, now)
                wait = period
            self._wake.wait(wait)

    def _emit_placeholder(self, state: CameraState, now: float) -> None:
        if self._on_placeholder is None:
            return
        width, height = self._size
        image = placeholder_image(width, height, [state.value.upper(), self.camera_id])
        with self._lock:
            index = self._placeholders
            self._placeholders += 1
        self._call(self._on_placeholder, Frame(self.camera_id, index, image, now))

    # Shared.

    def _set_state(self, state: CameraState, reason: str, level: int = logging.INFO) -> None:
        """Change state (the caller holds the lock), log it and tell `on_state`; a no-op when unchanged."""
        if state is self._state:
            return
        previous, self._state = self._state, state
        logger.log(
            level,
            "camera %s (%s) %s -> %s: %s",
            self.camera_id,
            self.display_url,
            previous.value,
            state.value,
            reason,
        )
        self._wake.set()
        if self._on_state is not None:
            self._call(self._on_state, state)

    def _call(self, callback: Callable[[T], None], argument: T) -> None:
        """Run a consumer callback; its failure is counted and logged the first time, never raised."""
        try:
            callback(argument)
        except Exception:
            with self._lock:
                self._callback_errors += 1
                first = self._callback_errors == 1
            if first:
                logger.exception(
                    "camera %s: a callback failed (further failures are only counted)", self.camera_id
                )
