"""A real browser (headless Chromium) sends its webcam to `fakeweb serve` and gets annotated video and verdicts.

The fake camera is the astronaut photo from scikit-image (a real face). The server is a real child process
with loopback ICE on both sides (see ../shared/TESTING.md: loopback-only hosts never connect otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import camera_image, chromium_args, chromium_missing, write_y4m
from server_process import ServerProcess
from skimage import data

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("camera") / "face.y4m", camera_image(data.astronaut()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"FAKEWEB_MESH_FOR": "all", "FAKEWEB_CLASSIFY_EVERY": "5"}
    with ServerProcess(tmp_path_factory.mktemp("webrtc"), "--loopback-ice", env=env) as process:
        yield process


async def _run_page(server: ServerProcess, fake_camera: Path, seconds: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=chromium_args(fake_camera))
        try:
            page = await browser.new_page()
            await page.goto(server.url + "/")
            await page.click("#start")
            await page.wait_for_function(
                "window.fakeweb.framesRendered > 20 && window.fakeweb.faceMessages > 5", timeout=seconds * 1000
            )
            state: dict[str, Any] = await page.evaluate(
                "({frames: window.fakeweb.framesRendered, messages: window.fakeweb.faceMessages,"
                " faces: window.fakeweb.lastFaces, error: document.querySelector('#error').textContent,"
                " listed: document.querySelectorAll('#faces li').length})"
            )
            status, streams = server.request("GET", "/api/streams")
            state["streams"] = streams["streams"]
            await page.click("#stop")
            return state
        finally:
            await browser.close()


def test_browser_webcam_comes_back_annotated_with_verdicts(server: ServerProcess, fake_camera: Path) -> None:
    state = asyncio.run(_run_page(server, fake_camera, seconds=60))
    assert state["error"] == ""
    assert state["frames"] > 20
    assert len(state["faces"]) == 1, "the astronaut's face is tracked"
    face = state["faces"][0]
    assert face["verdict"] in ("real", "suspect", "manipulated")
    assert 0.0 <= face["probability"] <= 1.0
    assert state["listed"] == 1, "the page lists the face"
    (stream,) = [s for s in state["streams"] if s["kind"] == "browser"]
    assert stream["frames_processed"] > 20
    assert stream["frames_received"] >= stream["frames_processed"]


def test_browser_stream_is_removed_when_the_peer_closes(server: ServerProcess) -> None:
    import time

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
