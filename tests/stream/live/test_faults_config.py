"""The camera list (`cameras.json`) under crashes: a real `fakeweb serve` process is killed with SIGKILL while
clients add and remove cameras as fast as it answers, then restarted on the same data folder, several times.
The file must always parse and hold every camera whose POST was answered 201 (and none whose DELETE was
answered 204); a restart must start them all, even more than `max_streams`; concurrent additions must not save
more cameras than the limit allows; a list that cannot be saved is a clean 503. Also the reliability settings
(backoff, watchdog, connect timeout, parallel frames) as read from the environment and TOML, the per-user data
folder, and bad settings refused before TensorFlow loads.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from project_paths import ROOT
from rtsp_server import free_port
from server_process import ServerProcess

from stream.config import ConfigError, load_config, make_data_dir
from stream.sources.rtsp import DEFAULT_BACKOFF

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


# -- the data folder ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/fakeweb"),
        ({"XDG_DATA_HOME": "", "HOME": "/home/u"}, "/home/u/.local/share/fakeweb"),
        (
            {"XDG_DATA_HOME": "relative/data", "HOME": "/home/u"},
            "/home/u/.local/share/fakeweb",
        ),  # XDG: ignored
        ({"XDG_DATA_HOME": "/xdg", "FAKEWEB_DATA_DIR": "/srv/fakeweb"}, "/srv/fakeweb"),
        ({"HOME": "/home/u", "FAKEWEB_DATA_DIR": "~/fw"}, str(Path.home() / "fw")),
    ],
)
def test_the_data_folder_is_per_user_unless_set(environ: dict[str, str], expected: str) -> None:
    assert load_config(environ=environ).data_dir == Path(expected)


def test_without_a_home_folder_the_data_folder_must_be_set() -> None:
    with pytest.raises(ConfigError, match="set FAKEWEB_DATA_DIR"):
        load_config(environ={"HOME": "relative"})
    assert load_config(environ={"HOME": "relative", "FAKEWEB_DATA_DIR": "/srv/fw"}).data_dir == Path(
        "/srv/fw"
    )


def test_a_toml_or_flag_data_folder_wins(tmp_path: Path) -> None:
    toml = tmp_path / "fakeweb.toml"
    toml.write_text(f'data_dir = "{tmp_path / "toml"}"\n', encoding="utf-8")
    environ = {"XDG_DATA_HOME": "/xdg"}
    assert load_config(toml, environ=environ).data_dir == tmp_path / "toml"
    overrides = {"data_dir": str(tmp_path / "flag")}
    assert load_config(toml, environ=environ, overrides=overrides).data_dir == tmp_path / "flag"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_folder_is_created_private_and_an_existing_one_is_left_alone(tmp_path: Path) -> None:
    make_data_dir(tmp_path / "share" / "fakeweb")
    assert mode(tmp_path / "share" / "fakeweb") == 0o700
    (tmp_path / "shared").mkdir(mode=0o755)
    make_data_dir(tmp_path / "shared")
    assert mode(tmp_path / "shared") == 0o755


def clean_environment(home: Path) -> dict[str, str]:
    """The test's environment without FAKEWEB_ settings, with `home` as HOME and no XDG_DATA_HOME."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FAKEWEB_")}
    return {**env, "HOME": str(home), "XDG_DATA_HOME": "", "TF_CPP_MIN_LOG_LEVEL": "3"}


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server not ready after {timeout} s")


def test_serve_keeps_its_data_in_the_per_user_folder_not_where_it_starts(tmp_path: Path) -> None:
    """Started without --data-dir from a folder (the repository root in the README), the service writes nothing
    there: the camera list goes to ~/.local/share/fakeweb, created private to the user."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "serve", "--port", str(port)],
            cwd=work,
            env=clean_environment(home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, process)
        body = json.dumps({"name": "door", "url": f"rtsp://user:secret@127.0.0.1:{free_port()}/x"}).encode()
        request = urllib.request.Request(
            f"{url}/api/streams", body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    data = home / ".local" / "share" / "fakeweb"
    assert mode(data) == 0o700 and mode(data / "cameras.json") == 0o600
    assert "secret" in (data / "cameras.json").read_text(encoding="utf-8")
    assert list(work.iterdir()) == []


# -- bad settings fail before TensorFlow loads ----------------------------------------------------------------

IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)
HEAVY = ("tensorflow", "mediapipe")

BAD_SERVE_SETTINGS: dict[str, tuple[list[str], str]] = {
    "public bind without a token": (
        ["--host", "0.0.0.0"],
        "refusing to bind 0.0.0.0 without a token: set FAKEWEB_TOKEN (or --token) or bind 127.0.0.1",
    ),
    "model folder missing": (["--model", "/nope"], "model folder not found: /nope"),
    "not a package": (["--model", "{empty}"], "{empty}: no manifest.json"),
    "store reference without alias": (["--model", "store:///srv/models"], "invalid model reference"),
}


@pytest.mark.parametrize("bad", list(BAD_SERVE_SETTINGS))
def test_bad_serve_settings_fail_before_tensorflow_loads(bad: str, tmp_path: Path) -> None:
    """A real `fakeweb serve` process: one error line, exit 2, and `-X importtime` (which lists every module
    the process imported) shows the configuration module but neither TensorFlow nor MediaPipe."""
    flags, reason = BAD_SERVE_SETTINGS[bad]
    (tmp_path / "empty").mkdir()
    flags = [flag.format(empty=tmp_path / "empty") for flag in flags]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stream.cli", "serve", *flags],
        cwd=tmp_path,
        env={**clean_environment(tmp_path / "home"), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    assert (done.returncode, done.stdout) == (2, ""), done.stderr[-2000:]
    assert lines[-1].startswith("fakeweb: error: ") and reason.format(empty=tmp_path / "empty") in lines[-1]
    assert "Traceback" not in done.stderr
    modules = set(IMPORTED.findall(done.stderr))
    assert "stream.config" in modules, "importtime lists the imports"
    assert not {name.split(".")[0] for name in modules} & set(HEAVY)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty"], "no data folder created"
