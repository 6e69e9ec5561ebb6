"""The page's camera list in a real browser (headless Chromium) against a real `fakeweb serve`: a camera that
cannot connect shows why and when it is tried again; the footer links the OpenAPI description."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from browser import camera_element, chromium_missing, open_page
from live_helpers import add_camera
from rtsp_server import free_port
from server_process import ServerProcess

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A failed camera waits 5 s before each new attempt: long enough to read the count-down."""
    env = {"FAKEWEB_RTSP_BACKOFF_SECONDS": "5"}
    with ServerProcess(tmp_path_factory.mktemp("page_cameras"), env=env) as process:
        yield process


async def _camera_and_footer(server: ServerProcess, camera_id: str) -> tuple[str, str, str, str]:
    async with open_page(server.url + "/") as page:
        element = camera_element(camera_id)
        await page.wait_for_function(
            f"document.querySelector('{element} .problem')?.textContent.includes('retrying in')",
            timeout=10_000,
        )
        problem = await page.text_content(f"{element} .problem")
        fps = await page.text_content(f"{element} .fps")
        link = await page.get_attribute("footer a", "href")
        async with page.expect_navigation():
            await page.click("footer a")
        return problem or "", fps or "", link or "", await page.text_content("body") or ""


def test_a_camera_that_is_down_shows_why_and_when_it_retries(server: ServerProcess) -> None:
    camera_id = add_camera(server, "garage", f"rtsp://127.0.0.1:{free_port()}/cam")
    problem, fps, link, api = asyncio.run(_camera_and_footer(server, camera_id))
    assert problem.startswith("Connection refused · retrying in ") and problem.endswith(" s"), problem
    assert 0 <= int(problem.split("retrying in ")[1].split()[0]) <= 5, problem
    assert fps == "0 fps"
    assert link == "/api/openapi.json" and '"openapi"' in api
