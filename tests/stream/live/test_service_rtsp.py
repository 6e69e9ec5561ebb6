"""RTSP cameras through a real `fakeweb serve` process: two real GStreamer RTSP servers, one killed and restarted,
and an aiortc peer watching the camera that goes down; camera URLs and names checked when added; a camera that
cannot connect says why and when it retries.

Each clip shows one face, so a classifier batch of more than one crop can only come from two streams at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import live_helpers
import pytest
from live_helpers import Client, json_request, metric, processed, samples, stream, until, wait_for
from rtsp_server import RtspTestServer, free_port
from server_process import ServerProcess

from stream.live.cameras import Camera, CameraConfigError, CameraList
from stream.live.serve import use_loopback_ice

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

                await until(lambda: _has_faces(get(http, camera_a)), 10, "A's face listed")
                messages: list[dict[str, Any]] = []
                viewer.channel.on("message", lambda text: messages.append(json.loads(text)))
                started = time.monotonic()
                server_a.kill()
                await until(lambda: _status_is(get(http, camera_a), "reconnecting"), 10, "A reconnecting")
                a_down = await get(http, camera_a)
                assert a_down["fps"] == 0 and a_down["faces"] == [], "no stale fps or faces while down"
                assert a_down["last_error"], a_down
                await until(
                    lambda: {"stream": camera_a, "frame": None, "faces": []} in messages, 5, "faces cleared"
                )
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
                a_up = await get(http, camera_a)
                assert a_up["fps"] > 0 and a_up["last_error"] and a_up["retry_in_seconds"] is None, a_up
                assert time.monotonic() - started < 40
        finally:
            await viewer.close()

    asyncio.run(scenario())
    assert metric(server, "fakeweb_reconnects_total", stream=camera_a) >= 1
    assert metric(server, "fakeweb_reconnects_total", stream=camera_b) == 0
    assert "Traceback" not in server.log()


async def _status_is(described: Awaitable[dict[str, Any]], status: str) -> bool:
    return (await described)["status"] == status


async def _has_faces(described: Awaitable[dict[str, Any]]) -> bool:
    return bool((await described)["faces"])


async def _processed_over(described: Awaitable[dict[str, Any]], count: int) -> bool:
    return int((await described)["frames_processed"]) > count


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("rtsp://127.0.0.1:99999/cam", "port must be a number from 1 to 65535"),
        ("rtsp://127.0.0.1:0/cam", "port must be a number from 1 to 65535"),
        ("rtsp://admin:secret/cam", "port must be a number from 1 to 65535"),
        ("rtsp://fe80::1/cam", "an IPv6 address goes in brackets"),
        ("rtsp://[fe80::1/cam", "not a valid IPv6 address"),
        ("rtsp://[nope]:554/cam", "not a valid IPv6 address"),
        ("rtsp://300.1.2.3/cam", "not a valid IPv4 address"),
        ("rtsp://-cam-.local/cam", "not a valid host name"),
        ("rtsp://user:secret@/cam", "has no host"),
        ("rtsp://cam.local/a b", "spaces or control characters"),
        ("http://127.0.0.1/cam", "must start with rtsp:// or rtsps://"),
        ("file:///etc/passwd", "file:// cameras can only be configured in the camera file"),
    ],
)
def test_bad_camera_urls_are_400_naming_the_problem(server: ServerProcess, url: str, reason: str) -> None:
    before = _stream_ids(server)
    status, body = server.request("POST", "/api/streams", body={"name": "bad", "url": url})
    assert status == 400 and reason in body["error"], body
    assert "secret" not in body["error"], "the URL is never echoed (it may hold credentials)"
    assert _stream_ids(server) == before


def _stream_ids(server: ServerProcess) -> list[str]:
    return [described["id"] for described in server.request("GET", "/api/streams")[1]["streams"]]


def test_camera_names_are_unique_ignoring_case(server: ServerProcess) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    status, first = server.request("POST", "/api/streams", body={"name": "Porch", "url": url})
    assert status == 201, first
    try:
        status, body = server.request("POST", "/api/streams", body={"name": " porch ", "url": url})
        assert status == 409 and "a camera named 'porch' already exists" in body["error"], body
    finally:
        assert server.request("DELETE", f"/api/streams/{first['id']}")[0] == 204
    status, again = server.request("POST", "/api/streams", body={"name": "porch", "url": url})
    assert status == 201, "free again once the first is removed"
    assert server.request("DELETE", f"/api/streams/{again['id']}")[0] == 204


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"rtsp://127.0.0.1:{free_port()}/cam", "Connection refused"),
        ("rtsp://no-such-host.invalid/cam", "cannot resolve host no-such-host.invalid: "),
    ],
    ids=["refused", "unknown-host"],
)
def test_a_camera_that_cannot_connect_says_why_and_when_it_retries(
    server: ServerProcess, url: str, reason: str
) -> None:
    """Accepted (the URL is valid; the host is not looked up when the camera is added), then down: the API
    gives the reason and the next attempt, counting down the first backoff step (1 s)."""
    status, created = server.request("POST", "/api/streams", body={"name": "unreachable", "url": url})
    assert status == 201, created
    try:
        wait_for(lambda: stream(server, created["id"])["last_error"], 10, "a reason for the failure")
        described = stream(server, created["id"])
        assert described["status"] == "reconnecting" and described["last_error"].startswith(reason), described
        assert described["fps"] == 0 and described["faces"] == []
        retry_in = described["retry_in_seconds"]
        assert retry_in is None or 0 <= retry_in <= 1.0, described  # None: the next attempt under way
        retry_at = wait_for(lambda: stream(server, created["id"])["next_retry_at"], 5, "a retry time")
        seconds = (datetime.fromisoformat(retry_at) - datetime.now(timezone.utc)).total_seconds()
        assert -0.5 < seconds <= 1.0, retry_at
    finally:
        assert server.request("DELETE", f"/api/streams/{created['id']}")[0] == 204


def test_file_cameras_come_only_from_the_camera_file(tmp_path: Path) -> None:
    """An API user could make the server read any local file; an operator can still list a recording."""
    with pytest.raises(CameraConfigError, match="only be configured in the camera file"):
        Camera.new("demo", "file:///etc/passwd")
    path = tmp_path / "cameras.json"
    CameraList(path).add(Camera("cam-demo", "demo", "file:///srv/demo.mp4"))
    assert [camera.url for camera in CameraList(path).all()] == ["file:///srv/demo.mp4"]
