"""Hostile requests to a real `fakeweb serve` process: 100 seeded fuzzed requests to every endpoint (random bytes,
deep JSON, huge strings, wrong types, broken Unicode, mutated SDP offers, odd ids) and malformed HTTP. Each gets a
clean answer (4xx, or 503 when a limit is reached; a fuzzed offer that is still valid may be answered), no
traceback reaches a client or the log, the server stays up, its memory stays flat, and offers that are never
followed by a connection give their slot back.

test_service_api.py covers the hand-written bad offers and cameras; this module generates many more.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import ipaddress
import json
import random
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from fault_helpers import STEADY_MALLOC, loopback_ice, open_files, server_rss_mb
from live_helpers import Client, add_camera, json_request, metric, until, wait_for
from rtsp_server import free_port
from server_process import ServerProcess

from stream.config import load_config
from stream.live.serve import serving

PER_ENDPOINT = 100
CONNECT_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An offer not followed by a connection is dropped after 2 s; limits high enough for the few fuzzed offers
    that are still valid (they hold a slot meanwhile) to leave room for the others."""
    env = {"FAKEWEB_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT), **STEADY_MALLOC}
    flags = ("--loopback-ice", "--max-streams", "16", "--max-viewers", "32")
    with ServerProcess(tmp_path_factory.mktemp("faults_api"), *flags, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def camera(server: ServerProcess) -> str:
    """A camera that never connects (nothing listens on its port): a stream to send view offers to."""
    return add_camera(server, "nowhere", f"rtsp://127.0.0.1:{free_port()}/cam")


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    """A real offer like the page's (video both ways and a data channel), with 127.0.0.1 candidates only."""

    async def make() -> str:
        peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer.addTransceiver("video", direction="sendrecv")
        peer.createDataChannel("faces")
        await peer.setLocalDescription(await peer.createOffer())
        sdp = str(peer.localDescription.sdp)
        await peer.close()
        return sdp

    with loopback_ice():
        return asyncio.run(make())


# Generators: each takes the seeded random generator and returns a request body.

Body = bytes
ODD_VALUES: list[object] = [
    None,
    True,
    0,
    -1,
    1.5,
    1e308,
    [],
    {},
    "",
    "x",
    [1, 2],
    {"a": 1},
    "\u0000",
    "🙂" * 3,
]
ODD_TEXT = ["", " ", "\u0000", "\ud800", "\u202e", "🙂", "'\"<script>", "%00", "../", "\r\n", "a" * 5000]


def random_bytes(rng: random.Random) -> Body:
    return rng.randbytes(rng.choice([0, 1, 7, 100, 2000, 70_000]))


def deep_json(rng: random.Random) -> Body:
    depth = rng.choice([100, 1000, 20_000, 30_000])
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"sdp":' * depth + b"1" + b"}" * depth


def huge_numbers(rng: random.Random) -> Body:
    digits = rng.choice([400, 4301, 20_000])
    return b'{"type": "offer", "sdp": ' + b"9" * digits + b"}"


def huge_strings(rng: random.Random) -> Body:
    size = rng.choice([10_000, 65_000, 66_000, 200_000])
    key = rng.choice(["sdp", "name", "url", "type", "x" * 1000])
    return json.dumps(
        {key: "v=0 m=video " + "x" * size, "type": "offer", "name": "n", "url": "rtsp://x"}
    ).encode()


def wrong_types(rng: random.Random) -> Body:
    keys = ["sdp", "type", "name", "url"]
    return json.dumps({key: rng.choice(ODD_VALUES) for key in rng.sample(keys, rng.randint(0, 4))}).encode()


def odd_unicode(rng: random.Random) -> Body:
    text = "".join(rng.choice(ODD_TEXT) for _ in range(rng.randint(1, 5)))
    body = json.dumps({"type": "offer", "sdp": "v=0\r\nm=video " + text, "name": text, "url": text})
    return body.encode("utf-8", "surrogatepass")


def not_an_object(rng: random.Random) -> Body:
    return rng.choice([b"null", b"1", b'"offer"', b"[]", b"true", b"NaN", b"{", b'{"a":}', b"\xef\xbb\xbf{}"])


BODY_GENERATORS = [
    random_bytes,
    deep_json,
    huge_numbers,
    huge_strings,
    wrong_types,
    odd_unicode,
    not_an_object,
]


def mutate_sdp(rng: random.Random, sdp: str) -> str:
    """`sdp` with 1-4 random edits: lines dropped, repeated, truncated, shuffled; characters and fields
    replaced. Candidate addresses stay loopback literals, so the server never sends a packet off the host."""
    lines = sdp.split("\r\n")
    for _ in range(rng.randint(1, 4)):
        index = rng.randrange(len(lines))
        operation = rng.randrange(7)
        if operation == 0:
            del lines[index]
        elif operation == 1:
            lines.insert(index, rng.choice(lines))
        elif operation == 2 and lines[index]:
            at = rng.randrange(len(lines[index]))
            lines[index] = lines[index][:at] + chr(rng.randrange(1, 0x3000)) + lines[index][at + 1 :]
        elif operation == 3:
            fields = lines[index].split(" ")
            fields[rng.randrange(len(fields))] = rng.choice(
                ["", "-1", "0", "65536", "99999999999999999999", "x" * rng.randint(1, 3000), "NaN", ":", "a="]
            )
            lines[index] = " ".join(fields)
        elif operation == 4:
            lines[index] = lines[index][: rng.randrange(len(lines[index]) + 1)]
        elif operation == 5:
            rng.shuffle(lines)
        else:
            lines = [
                line
                for line in lines
                if not line.startswith(
                    rng.choice(["a=ice-", "a=fingerprint", "a=setup", "a=mid", "a=candidate", "m="])
                )
            ]
    text = "\r\n".join(lines)
    if not text.startswith("v=0"):
        text = "v=0\r\n" + text
    if "m=video" not in text:
        text += "\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
    return loopback_candidates_only(text)


def loopback_candidates_only(sdp: str) -> str:
    """Every candidate's address (5th field) a loopback IP literal: no host names (no DNS or mDNS lookups) and
    no other hosts for the server's connectivity checks."""
    lines = []
    for line in sdp.split("\r\n"):
        fields = line.split(" ")
        if "candidate" in line and len(fields) >= 5:
            try:
                loopback = ipaddress.ip_address(fields[4]).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                fields[4] = "127.0.0.1"
            line = " ".join(fields)
        lines.append(line)
    return "\r\n".join(lines)


def offer_body(rng: random.Random, sdp: str) -> Body:
    """Mostly mutated offers; the rest from the generic generators."""
    if rng.random() < 0.6:
        kind = rng.choice(["offer"] * 8 + ["answer", "pranswer", "OFFER", ""])
        return json.dumps(
            {"type": kind, "sdp": mutate_sdp(rng, sdp)}, ensure_ascii=rng.random() < 0.5
        ).encode()
    return rng.choice(BODY_GENERATORS)(rng)


def camera_body(rng: random.Random, closed_port: int) -> Body:
    """Camera definitions with odd names and URLs; any URL that could be valid points at a closed loopback
    port or a missing file, never at another host."""
    if rng.random() < 0.3:
        return rng.choice(BODY_GENERATORS)(rng)
    path = quote("".join(rng.choice(ODD_TEXT) for _ in range(2)), safe="/")
    url = rng.choice(
        [
            f"rtsp://127.0.0.1:{closed_port}/{path}",
            f"rtsp://user:p%40ss@127.0.0.1:{closed_port}/{path}?password=x",
            f"file:///nonexistent/{path}",
            "http://127.0.0.1/a",
            "rtsp://",
            "",
            "javascript:alert(1)",
            "".join(rng.choice(ODD_TEXT) for _ in range(3)),
            rng.choice(ODD_VALUES),
        ]
    )
    name = rng.choice([*ODD_TEXT, *ODD_VALUES, "door", "x" * 81])
    return json.dumps({"name": name, "url": url}).encode("utf-8", "surrogatepass")


def quote(text: str, safe: str) -> str:
    """Percent-encode `text` as UTF-8, lone surrogates included (as the bytes a broken client would send)."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe=safe)


def odd_id(rng: random.Random) -> str:
    text = "".join(
        rng.choice([*ODD_TEXT, "cam-", "..", "/", "%2F", "?", "#", "x"]) for _ in range(rng.randint(1, 4))
    )
    return quote(text, safe="") if rng.random() < 0.9 else "x" * rng.choice([100, 9000])


CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1",
    "",
]


# Sending.


@dataclass
class Answer:
    method: str
    path: str
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def send(server: ServerProcess, method: str, path: str, body: bytes | None, content_type: str) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(method, path, response.status, response.read())
    finally:
        connection.close()


def check(answer: Answer, allowed: set[int]) -> None:
    """A clean answer: an allowed status, JSON errors with a message, nothing from Python's internals.

    aiohttp answers some malformed requests itself (404, 405, 413, 414) with a short text page.
    """
    context = f"{answer.method} {answer.path[:80]} -> {answer.status} {answer.text[:300]}"
    assert answer.status in allowed, context
    if answer.status == 503:
        assert "limit reached" in answer.text, context
    for leak in ("Traceback", 'File "', "object has no attribute", "internal error"):
        assert leak not in answer.text, context
    if answer.status >= 400 and answer.text.startswith("{"):
        assert isinstance(json.loads(answer.body)["error"], str), context


def test_fuzzed_requests_to_every_endpoint_get_clean_answers_and_leave_the_server_as_it_was(
    server: ServerProcess, camera: str, offer_sdp: str
) -> None:
    rng = random.Random(20261127)
    closed_port = free_port()
    created: list[str] = []

    def add_camera_request(_: int) -> Answer:
        answer = send(
            server, "POST", "/api/streams", camera_body(rng, closed_port), rng.choice(CONTENT_TYPES)
        )
        check(answer, {201, 400, 413, 503})
        if answer.status == 201:
            created.append(json.loads(answer.body)["id"])
            assert "p%40ss" not in answer.text and "password=x" not in answer.text, answer.text
            assert send(server, "DELETE", f"/api/streams/{created[-1]}", None, "").status == 204
        return answer

    endpoints: dict[str, Callable[[int], Answer]] = {
        "POST /api/streams": add_camera_request,
        "POST /api/webrtc/offer": lambda _: send(
            server, "POST", "/api/webrtc/offer", offer_body(rng, offer_sdp), rng.choice(CONTENT_TYPES)
        ),
        "POST /api/streams/{id}/view": lambda _: send(
            server,
            "POST",
            f"/api/streams/{camera}/view",
            offer_body(rng, offer_sdp),
            rng.choice(CONTENT_TYPES),
        ),
        "GET /api/streams/{id}": lambda _: send(server, "GET", f"/api/streams/{odd_id(rng)}", None, ""),
        "DELETE /api/streams/{id}": lambda _: send(server, "DELETE", f"/api/streams/{odd_id(rng)}", None, ""),
        "POST /login": lambda _: send(
            server, "POST", "/login", rng.choice(BODY_GENERATORS)(rng), rng.choice(CONTENT_TYPES)
        ),
    }
    allowed = {
        "POST /api/webrtc/offer": {200, 400, 413, 503},
        "POST /api/streams/{id}/view": {200, 400, 413, 503},
        "POST /api/streams": {201, 400, 413, 503},
        "GET /api/streams/{id}": {400, 404, 414},
        "DELETE /api/streams/{id}": {400, 404, 414},
        "POST /login": {400, 401, 413},
    }
    for name, request in endpoints.items():  # warm-up: first-use allocations are not a leak
        for number in range(5):
            check(request(number), allowed[name])
    wait_for(lambda: metric(server, "fakeweb_viewers") == 0, 3 * CONNECT_TIMEOUT + 5, "warm-up peers gone")
    rss_before, files_before = server_rss_mb(server), open_files(server)

    statuses: dict[str, dict[int, int]] = {}
    started = time.monotonic()
    for name, request in endpoints.items():
        counts = statuses.setdefault(name, {})
        for number in range(PER_ENDPOINT):
            answer = request(number)
            check(answer, allowed[name])
            counts[answer.status] = counts.get(answer.status, 0) + 1
        assert server.request("GET", "/healthz")[0] == 200, f"server down after {name}"
    seconds = time.monotonic() - started
    print(f"{len(endpoints) * PER_ENDPOINT} fuzzed requests in {seconds:.1f} s: {statuses}")

    # Answered offers that never connect are closed after the connect timeout: their slots come back.
    wait_for(lambda: metric(server, "fakeweb_viewers") == 0, 3 * CONNECT_TIMEOUT + 5, "answered peers closed")
    wait_for(
        lambda: [s["id"] for s in server.request("GET", "/api/streams")[1]["streams"]] == [camera],
        10,
        "only the camera left",
    )
    rss_after, files_after = server_rss_mb(server), open_files(server)
    assert rss_after - rss_before < 60, f"RSS {rss_before:.0f} -> {rss_after:.0f} MB"
    assert files_after - files_before < 10, f"{files_before} -> {files_after} open files (sockets left open)"
    assert statuses["POST /api/webrtc/offer"].get(400, 0) > 50
    assert statuses["POST /api/streams"].get(201, 0) > 5, "some fuzzed cameras are valid (and deleted again)"
    log = server.log()
    for sign in ("Traceback", "Task exception was never retrieved", "internal error", "unhandled error"):
        assert sign not in log, log[-3000:]


MALFORMED_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    b"GET /api/streams HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
    b"POST /api/streams HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}",
    b"POST /api/webrtc/offer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"10000\r\n"
    + b"x" * 65_536
    + b"\r\n"
    + b"10000\r\n"
    + b"x" * 65_536
    + b"\r\n0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /api/streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(100),  # a TLS ClientHello on the plain port
]


@pytest.mark.parametrize("raw", MALFORMED_HTTP, ids=range(len(MALFORMED_HTTP)))
def test_malformed_http_gets_a_4xx_or_a_closed_connection(server: ServerProcess, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        try:
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500 or status == 200, answer[:300]
        assert b"Traceback" not in answer
    assert server.request("GET", "/healthz")[0] == 200


def without_data_channel_setup(sdp: str) -> str:
    """An offer whose data channel section lost its `a=setup` line: aiortc half-applies it, fails to answer,
    then fails half-way through closing the peer, and a second close used to wait forever."""
    lines = sdp.split("\r\n")
    application = next(i for i, line in enumerate(lines) if line.startswith("m=application"))
    kept = lines[:application] + [line for line in lines[application:] if not line.startswith("a=setup")]
    return "\r\n".join(kept)


@pytest.mark.parametrize("path", ["/api/webrtc/offer", "/api/streams/{camera}/view"])
def test_an_offer_that_aiortc_cannot_close_is_refused_quickly_and_cleanly(
    server: ServerProcess, camera: str, offer_sdp: str, path: str
) -> None:
    body = json.dumps({"type": "offer", "sdp": without_data_channel_setup(offer_sdp)}).encode()
    files_before = open_files(server)
    for _ in range(3):
        started = time.monotonic()
        answer = send(server, "POST", path.format(camera=camera), body, "application/json")
        assert time.monotonic() - started < 5
        assert answer.status == 400, answer
        assert json.loads(answer.body) == {"error": "cannot use this offer: malformed session description"}
    assert open_files(server) - files_before < 6, "the half-set-up peers' sockets are closed"
    wait_for(lambda: metric(server, "fakeweb_viewers") == 0, 3, "no peer left")
    log = server.log()
    assert "Traceback" not in log and "Task exception was never retrieved" not in log


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"name": ' + b"1" * 5000 + b', "url": "rtsp://127.0.0.1:9/x"}', "digits"),
    ],
    ids=["deep nesting", "5000-digit integer"],
)
def test_json_python_refuses_to_parse_is_a_400(server: ServerProcess, body: bytes, reason: str) -> None:
    """json.loads raises RecursionError and ValueError (not JSONDecodeError) on these: they used to be 500s."""
    for path in ("/api/streams", "/api/webrtc/offer"):
        answer = send(server, "POST", path, body, "application/json")
        assert answer.status == 400 and reason in json.loads(answer.body)["error"], answer


def test_a_login_form_that_cannot_be_parsed_is_a_400(server: ServerProcess) -> None:
    answer = send(server, "POST", "/login", b"--nope\r\n\r\n", "multipart/form-data; boundary=xyz")
    assert answer.status == 400 and 'name="token"' in answer.text


def test_closed_peers_are_freed(tmp_path: Path) -> None:
    """In-process: viewers that come and go, and refused offers, leave no RTCPeerConnection behind once closed
    (the service remembers closed peers only weakly)."""

    async def scenario() -> int:
        config = load_config(overrides={"port": free_port(), "data_dir": tmp_path, "loopback_ice": True})
        async with serving(config) as running, aiohttp.ClientSession(running.url) as http:
            camera = await json_request(
                http, "POST", "/api/streams", {"name": "nowhere", "url": f"rtsp://127.0.0.1:{free_port()}/x"}
            )
            for _ in range(4):
                viewer = Client(ice_servers=[])
                await viewer.connect(http, f"/api/streams/{camera['id']}/view")
                await until(lambda v=viewer: v.frames > 0, 20, "placeholder frames at the viewer")
                await viewer.close()
                await until(lambda: not running.service.peers, 10, "the server's peer closed")
                async with http.post(
                    "/api/webrtc/offer", json={"type": "offer", "sdp": "v=0\r\nm=video 9 x\r\n"}
                ):
                    pass
            del viewer  # the test's own last peer
            await asyncio.sleep(0.2)  # connect-timeout timers still run: they hold their peer weakly
            gc.collect()
            return sum(isinstance(item, RTCPeerConnection) for item in gc.get_objects())

    with loopback_ice():
        alive = asyncio.run(scenario())
    assert alive == 0, f"{alive} peer connections still referenced"
