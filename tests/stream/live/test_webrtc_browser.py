"""A real browser (headless Chromium) sends its webcam to `fakeweb serve` and gets annotated video and verdicts;
it also watches an RTSP camera of the server (a real GStreamer RTSP server) from the page's camera list, and two
pages watch one camera, encoded once for both.

The fake camera is the astronaut photo from scikit-image (a real face). The server is a real child process
with loopback ICE on both sides (see ../shared/TESTING.md: loopback-only hosts never connect otherwise).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import live_helpers
import pytest
from browser import (
    camera_element,
    chromium_missing,
    open_browser,
    open_page,
    watch_camera,
)
from clips import ClipTruth
from live_helpers import add_camera, samples, stream, wait_for
from rtsp_server import RtspTestServer
from server_process import ServerProcess

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

rtsp_camera = live_helpers.rtsp_camera  # fixtures
fake_camera = live_helpers.fake_camera


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"FAKEWEB_MESH_FOR": "all", "FAKEWEB_CLASSIFY_EVERY": "5"}
    with ServerProcess(tmp_path_factory.mktemp("webrtc"), "--loopback-ice", env=env) as process:
        yield process


async def _run_page(server: ServerProcess, fake_camera: Path, seconds: float) -> dict[str, Any]:
    async with open_page(server.url + "/", fake_camera) as page:
        await page.click("#start")
        # A face is "unknown" until its third classifier sample (min_samples): wait for its verdict.
        await page.wait_for_function(
            "window.fakeweb.framesRendered > 20 && window.fakeweb.faceMessages > 5"
            " && window.fakeweb.lastFaces.some((face) => face.verdict !== 'unknown')",
            timeout=seconds * 1000,
        )
        state: dict[str, Any] = await page.evaluate(
            "({frames: window.fakeweb.framesRendered, messages: window.fakeweb.faceMessages,"
            " faces: window.fakeweb.lastFaces, error: document.querySelector('#error').textContent,"
            " listed: document.querySelectorAll('#faces li').length,"
            " text: Array.from(document.querySelectorAll('#faces li'), (item) => item.textContent)})"
        )
        status, streams = server.request("GET", "/api/streams")
        state["streams"] = streams["streams"]
        await page.click("#stop")
        return state


def test_browser_webcam_comes_back_annotated_with_verdicts(server: ServerProcess, fake_camera: Path) -> None:
    state = asyncio.run(_run_page(server, fake_camera, seconds=60))
    assert state["error"] == ""
    assert state["frames"] > 20
    assert len(state["faces"]) == 1, "the astronaut's face is tracked"
    face = state["faces"][0]
    assert face["verdict"] in ("real", "suspect", "manipulated")
    assert 0.0 <= face["probability"] <= 1.0
    assert state["listed"] == 1, "the page lists the face"
    assert state["text"][0].startswith(f"#{face['track_id']} {face['verdict']} ("), state["text"]
    (stream,) = [s for s in state["streams"] if s["kind"] == "browser"]
    assert stream["frames_processed"] > 20
    assert stream["frames_received"] >= stream["frames_processed"]


def test_browser_stream_is_removed_when_the_peer_closes(server: ServerProcess) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, listing = server.request("GET", "/api/streams")
        if not [s for s in listing["streams"] if s["kind"] == "browser"]:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"browser stream still listed: {listing}")
    _, metrics = server.request("GET", "/metrics")
    assert 'fakeweb_frames_total{outcome="processed",stream="browser"}' in metrics


async def _watch_camera(
    server: ServerProcess, fake_camera: Path, camera_id: str, seconds: float
) -> dict[str, Any]:
    element = camera_element(camera_id)
    async with open_page(server.url + "/", fake_camera) as page:
        await watch_camera(page, camera_id, seconds)
        await page.wait_for_function(
            "window.fakeweb.framesRendered > 20 && window.fakeweb.faceMessages > 5",
            timeout=seconds * 1000,
        )
        state: dict[str, Any] = await page.evaluate(
            f"""(() => {{
                const video = document.querySelector('{element} video');
                return {{frames: window.fakeweb.framesRendered, messages: window.fakeweb.faceMessages,
                    faces: window.fakeweb.lastFaces, error: document.querySelector('#error').textContent,
                    name: document.querySelector('{element} strong').textContent,
                    listed: document.querySelectorAll('{element} li').length,
                    size: [video.videoWidth, video.videoHeight],
                    model: document.querySelector('#model').textContent}};
            }})()"""
        )
        state["described"] = stream(server, camera_id)
        await page.close()  # closing the page closes its peer connections
        return state


def test_browser_watches_an_rtsp_camera_from_the_camera_list(
    server: ServerProcess,
    fake_camera: Path,
    rtsp_camera: RtspTestServer,
    moving_face_video: tuple[Path, ClipTruth],
) -> None:
    camera_id = add_camera(server, "lobby", rtsp_camera.url)
    try:
        state = asyncio.run(_watch_camera(server, fake_camera, camera_id, seconds=60))
        assert state["error"] == ""
        assert state["name"] == "lobby"
        assert state["frames"] > 20 and state["messages"] > 5
        truth = moving_face_video[1]
        assert state["size"] == [truth.width, truth.height], "the viewer gets the camera's annotated frames"
        assert len(state["faces"]) == 1 and state["listed"] == 1, "the clip's face is tracked and listed"
        assert state["described"]["viewers"] == 1
        _, ready = server.request("GET", "/readyz")
        assert ready["model"]["version"] in state["model"], "the page shows the model in use"
        wait_for(
            lambda: stream(server, camera_id)["viewers"] == 0, 10, "the viewer gone once the page closed"
        )
        wait_for(
            lambda: "fakeweb_viewers 0.0" in server.request("GET", "/metrics")[1], 5, "fakeweb_viewers at 0"
        )
    finally:
        server.request("DELETE", f"/api/streams/{camera_id}")


INBOUND_VIDEO = """async (streamId) => {
    const stats = await window.fakeweb.viewers.get(streamId).getStats();
    for (const report of stats.values()) {
        if (report.type === "inbound-rtp" && report.kind === "video") {
            return {decoded: report.framesDecoded, keyframes: report.keyFramesDecoded,
                codec: stats.get(report.codecId).mimeType};
        }
    }
    return null;
}"""


def _encoded_and_processed(server: ServerProcess, camera_id: str) -> tuple[float, float]:
    """From one /metrics read: frames encoded (all streams; only this camera is watched) and this camera's
    processed frames."""
    _, text = server.request("GET", "/metrics")
    values = samples(text)
    encoded = values[("fakeweb_stage_duration_seconds_count", frozenset({("stage", "encode")}))]
    processed = values[("fakeweb_frames_total", frozenset({("stream", camera_id), ("outcome", "processed")}))]
    return encoded, processed


async def _two_pages_watch(
    server: ServerProcess, fake_camera: Path, camera_id: str, seconds: float
) -> dict[str, Any]:
    from playwright.async_api import Page

    async def watch(page: Page) -> None:
        await page.goto(server.url + "/")
        await watch_camera(page, camera_id, seconds)
        await page.wait_for_function("window.fakeweb.framesRendered > 10", timeout=seconds * 1000)

    async with open_browser(fake_camera) as browser:
        first, late = await browser.new_page(), await browser.new_page()
        await watch(first)
        joined = time.monotonic()
        await watch(late)
        late_to_ten_frames = time.monotonic() - joined
        before = _encoded_and_processed(server, camera_id)
        await asyncio.sleep(3)
        after = _encoded_and_processed(server, camera_id)
        state = {
            "pages": [await page.evaluate(INBOUND_VIDEO, camera_id) for page in (first, late)],
            "late_to_ten_frames": late_to_ten_frames,
            "encoded": after[0] - before[0],
            "processed": after[1] - before[1],
            "viewers": stream(server, camera_id)["viewers"],
        }
        await first.close()
        await late.close()
        return state


def test_two_pages_watching_one_camera_share_one_encode(
    server: ServerProcess, fake_camera: Path, rtsp_camera: RtspTestServer
) -> None:
    camera_id = add_camera(server, "hall", rtsp_camera.url)
    try:
        state = asyncio.run(_two_pages_watch(server, fake_camera, camera_id, seconds=60))
        assert state["viewers"] == 2
        for page in state["pages"]:
            assert page["codec"] == "video/VP8"
            assert page["decoded"] > 10 and page["keyframes"] >= 1
        assert state["late_to_ten_frames"] < 15, "the late viewer gets a keyframe promptly"
        assert state["processed"] > 10, "the camera kept being processed"
        assert 0 < state["encoded"] <= state["processed"] + 1, (
            "each processed frame encoded once, not per viewer"
        )
    finally:
        server.request("DELETE", f"/api/streams/{camera_id}")
