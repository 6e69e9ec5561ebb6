"""The page's events view in a real browser (headless Chromium) against a real `fakeweb serve` whose model flags
every face: events appear with their snapshot and crops, and a review from the page is stored, from the events
list or from a live verdict while the camera is watched."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import camera_element, chromium_missing, open_page, watch_camera
from clips import ClipTruth
from live_helpers import save_file_camera
from polling import wait_for
from server_process import ServerProcess
from tiny_model import with_threshold

pytestmark = [
    pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing())),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_package: Path, moving_face_video: tuple[Path, ClipTruth]
) -> Iterator[ServerProcess]:
    """A file camera and the tiny model at threshold 0.01: every face it sees is "manipulated"."""
    folder = tmp_path_factory.mktemp("page_events")
    package = with_threshold(tiny_package, folder / "flagging", 0.01)
    save_file_camera(folder / "data", CAMERA_NAME, moving_face_video[0])
    with ServerProcess(folder / "data", "--model", str(package), "--device", "cpu") as process:
        yield process


CAMERA_NAME = "door"
CAMERA = "cam-door"  # save_file_camera's id for it

SHOWN = (
    "[...document.querySelectorAll('#event-list .event')].find((e) =>"
    " e.querySelector('img.snapshot')?.naturalWidth > 0 && e.querySelector('.crops img')?.naturalWidth > 0)"
)
"""The newest event shown with its snapshot and crops loaded (an open event has no crops yet)."""


async def _review_a_shown_event(server: ServerProcess) -> tuple[str, int, int, str]:
    async with open_page(server.url + "/") as page:
        await page.wait_for_function(f"Boolean({SHOWN})", timeout=30_000)
        event_id = await page.evaluate(f"{SHOWN}.dataset.id")
        shown = f'#event-list .event[data-id="{event_id}"]'
        width = await page.evaluate(f"{SHOWN}.querySelector('img.snapshot').naturalWidth")
        crops = await page.evaluate(f"{SHOWN}.querySelectorAll('.crops img').length")
        title = await page.text_content(f"{shown} .title") or ""
        await page.click(f"{shown} button.real")
        reviewed = f"document.querySelector('{shown} .reviewed')?.textContent.includes('a real face')"
        await page.wait_for_function(reviewed, timeout=10_000)
        return str(event_id), int(width), int(crops), title


def test_events_show_with_their_pictures_and_a_review_from_the_page_is_stored(server: ServerProcess) -> None:
    wait_for(lambda: server.request("GET", "/api/events")[1]["total"] >= 2, 60, "events recorded")
    event_id, width, crops, title = asyncio.run(_review_a_shown_event(server))
    assert width > 0 and crops >= 1 and "manipulated" in title
    status, event = server.request("GET", f"/api/events/{event_id}")
    assert status == 200 and event["review"]["outcome"] == "real"


async def _review_a_live_verdict(server: ServerProcess) -> str:
    async with open_page(server.url + "/") as page:
        await watch_camera(page, CAMERA, timeout=20)
        button = f"{camera_element(CAMERA)} .review-bar button.correct"
        await page.wait_for_selector(button, timeout=20_000)
        event_id = await page.get_attribute(f"{camera_element(CAMERA)} .review-bar > div", "data-event") or ""
        await page.click(button)
        done = f"document.querySelector('{camera_element(CAMERA)} .review-bar').textContent.includes('reviewed as')"
        await page.wait_for_function(done, timeout=10_000)
        return event_id


def test_a_live_verdict_is_reviewed_through_its_open_event(server: ServerProcess) -> None:
    event_id = asyncio.run(_review_a_live_verdict(server))
    status, event = server.request("GET", f"/api/events/{event_id}")
    assert status == 200 and event["review"]["outcome"] == "correct" and event["stream"] == CAMERA
