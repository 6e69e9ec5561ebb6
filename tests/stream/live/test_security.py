"""Security of a real `fakeweb serve` process: binding, the access token on every control endpoint, and camera
credentials that must never be shown (log, API answers, metrics, the page as served and as rendered).

test_service_api.py checks the basics (401 on two endpoints, the login redirect, a refused 0.0.0.0 bind from the
command line, one redacted camera URL); this module checks every endpoint and many wrong tokens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import live_helpers
import pytest
from browser import chromium_missing, open_page
from live_helpers import wait_for
from rtsp_server import RtspTestServer, free_port
from server_process import ServerProcess, raw_request

from stream.config import ConfigError, load_config

TOKEN = "tok-Secret-0123456789"
PASSWORD, QUERY_SECRET = "hunter2pass", "hunter3tok"
SECRETS = (PASSWORD, QUERY_SECRET, "admin:", TOKEN)

rtsp_camera = live_helpers.rtsp_camera  # fixture


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.2", "example.com", "127.0.0.1.example.com"])
def test_non_loopback_binds_need_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="without a token"):
        load_config(environ={"FAKEWEB_HOST": host} if host else {}, overrides={"host": host})
    assert load_config(environ={"FAKEWEB_TOKEN": TOKEN}, overrides={"host": host or "0.0.0.0"}).token == TOKEN


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_need_no_token(host: str) -> None:
    assert load_config(environ={}, overrides={"host": host}).host == host


@pytest.mark.parametrize("token", ["short", " padded-token ", "trailing-space "])
def test_weak_or_unusable_tokens_are_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="token"):
        load_config(environ={"FAKEWEB_TOKEN": token})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The token comes from the environment: on the command line it would show in `ps` to every local user."""
    env = {"FAKEWEB_TOKEN": TOKEN, "FAKEWEB_RTSP_BACKOFF_SECONDS": "0.2"}
    with ServerProcess(tmp_path_factory.mktemp("security"), env=env) as process:
        yield process


def secret_url(port: int) -> str:
    return f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/cam?channel=1&token={QUERY_SECRET}"


@pytest.fixture(scope="module")
def cameras(server: ServerProcess, rtsp_camera: RtspTestServer) -> dict[str, str]:
    """A live camera with credentials in its URL, and one whose attempts fail (errors quote URLs)."""

    def post(name: str, url: str) -> str:
        status, body = server.request("POST", "/api/streams", body={"name": name, "url": url}, token=TOKEN)
        assert status == 201, body
        return str(body["id"])

    ids = {
        "live": post("door", secret_url(rtsp_camera.port)),
        "failing": post("gate", secret_url(free_port())),
    }
    wait_for(lambda: stream_as_admin(server, ids["live"])["status"] == "live", 20, "the camera live")
    return ids


def stream_as_admin(server: ServerProcess, camera_id: str) -> dict[str, object]:
    status, body = server.request("GET", f"/api/streams/{camera_id}", token=TOKEN)
    assert status == 200, body
    return dict(body)


WRONG_CREDENTIALS = {
    "none": {},
    "empty bearer": {"Authorization": "Bearer "},
    "wrong": {"Authorization": "Bearer wrong-token-value"},
    "prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "suffix": {"Authorization": f"Bearer {TOKEN}x"},
    "other case": {"Authorization": f"Bearer {TOKEN.upper()}"},
    "basic": {"Authorization": "Basic " + "dXNlcjpwYXNz"},
    "not utf-8": {"Authorization": "Bearer \xff\xfe" + TOKEN},
    "wrong cookie": {"Cookie": "fakeweb_token=wrong-token-value"},
    "not utf-8 cookie": {"Cookie": "fakeweb_token=\xff" + TOKEN},
    "token as a query parameter": {},  # ?token=... is not accepted (it would land in logs and histories)
}


def control_requests(camera_id: str) -> list[tuple[str, str, bytes | None]]:
    offer = json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}).encode()
    camera = json.dumps({"name": "intruder", "url": "rtsp://127.0.0.1:9/x"}).encode()
    return [
        ("GET", "/api/streams", None),
        ("POST", "/api/streams", camera),
        ("GET", f"/api/streams/{camera_id}", None),
        ("DELETE", f"/api/streams/{camera_id}", None),
        ("POST", f"/api/streams/{camera_id}/view", offer),
        ("POST", "/api/webrtc/offer", offer),
        ("GET", "/api/openapi.json", None),
        ("GET", "/", None),
        ("GET", "/app.js", None),
    ]


@pytest.mark.parametrize("credentials", list(WRONG_CREDENTIALS), ids=list(WRONG_CREDENTIALS))
def test_every_control_endpoint_refuses_missing_and_wrong_tokens(
    server: ServerProcess, cameras: dict[str, str], credentials: str
) -> None:
    camera_id = cameras["live"]
    for method, path, body in control_requests(camera_id):
        if credentials == "token as a query parameter":
            path += f"{'&' if '?' in path else '?'}token={TOKEN}"
        status, headers, text = raw_request(server, method, path, WRONG_CREDENTIALS[credentials], body)
        if path.startswith("/api/"):
            assert status == 401 and json.loads(text) == {"error": "missing or wrong token"}, (
                method,
                path,
                text,
            )
        else:
            assert status == 302 and headers["Location"] == "/login", (method, path, status)
    # Nothing happened: the camera is still there and no other was added.
    status, listing = server.request("GET", "/api/streams", token=TOKEN)
    assert status == 200 and {item["id"] for item in listing["streams"]} == set(cameras.values())
    assert "Traceback" not in server.log()


def test_the_right_token_opens_every_endpoint_by_header_or_login_cookie(
    server: ServerProcess, cameras: dict[str, str]
) -> None:
    status, headers, _ = raw_request(
        server,
        "POST",
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded"},
        f"token={TOKEN}".encode(),
    )
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    cookie_header = {"Cookie": cookie.split(";", 1)[0]}
    bad_login = raw_request(
        server, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, b"token=wrong-token"
    )
    assert bad_login[0] == 401 and "Set-Cookie" not in bad_login[1] and "wrong-token" not in bad_login[2]
    for credentials in ({"Authorization": f"Bearer {TOKEN}"}, cookie_header):
        for method, path, body in control_requests(cameras["live"]):
            if method == "DELETE" or path == "/api/streams" and method == "POST":
                continue  # changes nothing here; the lifecycle is covered by test_service_api.py
            status, _, text = raw_request(server, method, path, credentials, body)
            assert status in (200, 400), (method, path, status, text)  # 400: the placeholder offer is refused
    for public in ("/healthz", "/readyz", "/metrics", "/login", "/favicon.ico"):
        assert raw_request(server, "GET", public)[0] == 200, public


def test_camera_credentials_never_leave_the_server(
    server: ServerProcess, cameras: dict[str, str], rtsp_camera: RtspTestServer
) -> None:
    """The live camera drops and reconnects (its errors quote the URL), the other one fails all along; then
    every place a credential could leak is read."""
    rtsp_camera.kill()
    wait_for(lambda: stream_as_admin(server, cameras["live"])["status"] != "live", 10, "the camera down")
    rtsp_camera.start()
    wait_for(lambda: stream_as_admin(server, cameras["live"])["status"] == "live", 15, "the camera back")

    texts: dict[str, str] = {}
    admin = {"Authorization": f"Bearer {TOKEN}"}
    for path in (
        "/api/streams",
        *(f"/api/streams/{cid}" for cid in cameras.values()),
        "/api/openapi.json",
        "/",
        "/app.js",
    ):
        texts[path] = raw_request(server, "GET", path, admin)[2]
    for path in ("/metrics", "/readyz", "/healthz", "/login"):
        texts[path] = raw_request(server, "GET", path)[2]
    for url in (secret_url(9), f"http://admin:{PASSWORD}@127.0.0.1/x", f"rtsp://admin:{PASSWORD}@"):
        body = json.dumps({"name": "x" * 81, "url": url}).encode()  # refused: is the URL echoed?
        texts[f"refused {url}"] = raw_request(server, "POST", "/api/streams", admin, body)[2]
    status, created = server.request(
        "POST", "/api/streams", body={"name": "tmp", "url": secret_url(9)}, token=TOKEN
    )
    assert status == 201
    texts["created"] = json.dumps(created)
    assert server.request("DELETE", f"/api/streams/{created['id']}", token=TOKEN)[0] == 204
    texts["log"] = server.log()
    texts["page as rendered"] = rendered_page(server)

    assert "rtsp://***@127.0.0.1" in texts[f"/api/streams/{cameras['live']}"]
    assert "rtsp://***@127.0.0.1" in texts["log"], "the log names cameras by their redacted URL"
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} in {where}"


def rendered_page(server: ServerProcess) -> str:
    """The page's HTML after its script has listed the cameras, in headless Chromium signed in with the
    token; empty when Chromium is not available."""
    if chromium_missing():
        return ""

    async def render() -> str:
        async with open_page(server.url + "/login") as page:
            await page.fill("input[name=token]", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_function(
                "document.querySelectorAll('.camera .status').length >= 2", timeout=20_000
            )
            return str(await page.content())

    html = asyncio.run(render())
    assert "door" in html and "gate" in html, "the cameras are listed by name"
    return html


def test_stream_ids_are_not_guessable_paths(server: ServerProcess, cameras: dict[str, str]) -> None:
    """Ids in URLs are matched exactly: no traversal to other routes or files."""
    admin = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/streams/..%2f..%2fetc%2fpasswd", "/api/streams/%2e%2e/healthz", "/api/streams/cam-*"):
        status, _, text = raw_request(server, "GET", path, admin)
        assert status in (400, 404) and "root:" not in text, (path, status, text)
