"""The REST API of a real `fakeweb serve` process: status codes, limits, token, persistence, redaction."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from server_process import ROOT, ServerProcess

TOKEN = "s3cret-token-for-tests"
SECRET_URL = "rtsp://admin:hunter2pass@127.0.0.1:9/stream"

VIDEO_OFFER_WITHOUT_MEDIA_LINES = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("api"), "--max-streams", "2") as process:
        yield process


def test_health_and_readiness_report_the_model(server: ServerProcess) -> None:
    assert server.request("GET", "/healthz") == (200, {"status": "ok"})
    status, body = server.request("GET", "/readyz")
    assert status == 200
    assert body["ready"] is True
    assert body["model"]["backend"] == "tflite" and body["model"]["device"] == "cpu"
    assert body["model"]["version"]


def test_openapi_description_is_valid_and_lists_the_api(server: ServerProcess) -> None:
    status, spec = server.request("GET", "/api/openapi.json")
    assert status == 200
    validate(spec)
    assert {"/api/streams", "/api/streams/{stream_id}", "/api/webrtc/offer"} <= set(spec["paths"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "'type' must be 'offer'"),
        (json.dumps({"type": "answer", "sdp": "v=0"}).encode(), "'type' must be 'offer'"),
        (json.dumps({"type": "offer", "sdp": 42}).encode(), "'sdp' must be"),
        (json.dumps({"type": "offer", "sdp": "hello"}).encode(), "'sdp' must be"),
        (json.dumps({"type": "offer", "sdp": "v=0\r\ns=-\r\n"}).encode(), "no video section"),
        (
            json.dumps({"type": "offer", "sdp": VIDEO_OFFER_WITHOUT_MEDIA_LINES}).encode(),
            "cannot use this offer",
        ),
        (json.dumps({"type": "offer", "sdp": "v=0 m=video" + "x" * 70_000}).encode(), "too large"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_bad_offers_get_400_with_a_message_and_the_server_stays_up(
    server: ServerProcess, raw: bytes, message: str
) -> None:
    status, body = server.request("POST", "/api/webrtc/offer", raw=raw)
    assert status == 400, body
    assert message in body["error"]
    assert "Traceback" not in body["error"]
    assert server.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/streams/nope"),
        ("DELETE", "/api/streams/nope"),
        ("POST", "/api/streams/nope/view"),
    ],
)
def test_unknown_stream_ids_are_404(server: ServerProcess, method: str, path: str) -> None:
    body = {"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"} if method == "POST" else None
    status, answer = server.request(method, path, body=body)
    assert status == 404
    assert "no stream nope" in answer["error"]


@pytest.mark.parametrize(
    "camera",
    [
        {"name": "x"},
        {"name": "x", "url": 5},
        {"name": "", "url": "rtsp://127.0.0.1/a"},
        {"name": "x", "url": "http://127.0.0.1/a"},
        {"name": "x" * 81, "url": "rtsp://127.0.0.1/a"},
    ],
)
def test_invalid_cameras_are_400(server: ServerProcess, camera: dict[str, object]) -> None:
    status, body = server.request("POST", "/api/streams", body=camera)
    assert status == 400
    assert body["error"]


def test_camera_lifecycle_with_credentials_never_shown(server: ServerProcess) -> None:
    status, created = server.request("POST", "/api/streams", body={"name": "door", "url": SECRET_URL})
    assert status == 201
    assert created["url"] == "rtsp://***@127.0.0.1:9/stream"
    camera_id = created["id"]
    status, listing = server.request("GET", "/api/streams")
    assert status == 200 and [s["id"] for s in listing["streams"]] == [camera_id]
    status, one = server.request("GET", f"/api/streams/{camera_id}")
    assert status == 200 and one["status"] in ("connecting", "reconnecting")
    _, metrics = server.request("GET", "/metrics")
    for text in (json.dumps(listing), json.dumps(one), metrics, server.log()):
        assert "hunter2pass" not in text and "admin:" not in text
    assert server.request("DELETE", f"/api/streams/{camera_id}")[0] == 204
    assert server.request("GET", f"/api/streams/{camera_id}")[0] == 404


def test_stream_limit_gives_503_with_the_reason(server: ServerProcess) -> None:
    created = [
        server.request("POST", "/api/streams", body={"name": f"c{i}", "url": SECRET_URL}) for i in range(2)
    ]
    assert [status for status, _ in created] == [201, 201]
    status, body = server.request("POST", "/api/streams", body={"name": "c3", "url": SECRET_URL})
    assert status == 503
    assert "stream limit reached" in body["error"]
    _, metrics = server.request("GET", "/metrics")
    assert 'fakeweb_requests_rejected_total{reason="max_streams"} 1.0' in metrics
    for _, camera in created:
        server.request("DELETE", f"/api/streams/{camera['id']}")


def test_cameras_persist_across_restarts(tmp_path: Path) -> None:
    with ServerProcess(tmp_path) as first:
        _, created = first.request("POST", "/api/streams", body={"name": "gate", "url": SECRET_URL})
        assert first.stop() == 0
    saved = json.loads((tmp_path / "cameras.json").read_text())
    assert [camera["camera_id"] for camera in saved["cameras"]] == [created["id"]]
    with ServerProcess(tmp_path) as second:
        _, listing = second.request("GET", "/api/streams")
        assert [(s["id"], s["name"]) for s in listing["streams"]] == [(created["id"], "gate")]


def test_token_protects_api_and_page_but_not_health(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--token", TOKEN) as server:
        assert server.request("GET", "/api/streams")[0] == 401
        assert server.request("GET", "/api/streams", token="wrong-token-value")[0] == 401
        assert server.request("POST", "/api/webrtc/offer", body={})[0] == 401
        assert server.request("GET", "/api/streams", token=TOKEN)[0] == 200
        assert server.request("GET", "/healthz")[0] == 200
        status, page = server.request("GET", "/")
        assert status == 200 and 'name="token"' in page, "the page redirects to the login form"
        status, page = server.request("GET", "/", token=TOKEN)
        assert status == 200 and "My camera" in page


def test_non_loopback_bind_without_token_is_refused() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "stream.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "refusing to bind 0.0.0.0 without a token" in completed.stderr
    assert "Traceback" not in completed.stderr
