"""Event changes POSTed to a real local HTTP receiver: delivered, retried after failures, given up and counted
when the receiver stays down or refuses, and never in a worker's way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from polling import wait_for

from stream.config import ConfigError, ServiceConfig
from stream.outputs.event_store import Event
from stream.outputs.webhook import WebhookNotifier

FAST = (0.05, 0.1, 0.2)


class Receiver:
    """An HTTP server on loopback that answers `statuses` in turn (then 200) and keeps every body."""

    def __init__(self, statuses: list[int]) -> None:
        self.bodies: list[dict[str, object]] = []
        self.statuses = statuses
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def flaky() -> Iterator[Receiver]:
    receiver = Receiver([500, 503])
    yield receiver
    receiver.close()


def change(event_id: str, status: str = "open") -> Event:
    return Event(event_id, "cam-1", 1, "manipulated", time.time(), "v1", status=status)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="webhook_url"):
        ServiceConfig(webhook_url="ftp://h/x")


def test_changes_are_delivered_after_retries(flaky: Receiver) -> None:
    notifier = WebhookNotifier(flaky.url, retry_delays=FAST)
    notifier.start()
    try:
        notifier.on_event(change("e1"))
        notifier.on_event(change("e1", status="closed"))
        wait_for(lambda: notifier.stats.delivered == 2, 10, "both delivered")
    finally:
        notifier.close()
    assert [(body["type"], body["event"]["event_id"]) for body in flaky.bodies] == [
        ("new", "e1"),
        ("end", "e1"),
    ]  # type: ignore[index]
    assert notifier.stats.failed == 0


def test_a_receiver_that_refuses_or_is_down_is_counted_not_retried_for_ever() -> None:
    refusing = Receiver([400])
    notifier = WebhookNotifier(refusing.url, retry_delays=FAST)
    notifier.start()
    try:
        notifier.on_event(change("bad"))
        wait_for(lambda: notifier.stats.failed == 1, 10, "a 400 given up at once")
        assert refusing.statuses == [] and refusing.bodies == []  # asked once: 4xx is not retried
    finally:
        notifier.close()
        refusing.close()

    down = WebhookNotifier(refusing.url, retry_delays=FAST)  # nothing listens there any more
    down.start()
    try:
        started = time.monotonic()
        for n in range(300):  # more than the queue holds: the caller never waits
            down.on_event(change(f"e{n}"))
        assert time.monotonic() - started < 1.0 and down.stats.dropped > 0
        wait_for(lambda: down.stats.failed >= 1, 10, "an undeliverable change given up")
    finally:
        down.close()
