"""The camera list (`cameras.json`) under crashes: a real `fakeweb serve` process is killed with SIGKILL while
clients add and remove cameras as fast as it answers, then restarted on the same data folder, several times.
The file must always parse and hold every camera whose POST was answered 201 (and none whose DELETE was
answered 204); a restart must start them all, even more than `max_streams`; concurrent additions must not save
more cameras than the limit allows; a list that cannot be saved is a clean 503. Also the reliability settings
(backoff, watchdog, connect timeout, parallel frames) as read from the environment and TOML.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rtsp_server import free_port
from server_process import ServerProcess

from stream.config import ConfigError, load_config
from stream.rtsp import DEFAULT_BACKOFF

ROUNDS = 4
KEEP = 6  # cameras kept while adding and removing, so each restart starts only a few


def saved(data: Path) -> dict[str, dict[str, str]]:
    """The cameras in the file, by id; it must parse."""
    entries = json.loads((data / "cameras.json").read_text(encoding="utf-8"))["cameras"]
    return {entry["camera_id"]: entry for entry in entries}


class Churn:
    """Clients adding and removing cameras in a tight loop, recording what the server confirmed."""

    def __init__(self, server: ServerProcess, url: str, seed: int, present: set[str]) -> None:
        self.server = server
        self.url = url
        self.rng = random.Random(seed)
        self.present = set(present)
        self.added: dict[str, str] = {}  # id -> name, answered 201
        self.removed: set[str] = set()  # answered 204
        self.in_flight: set[str] = set()  # DELETE sent, no answer (a POST in flight has no id yet)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.lock:
                    victim = self.rng.choice(sorted(self.present)) if len(self.present) >= KEEP else None
                if victim is None:
                    name = f"cam{self.count}"
                    status, body = self.server.request(
                        "POST", "/api/streams", body={"name": name, "url": self.url}
                    )
                    if status == 201:
                        with self.lock:
                            self.added[body["id"]] = name
                            self.present.add(body["id"])
                else:
                    with self.lock:
                        self.present.discard(victim)
                        self.in_flight.add(victim)
                    status, _ = self.server.request("DELETE", f"/api/streams/{victim}")
                    with self.lock:
                        self.in_flight.discard(victim)
                        if status == 204:
                            self.removed.add(victim)
                self.count += 1
            except OSError:  # the server was killed under us
                return


def test_kill_9_while_cameras_are_written_never_corrupts_or_loses_the_list(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"rtsp://127.0.0.1:{free_port()}/nothing-listens-here"
    expected: set[str] = set()  # every camera confirmed saved and not confirmed removed
    maybe: set[str] = set()  # removals in flight at a kill: either way is right
    writes = 0
    for round_number in range(ROUNDS):
        server = ServerProcess(data, "--max-streams", "100").start()
        assert server.process is not None
        _, listing = server.request("GET", "/api/streams")
        running = {item["id"] for item in listing["streams"]}
        assert expected <= running <= expected | maybe, (round_number, running, expected, maybe)
        churns = [Churn(server, url, seed=round_number * 10 + n, present=running) for n in range(2)]
        threads = [threading.Thread(target=churn.run) for churn in churns]
        for thread in threads:
            thread.start()
        time.sleep(random.Random(round_number).uniform(0.8, 1.6))
        os.kill(server.process.pid, signal.SIGKILL)  # in the middle of the writes
        server.process.wait(10)
        for churn in churns:
            churn.stop.set()
        for thread in threads:
            thread.join(30)

        on_disk = saved(data)
        added = {cid: name for churn in churns for cid, name in churn.added.items()}
        removed = set().union(*(churn.removed for churn in churns))
        in_flight = set().union(*(churn.in_flight for churn in churns))
        writes += sum(churn.count for churn in churns)
        expected = (expected | set(added)) - removed - in_flight
        maybe = (maybe | in_flight) - removed
        assert expected <= set(on_disk), f"round {round_number}: lost {expected - set(on_disk)}"
        assert not set(on_disk) & removed, f"round {round_number}: removed cameras came back"
        for camera_id, name in added.items():
            if camera_id in on_disk:
                assert on_disk[camera_id] == {"camera_id": camera_id, "name": name, "url": url}
        maybe |= set(on_disk) - expected  # (none expected: a POST in flight is answered only after its write)
    assert writes > 40, f"only {writes} writes in {ROUNDS} rounds"

    # A restart with fewer stream slots than saved cameras starts them all; removals free slots, and
    # concurrent additions fill exactly the free ones: nothing is saved beyond the limit.
    on_disk = saved(data)
    limit = len(on_disk) - 1
    with ServerProcess(data, "--max-streams", str(limit)) as server:
        assert not list(data.glob(".cameras.json.*")), "temp files of interrupted writes are cleaned up"
        _, listing = server.request("GET", "/api/streams")
        assert {item["id"] for item in listing["streams"]} == set(on_disk)
        assert "starting all of them" in server.log()
        for camera_id in sorted(on_disk)[:3]:
            assert server.request("DELETE", f"/api/streams/{camera_id}")[0] == 204
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda n: server.request("POST", "/api/streams", body={"name": f"new{n}", "url": url})[0],
                    range(8),
                )
            )
        assert sorted(answers) == [201, 201] + [503] * 6, answers
        assert len(saved(data)) == limit
    assert len(saved(data)) == limit


def test_reliability_settings_come_from_the_environment_or_toml(tmp_path: Path) -> None:
    config = load_config(
        environ={
            "FAKEWEB_RTSP_BACKOFF_SECONDS": "0.2, 0.5 1",
            "FAKEWEB_RTSP_STALL_SECONDS": "1.5",
            "FAKEWEB_CONNECT_TIMEOUT_SECONDS": "3",
            "FAKEWEB_MAX_PARALLEL_FRAMES": "2",
            "FAKEWEB_PIN_THREADS": "off",
        }
    )
    assert config.pin_threads == "off" and load_config(environ={}).pin_threads == "auto"
    assert config.rtsp_backoff_seconds == (0.2, 0.5, 1.0)
    assert (config.rtsp_stall_seconds, config.connect_timeout_seconds, config.max_parallel_frames) == (
        1.5,
        3.0,
        2,
    )
    toml = tmp_path / "fakeweb.toml"
    toml.write_text("rtsp_backoff_seconds = [1, 5, 60]\n", encoding="utf-8")
    assert load_config(toml, environ={}).rtsp_backoff_seconds == (1.0, 5.0, 60.0)
    assert load_config(environ={}).rtsp_backoff_seconds == DEFAULT_BACKOFF


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RTSP_BACKOFF_SECONDS", ""),
        ("RTSP_BACKOFF_SECONDS", ","),
        ("RTSP_BACKOFF_SECONDS", "1, -1"),
        ("RTSP_BACKOFF_SECONDS", "1, nan"),
        ("RTSP_BACKOFF_SECONDS", "soon"),
        ("RTSP_STALL_SECONDS", "0"),
        ("CONNECT_TIMEOUT_SECONDS", "inf"),
        ("MAX_PARALLEL_FRAMES", "-1"),
        ("PIN_THREADS", "true"),  # a mode: auto, on or off
    ],
)
def test_invalid_reliability_settings_are_refused(name: str, value: str) -> None:
    if value == "":
        assert (
            load_config(environ={f"FAKEWEB_{name}": value}).rtsp_backoff_seconds == DEFAULT_BACKOFF
        )  # unset
        return
    with pytest.raises(ConfigError):
        load_config(environ={f"FAKEWEB_{name}": value})


def test_a_camera_list_that_cannot_be_saved_is_a_503_and_changes_nothing(tmp_path: Path) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/x"
    with ServerProcess(tmp_path) as server:
        status, kept = server.request("POST", "/api/streams", body={"name": "kept", "url": url})
        assert status == 201
        (tmp_path / "cameras.json").unlink()
        (tmp_path / "cameras.json").mkdir()  # the next save cannot replace it (as a full or read-only disk)
        status, body = server.request("POST", "/api/streams", body={"name": "new", "url": url})
        assert status == 503 and body["error"].startswith("cannot save the camera list"), body
        status, body = server.request("DELETE", f"/api/streams/{kept['id']}")
        assert status == 503, body
        _, listing = server.request("GET", "/api/streams")
        assert [item["id"] for item in listing["streams"]] == [kept["id"]]
        assert not list(tmp_path.glob(".cameras.json.*")), "no temp file left behind"
        assert "Traceback" not in server.log()
