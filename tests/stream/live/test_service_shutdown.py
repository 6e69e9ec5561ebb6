"""Graceful shutdown with real peers: a `fakeweb serve` process with Chromium and an RTSP camera gets SIGTERM;
and the same service in-process (`stream.live.serve.serving`) with aiortc peers, checked from the inside.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import av
import live_helpers
import pytest
from aiortc import VideoStreamTrack
from browser import camera_element, camera_image, open_page, watch_camera
from live_helpers import Client, add_camera, json_request, until
from rtsp_server import RtspTestServer
from server_process import ServerProcess, free_port
from skimage import data

from stream.config import ServiceConfig, load_config
from stream.live.serve import RunningService, serving

SERVICE_THREADS = ("worker-", "rtsp-read-", "rtsp-watch-", "classifier-batcher", "model-watcher")
"""Name prefixes of every thread the service starts."""


rtsp_camera = live_helpers.rtsp_camera  # fixtures
fake_camera = live_helpers.fake_camera


@pytest.fixture
def earlier_threads() -> set[threading.Thread]:
    """The threads alive before the test: one another test left behind is not this test's service's."""
    return set(threading.enumerate())


def service_threads(earlier: set[threading.Thread]) -> list[str]:
    """Names of the service threads alive now, except those in `earlier`."""
    return [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and t.name.startswith(SERVICE_THREADS) and t not in earlier
    ]


# A real process, a real browser, SIGTERM.

PEERS = "[window.fakeweb.localPeer, ...window.fakeweb.viewers.values()]"
KEEP_PEERS = f"window.peersSeen = {PEERS}"  # the page forgets its peers once the server closes them
PEER_TRANSPORTS = "window.peersSeen.map((peer) => peer.getReceivers()[0].transport.state)"


async def _browse_then_terminate(server: ServerProcess, fake_camera: Path, camera_id: str) -> dict[str, Any]:
    """Send the webcam and watch the camera from the page, then SIGTERM the server; what the browser saw."""
    assert server.process is not None
    async with open_page(server.url + "/", fake_camera) as page:
        await page.click("#start")
        await watch_camera(page, camera_id, timeout=30)
        await page.wait_for_function(
            f"window.fakeweb.framesRendered > 30 && ({KEEP_PEERS}).length === 2"
            f" && {PEER_TRANSPORTS}.every((s) => s === 'connected')",
            timeout=30_000,
        )
        _, listing = server.request("GET", "/api/streams")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.process.wait, 20)
        seconds = time.monotonic() - started
        # DTLS close_notify from the server: it closed the peers rather than vanishing. The page noticed
        # (its channels closed) and let go of both connections.
        closed = await page.wait_for_function(
            f"{PEER_TRANSPORTS}.every((s) => s === 'closed') && {PEER_TRANSPORTS}", timeout=5_000
        )
        page_state = await page.evaluate(
            f"""({{startEnabled: !document.querySelector('#start').disabled,
                watching: document.querySelector('{camera_element(camera_id)} video').srcObject !== null,
                peers: {PEERS}.filter(Boolean).length}})"""
        )
        return {
            "code": code,
            "seconds": seconds,
            "streams": listing["streams"],
            "transports": await closed.json_value(),
            "page": page_state,
        }


def test_sigterm_with_a_browser_and_a_camera_exits_0_and_closes_the_peers(
    tmp_path: Path, fake_camera: Path, rtsp_camera: RtspTestServer
) -> None:
    server = ServerProcess(tmp_path, "--loopback-ice").start()
    try:
        camera_id = add_camera(server, "door", rtsp_camera.url)
        seen = asyncio.run(_browse_then_terminate(server, fake_camera, camera_id))
    finally:
        server.stop()
    assert {s["kind"]: s["frames_processed"] > 0 for s in seen["streams"]} == {
        "camera": True,
        "browser": True,
    }
    assert seen["code"] == 0
    assert seen["seconds"] < 15, f"shutdown took {seen['seconds']:.1f} s"
    assert seen["transports"] == ["closed", "closed"]
    assert seen["page"] == {"startEnabled": True, "watching": False, "peers": 0}, "the page let go of both"
    log = server.log()
    for sign in ("Traceback", "ERROR", "Task was destroyed", "Exception ignored", "never retrieved"):
        assert sign not in log, log[-3000:]
    saved = json.loads((tmp_path / "cameras.json").read_text())
    assert [c["camera_id"] for c in saved["cameras"]] == [camera_id], "shutdown does not forget cameras"


# In-process: the same service, inspected.


class FaceTrack(VideoStreamTrack):
    """A webcam showing the astronaut's face (aiortc paces it at 30 fps)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = camera_image(data.astronaut(), size=(320, 240))

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def _live_camera(running: RunningService, http: aiohttp.ClientSession, url: str) -> str:
    camera = await json_request(http, "POST", "/api/streams", {"name": "door", "url": url})
    stream = running.service.streams[camera["id"]]
    await until(lambda: stream.status == "live" and stream.worker.stats.processed > 5, 20, "camera live")
    return str(camera["id"])


@pytest.fixture
def in_process_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceConfig:
    """The service's configuration (FAKEWEB_* from the environment apply) on a free port, loopback ICE."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)  # restored after
    return load_config(overrides={"port": free_port(), "data_dir": tmp_path, "loopback_ice": True})


def test_shutdown_closes_every_peer_and_joins_every_thread(
    in_process_config: ServiceConfig, rtsp_camera: RtspTestServer, earlier_threads: set[threading.Thread]
) -> None:
    async def scenario() -> dict[str, Any]:
        sender, viewer = Client(FaceTrack()), Client()
        try:
            async with serving(in_process_config) as running, aiohttp.ClientSession(running.url) as http:
                service = running.service
                camera_id = await _live_camera(running, http, rtsp_camera.url)
                await sender.connect(http, "/api/webrtc/offer")
                await viewer.connect(http, f"/api/streams/{camera_id}/view")
                await until(
                    lambda: sender.frames > 10 and viewer.frames > 10 and viewer.messages > 5,
                    30,
                    "video both ways",
                )
                (browser,) = [s for s in service.streams.values() if s.kind == "browser"]
                assert browser.worker.stats.processed > 5
                assert service.describe(camera_id)["viewers"] == 1 and browser.describe()["viewers"] == 1
                server_peers = set(service.peers)
                assert len(server_peers) == 2
                assert service_threads(earlier_threads), "the service's threads run while it serves"
            await until(
                lambda: sender.channel.readyState == viewer.channel.readyState == "closed",
                5,
                "channels closed",
            )
            return {
                "service": service,
                "server_peers": [peer.connectionState for peer in server_peers],
                "viewer_sizes": viewer.sizes,
                # Before the loop ends: nothing may be left to asyncio.run.
                "threads": service_threads(earlier_threads),
            }
        finally:
            await asyncio.gather(sender.close(), viewer.close())

    outcome = asyncio.run(scenario())
    service = outcome["service"]
    assert outcome["threads"] == [] and service_threads(earlier_threads) == []
    assert outcome["server_peers"] == ["closed", "closed"]
    assert service.peers == set() and service.streams == {}
    assert not service.batcher.running
    assert outcome["viewer_sizes"] == {(320, 240)}, "the viewer got the camera's frames"


def test_removing_a_watched_camera_closes_its_viewers(
    in_process_config: ServiceConfig, rtsp_camera: RtspTestServer, earlier_threads: set[threading.Thread]
) -> None:
    async def scenario() -> None:
        viewer = Client()
        try:
            async with serving(in_process_config) as running, aiohttp.ClientSession(running.url) as http:
                service = running.service
                camera_id = await _live_camera(running, http, rtsp_camera.url)
                await viewer.connect(http, f"/api/streams/{camera_id}/view")
                await until(lambda: viewer.frames > 5, 20, "the viewer receiving video")
                (peer,) = service.peers
                await json_request(http, "DELETE", f"/api/streams/{camera_id}")
                assert peer.connectionState == "closed" and service.peers == set()
                assert not [name for name in service_threads(earlier_threads) if name.endswith(camera_id)]
                await until(lambda: viewer.channel.readyState == "closed", 5, "the viewer's channel closed")

                async def no_viewers_metric() -> bool:
                    async with http.get("/metrics") as response:
                        return "fakeweb_viewers 0.0" in await response.text()

                await until(no_viewers_metric, 5, "fakeweb_viewers at 0")
        finally:
            await viewer.close()

    asyncio.run(scenario())
    assert service_threads(earlier_threads) == []
