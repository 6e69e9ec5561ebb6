"""RTSP cameras through a real `fakeweb serve` process: two real GStreamer RTSP servers, one killed and restarted,
and an aiortc peer watching the camera that goes down.

Each clip shows one face, so a classifier batch of more than one crop can only come from two streams at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import aiohttp
import aioice.ice
import live_helpers
import pytest
from live_helpers import Client, json_request, metric, processed, samples, stream, until, wait_for
from rtsp_server import RtspTestServer
from server_process import ServerProcess

from stream.serve import use_loopback_ice

rtsp_pair = live_helpers.rtsp_pair  # fixtures
cameras = live_helpers.cameras


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Every face classified on every frame, and a batch window wide enough for two streams to share batches."""
    env = {"FAKEWEB_CLASSIFY_EVERY": "1", "FAKEWEB_BATCH_MAX_WAIT_MS": "30"}
    with ServerProcess(tmp_path_factory.mktemp("rtsp_service"), "--loopback-ice", env=env) as process:
        yield process


def test_two_cameras_are_processed_and_share_classifier_batches(
    server: ServerProcess, cameras: tuple[str, str]
) -> None:
    for camera_id in cameras:
        wait_for(lambda cid=camera_id: processed(server, cid) > 20, 20, f"{camera_id} processing frames")
        described = stream(server, camera_id)
        assert described["kind"] == "camera" and described["fps"] > 0
        assert len(described["faces"]) <= 1, described

    def cross_stream_batches() -> float:
        _, text = server.request("GET", "/metrics")
        values = samples(text)
        count = values[("fakeweb_classifier_batch_size_count", frozenset())]
        singles = values[("fakeweb_classifier_batch_size_bucket", frozenset({("le", "1.0")}))]
        return count - singles

    assert wait_for(cross_stream_batches, 20, "a batch with crops of both streams") > 0
    assert metric(server, "fakeweb_streams", state="live") == 2


def test_a_dead_camera_reconnects_while_the_other_keeps_processing(
    server: ServerProcess,
    rtsp_pair: tuple[RtspTestServer, RtspTestServer],
    cameras: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kill A's server: A reconnects (its viewer sees the offline placeholder meanwhile), B never stops."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)  # restored after
    use_loopback_ice()  # for the test's own peer, like the server's --loopback-ice
    server_a, _ = rtsp_pair
    camera_a, camera_b = cameras

    async def get(http: aiohttp.ClientSession, camera_id: str) -> dict[str, Any]:
        return dict(await json_request(http, "GET", f"/api/streams/{camera_id}"))

    async def scenario() -> None:
        viewer = Client()
        try:
            async with aiohttp.ClientSession(server.url) as http:
                await viewer.connect(http, f"/api/streams/{camera_a}/view")
                await until(lambda: viewer.frames > 10, 20, "A's video at the viewer")
                assert viewer.brightness > 60, "camera pictures (the clip's background is grey 70-150)"

                started = time.monotonic()
                server_a.kill()
                await until(lambda: _status_is(get(http, camera_a), "reconnecting"), 10, "A reconnecting")
                a_received = (await get(http, camera_a))["frames_received"]
                b_before = (await get(http, camera_b))["frames_processed"]
                shown = viewer.frames
                await until(
                    lambda: viewer.frames >= shown + 3 and viewer.brightness < 50,
                    10,
                    "A's placeholder at the viewer",
                )
                b_during = await get(http, camera_b)
                a_during = await get(http, camera_a)
                assert b_during["status"] == "live" and b_during["frames_processed"] > b_before + 10
                assert a_during["status"] == "reconnecting"
                assert a_during["frames_received"] == a_received, "placeholders never reach A's pipeline"
                await until(
                    lambda: asyncio.to_thread(metric, server, "fakeweb_reconnects_total", stream=camera_a),
                    10,
                    "a reconnect counted",
                )

                await asyncio.to_thread(server_a.start)  # same port: the camera must find it again by itself
                await until(lambda: _status_is(get(http, camera_a), "live"), 15, "A live again")
                resumed = (await get(http, camera_a))["frames_processed"]
                await until(
                    lambda: _processed_over(get(http, camera_a), resumed + 10), 10, "A processing again"
                )
                await until(lambda: viewer.brightness > 60, 10, "camera pictures at the viewer again")
                assert (await get(http, camera_b))["status"] == "live"
                assert time.monotonic() - started < 40
        finally:
            await viewer.close()

    asyncio.run(scenario())
    assert metric(server, "fakeweb_reconnects_total", stream=camera_a) >= 1
    assert metric(server, "fakeweb_reconnects_total", stream=camera_b) == 0
    assert "Traceback" not in server.log()


async def _status_is(described: Awaitable[dict[str, Any]], status: str) -> bool:
    return (await described)["status"] == status


async def _processed_over(described: Awaitable[dict[str, Any]], count: int) -> bool:
    return int((await described)["frames_processed"]) > count
