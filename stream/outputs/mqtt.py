"""Events to an MQTT broker, as camera and home-automation users expect (Frigate's topic layout, Home Assistant).

    <prefix>/available   "online" while the service is connected, "offline" otherwise (retained; the broker
                         publishes "offline" itself when the service vanishes: the last will)
    <prefix>/events      one JSON message per event change: {"type": "new" | "end", "event": {...}} (QoS 1)

`MqttNotifier` subscribes to the `EventStore`; paho's network thread connects, reconnects with backoff
(1 s doubling up to 60 s) and sends. Publishing only queues a message (at most `MAX_QUEUED`; more are dropped and
counted while the broker is away): the workers never wait for the broker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from stream.outputs.event_store import Event, change_message
from stream.sources.rtsp import redact_url

logger = logging.getLogger(__name__)

MAX_QUEUED = 1000
RECONNECT_DELAY = (1, 60)
"""Seconds before the first reconnect attempt, and the most between attempts."""


@dataclass(frozen=True)
class MqttSettings:
    """`url`: mqtt://[user:password@]host[:port] (mqtts:// for TLS); `prefix` starts every topic."""

    url: str
    prefix: str = "fakeweb"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(
                f"MQTT URL must be mqtt://host[:port] or mqtts://..., got {redact_url(self.url)!r}"
            )
        if not self.prefix or any(char in self.prefix for char in "#+"):
            raise ValueError(f"MQTT topic prefix must be non-empty without # or +, got {self.prefix!r}")

    @property
    def available_topic(self) -> str:
        return f"{self.prefix}/available"

    @property
    def events_topic(self) -> str:
        return f"{self.prefix}/events"


@dataclass
class MqttStats:
    published: int = 0
    dropped: int = 0
    """Messages refused while the local queue was full (the broker away for long)."""
    connects: int = 0


class MqttNotifier:
    """Publishes availability and event changes to the broker of `settings`; `start`, then `on_event` per change."""

    def __init__(self, settings: MqttSettings, describe: Callable[[Event], Any] | None = None) -> None:
        self.settings = settings
        self.stats = MqttStats()
        self._describe = describe or (lambda event: event.to_json())
        self._connected = threading.Event()
        parts = urlsplit(settings.url)
        self._host = parts.hostname or ""
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fakeweb-{uuid.uuid4().hex[:8]}")
        if parts.username:
            client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            client.tls_set()
        client.will_set(settings.available_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(*RECONNECT_DELAY)
        client.max_queued_messages_set(MAX_QUEUED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (a broker that is down now is retried, never waited for)."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def close(self) -> None:
        """Say "offline" (when connected) and disconnect."""
        if self.connected:
            self._client.publish(
                self.settings.available_topic, "offline", qos=1, retain=True
            ).wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()

    def on_event(self, event: Event) -> None:
        """Any thread: queue the event's change ("new" when it opens, "end" when it closes)."""
        payload = change_message(event, self._describe)
        info = self._client.publish(self.settings.events_topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.stats.dropped += 1
        else:
            self.stats.published += 1

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            logger.warning("MQTT broker %s refused the connection: %s", redact_url(self.settings.url), reason)
            return
        self.stats.connects += 1
        self._connected.set()
        client.publish(self.settings.available_topic, "online", qos=1, retain=True)
        logger.info("MQTT connected to %s", redact_url(self.settings.url))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connected.is_set():
            logger.warning("MQTT broker %s lost (%s); reconnecting", redact_url(self.settings.url), reason)
        self._connected.clear()
