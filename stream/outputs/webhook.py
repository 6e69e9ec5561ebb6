"""Events to a webhook: one JSON POST per event change, `{"type": "new" | "end", "event": {...}}`, the payload of
the MQTT messages (`stream.outputs.mqtt`).

Posts go out on the notifier's own thread behind a bounded queue (the newest `QUEUE_SIZE` changes; older ones are
dropped and counted when the receiver is slower than the events). A post that fails (connection refused, timeout,
an HTTP status of 500 or more, or 429) is tried again after 1, 2 and 4 s, then given up and counted; 4xx answers
other than 429 are not retried. Nothing here waits on a stream's worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.outputs.event_store import Event, change_message
from stream.sources.rtsp import redact_url

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
RETRY_DELAYS = (1.0, 2.0, 4.0)
TIMEOUT = 5.0


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0
    """Changes given up after every retry."""
    dropped: int = 0
    """Changes dropped because the queue was full."""


class WebhookNotifier:
    """POSTs event changes to `url`; `start`, `on_event` per change (any thread), `close` at shutdown."""

    def __init__(
        self,
        url: str,
        describe: Callable[[Event], Any] | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http:// or https://, got {redact_url(url)!r}")
        self.url = url
        self.stats = WebhookStats()
        self._describe = describe or (lambda event: event.to_json())
        self._retry_delays = retry_delays
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the post in progress (its retries are cut short); queued changes are not sent."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join()

    def on_event(self, event: Event) -> None:
        payload = change_message(event, self._describe).encode()
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.stats.dropped += 1

    def _run(self) -> None:
        while not self._stopping.is_set():
            payload = self._queue.get()
            if payload is None:
                return
            self._deliver(payload)

    def _deliver(self, payload: bytes) -> None:
        error = ""
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay and self._stopping.wait(delay):
                break
            request = urllib.request.Request(
                self.url, data=payload, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT):
                    self.stats.delivered += 1
                    return
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # the receiver refuses this payload: sending it again changes nothing
            except (OSError, TimeoutError) as exc:
                error = str(getattr(exc, "reason", exc))
            logger.debug("webhook attempt %d failed: %s", attempt + 1, error)
        self.stats.failed += 1
        logger.warning("webhook %s: an event change was not delivered (%s)", redact_url(self.url), error)
