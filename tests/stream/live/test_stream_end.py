"""A browser that goes away ends its stream and frees its viewers: at once when its page closes (the page closes
its peer connections on `pagehide`), and within `PEER_SILENCE_SECONDS` when the browser exits without running
the page's handlers (as after a crash), instead of after ICE consent expiry (about 30 s, measured 31-32 s).

Real peers: a `fakeweb serve` child process, headless Chromium streaming its fake camera, a GStreamer RTSP
camera; loopback ICE on both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import live_helpers
import pytest
from browser import chromium_missing, open_browser, watch_camera
from live_helpers import add_camera, stream, until
from rtsp_server import RtspTestServer
from server_process import ServerProcess

from stream.live.service import PEER_SILENCE_SECONDS

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

rtsp_camera = live_helpers.rtsp_camera  # fixtures
fake_camera = live_helpers.fake_camera

AT_ONCE = 3.0
"""Seconds a closed page's stream or viewer may still be listed (measured: 0.03-0.06 s)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("stream_end"), "--loopback-ice") as process:
        yield process


@pytest.fixture(scope="module")
def camera(server: ServerProcess, rtsp_camera: RtspTestServer) -> Iterator[str]:
    camera_id = add_camera(server, "porch", rtsp_camera.url)
    yield camera_id
    server.request("DELETE", f"/api/streams/{camera_id}")


def browser_streams(server: ServerProcess) -> list[dict[str, object]]:
    _, listing = server.request("GET", "/api/streams")
    return [item for item in listing["streams"] if item["kind"] == "browser"]


async def stream_webcam(browser: Browser, server: ServerProcess) -> Page:
    """A page sending its webcam, once the server lists its stream live with the page as its viewer."""
    page = await browser.new_page()
    await page.goto(server.url + "/")
    await page.click("#start")
    await page.wait_for_function("window.fakeweb.framesRendered > 5", timeout=60_000)
    await until(
        lambda: [(s["status"], s["viewers"]) for s in browser_streams(server)] == [("live", 1)],
        10,
        "the browser stream live with one viewer",
    )
    return page


async def watch(browser: Browser, server: ServerProcess, camera_id: str) -> Page:
    """A page watching the camera, once the server counts it as the camera's viewer."""
    page = await browser.new_page()
    await page.goto(server.url + "/")
    await watch_camera(page, camera_id, 30)
    await page.wait_for_function("window.fakeweb.framesRendered > 5", timeout=30_000)
    await until(lambda: stream(server, camera_id)["viewers"] == 1, 10, "the camera watched once")
    return page


async def seconds_since(started: float, probe: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds from `started` until `probe()` is true (AssertionError after `timeout` s)."""
    await until(probe, timeout, what)
    return time.monotonic() - started


def test_a_closed_page_ends_its_stream_at_once(server: ServerProcess, fake_camera: Path) -> None:
    async def scenario() -> float:
        async with open_browser(fake_camera) as browser:
            page = await stream_webcam(browser, server)
            closed = time.monotonic()
            await page.close()
            return await seconds_since(
                closed, lambda: not browser_streams(server), AT_ONCE, "no browser stream"
            )

    print(f"browser stream gone {asyncio.run(scenario()):.2f} s after its page closed")


def test_a_closed_viewer_page_frees_its_viewer_at_once(server: ServerProcess, camera: str) -> None:
    async def scenario() -> float:
        async with open_browser() as browser:
            page = await watch(browser, server, camera)
            closed = time.monotonic()
            await page.close()
            return await seconds_since(
                closed, lambda: stream(server, camera)["viewers"] == 0, AT_ONCE, "no viewer"
            )

    print(f"viewer gone {asyncio.run(scenario()):.2f} s after its page closed")
    assert stream(server, camera)["status"] == "live", "the camera itself keeps running"


def test_a_browser_gone_without_closing_its_pages_is_noticed_by_its_silence(
    server: ServerProcess, fake_camera: Path, camera: str
) -> None:
    """Playwright's `browser.close()` ends Chromium without `pagehide` (measured: no handler runs, no beacon
    arrives), like a crash: only the silence of the peers tells."""

    async def scenario() -> tuple[float, float]:
        async with open_browser(fake_camera) as browser:
            await stream_webcam(browser, server)
            await watch(browser, server, camera)
            closed = time.monotonic()
            await browser.close()
        limit = PEER_SILENCE_SECONDS + 5
        stream_gone = await seconds_since(
            closed, lambda: not browser_streams(server), limit, "no browser stream"
        )
        viewer_gone = await seconds_since(
            closed, lambda: stream(server, camera)["viewers"] == 0, limit, "no viewer"
        )
        return stream_gone, viewer_gone

    stream_gone, viewer_gone = asyncio.run(scenario())
    print(
        f"after the browser exited: its stream gone in {stream_gone:.1f} s, its viewer in {viewer_gone:.1f} s"
    )
    assert "Traceback" not in server.log()
