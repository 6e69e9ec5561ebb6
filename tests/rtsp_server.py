"""A real RTSP server for tests: GStreamer's RTSP server serving an MP4 for minutes, in a child process.

Run as a script with the system Python (which has python3-gi; the venv does not):
`/usr/bin/python3 tests/rtsp_server.py CLIP PORT [PATH]` serves CLIP (H.264 in MP4, no B-frames) once on
`rtsp://127.0.0.1:PORT/PATH`, over TCP and UDP; each client gets its own pipeline from the start of the file.

`/usr/bin/python3 tests/rtsp_server.py --record OUT_DIR PORT PATH...` accepts published video (RECORD) instead
(`RtspRecordServer`).

Imported, `RtspTestServer` serves `looped_clip(clip)`: the clip's packets repeated with increasing timestamps
into one file of about 10 minutes (no re-encoding), so that a camera seems to stream without end. The pipeline
does no seeking: looping by SEGMENT seeks on the demuxer (a flushing one at the first buffer) raced with the
client's PLAY, and the server either aborted (`gst_rtsp_media_get_rates: assertion failed`, a stream without a
segment) or stopped sending, a few times per hundred connections. At the end of the file the server sends
RTCP BYE and the client reconnects, as from a camera that restarted.

Pictures arrive bit-exact, also for clips with several slices per picture (PyAV's libx264 writes two on two
cores): SPS/PPS go once per access unit (`h264parse config-interval=-1` with `alignment=au`). Inserting them
per NAL (`rtph264pay config-interval=-1`) puts them between slices, and FFmpeg then decodes each slice as a
picture of its own. FFmpeg gives the first frame of a connection no pts.

`RtspTestServer` lets a test kill, freeze (SIGSTOP), thaw and restart the server.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
_GST_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer"
)


def gst_rtsp_missing() -> str | None:
    """Why the server cannot run here (a reason for pytest.skip), or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    result = subprocess.run([SYSTEM_PYTHON, "-c", _GST_CHECK], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"{SYSTEM_PYTHON} cannot import GstRtspServer (python3-gi, gir1.2-gst-rtsp-server-1.0): {last}"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stable_port() -> int:
    """A free TCP port below the kernel's ephemeral range, for a server that is killed and restarted on the same
    port: while it is down, no outgoing connection (of this or another process) can be given that port, and
    no connection attempt can connect to itself on it (which looks like a listening server)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, max(20001, ephemeral_low - 1))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


LOOP_SECONDS = 600.0
LOOP_MAX_BYTES = 64 << 20


def looped_clip(clip: Path, seconds: float = LOOP_SECONDS, max_bytes: int = LOOP_MAX_BYTES) -> Path:
    """`clip` repeated into one MP4 of about `seconds` (at most `max_bytes`), timestamps increasing by one
    clip length per pass; made once next to the clip (PyAV, in the calling process: the venv's Python)."""
    out = clip.with_name(f"{clip.stem}.looped{clip.suffix}")
    if out.exists() and out.stat().st_mtime >= clip.stat().st_mtime:
        return out
    import av

    with av.open(str(clip)) as source:
        stream = source.streams.video[0]
        packets = [packet for packet in source.demux(stream) if packet.size]
        first, last = min(p.pts for p in packets), max(p.pts for p in packets)
        steps = [b.pts - a.pts for a, b in zip(packets, packets[1:], strict=False) if b.pts > a.pts]
        span = last - first + (min(steps) if steps else 1)  # one pass, its last frame's duration included
        repeats = max(1, min(int(seconds / float(span * stream.time_base)), max_bytes // clip.stat().st_size))
        partial = out.with_name(f".{out.name}.{os.getpid()}.part")
        with av.open(str(partial), "w", format="mp4") as sink:
            copy = sink.add_stream_from_template(stream)
            for loop in range(repeats):
                for packet in packets:
                    repeated = av.Packet(bytes(packet))
                    repeated.pts = packet.pts + loop * span
                    repeated.dts = packet.dts + loop * span
                    repeated.time_base = packet.time_base
                    repeated.is_keyframe = packet.is_keyframe
                    repeated.stream = copy
                    sink.mux(repeated)
    partial.replace(out)  # several servers may share a clip: the complete file appears at once
    return out


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class _GstServerProcess:
    """One GStreamer RTSP server child process on a port that stays the same across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else stable_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    def _command(self) -> list[str]:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process id while the server runs."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and wait until it says it serves and the port accepts connections."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("the RTSP test server is already running")
        command = self._command()
        started_at = os.fstat(self._log.fileno()).st_size
        self._process = subprocess.Popen(command, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while not (self._says_serving(started_at) and port_open(self.port)):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the RTSP test server exited with {self._process.returncode}: {self.output()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the RTSP test server did not listen on {self.port} in {timeout} s")
            time.sleep(0.02)

    def _says_serving(self, since: int) -> bool:
        """Whether this run of the process printed its "serving" line (it has bound the port itself)."""
        return b"serving " in os.pread(self._log.fileno(), 1 << 16, since)  # the child's offset stays put

    def output(self) -> str:
        """What the process printed so far (for failure messages)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the RTSP test server is not running")
        self._process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the process (a crashed camera) and wait for it; no-op when not running."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def stop_process(self) -> None:
        """SIGSTOP the process: connections stay open but no byte flows (a frozen camera)."""
        self._signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT a stopped process."""
        self._signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill the process if it runs and start a new one on the same port."""
        self.kill()
        self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._log.close()


class RtspTestServer(_GstServerProcess):
    """Serves `clip` (looped, see `looped_clip`) at `url`: a camera."""

    def __init__(self, clip: Path, port: int | None = None, path: str = "cam") -> None:
        super().__init__(port)
        self.clip = Path(clip)
        self._served: Path | None = None  # looped_clip(clip), made at the first start
        self.path = path

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.path}"

    def _command(self) -> list[str]:
        if self._served is None:
            self._served = looped_clip(self.clip)
        return [SYSTEM_PYTHON, str(Path(__file__).resolve()), str(self._served), str(self.port), self.path]

    def __enter__(self) -> RtspTestServer:
        self.start()
        return self


class RtspRecordServer(_GstServerProcess):
    """Accepts published H.264 (ANNOUNCE/RECORD) on any path under `url_base` and writes what each publisher
    sends to `recording(path)`: MPEG-TS, readable while it grows and after a kill. A new process starts new
    files (the process id is in their names), so a test can tell what came after a restart."""

    def __init__(self, out_dir: Path, paths: tuple[str, ...], port: int | None = None) -> None:
        super().__init__(port)
        self.out_dir = Path(out_dir)
        self.paths = paths

    @property
    def url_base(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}"

    def recording(self, path: str) -> Path | None:
        """The newest file recorded for `path`, None before any."""
        found = sorted(self.out_dir.glob(f"{path.replace('/', '_')}-*.ts"), key=lambda f: f.stat().st_mtime)
        return found[-1] if found else None

    def _command(self) -> list[str]:
        script = str(Path(__file__).resolve())
        return [SYSTEM_PYTHON, script, "--record", str(self.out_dir), str(self.port), *self.paths]

    def __enter__(self) -> RtspRecordServer:
        self.start()
        return self


def _serve(clip: Path, port: int, path: str) -> None:
    """Serve `clip` on rtsp://127.0.0.1:`port`/`path` until killed (system Python only)."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    location = str(clip).replace("\\", "\\\\").replace('"', '\\"')
    launch = (
        f'( filesrc location="{location}" ! qtdemux ! h264parse config-interval=-1 '
        "! video/x-h264,alignment=au ! rtph264pay name=pay0 pt=96 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print(f"serving {clip} on rtsp://127.0.0.1:{port}/{path}", flush=True)
    GLib.MainLoop().run()


def _record(out_dir: Path, port: int, paths: list[str]) -> None:
    """Record what is published to rtsp://127.0.0.1:`port`/PATH for each path until killed (system Python)."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    for path in paths:
        location = str(out_dir / f"{path.replace('/', '_')}-{os.getpid()}.ts").replace('"', '\\"')
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        factory.set_launch(
            f'( rtph264depay name=depay0 ! h264parse ! mpegtsmux ! filesink buffer-mode=unbuffered location="{location}" )'
        )
        server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print(f"serving record on rtsp://127.0.0.1:{port}/ for {', '.join(paths)}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--record":
        _record(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
    elif len(sys.argv) in (3, 4):
        _serve(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else "cam")
    else:
        raise SystemExit(
            f"usage: {SYSTEM_PYTHON} {sys.argv[0]} CLIP PORT [PATH] | --record OUT_DIR PORT PATH [PATH...]"
        )
