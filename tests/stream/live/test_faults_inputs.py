"""Bad inputs through a real `fakeweb serve` process: a camera whose resolution changes mid-stream, corrupt
bitstreams (over RTSP and as a file camera), a truncated file, inputs that never play, a stream without faces, 4K
frames, and a browser stream that changes size. Every camera runs at once next to the others; none may stop the
service or another stream. Also the pacing of a `file:` camera, on its own.

(A camera stream cut off in the middle is the kill test of test_faults_cameras.py.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiortc import VideoStreamTrack
from clips import ClipTruth, audio_only_file, corrupt_copy, truncated_copy
from fault_helpers import (
    STEADY_MALLOC,
    clip,
    face_frames,
    loopback_ice,
    resolution_change_clip,
    server_rss_mb,
)
from live_helpers import Client, add_camera, metric, processed, save_file_camera, stream, wait_for
from rtsp_server import RtspTestServer, gst_rtsp_missing
from server_process import ServerProcess

from stream.sources.frames import Frame
from stream.sources.rtsp import RtspCamera, RtspConfig

RTSP_INPUTS = ("resizing", "corrupt", "no_faces", "huge")
FILE_INPUTS = (
    "file_corrupt",
    "file_truncated",
    "file_no_index",
    "file_garbage",
    "file_audio",
    "file_missing",
)
UNPLAYABLE = ("file_no_index", "file_garbage", "file_audio", "file_missing")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fault_inputs")
    face = clip(folder / "face.mp4", (320, 240))
    faststart = folder / "faststart.mp4"
    with av.open(str(faststart), "w", options={"movflags": "faststart"}) as container:
        out = container.add_stream("libx264", rate=25, options={"bf": "0", "g": "10", "preset": "veryfast"})
        out.width, out.height, out.pix_fmt = 320, 240, "yuv420p"
        for index, image in enumerate(face_frames((320, 240), 50)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(out.encode(frame))
        container.mux(out.encode(None))
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    return {
        "resizing": resolution_change_clip(folder / "resizing.mp4"),
        "corrupt": corrupt_copy(face, folder / "corrupt.mp4", start=0.3, length=0.3),
        "no_faces": clip(folder / "no_faces.mp4", (320, 240), face=False),
        "huge": clip(folder / "huge.mp4", (3840, 2160), fps=5, frames=10),
        "file_corrupt": folder / "corrupt.mp4",
        "file_truncated": truncated_copy(faststart, folder / "truncated.mp4", keep=0.5),  # plays half, ends
        "file_no_index": truncated_copy(face, folder / "no_index.mp4", keep=0.5),  # moov (at the end) is cut
        "file_garbage": garbage,
        "file_audio": audio_only_file(folder / "audio.wav"),
        "file_missing": folder / "missing.mp4",
    }


@pytest.fixture(scope="module")
def rtsp_servers(inputs: dict[str, Path]) -> Iterator[dict[str, RtspTestServer]]:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        yield {name: stack.enter_context(RtspTestServer(inputs[name], path=name)) for name in RTSP_INPUTS}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, inputs: dict[str, Path]) -> Iterator[ServerProcess]:
    """The default size cap (1280x720); lost inputs retried after 0.2, 0.5, then 1 s. The file inputs are
    cameras of its camera file (the API refuses `file://` cameras), started with the server."""
    env = {"FAKEWEB_RTSP_BACKOFF_SECONDS": "0.2,0.5,1", **STEADY_MALLOC}
    flags = ("--loopback-ice", "--max-streams", "12")
    data = tmp_path_factory.mktemp("faults_inputs")
    for name in FILE_INPUTS:
        save_file_camera(data, name, inputs[name])
    with ServerProcess(data, *flags, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def cameras(server: ServerProcess, rtsp_servers: dict[str, RtspTestServer]) -> dict[str, str]:
    """Every input as a camera of the one server, all running at once: the file cameras of its camera file and
    the RTSP cameras added through the API."""
    ids = {name: add_camera(server, name, rtsp_servers[name].url) for name in RTSP_INPUTS}
    _, listing = server.request("GET", "/api/streams")
    ids.update({item["name"]: item["id"] for item in listing["streams"] if item["name"] in FILE_INPUTS})
    ids["rss_at_start"] = str(server_rss_mb(server))
    return ids


def watch(server: ServerProcess, camera_id: str, frames: int, timeout: float = 30) -> Client:
    """Watch a camera with an aiortc viewer until it has received `frames` frames."""

    async def scenario() -> Client:
        viewer = Client(ice_servers=[])
        try:
            async with aiohttp.ClientSession(server.url) as http:
                await viewer.connect(http, f"/api/streams/{camera_id}/view")
                deadline = time.monotonic() + timeout
                while viewer.frames < frames and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        finally:
            await viewer.close()
        return viewer

    with loopback_ice():
        return asyncio.run(scenario())


def assert_healthy(server: ServerProcess) -> None:
    assert server.request("GET", "/healthz") == (200, {"status": "ok"})
    assert "Traceback" not in server.log()


def test_a_resolution_change_mid_stream_is_followed_without_a_reconnect(
    server: ServerProcess, cameras: dict[str, str]
) -> None:
    """The clip switches between 320x240 and 640x480 every second, in one RTSP session."""
    camera_id = cameras["resizing"]
    wait_for(lambda: processed(server, camera_id) > 10, 20, "frames processed")
    viewer = watch(server, camera_id, frames=75)
    assert {(320, 240), (640, 480)} <= viewer.sizes, viewer.sizes
    described = stream(server, camera_id)
    assert described["status"] == "live" and described["faces"], described
    assert metric(server, "fakeweb_reconnects_total", stream=camera_id) == 0
    assert_healthy(server)


def test_corrupt_bitstreams_are_decoded_around(server: ServerProcess, cameras: dict[str, str]) -> None:
    """30% of the clip's bytes are noise (its packets; its index is intact): over RTSP and as a file camera,
    the frames the decoder can make keep being processed, and the stream carries on."""
    for name in ("corrupt", "file_corrupt"):
        camera_id = cameras[name]
        wait_for(lambda cid=camera_id: processed(server, cid) > 20, 45, f"{name}: frames processed")
    errors = sum(
        metric(server, "fakeweb_frames_total", stream=cameras[name], outcome="decode_error")
        for name in ("corrupt", "file_corrupt")
    )
    print(f"decode errors counted: {errors}")  # FFmpeg conceals most damage: the count may be 0
    assert_healthy(server)


def test_a_truncated_file_plays_what_it_has_then_starts_over(
    server: ServerProcess, cameras: dict[str, str]
) -> None:
    camera_id = cameras["file_truncated"]
    wait_for(
        lambda: metric(server, "fakeweb_reconnects_total", stream=camera_id) >= 2,
        20,
        "the truncated file played to its end twice",
    )
    assert processed(server, camera_id) > 20
    assert_healthy(server)


def test_unplayable_inputs_are_retried_with_backoff_and_never_deliver(
    server: ServerProcess, cameras: dict[str, str]
) -> None:
    """A file whose index is cut off, random bytes, audio only, a missing file: each camera keeps retrying
    (offline after enough failures), delivers nothing, and says why in the log; the service is unaffected."""
    for name in UNPLAYABLE:
        camera_id = cameras[name]
        wait_for(
            lambda cid=camera_id: metric(server, "fakeweb_reconnects_total", stream=cid) >= 3,
            20,
            f"{name} retried",
        )
        described = stream(server, camera_id)
        assert described["status"] in ("connecting", "reconnecting", "offline"), described
        assert described["frames_received"] == 0, described
        assert [
            line for line in server.log().splitlines() if f"camera {camera_id} " in line and "WARNING" in line
        ]
    assert_healthy(server)


def test_a_stream_without_faces_is_processed_with_no_faces(
    server: ServerProcess, cameras: dict[str, str]
) -> None:
    camera_id = cameras["no_faces"]
    wait_for(lambda: processed(server, camera_id) > 30, 20, "frames processed")
    seen = []
    for _ in range(10):
        seen.append(stream(server, camera_id)["faces"])
        time.sleep(0.1)
    assert seen == [[]] * 10
    viewer = watch(server, camera_id, frames=10)
    assert viewer.frames >= 10 and viewer.sizes == {(320, 240)}
    assert_healthy(server)


def test_4k_frames_are_downscaled_to_the_cap(server: ServerProcess, cameras: dict[str, str]) -> None:
    """3840x2160 at 5 fps: the reader shrinks each frame to the 1280x720 cap before the pipeline sees it."""
    camera_id = cameras["huge"]
    wait_for(lambda: processed(server, camera_id) > 5, 30, "4K frames processed")
    viewer = watch(server, camera_id, frames=5)
    assert viewer.sizes == {(1280, 720)}, viewer.sizes
    assert stream(server, camera_id)["faces"], "the face is still found at 1280x720"
    assert server_rss_mb(server) < float(cameras["rss_at_start"]) + 400
    assert_healthy(server)


class ResizingTrack(VideoStreamTrack):
    """A webcam that switches from 320x240 to 640x480 after `switch_after` frames."""

    def __init__(self, switch_after: int = 20) -> None:
        super().__init__()
        self.small = next(face_frames((320, 240), 1))
        self.large = next(face_frames((640, 480), 1))
        self.switch_after = switch_after
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self.small if self.sent < self.switch_after else self.large
        self.sent += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def test_a_browser_stream_that_changes_size_is_followed(server: ServerProcess) -> None:
    async def scenario() -> Client:
        sender = Client(ResizingTrack(), ice_servers=[])
        try:
            async with aiohttp.ClientSession(server.url) as http:
                await sender.connect(http, "/api/webrtc/offer")
                started = time.monotonic()
                while time.monotonic() < started + 30 and not (
                    {(320, 240), (640, 480)} <= sender.sizes and sender.messages > 5
                ):
                    await asyncio.sleep(0.05)
                print(f"both sizes after {time.monotonic() - started:.1f} s, {sender.frames} frames")
        finally:
            await sender.close()
        return sender

    with loopback_ice():
        sender = asyncio.run(scenario())
    assert {(320, 240), (640, 480)} <= sender.sizes, sender.sizes
    assert sender.messages > 5, "face verdicts kept coming"
    assert_healthy(server)


def test_a_file_camera_plays_at_its_frame_rate(moving_face_video: tuple[Path, ClipTruth]) -> None:
    """A `file:` camera is paced like the camera it stands for (25 fps here), not decoded as fast as the CPU
    allows, which would take a core from the real cameras."""
    frames: list[Frame] = []
    camera = RtspCamera("recorded", f"file://{moving_face_video[0]}", frames.append, config=RtspConfig())
    camera.start()
    try:
        time.sleep(1.5)
    finally:
        assert camera.stop(timeout=5)
    assert 25 <= len(frames) <= 45, len(frames)  # 37 at 25 fps; unpaced, the 50 frames would come at once
    seconds = [frame.seconds for frame in frames[1:] if frame.seconds is not None]
    assert seconds == sorted(seconds)


def test_every_input_at_once_leaves_the_service_healthy(
    server: ServerProcess, cameras: dict[str, str]
) -> None:
    """All the inputs above ran side by side all along: each playable one was processed, none of the unplayable
    ones delivered a frame, and the service answers."""
    for name in (*RTSP_INPUTS, "file_corrupt", "file_truncated"):
        wait_for(lambda cid=cameras[name]: processed(server, cid) > 0, 30, f"{name} processed")
    for name in UNPLAYABLE:
        assert stream(server, cameras[name])["frames_received"] == 0, name
    assert_healthy(server)
