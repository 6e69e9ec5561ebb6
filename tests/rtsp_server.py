"""A real RTSP server for tests: GStreamer's RTSP server serving an MP4 in a loop, in a child process.

Run as a script with the system Python (which has python3-gi; the venv does not):
`/usr/bin/python3 tests/rtsp_server.py CLIP PORT [PATH]` serves CLIP (H.264 in MP4, no B-frames) on
`rtsp://127.0.0.1:PORT/PATH`, over TCP and UDP. Each client gets its own pipeline, which loops the clip with
increasing timestamps: one flushing SEGMENT seek at the first buffer, then a non-flushing SEGMENT seek at each
segment-done (a plain end-of-stream would make the server send RTCP BYE, which ends FFmpeg clients), each pass
shifted by one frame so that its first frame does not share the previous last frame's timestamp.

Pictures arrive bit-exact, also for clips with several slices per picture (PyAV's libx264 writes two on two
cores): SPS/PPS go once per access unit (`h264parse config-interval=-1` with `alignment=au`). Inserting them
per NAL (`rtph264pay config-interval=-1`) puts them between slices, and FFmpeg then decodes each slice as a
picture of its own. FFmpeg gives the first frame of a connection no pts.

Imported, `RtspTestServer` runs that script and lets a test kill, freeze (SIGSTOP), thaw and restart it.
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


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RtspTestServer:
    """Controls one server process serving `clip` at `url`; the port stays the same across restarts."""

    def __init__(self, clip: Path, port: int | None = None, path: str = "cam") -> None:
        self.clip = Path(clip)
        self.port = port if port is not None else stable_port()
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.path}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and wait until it says it serves and the port accepts connections."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("the RTSP test server is already running")
        command = [SYSTEM_PYTHON, str(Path(__file__).resolve()), str(self.clip), str(self.port), self.path]
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

    def __enter__(self) -> RtspTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._log.close()


def _serve(clip: Path, port: int, path: str) -> None:
    """Serve `clip` looped on rtsp://127.0.0.1:`port`/`path` until killed (system Python only)."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    location = str(clip).replace("\\", "\\\\").replace('"', '\\"')
    launch = (
        f'( filesrc location="{location}" ! qtdemux name=demux ! h264parse name=parse config-interval=-1 '
        "! video/x-h264,alignment=au ! rtph264pay name=pay0 pt=96 )"
    )

    def segment_seek(demux: Gst.Element, flags: Gst.SeekFlags) -> bool:
        demux.seek(
            1.0, Gst.Format.TIME, flags | Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1
        )
        return False  # a GLib source callback: run once

    def on_media_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        element = media.get_element()
        demux = element.get_by_name("demux")
        sink_pad = element.get_by_name("parse").get_static_pad("sink")
        last_duration = [0]  # of the newest buffer, in ns

        def on_buffer(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            if not last_duration[0]:
                GLib.idle_add(segment_seek, demux, Gst.SeekFlags.FLUSH)
            duration = info.get_buffer().duration
            last_duration[0] = duration if duration != Gst.CLOCK_TIME_NONE else Gst.SECOND // 25
            return Gst.PadProbeReturn.OK

        def on_event(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            if info.get_event().type == Gst.EventType.SEGMENT_DONE:
                # The next pass starts where the last frame started: shift it by that frame's duration.
                pad.set_offset(pad.get_offset() + last_duration[0])
                GLib.idle_add(segment_seek, demux, Gst.SeekFlags.NONE)
            return Gst.PadProbeReturn.OK

        sink_pad.add_probe(Gst.PadProbeType.BUFFER, on_buffer)
        sink_pad.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.connect("media-configure", on_media_configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print(f"serving {clip} on rtsp://127.0.0.1:{port}/{path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(f"usage: {SYSTEM_PYTHON} {sys.argv[0]} CLIP PORT [PATH]")
    _serve(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else "cam")
