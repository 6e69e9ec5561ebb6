"""Helpers for tests against a running `fakeweb serve`: bounded polling, /metrics read with a real parser, RTSP
cameras served by real GStreamer servers, and an aiortc peer that sends or watches video like the page does.

Take the camera fixtures into a test module that has a `server` fixture by assignment:

    import live_helpers
    rtsp_pair = live_helpers.rtsp_pair  # fixtures
    cameras = live_helpers.cameras
    fake_camera = live_helpers.fake_camera
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import av
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from browser import camera_image, chromium_missing, write_y4m
from clips import ClipTruth, moving_face_clip
from polling import wait_for
from prometheus_client.parser import text_string_to_metric_families
from rtsp_server import RtspTestServer, gst_rtsp_missing
from server_process import ServerProcess
from skimage.data import astronaut

from stream.live.cameras import Camera, CameraList

T = TypeVar("T")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0.0 when the series does not exist yet)."""
    status, text = server.request("GET", "/metrics")
    assert status == 200, text
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def stream(server: ServerProcess, stream_id: str) -> dict[str, Any]:
    """GET /api/streams/{id}."""
    status, body = server.request("GET", f"/api/streams/{stream_id}")
    assert status == 200, body
    return dict(body)


def add_camera(server: ServerProcess, name: str, url: str) -> str:
    """POST /api/streams; the new camera's id."""
    status, body = server.request("POST", "/api/streams", body={"name": name, "url": url})
    assert status == 201, body
    return str(body["id"])


def save_file_camera(data_dir: Path, name: str, video: Path) -> str:
    """Put a `file://` camera in the camera list of a server not started yet (the API refuses `file://`
    cameras: only the camera file, which operators control, may hold them); the camera's id."""
    camera_id = "cam-" + name.lower().replace("_", "-")
    CameraList(data_dir / "cameras.json").add(Camera(camera_id, name, f"file://{video}"))
    return camera_id


def served_version(server: ServerProcess) -> str:
    """The model version a ready server uses (/readyz)."""
    status, body = server.request("GET", "/readyz")
    assert status == 200 and body["ready"], body
    return str(body["model"]["version"])


def processed(server: ServerProcess, stream_id: str) -> int:
    return int(stream(server, stream_id)["frames_processed"])


def received(server: ServerProcess, stream_id: str) -> int:
    return int(stream(server, stream_id)["frames_received"])


def rtsp_server(clip: Path, path: str = "cam") -> RtspTestServer:
    """An RTSP server looping `clip` at rtsp://127.0.0.1:PORT/`path`, to start with `with`; skips the test
    where GStreamer's RTSP server cannot run."""
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
    return RtspTestServer(clip, path=path)


@pytest.fixture(scope="module")
def rtsp_camera(moving_face_video: tuple[Path, ClipTruth]) -> Iterator[RtspTestServer]:
    """One RTSP server looping the one-face clip at rtsp://127.0.0.1:PORT/cam."""
    with rtsp_server(moving_face_video[0]) as running:
        yield running


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chromium's fake webcam: the astronaut photo as a Y4M file; skips the test when Chromium is missing."""
    if chromium_missing():
        pytest.skip(str(chromium_missing()))
    return write_y4m(tmp_path_factory.mktemp("camera") / "face.y4m", camera_image(astronaut()))


@pytest.fixture(scope="module")
def rtsp_pair(
    moving_face_video: tuple[Path, ClipTruth], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RtspTestServer, RtspTestServer]]:
    """The servers of cameras A and B, each looping its own one-face clip (320x240 and 352x288, 25 fps)."""
    first = rtsp_server(moving_face_video[0], path="a")
    other_clip, _ = moving_face_clip(tmp_path_factory.mktemp("clip_b"), size=(352, 288))
    with first, RtspTestServer(other_clip, path="b") as second:
        yield first, second


@pytest.fixture(scope="module")
def cameras(server: ServerProcess, rtsp_pair: tuple[RtspTestServer, RtspTestServer]) -> tuple[str, str]:
    """The ids of cameras A and B, added to the module's `server` through the API, live and delivering."""
    ids = (add_camera(server, "A", rtsp_pair[0].url), add_camera(server, "B", rtsp_pair[1].url))
    for camera_id in ids:
        wait_for(partial(_delivering, server, camera_id), 20, f"{camera_id} delivering frames")
    return ids


def _delivering(server: ServerProcess, camera_id: str) -> bool:
    described = stream(server, camera_id)
    return described["status"] == "live" and described["frames_received"] > 10


async def until(probe: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
    """Await until `probe()` (plain or async) is true, polling; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        await asyncio.sleep(0.05)


async def json_request(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
    """One API call that must succeed; its JSON body (None for 204)."""
    async with http.request(method, path, json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.status != 204 else None


class Client:
    """An aiortc peer of the service, like the page: sends `track` (or only receives), opens a "faces" channel.

    Counts received video frames and face messages; `brightness` is the mean grey level of the last frame.
    `ice_servers` replaces aiortc's default (a public STUN server); pass [] to stay on the machine.
    """

    def __init__(
        self, track: MediaStreamTrack | None = None, ice_servers: list[RTCIceServer] | None = None
    ) -> None:
        self.peer = RTCPeerConnection(
            None if ice_servers is None else RTCConfiguration(iceServers=ice_servers)
        )
        self.frames = 0
        self.messages = 0
        self.brightness = 0.0
        self.sizes: set[tuple[int, int]] = set()
        self._reader: asyncio.Task[None] | None = None
        if track is None:
            self.peer.addTransceiver("video", direction="recvonly")
        else:
            self.peer.addTrack(track)
        self.channel = self.peer.createDataChannel("faces")
        self.channel.on("message", self._on_message)
        self.peer.on("track", self._on_track)

    def _on_message(self, message: Any) -> None:
        self.messages += 1

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.VideoFrame)  # a received track yields decoded frames
            self.frames += 1
            self.sizes.add((frame.width, frame.height))
            self.brightness = float(frame.to_ndarray(format="gray").mean())

    async def connect(self, http: aiohttp.ClientSession, path: str) -> None:
        """Offer to `path` (/api/webrtc/offer or /api/streams/{id}/view) and apply the answer."""
        await self.peer.setLocalDescription(await self.peer.createOffer())
        offer = self.peer.localDescription
        answer = await json_request(http, "POST", path, {"sdp": offer.sdp, "type": offer.type})
        await self.peer.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

    async def close(self) -> None:
        await self.peer.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
