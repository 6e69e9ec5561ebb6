"""Cameras shared by several replicas (`stream.live.sharding`): who runs a camera, how few move when the replica
count changes, the camera list shared between processes, and three real `fakeweb serve` processes on loopback
over one camera list of real RTSP test cameras.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from clips import ClipTruth
from live_helpers import rtsp_server, until
from polling import wait_for
from route_helpers import shipped_classifier
from rtsp_server import RtspTestServer
from server_process import ServerProcess

from stream.config import ConfigError, ServiceConfig
from stream.live.cameras import Camera, CameraList
from stream.live.reload import ModelHolder
from stream.live.service import LiveService, NotFound, ice_configuration
from stream.live.sharding import Shard, owner
from stream.outputs.metrics import Metrics

IDS = [f"cam-{n:04d}" for n in range(3000)]


def test_every_camera_has_one_owner_and_the_owners_are_balanced() -> None:
    owners = [owner(camera_id, 3) for camera_id in IDS]
    shares = [owners.count(replica) / len(IDS) for replica in range(3)]
    assert all(0.30 < share < 0.37 for share in shares), shares
    assert [Shard(r, 3, "http://f-{replica}:8080").owns("cam-0001") for r in range(3)].count(True) == 1
    assert Shard(2, 3, "http://fakeweb-{replica}.fakeweb-replicas:8080/").url_of(1) == (
        "http://fakeweb-1.fakeweb-replicas:8080"
    )


def test_adding_a_replica_moves_about_its_share_and_removing_one_moves_only_its_cameras() -> None:
    moved_up = sum(owner(camera_id, 3) != owner(camera_id, 4) for camera_id in IDS) / len(IDS)
    assert 0.20 < moved_up < 0.30, moved_up  # 1/4 of the cameras go to the new replica, none elsewhere
    assert all(owner(c, 4) in (owner(c, 3), 3) for c in IDS)
    moved_down = [c for c in IDS if owner(c, 3) != owner(c, 2)]
    assert moved_down and all(owner(c, 3) == 2 for c in moved_down)


def test_replica_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="replica_id"):
        ServiceConfig(replicas=2, replica_id=2, replica_url="http://f-{replica}:8080")
    with pytest.raises(ConfigError, match="replica_url"):
        ServiceConfig(replicas=2, replica_id=1)
    assert ServiceConfig().replicas == 1 and Shard().owns("anything")


def test_ice_servers_go_to_the_peers_with_credentials_for_turn_only() -> None:
    assert ice_configuration(ServiceConfig()) is None  # aiortc's default
    assert ice_configuration(ServiceConfig(loopback_ice=True, ice_servers=("stun:s:3478",))).iceServers == []
    configured = ice_configuration(
        ServiceConfig(ice_servers=("stun:s:3478", "turn:t:3478"), ice_username="u", ice_credential="p")
    )
    assert configured is not None
    stun, turn = configured.iceServers
    assert (stun.urls, stun.username, stun.credential) == ("stun:s:3478", None, None)
    assert (turn.urls, turn.username, turn.credential) == ("turn:t:3478", "u", "p")


def test_replicas_sharing_a_camera_list_lose_no_change_and_see_each_others(tmp_path: Path) -> None:
    shared = tmp_path / "cameras.json"
    lists = [CameraList(shared), CameraList(shared)]

    def add_many(index: int) -> None:
        for n in range(15):
            lists[index].add(Camera(f"cam-{index}-{n}", f"camera {index} {n}", "rtsp://127.0.0.1:9/x"))

    threads = [threading.Thread(target=add_many, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(CameraList(shared).all()) == 30  # every read-modify-write held the file lock
    assert lists[0].reload() in (True, False) and len(lists[0].all()) == 30
    assert lists[1].remove("cam-0-0")
    assert lists[0].reload() and lists[0].get("cam-0-0") is None
    assert not lists[0].reload()  # unchanged since


# -- three processes ---------------------------------------------------------------------------------------


def consecutive_free_ports(count: int) -> int:
    """A port P ending in 0 with P .. P + count - 1 free on loopback (replica_url's `{replica}` is its last
    digit here)."""
    for base in range(21000, 31000, 10):
        sockets = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no free port range")


def cameras_covering(replicas: int, count: int) -> list[str]:
    """`count` camera ids such that every replica owns at least one."""
    chosen = [f"cam-shard-{n}" for n in range(count)]
    n = count
    while {owner(camera_id, replicas) for camera_id in chosen} != set(range(replicas)):
        chosen[n % count] = f"cam-shard-{n}"
        n += 1
    return chosen


@pytest.fixture(scope="module")
def rtsp_cameras(moving_face_video: tuple[Path, ClipTruth]) -> Iterator[list[RtspTestServer]]:
    with rtsp_server(moving_face_video[0], path="a") as first, RtspTestServer(first.clip, path="b") as second:
        yield [first, second]


def replica(data: Path, index: int, replicas: int, base_port: int, camera_list: Path) -> ServerProcess:
    server = ServerProcess(
        data / f"replica-{index}",
        env={
            "FAKEWEB_REPLICA_ID": str(index),
            "FAKEWEB_REPLICAS": str(replicas),
            "FAKEWEB_REPLICA_URL": f"http://127.0.0.1:{base_port // 10}{{replica}}",
            "FAKEWEB_CAMERA_LIST": str(camera_list),
            "FAKEWEB_CAMERA_POLL_SECONDS": "0.5",
        },
    )
    server.port = base_port + index
    return server


def local_cameras(server: ServerProcess) -> dict[str, str]:
    """id -> status of the cameras `server` runs itself."""
    status, body = server.request("GET", "/api/streams")
    assert status == 200, body
    return {item["id"]: item["status"] for item in body["streams"]}


def raw_get(server: ServerProcess, path: str) -> tuple[int, str | None, str]:
    """Status, X-Fakeweb-Replica header and body of a GET."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("X-Fakeweb-Replica"), response.read().decode()
    finally:
        connection.close()


@pytest.mark.slow
def test_three_replicas_run_each_camera_once_answer_for_all_and_scaling_down_moves_only_the_lost_ones(
    tmp_path: Path, rtsp_cameras: list[RtspTestServer]
) -> None:
    camera_list = tmp_path / "shared" / "cameras.json"
    ids = cameras_covering(3, 6)
    shared = CameraList(camera_list)
    for n, camera_id in enumerate(ids):
        shared.add(Camera(camera_id, f"camera {n}", rtsp_cameras[n % 2].url))
    base_port = consecutive_free_ports(3)

    with ExitStack() as stack:
        servers = [replica(tmp_path, index, 3, base_port, camera_list) for index in range(3)]
        for server in servers:
            stack.enter_context(server)
        expected = {index: {c for c in ids if owner(c, 3) == index} for index in range(3)}
        for index, server in enumerate(servers):
            wait_for(
                lambda s=server, i=index: (
                    set(local_cameras(s)) == expected[i] and set(local_cameras(s).values()) == {"live"}
                ),
                30,
                f"replica {index} running its cameras live",
            )
        # Any replica answers for any camera: the request is forwarded to the one that runs it.
        camera_on_2 = sorted(expected[2])[0]
        status, replica_header, body = raw_get(servers[0], f"/api/streams/{camera_on_2}")
        assert status == 200 and replica_header == "2", body
        assert json.loads(body)["id"] == camera_on_2 and json.loads(body)["status"] == "live"
        _, listing = servers[1].request("GET", "/api/streams")
        assert {item["id"] for item in listing["elsewhere"]} == expected[0] | expected[2]

        # A camera added through one replica starts on its owner; removed through another, it stops there.
        status, added = servers[0].request(
            "POST", "/api/streams", {"name": "new", "url": rtsp_cameras[0].url}
        )
        assert status == 201, added
        home = servers[owner(added["id"], 3)]
        wait_for(lambda: added["id"] in local_cameras(home), 10, "the new camera running on its owner")
        status, _ = servers[(owner(added["id"], 3) + 1) % 3].request("DELETE", f"/api/streams/{added['id']}")
        assert status == 204
        wait_for(lambda: added["id"] not in local_cameras(home), 10, "the removed camera stopped")

        # A WebRTC offer to watch it goes to its replica too, body and all (here one it refuses).
        connection = http.client.HTTPConnection("127.0.0.1", servers[1].port, timeout=30)
        connection.request(
            "POST", f"/api/streams/{camera_on_2}/view", body=b'{"sdp": "v=0", "type": "offer"}'
        )
        response = connection.getresponse()
        refused = json.loads(response.read())
        connection.close()
        assert response.status == 400 and response.getheader("X-Fakeweb-Replica") == "2", refused

        # Its replica down, a camera's requests get a clear 502 from the others.
        servers[2].stop()
        status, _, body = raw_get(servers[0], f"/api/streams/{camera_on_2}")
        assert status == 502 and "replica 2" in json.loads(body)["error"]

        # Scale down: restart the other two as two replicas. Only replica 2's cameras move.
        for server in servers:
            server.stop()
        smaller = [replica(tmp_path, index, 2, base_port, camera_list) for index in range(2)]
        for server in smaller:
            stack.enter_context(server)
        for index, server in enumerate(smaller):
            wait_for(
                lambda s=server, i=index: set(local_cameras(s)) == {c for c in ids if owner(c, 2) == i},
                30,
                f"replica {index} of 2 running its cameras",
            )
        moved = {c for c in ids if owner(c, 3) != owner(c, 2)}
        assert moved == expected[2]
        assert all(set(local_cameras(smaller[index])) >= expected[index] for index in range(2))


async def _start_after_a_request_read_the_list_first(
    service: LiveService, other: CameraList, camera: Camera
) -> bool:
    await service.start()
    try:
        other.add(camera)  # "another replica" adds a camera this one owns
        with pytest.raises(NotFound):
            service.describe(camera.camera_id)  # this request re-reads the list before the poll does
        await until(lambda: camera.camera_id in service.streams, 5, "the camera started by the next re-read")
        return True
    finally:
        await service.close()


def test_a_camera_a_request_learned_of_first_is_still_started(
    tmp_path: Path, moving_face_video: tuple[Path, ClipTruth]
) -> None:
    shared = tmp_path / "shared" / "cameras.json"
    camera_id = next(c for c in (f"cam-own-{n}" for n in range(100)) if owner(c, 2) == 0)
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        pin_threads="off",
        replicas=2,
        replica_id=0,
        replica_url="http://127.0.0.1:1{replica}",
        camera_list=str(shared),
        camera_poll_seconds=0.3,
    )
    service = LiveService(config, ModelHolder(shipped_classifier()), Metrics(), CameraList(shared))
    camera = Camera(camera_id, "own", f"file://{moving_face_video[0]}")
    assert asyncio.run(_start_after_a_request_read_the_list_first(service, CameraList(shared), camera))
