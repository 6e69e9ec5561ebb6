"""A stream's annotated video published over RTSP (ANNOUNCE/RECORD) to a media server, for NVRs and players.

The media server (MediaMTX in docker-compose) serves the path to any number of readers (Frigate, VLC, ffplay), so
the stream is encoded once, in H.264, whoever reads it. `RtspPublisher` is a `ResultSink`: the worker hands it
every annotated frame, converted to yuv420p, into a `LatestSlot` (the newest wins, a replaced one is counted);
its own thread encodes (libx264, zero latency, no B-frames, a keyframe every `keyframe_interval` seconds) and
muxes into FFmpeg's RTSP muxer. A refused or lost connection (server down or restarted) is retried after the next
step of a backoff schedule; frames that arrive meanwhile are counted as dropped. Nothing here blocks the worker.
"""

from __future__ import annotations

import fractions
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import av
from av.container import OutputContainer
from av.video.stream import VideoStream

from stream.outputs.feed import yuv420p_frame
from stream.runtime.affinity import RolePinning
from stream.runtime.backoff import Backoff
from stream.runtime.latest import LatestSlot, SlotClosed
from stream.runtime.thread_names import RTSP_PUBLISHER, stream_thread_name
from stream.sources.frames import Frame
from stream.sources.rtsp import redact_url

if TYPE_CHECKING:
    from stream.pipeline.pipeline import FrameResult

logger = logging.getLogger(__name__)

H264Profile = Literal["baseline", "main"]
H264_PROFILES: tuple[H264Profile, ...] = ("baseline", "main")
TIME_BASE = fractions.Fraction(1, 90_000)
"""RTP's video clock: frame timestamps are wall-clock time since the connection opened, in this unit."""
NOMINAL_RATE = 30
"""The frame rate x264's rate control assumes; timestamps carry the real timing."""


@dataclass(frozen=True)
class RtspOutSettings:
    """Where and how every stream is published: `server` + `path` with `{stream}` replaced by the stream id."""

    server: str
    path: str = "fakeweb/{stream}"
    bitrate: int = 2_000_000
    keyframe_interval: float = 2.0
    profile: H264Profile = "baseline"
    backoff_schedule: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
    reset_after: float = 10.0
    """A connection that lasted this long starts the backoff count over."""
    io_timeout: float = 5.0
    """A connection attempt, or a write to a server that stopped reading, fails after this many seconds."""

    def __post_init__(self) -> None:
        if not self.server.startswith(("rtsp://", "rtsps://")):
            raise ValueError(
                f"RTSP out server must be an rtsp:// or rtsps:// URL, got {redact_url(self.server)!r}"
            )
        if "{stream}" not in self.path:
            raise ValueError(f"RTSP out path must contain {{stream}}, got {self.path!r}")
        if self.profile not in H264_PROFILES:
            raise ValueError(f"H.264 profile must be one of {', '.join(H264_PROFILES)}, got {self.profile!r}")

    def url(self, stream_id: str) -> str:
        return f"{self.server.rstrip('/')}/{self.path.format(stream=stream_id).lstrip('/')}"


@dataclass
class RtspOutStats:
    """Written by the publisher thread only; read by anyone (the API, the metrics refresh)."""

    sent: int = 0
    dropped_disconnected: int = 0
    """Frames that came while there was no connection (down, or waiting to retry)."""
    reconnects: int = 0
    """Publications opened again after one was lost (a change of resolution opens a new one too, not counted)."""
    connected: bool = False
    last_error: str | None = None


def open_publication(
    url: str, width: int, height: int, settings: RtspOutSettings
) -> tuple[OutputContainer, VideoStream]:
    """An RTSP output (over TCP) with one H.264 stream of `width` x `height`; raises av.FFmpegError or OSError."""
    microseconds = str(round(settings.io_timeout * 1e6))
    container = av.open(
        url,
        "w",
        format="rtsp",
        options={"rtsp_transport": "tcp", "timeout": microseconds},
        timeout=(settings.io_timeout, settings.io_timeout),
    )
    assert isinstance(container, OutputContainer)
    stream = container.add_stream("libx264", rate=NOMINAL_RATE)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    # Frame times keep their 90 kHz precision; the rate control budgets bits per frame at NOMINAL_RATE.
    stream.time_base = stream.codec_context.time_base = TIME_BASE
    stream.codec_context.framerate = fractions.Fraction(NOMINAL_RATE)
    stream.bit_rate = settings.bitrate
    stream.codec_context.gop_size = 10 * NOMINAL_RATE * max(1, round(settings.keyframe_interval))
    stream.options = {  # keyframes are forced by time (`RtspPublisher._send`), as IDR frames
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": settings.profile,
        "forced-idr": "1",
        "maxrate": str(settings.bitrate),
        "bufsize": str(settings.bitrate),
    }
    stream.thread_count = 1
    try:
        container.start_encoding()  # ANNOUNCE, SETUP, RECORD now: a refused connection fails here, not later
    except BaseException:
        container.close()
        raise
    return container, stream


PUBLISHER_NICENESS = 10
"""Added to a publisher thread's nice value: the codec CPU serves the live viewers' VP8 encodes first, and
recording readers, who buffer anyway, take what is left (docs/performance.md, "RTSP out")."""


def lower_thread_priority() -> None:
    """Lower the calling thread's scheduling priority by PUBLISHER_NICENESS (Linux: nice applies per thread)."""
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + PUBLISHER_NICENESS)
    except OSError as exc:  # not permitted, or not Linux: the publisher runs at normal priority
        logger.info("RTSP out thread keeps its priority (%s)", exc)


class RtspPublisher:
    """Publishes one stream's annotated frames to `settings.url(stream_id)` on thread `rtsp-out-<stream id>`.

    `on_encode(seconds)` runs on that thread after each frame's encode and send. The thread runs in the "codec"
    role of `pinning` (unpinned without one).
    """

    def __init__(
        self,
        stream_id: str,
        settings: RtspOutSettings,
        on_encode: Callable[[float], None] | None = None,
        pinning: RolePinning | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.url(stream_id)
        self.stats = RtspOutStats()
        self._on_encode = on_encode
        self._slot: LatestSlot[av.VideoFrame] = LatestSlot()
        self._backoff = Backoff(settings.backoff_schedule, settings.reset_after)
        self._output: tuple[OutputContainer, VideoStream] | None = None
        self._opened_at = 0.0
        self._retry_at = 0.0
        self._last_pts = -1
        self._last_keyframe = -float("inf")
        self._lost = False
        """The last publication ended in a failure (not a resolution change): the next one is a reconnect."""
        self._thread = threading.Thread(
            target=(pinning or RolePinning()).runs_as("codec", self._run),
            name=stream_thread_name(RTSP_PUBLISHER, stream_id),
            daemon=True,
        )

    @property
    def dropped_replaced(self) -> int:
        """Frames replaced by a newer one before the publisher took them."""
        return self._slot.dropped

    def start(self) -> None:
        self._thread.start()

    def totals(self) -> dict[str, int]:
        """Counts since start, by the names of `stream.outputs.metrics.RTSP_OUT_OUTCOMES` and reconnects."""
        stats = self.stats
        return {
            "sent": stats.sent,
            "dropped_replaced": self.dropped_replaced,
            "dropped_disconnected": stats.dropped_disconnected,
            "reconnects": stats.reconnects,
        }

    def describe(self) -> dict[str, object]:
        """The publication as the API shows it (credentials redacted)."""
        stats = self.stats
        return {
            "url": redact_url(self.url),
            "connected": stats.connected,
            "frames_sent": stats.sent,
            "frames_dropped": stats.dropped_disconnected + self.dropped_replaced,
            "reconnects": stats.reconnects,
            "last_error": stats.last_error,
        }

    def publish(self, frame: Frame) -> None:
        """Any thread, never blocks: `frame`'s image (converted here) is the next to send."""
        self._slot.put(yuv420p_frame(frame.image))

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        """Worker thread: the processed frame, annotated."""
        self.publish(frame)

    def close(self) -> None:
        """Stop after the frame being sent and close the connection (the server sees the publisher leave)."""
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        lower_thread_priority()
        try:
            while True:
                try:
                    picture = self._slot.get()
                except SlotClosed:
                    return
                if picture is not None:
                    self._send(picture)
        finally:
            self._disconnect()

    def _send(self, picture: av.VideoFrame) -> None:
        now = time.monotonic()
        output = self._output
        if output is not None and (output[1].width, output[1].height) != (picture.width, picture.height):
            self._disconnect()  # a camera changed its resolution: a new publication, a new stream header
            output = None
        if output is None:
            output = self._connect(picture, now)
            if output is None:
                self.stats.dropped_disconnected += 1
                return
        container, stream = output
        self._last_pts = max(self._last_pts + 1, round((now - self._opened_at) / TIME_BASE))
        picture.pts, picture.time_base = self._last_pts, TIME_BASE
        if now - self._last_keyframe >= self.settings.keyframe_interval:
            picture.pict_type = av.video.frame.PictureType.I
            self._last_keyframe = now
        started = time.perf_counter()
        try:
            for packet in stream.encode(picture):
                container.mux(packet)
        except (av.FFmpegError, OSError) as exc:  # the server went away or stopped reading
            self._failed(exc, now, live_for=now - self._opened_at)
            self.stats.dropped_disconnected += 1
            return
        self.stats.sent += 1
        if self._on_encode is not None:
            self._on_encode(time.perf_counter() - started)

    def _connect(self, picture: av.VideoFrame, now: float) -> tuple[OutputContainer, VideoStream] | None:
        """Open the publication, unless the backoff says to wait; None when there is no connection."""
        if now < self._retry_at:
            return None
        try:
            self._output = open_publication(self.url, picture.width, picture.height, self.settings)
        except (av.FFmpegError, OSError) as exc:
            self._failed(exc, now, live_for=None)
            return None
        if self._lost:
            self.stats.reconnects += 1
        self._lost = False
        self._opened_at, self._last_pts, self._last_keyframe = now, -1, -float("inf")
        self.stats.connected, self.stats.last_error = True, None
        logger.info("publishing %s at %dx%d", redact_url(self.url), picture.width, picture.height)
        return self._output

    def _failed(self, exc: BaseException, now: float, live_for: float | None) -> None:
        """A lost connection (`live_for` its age) or a failed attempt (None): close, wait the next backoff step.
        Every lost connection is logged; failed attempts in a row the first time and every tenth."""
        self._disconnect()
        self._lost = self._lost or live_for is not None
        delay = self._backoff.after_failure(live_for)
        self._retry_at = now + delay
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if live_for is not None or self._backoff.failures % 10 == 1:
            logger.warning(
                "RTSP out %s %s (%s); retrying in %.1f s",
                redact_url(self.url),
                "lost" if live_for is not None else "failed",
                self.stats.last_error,
                delay,
            )

    def _disconnect(self) -> None:
        output, self._output = self._output, None
        self.stats.connected = False
        if output is not None:
            try:
                output[0].close()
            except (av.FFmpegError, OSError):  # the server is gone already: nothing to tell it
                pass
