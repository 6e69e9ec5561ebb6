"""One VP8 encode per stream for all its viewers: frames in (the newest wins), packets out, on its own thread.

Every viewer's `RTCRtpSender` gets these packets and only packetises them (`Vp8Encoder.pack`), so N viewers cost
one encode. The libvpx settings are aiortc's `Vp8Encoder`'s (realtime, CBR) at a fixed bitrate: with one encode
for everyone there is no per-viewer bitrate adaptation (REMB is ignored). A keyframe comes every
`keyframe_interval` seconds and on request (a viewer joining or fallen behind, a PLI or FIR); requested ones at
most every `min_keyframe_gap` seconds, so that one viewer cannot turn every frame into a keyframe for all.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
from av.video.codeccontext import VideoCodecContext

from stream.runtime.affinity import RolePinning
from stream.runtime.latest import LatestSlot, SlotClosed
from stream.runtime.thread_names import ENCODER, stream_thread_name

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
"""The RTP clock of video: packet pts are in this time base, as `Vp8Encoder.pack` expects."""


@dataclass(frozen=True)
class EncoderSettings:
    """Bitrate in bits per second; intervals in seconds."""

    bitrate: int = 1_000_000
    keyframe_interval: float = 2.0
    min_keyframe_gap: float = 0.5

    def __post_init__(self) -> None:
        if self.bitrate < 50_000:
            raise ValueError(f"bitrate must be >= 50000 bit/s, got {self.bitrate}")
        if not 0 <= self.min_keyframe_gap <= self.keyframe_interval:
            raise ValueError(
                "need 0 <= min_keyframe_gap <= keyframe_interval, got "
                f"{self.min_keyframe_gap} and {self.keyframe_interval}"
            )


@dataclass(frozen=True)
class EncodedFrame:
    """One encoded frame: `sequence` counts a stream's encoded frames from 0; the packet's pts is in 90 kHz."""

    sequence: int
    packet: av.Packet
    keyframe: bool
    capture_time: float


@dataclass
class EncoderStats:
    """Written by the encoder thread only."""

    frames: int = 0
    keyframes: int = 0
    cpu_seconds: float = 0.0
    """CPU time of the encoder thread inside libvpx."""


def vp8_codec(width: int, height: int, bitrate: int) -> VideoCodecContext:
    """A libvpx VP8 encoder configured as aiortc's `Vp8Encoder` (one thread: frames up to 640x480 on 2 cores)."""
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = VIDEO_TIME_BASE
    codec.bit_rate = bitrate
    codec.gop_size = 3000  # keyframes are forced by time instead
    codec.qmin, codec.qmax = 2, 56
    codec.options = {
        "bufsize": str(bitrate),  # a one-second rate-control buffer
        "cpu-used": "-6",
        "deadline": "realtime",
        "lag-in-frames": "0",
        "minrate": str(bitrate),  # minrate = maxrate = bit_rate: CBR
        "maxrate": str(bitrate),
        "noise-sensitivity": "4",
        "overshoot-pct": "15",
        "partitions": "0",
        "static-thresh": "1",
        "undershoot-pct": "100",
    }
    codec.thread_count = 1
    return codec


class StreamEncoder:
    """Encodes the newest submitted yuv420p frame on thread `encoder-<name>`, handing each packet to `on_frame`.

    `on_frame` and `on_encode` (seconds of one encode) run on the encoder thread, in the "codec" role of `pinning`
    (unpinned without one). `clock` is injectable for tests.
    """

    def __init__(
        self,
        name: str,
        on_frame: Callable[[EncodedFrame], None],
        settings: EncoderSettings | None = None,
        on_encode: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        pinning: RolePinning | None = None,
    ) -> None:
        self.settings = settings or EncoderSettings()
        self.stats = EncoderStats()
        self._on_frame = on_frame
        self._on_encode = on_encode
        self._clock = clock
        self._slot: LatestSlot[tuple[av.VideoFrame, float]] = LatestSlot()
        self._keyframe_wanted = threading.Event()
        self._thread = threading.Thread(
            target=(pinning or RolePinning()).runs_as("codec", self._run),
            name=stream_thread_name(ENCODER, name),
            daemon=True,
        )
        self._codec: VideoCodecContext | None = None
        self._origin: float | None = None
        self._last_pts = -1
        self._last_keyframe = -float("inf")
        self._sequence = 0
        self._errors = 0

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the encoder took them."""
        return self._slot.dropped

    @property
    def keyframe_requested(self) -> bool:
        """A keyframe was asked for and has not come yet."""
        return self._keyframe_wanted.is_set()

    def start(self) -> None:
        self._thread.start()

    def submit(self, frame: av.VideoFrame, capture_time: float) -> None:
        """Thread-safe, never blocks: encode `frame` (yuv420p, not used by anyone else) next."""
        self._slot.put((frame, capture_time))

    def request_keyframe(self) -> None:
        """Thread-safe: make the next frame a keyframe (or the first one `min_keyframe_gap` after the last)."""
        self._keyframe_wanted.set()

    def close(self) -> None:
        """Stop the thread after the frame being encoded; frames waiting are dropped."""
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                item = self._slot.get()
            except SlotClosed:
                return
            if item is not None:
                self._encode(*item)

    def _keyframe_due(self, now: float) -> bool:
        since = now - self._last_keyframe
        settings = self.settings
        return since >= settings.keyframe_interval or (
            self._keyframe_wanted.is_set() and since >= settings.min_keyframe_gap
        )

    def _encode(self, frame: av.VideoFrame, capture_time: float) -> None:
        now = self._clock()
        if self._origin is None:
            self._origin = now
        self._last_pts = max(self._last_pts + 1, round((now - self._origin) * VIDEO_CLOCK_RATE))
        frame.pts, frame.time_base = self._last_pts, VIDEO_TIME_BASE
        if self._keyframe_due(now):
            frame.pict_type = av.video.frame.PictureType.I
        codec = self._codec
        if codec is None or (codec.width, codec.height) != (frame.width, frame.height):
            codec = self._codec = vp8_codec(frame.width, frame.height, self.settings.bitrate)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            packets = codec.encode(frame)
        except av.FFmpegError:  # one bad frame must not stop the stream: start again from a keyframe
            self._codec = None
            self._errors += 1
            if self._errors == 1 or self._errors % 100 == 0:
                logger.exception("%s: encoding failed (%d errors so far)", self._thread.name, self._errors)
            return
        self.stats.cpu_seconds += time.thread_time() - cpu
        self.stats.frames += 1
        if self._on_encode is not None:
            self._on_encode(time.perf_counter() - wall)
        for packet in packets:
            packet.pts, packet.time_base = frame.pts, VIDEO_TIME_BASE
            if packet.is_keyframe:
                self._last_keyframe = now
                self._keyframe_wanted.clear()
                self.stats.keyframes += 1
            self._on_frame(EncodedFrame(self._sequence, packet, packet.is_keyframe, capture_time))
            self._sequence += 1
