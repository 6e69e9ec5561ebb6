"""Events end to end: a real `fakeweb serve` with a model that flags every face and a looping file camera opens
events; the API lists them (filters, pages), serves their pictures only with the token, deletes them; a SIGKILL
while events are written loses none that was finished."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import pytest
from clips import ClipTruth
from live_helpers import save_file_camera
from polling import wait_for
from server_process import ServerProcess
from tiny_model import with_threshold

from models.package import ModelPackage

TOKEN = "events-test-token"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flagging_package(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package with threshold 0.01: its ~0.5 on any face is "manipulated"."""
    return with_threshold(tiny_package, tmp_path_factory.mktemp("events") / "flagging", 0.01)


def events(server: ServerProcess, query: str = "") -> dict[str, object]:
    status, body = server.request("GET", f"/api/events{query}", token=TOKEN)
    assert status == 200, body
    return dict(body)


def closed(server: ServerProcess) -> list[dict[str, object]]:
    return [e for e in events(server)["events"] if e["status"] == "closed"]  # type: ignore[union-attr, index]


def picture(server: ServerProcess, url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.url + url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_events_are_recorded_served_behind_the_token_and_survive_a_kill(
    tmp_path: Path, moving_face_video: tuple[Path, ClipTruth], flagging_package: Path
) -> None:
    camera = save_file_camera(tmp_path, "door", moving_face_video[0])
    flags = ("--model", str(flagging_package), "--device", "cpu")
    env = {"FAKEWEB_TOKEN": TOKEN}
    server = ServerProcess(tmp_path, *flags, env=env).start()
    try:
        # The clip loops every 2 s: its face's track ends, and with it the face's event.
        wait_for(lambda: len(closed(server)) >= 2, 60, "two closed events")
        status, _ = server.request("GET", "/api/events")
        assert status == 401
        listing = events(server)
        first = closed(server)[0]
        assert first["stream"] == camera and first["verdict"] == "manipulated"
        assert first["model_version"] == ModelPackage.load(flagging_package).manifest.version
        assert first["peak_score"] >= first["mean_score"] > 0.01 and first["samples"] >= 1  # type: ignore[operator]
        assert first["crops"] and str(first["snapshot"]).endswith("/snapshot.jpg")
        status, jpeg = picture(server, str(first["snapshot"]))
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        status, crop = picture(server, first["crops"][0])  # type: ignore[index]
        assert status == 200 and crop[:2] == b"\xff\xd8"
        assert picture(server, str(first["snapshot"]), token=None)[0] == 401

        total = listing["total"]
        assert events(server, f"?stream={camera}&verdict=manipulated")["total"] == total
        assert events(server, "?stream=elsewhere")["total"] == 0
        assert events(server, "?since=2999-01-01T00:00:00%2B00:00")["total"] == 0
        page = events(server, "?limit=1&offset=1")["events"]
        assert len(page) == 1 and page[0]["id"] != listing["events"][0]["id"]  # type: ignore[index]
        assert server.request("GET", "/api/events?since=yesterday", token=TOKEN)[0] == 400

        # An operator's review: stored with the event, filterable, counted.
        second = closed(server)[1]
        status, reviewed = server.request(
            "POST",
            f"/api/events/{second['id']}/review",
            {"outcome": "real", "note": "my colleague"},
            token=TOKEN,
        )
        assert status == 200 and reviewed["review"]["outcome"] == "real", reviewed
        assert [e["id"] for e in events(server, "?reviewed=true")["events"]] == [second["id"]]  # type: ignore[union-attr]
        assert events(server, "?reviewed=false")["total"] == events(server)["total"] - 1  # type: ignore[operator]
        bad = server.request("POST", f"/api/events/{second['id']}/review", {"outcome": "maybe"}, token=TOKEN)
        assert bad[0] == 400
        assert server.request("POST", "/api/events/nope/review", {"outcome": "real"}, token=TOKEN)[0] == 404

        status, _ = server.request("DELETE", f"/api/events/{first['id']}", token=TOKEN)
        assert status == 204
        assert server.request("GET", f"/api/events/{first['id']}", token=TOKEN)[0] == 404
        assert picture(server, str(first["snapshot"]))[0] == 404

        _, metrics = server.request("GET", "/metrics")
        assert f'fakeweb_events_total{{stream="{camera}",verdict="manipulated"}}' in metrics
        assert 'fakeweb_event_reviews_total{outcome="real"} 1.0' in metrics

        # SIGKILL while events open and close: every finished event is still there, whole, after a restart.
        finished = {e["id"]: e for e in closed(server)}
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        server = ServerProcess(tmp_path, *flags, env=env).start()
        after = {e["id"]: e for e in events(server, "?limit=500")["events"]}  # type: ignore[union-attr]
        for event_id, event in finished.items():
            assert after[event_id] == event, event_id
        assert after[str(second["id"])]["review"]["note"] == "my colleague"  # type: ignore[index]
        assert {e["status"] for e in after.values()} <= {"closed", "interrupted", "open"}
        for event in after.values():
            assert picture(server, str(event["snapshot"]))[0] == 200 or event["status"] != "closed"
    finally:
        server.stop()
