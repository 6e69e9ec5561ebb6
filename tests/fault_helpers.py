"""Helpers for the fault-injection tests (tests/stream/live/test_faults_*.py, tests/stream/live/test_security.py, tests/soak_run.py):
clips that stress the input path, process memory, latency quantiles from /metrics, loopback-only WebRTC, and a
TCP proxy that can cut a peer off (an unreachable S3 endpoint) while counting connection attempts."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import aioice.ice
import av
import numpy as np
from clips import background, face_crop, paste_face, write_h264
from live_helpers import samples
from server_process import ServerProcess

from stream.live.serve import use_loopback_ice

# Clips.


def face_frames(size: tuple[int, int], count: int, seed: int = 0, face: bool = True) -> Iterator[np.ndarray]:
    """`count` frames of a gradient background with (or without) the astronaut's face drifting across it."""
    width, height = size
    base = background(width, height, seed)
    crop = face_crop()
    face_size = round(min(width, height) * 0.5)
    for index in range(count):
        image = base.copy()
        if face:
            t = index / max(count - 1, 1)
            paste_face(image, crop, (width * (0.35 + 0.3 * t), height / 2), face_size)
        yield image


def clip(path: Path, size: tuple[int, int], fps: int = 25, frames: int = 50, face: bool = True) -> Path:
    """An H.264 MP4 the RTSP test server can loop (no B-frames, GOP 30)."""
    return write_h264(path, face_frames(size, frames, face=face), Fraction(fps))


def resolution_change_clip(
    path: Path, sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480)), fps: int = 25, frames: int = 25
) -> Path:
    """An MP4 whose picture size changes: `frames` frames at each of `sizes`, one H.264 stream.

    Each part is encoded on its own with SPS/PPS in band (no global header), so the new size is announced
    inside the stream, as a camera that changes its resolution does; served over RTSP, a client sees the
    size change at each part (and back at each loop of the clip).
    """
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height = sizes[0]
        offset = 0
        for width, height in sizes:
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = Fraction(1, fps)
            encoder.framerate = Fraction(fps)
            encoder.options = {"bf": "0", "g": str(frames), "preset": "veryfast"}
            packets: list[av.Packet] = []
            for index, image in enumerate(face_frames((width, height), frames)):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                packets.extend(encoder.encode(frame))
            packets.extend(encoder.encode(None))
            for packet in packets:
                assert packet.pts is not None
                packet.pts = packet.dts = offset + packet.pts
                packet.time_base = Fraction(1, fps)
                packet.stream = stream
                container.mux(packet)
            offset += frames
    return path


# Process and metrics.

STEADY_MALLOC = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536"}
"""Environment for a server whose memory is measured: glibc returns freed frame buffers (over 64 KiB) to the
system at once instead of caching them in per-thread arenas, so RSS follows live memory (noise about ±25 MB
instead of ±100 MB with two cameras)."""


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_files(server: ServerProcess) -> int:
    """File descriptors the server process holds (sockets included)."""
    assert server.process is not None
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def server_rss_mb(server: ServerProcess) -> float:
    assert server.process is not None
    return rss_mb(server.process.pid)


Buckets = dict[float, float]


def histogram(text: str, name: str, **labels: str) -> Buckets:
    """Cumulative bucket counts (upper bound -> count) of one histogram series in a /metrics text."""
    wanted = set(labels.items())
    buckets: Buckets = {}
    for (sample, sample_labels), value in samples(text).items():
        if sample == f"{name}_bucket" and wanted <= set(sample_labels):
            bound = dict(sample_labels)["le"]
            buckets[math.inf if bound == "+Inf" else float(bound)] = value
    return buckets


def metrics_text(server: ServerProcess) -> str:
    status, text = server.request("GET", "/metrics")
    assert status == 200, text
    return str(text)


def quantile(q: float, before: Buckets, after: Buckets) -> float:
    """The q-quantile of the observations between two snapshots, interpolated inside a bucket like
    Prometheus' histogram_quantile; NaN without observations, inf when it lies above the largest finite bound
    (where Prometheus would say that bound)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return bounds[-2]


def observations(before: Buckets, after: Buckets) -> float:
    return after.get(math.inf, 0.0) - before.get(math.inf, 0.0)


def timed_request(server: ServerProcess, path: str) -> tuple[int, float]:
    """(status, seconds) of one GET."""
    started = time.monotonic()
    status, _ = server.request("GET", path)
    return status, time.monotonic() - started


def log_lines(server: ServerProcess, *needles: str) -> list[str]:
    """Lines of the server's log holding every one of `needles`."""
    return [line for line in server.log().splitlines() if all(needle in line for needle in needles)]


# WebRTC on loopback only.


@contextmanager
def loopback_ice() -> Iterator[None]:
    """aioice offers 127.0.0.1 only in this process (for aiortc peers of tests), restored afterwards."""
    original = aioice.ice.get_host_addresses
    use_loopback_ice()
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


# A cuttable TCP proxy.


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target`; `cut()` makes it refuse service (accept and reset at
    once, like a dead endpoint behind a load balancer), `restore()` forwards again. Counts accepted connections
    per state, with their times."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.cut_off = False
        self.attempts_while_cut: list[float] = []
        self.forwarded = 0
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Refuse service from now on, and drop the connections being forwarded (no kept-alive way through)."""
        self.cut_off = True
        for connection in list(self._open):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut_off:
                self.attempts_while_cut.append(time.monotonic())
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # linger 0: a reset
                continue
            self.forwarded += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close_both(source, sink)
            self._open.difference_update((source, sink))


def _close_both(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
