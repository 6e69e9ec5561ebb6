"""Camera faults through a real `fakeweb serve` process and real GStreamer RTSP servers: a camera killed and
restored ten times, a camera frozen with SIGSTOP, a viewer that stops reading, and twice the load the machine can
process. Each time the other streams must keep going. Also the shared processing gate, on its own.

Camera A and camera B each loop a one-face clip at 25 fps; the server reconnects after 0.2, 0.5, then 1 s
(`rtsp_backoff_seconds`) and its watchdog gives up on a silent camera after 1.5 s (`rtsp_stall_seconds`).
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import live_helpers
import numpy as np
import pytest
from clips import ClipTruth
from fault_helpers import (
    STEADY_MALLOC,
    clip,
    histogram,
    log_lines,
    loopback_ice,
    metrics_text,
    observations,
    quantile,
    server_rss_mb,
    timed_request,
)
from live_helpers import Client, add_camera, metric, processed, received, stream, wait_for
from rtsp_server import RtspTestServer
from server_process import ROOT, ServerProcess

from stream.live.worker import FairGate, StreamWorker
from stream.runtime.timing import StageTimes
from stream.sources.frames import Frame

BACKOFF = (0.2, 0.5, 1.0)
STALL_SECONDS = 1.5
LATENCY = "fakeweb_end_to_end_latency_seconds"
HEAVY = 8  # 720p30 cameras in the overload test: 240 fps offered, next to A and B (50 fps)

rtsp_pair = live_helpers.rtsp_pair  # fixtures
cameras = live_helpers.cameras


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "FAKEWEB_RTSP_BACKOFF_SECONDS": ",".join(map(str, BACKOFF)),
        "FAKEWEB_RTSP_STALL_SECONDS": str(STALL_SECONDS),
        "FAKEWEB_MAX_WIDTH": "640",
        "FAKEWEB_MAX_HEIGHT": "360",
        "FAKEWEB_MAX_STREAMS": "10",
        # The heaviest per-frame settings (detector and FaceMesh on every frame), so that the overload test's
        # cameras are over twice what the machine can process even on a machine faster than this one.
        "FAKEWEB_DETECT_EVERY": "1",
        "FAKEWEB_MESH_EVERY": "1",
        **STEADY_MALLOC,
    }
    flags = ("--loopback-ice",)
    with ServerProcess(tmp_path_factory.mktemp("faults_cameras"), *flags, env=env) as process:
        yield process


def rate(server: ServerProcess, camera_id: str, seconds: float) -> float:
    """Frames processed per second over the next `seconds`."""
    first, started = processed(server, camera_id), time.monotonic()
    time.sleep(seconds)
    return (processed(server, camera_id) - first) / (time.monotonic() - started)


def log_time(line: str) -> float:
    """Seconds since the epoch of a log line (`2026-11-27 08:35:31,123 LEVEL name: message`)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_a_camera_killed_and_restored_ten_times_recovers_with_the_backoff_while_the_other_keeps_its_rate(
    server: ServerProcess, rtsp_pair: tuple[RtspTestServer, RtspTestServer], cameras: tuple[str, str]
) -> None:
    server_a, _ = rtsp_pair
    camera_a, camera_b = cameras
    baseline = rate(server, camera_b, 2.0)
    assert baseline > 10, f"B processes {baseline:.1f} fps before any fault"
    b_first, started = processed(server, camera_b), time.monotonic()
    b_states = []
    for cycle in range(10):
        before = received(server, camera_a)
        server_a.kill()  # the camera crashes...
        server_a.start()  # ...and is back on the same port: the service must find it again by itself
        wait_for(
            lambda count=before: received(server, camera_a) > count + 5,
            15,
            f"A delivering again (cycle {cycle})",
        )
        b_states.append(stream(server, camera_b)["status"])
    b_rate = (processed(server, camera_b) - b_first) / (time.monotonic() - started)

    assert b_states == ["live"] * 10
    assert b_rate >= 0.75 * baseline, f"B at {b_rate:.1f} fps during the faults, {baseline:.1f} before"
    assert metric(server, "fakeweb_reconnects_total", stream=camera_b) == 0
    wait_for(
        lambda: metric(server, "fakeweb_reconnects_total", stream=camera_a) >= 10, 5, "10 reconnects counted"
    )

    # The backoff, from the log: each outage waits the next step of the schedule (the count of failures in a
    # row does not start over, A never stays live for 10 s), and A is never back before its wait is over.
    downs = log_lines(server, f"camera {camera_a} ", "live -> reconnecting")
    ups = log_lines(server, f"camera {camera_a} ", "reconnecting -> live")
    assert len(downs) == len(ups) == 10, (downs, ups)
    waits = [float(line.rsplit("retrying in ", 1)[1].split()[0]) for line in downs]
    assert waits[:3] == [0.2, 0.5, 1.0] or (waits[0] == 0.2 and waits[1] == 1.0), waits
    assert waits[2:] == [1.0] * 8, waits
    for down, up, wait in zip(downs, ups, waits, strict=True):
        outage = log_time(up) - log_time(down)
        assert wait - 0.01 <= outage <= wait + 5.0, (down, up)
    assert "Traceback" not in server.log()


@pytest.fixture
def frozen_camera(
    server: ServerProcess, moving_face_video: tuple[Path, ClipTruth]
) -> Iterator[tuple[RtspTestServer, str]]:
    """A camera of its own for the freeze test (the kill test's camera A is left alone), removed afterwards."""
    with RtspTestServer(moving_face_video[0], path="c") as rtsp:
        camera_id = add_camera(server, "C", rtsp.url)
        try:
            wait_for(lambda: received(server, camera_id) > 10, 20, "C delivering")
            yield rtsp, camera_id
        finally:
            server.request("DELETE", f"/api/streams/{camera_id}")


def test_a_frozen_camera_is_caught_by_the_watchdog_and_comes_back(
    server: ServerProcess, cameras: tuple[str, str], frozen_camera: tuple[RtspTestServer, str]
) -> None:
    """SIGSTOP: the connection stays open and silent. FFmpeg alone would notice after about 4 s (twice the
    2 s read timeout); the watchdog must mark the camera reconnecting after 1.5 s."""
    rtsp, camera_id = frozen_camera
    camera_b = cameras[1]
    b_before = processed(server, camera_b)
    rtsp.stop_process()
    frozen = time.monotonic()
    try:
        wait_for(lambda: stream(server, camera_id)["status"] != "live", 10, "C out of live", period=0.05)
        detected = time.monotonic() - frozen
        frames_at_detection = received(server, camera_id)
        time.sleep(1.0)
        assert received(server, camera_id) == frames_at_detection, "no frames while frozen"
        b_during = stream(server, camera_b)
        assert b_during["status"] == "live" and b_during["frames_processed"] > b_before + 10, b_during
    finally:
        rtsp.cont()
    # The last frame came at most a frame before the SIGSTOP; under load the API may see the change late.
    assert STALL_SECONDS - 0.1 <= detected < STALL_SECONDS + 3.0, f"detected after {detected:.2f} s"
    (stall,) = log_lines(server, f"camera {camera_id} ", f"no frame for {STALL_SECONDS:g} s")
    assert "WARNING" in stall
    wait_for(lambda: received(server, camera_id) > frames_at_detection + 10, 20, "C delivering after SIGCONT")


STALLED_VIEWER = textwrap.dedent(
    """
    import asyncio, sys
    import aiohttp, aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    async def main(url: str) -> None:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
        peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer.addTransceiver("video", direction="recvonly")
        peer.createDataChannel("faces")
        got = asyncio.Event()

        @peer.on("track")
        def on_track(track) -> None:
            async def first_frames() -> None:
                for _ in range(5):
                    await track.recv()
                got.set()  # then never read again: frames pile up unread until the process is stopped
            asyncio.ensure_future(first_frames())

        await peer.setLocalDescription(await peer.createOffer())
        async with aiohttp.ClientSession() as http:
            offer = {"sdp": peer.localDescription.sdp, "type": "offer"}
            async with http.post(url, json=offer) as response:
                answer = await response.json()
        await peer.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(got.wait(), 20)
        print("receiving", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1]))
    """
)


def slow_http_clients(server: ServerProcess, count: int, pipelined: int) -> list[socket.socket]:
    """Connections that send `pipelined` requests for /metrics each and never read a byte of the answers."""
    request = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.sendall(request * pipelined)
        connections.append(connection)
    return connections


def test_peers_that_stop_reading_do_not_slow_other_streams_or_grow_memory(
    server: ServerProcess, cameras: tuple[str, str]
) -> None:
    """A WebRTC viewer of A frozen after its first frames (its process stopped: no reads, no ICE, no SCTP
    acknowledgements) and HTTP clients that never read their answers: B's processing rate, B's end-to-end
    latency (seen by a reading viewer) and the server's memory stay flat."""
    camera_a, camera_b = cameras
    viewer_process = subprocess.Popen(
        [sys.executable, "-c", STALLED_VIEWER, f"{server.url}/api/streams/{camera_a}/view"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sockets: list[socket.socket] = []
    try:
        assert viewer_process.stdout is not None
        ready, _, _ = select.select([viewer_process.stdout], [], [], 30)
        assert ready and viewer_process.stdout.readline().strip() == b"receiving"

        def window(seconds: float) -> dict[str, Any]:
            text, first, started = metrics_text(server), processed(server, camera_b), time.monotonic()
            rss = [server_rss_mb(server)]
            health = []
            while time.monotonic() - started < seconds:
                time.sleep(0.5)
                rss.append(server_rss_mb(server))
                health.append(timed_request(server, "/healthz")[1])
            after = metrics_text(server)
            before_b, after_b = (
                histogram(text, LATENCY, stream=camera_b),
                histogram(after, LATENCY, stream=camera_b),
            )
            return {
                "rate": (processed(server, camera_b) - first) / (time.monotonic() - started),
                "p99": quantile(0.99, before_b, after_b),
                "sent": observations(before_b, after_b),
                "rss": rss,
                "health": max(health),
            }

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            watcher = Client(ice_servers=[])
            try:
                async with aiohttp.ClientSession(server.url) as http:
                    await watcher.connect(http, f"/api/streams/{camera_b}/view")
                    while watcher.frames < 10:
                        await asyncio.sleep(0.05)
                    calm = await asyncio.to_thread(window, 4.0)
                    viewer_process.send_signal(signal.SIGSTOP)
                    sockets.extend(slow_http_clients(server, count=10, pipelined=5))
                    stalled = await asyncio.to_thread(window, 8.0)
                    assert watcher.frames > 100, "the reading viewer kept receiving"
                    return calm, stalled
            finally:
                await watcher.close()

        with loopback_ice():
            calm, stalled = asyncio.run(scenario())
    finally:
        for connection in sockets:
            connection.close()
        viewer_process.kill()
        viewer_process.wait(10)

    print(f"stalled viewer: calm {calm}, stalled {stalled}")
    assert metric(server, "fakeweb_viewers") >= 1, "the stalled viewer is still connected"
    assert calm["sent"] > 40 and stalled["sent"] > 80
    assert stalled["rate"] >= 0.7 * calm["rate"], (calm, stalled)
    assert stalled["p99"] <= max(2 * calm["p99"], calm["p99"] + 0.1), (calm, stalled)
    assert max(stalled["rss"]) - statistics.median(calm["rss"]) < 60, (calm["rss"], stalled["rss"])
    assert stalled["health"] < 0.5, stalled
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def big_camera(
    rtsp_pair: tuple[RtspTestServer, RtspTestServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RtspTestServer]:
    """A 1280x720, 30 fps camera (one RTSP server; every client gets its own pipeline)."""
    path = clip(tmp_path_factory.mktemp("clip_720p") / "720p.mp4", (1280, 720), fps=30, frames=30)
    with RtspTestServer(path, path="hd") as running:
        yield running


def test_overload_drops_frames_keeps_latency_bounded_and_recovers(
    server: ServerProcess, cameras: tuple[str, str], big_camera: RtspTestServer
) -> None:
    """A 720p30 camera is watched alone, then seven more join (next to A and B): well beyond what the pipelines
    can process. Frames are dropped and counted (for overload those replaced while their worker
    waited for a processing permit), the latency of what is shown stays bounded and the API answers at once;
    when the seven go, the first is served as well as before."""
    heavy = [add_camera(server, "hd0", big_camera.url)]
    watched = heavy[0]

    def window(seconds: float) -> dict[str, Any]:
        """Frames received and processed by the heavy cameras, the watched camera's processing rate and p99
        latency, and the slowest /healthz, over `seconds`."""
        text = metrics_text(server)
        first = {cid: stream(server, cid) for cid in heavy}
        started, health = time.monotonic(), []
        while time.monotonic() - started < seconds:
            health.append(timed_request(server, "/healthz"))
            time.sleep(0.25)
        last = {cid: stream(server, cid) for cid in heavy}
        elapsed, after = time.monotonic() - started, metrics_text(server)
        return {
            "received": sum(last[c]["frames_received"] - first[c]["frames_received"] for c in heavy),
            "processed": sum(last[c]["frames_processed"] - first[c]["frames_processed"] for c in heavy),
            "rate": (last[watched]["frames_processed"] - first[watched]["frames_processed"]) / elapsed,
            "offered": (last[watched]["frames_received"] - first[watched]["frames_received"]) / elapsed,
            "p50": quantile(
                0.5, histogram(text, LATENCY, stream=watched), histogram(after, LATENCY, stream=watched)
            ),
            "p99": quantile(
                0.99, histogram(text, LATENCY, stream=watched), histogram(after, LATENCY, stream=watched)
            ),
            "health": max(seconds for _, seconds in health),
            "health_ok": all(status == 200 for status, _ in health),
        }

    def dropped(camera_id: str, at_least: int) -> dict[str, float] | None:
        """A camera's drops in /metrics by outcome, once they add up to `at_least` (else None)."""
        drops = {
            outcome: metric(server, "fakeweb_frames_total", stream=camera_id, outcome=outcome)
            for outcome in ("dropped_stale", "dropped_overload")
        }
        return drops if sum(drops.values()) >= at_least else None

    def accounted() -> list[dict[str, Any]]:
        """Each heavy camera's totals: every frame received is processed, dropped or pending (one at most),
        and the drops reach /metrics (copied there once a second), stale or for overload."""
        totals = []
        for camera_id in heavy:
            described = stream(server, camera_id)
            pending = (
                described["frames_received"] - described["frames_processed"] - described["frames_dropped"]
            )
            # received, processed and dropped are read one after the other while frames arrive
            assert -3 <= pending <= 3, described
            described["metrics"] = wait_for(
                partial(dropped, camera_id, described["frames_dropped"]),
                3,
                f"{camera_id}'s drops in /metrics",
            )
            totals.append(described)
        return totals

    async def scenario() -> list[dict[str, Any]]:
        viewer = Client(ice_servers=[])
        try:
            async with aiohttp.ClientSession(server.url) as http:
                await viewer.connect(http, f"/api/streams/{watched}/view")
                while viewer.frames < 5:
                    await asyncio.sleep(0.05)
                alone = await asyncio.to_thread(window, 3.0)
                for index in range(1, HEAVY):
                    heavy.append(await asyncio.to_thread(add_camera, server, f"hd{index}", big_camera.url))
                await asyncio.sleep(1.5)
                loaded = await asyncio.to_thread(window, 5.0)
                loaded["totals"] = await asyncio.to_thread(accounted)
                for camera_id in heavy[1:]:
                    async with http.delete(f"/api/streams/{camera_id}") as response:
                        assert response.status == 204
                del heavy[1:]
                await asyncio.sleep(2.0)
                relieved = await asyncio.to_thread(window, 4.0)
                return [alone, loaded, relieved]
        finally:
            await viewer.close()

    try:
        with loopback_ice():
            alone, loaded, relieved = asyncio.run(scenario())
    finally:
        for camera_id in heavy:
            server.request("DELETE", f"/api/streams/{camera_id}")
    print(f"overload: alone {alone}, loaded {loaded}, relieved {relieved}")

    # Overloaded: a third or more of what arrives cannot be processed (about half on this 2-core machine since
    # the models run on LiteRT; a stricter "twice" sat at the edge of the machine's speed).
    assert loaded["received"] >= 1.5 * loaded["processed"], f"not overloaded: {loaded}"
    counts = [(c["frames_received"], c["frames_processed"], c["frames_dropped"]) for c in loaded["totals"]]
    assert all(dropped > 0.25 * received for received, _, dropped in counts), counts  # every camera drops
    # ...also while its worker waits for a permit: more streams than permits is overload, not a slow stream
    assert all(c["metrics"]["dropped_overload"] > 0 for c in loaded["totals"]), loaded["totals"]
    assert loaded["p99"] < max(1.0, 2.5 * alone["p99"]), f"latency not bounded: {alone} -> {loaded}"
    assert loaded["health_ok"] and loaded["health"] < 1.0, loaded
    # Recovered: back well above the overloaded rate (or keeping up with the camera), as when it was alone
    # give or take what else runs on the machine meanwhile.
    recovered = min(max(2 * loaded["rate"], 0.5 * alone["rate"]), 0.8 * relieved["offered"])
    assert relieved["rate"] >= recovered, f"not recovered: {alone} -> {loaded} -> {relieved}"
    # The median, not the p99: one slow frame among the ~100 of a few seconds is the p99 of that window.
    assert relieved["p50"] <= 1.5 * alone["p50"] + 0.05, f"latency not recovered: {alone} -> {relieved}"
    assert relieved["health"] < 1.0, relieved
    assert "Traceback" not in server.log()


class SlowPipeline:
    """Stands in for a stream's pipeline: 40 ms per frame; records how many frames are processed at once and
    how old each frame is when its processing starts."""

    def __init__(self, stream_id: str, shared: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.shared = shared

    def process(self, frame: Frame, times: StageTimes) -> Any:
        shared = self.shared
        with shared["lock"]:
            shared["active"] += 1
            shared["peak"] = max(shared["peak"], shared["active"])
            shared["ages"].append(time.monotonic() - frame.capture_time)
        time.sleep(0.04)
        with shared["lock"]:
            shared["active"] -= 1
        return SimpleNamespace(faces=[])

    def close(self) -> None:
        pass


def run_workers(count: int, gate: FairGate | None, shared: dict[str, Any]) -> list[StreamWorker]:
    """`count` workers of `SlowPipeline`s fed 100 frames each at 100 fps, then stopped (in under 2 s)."""
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    workers = [
        StreamWorker(SlowPipeline(f"s{n}", shared), lambda frame, result: None, gate)  # type: ignore[arg-type]
        for n in range(count)
    ]
    for worker in workers:
        worker.start()
    for index in range(100):
        for worker in workers:
            worker.submit(Frame(worker.stream_id, index, image, time.monotonic()))
        time.sleep(0.01)
    started = time.monotonic()
    for worker in workers:
        worker.stop()
    assert time.monotonic() - started < 2.0
    return workers


def test_workers_sharing_a_gate_process_only_that_many_frames_at_once_and_take_the_newest() -> None:
    """Four streams at 100 fps, two permits: at most two frames in the pipelines at a time, each taken fresh
    (a worker takes its frame once it holds a permit, so frames do not age while it waits), all streams
    served, and stopping does not wait for a permit. Frames replaced while a worker waits for a permit are
    dropped for overload, those replaced while it processes are stale."""
    shared: dict[str, Any] = {"lock": threading.Lock(), "active": 0, "peak": 0, "ages": []}
    workers = run_workers(4, FairGate(2), shared)
    assert shared["peak"] == 2
    assert all(worker.stats.processed >= 3 for worker in workers), [w.stats.processed for w in workers]
    ages = sorted(shared["ages"])
    assert ages[int(0.9 * len(ages))] < 0.025, (
        ages
    )  # taken while waiting for a permit, ages would reach 0.08 s
    for worker in workers:
        drops = (worker.dropped_stale, worker.dropped_overload)
        assert min(drops) > 0 and sum(drops) == worker.dropped, drops
        assert worker.stats.received - worker.stats.processed - worker.dropped in (0, 1)  # one pending


def test_a_worker_without_a_gate_drops_only_stale_frames() -> None:
    shared: dict[str, Any] = {"lock": threading.Lock(), "active": 0, "peak": 0, "ages": []}
    (worker,) = run_workers(1, None, shared)
    assert worker.dropped_stale == worker.dropped > 50 and worker.dropped_overload == 0
