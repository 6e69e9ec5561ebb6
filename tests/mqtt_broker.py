"""A real MQTT broker for tests: Debian's `mosquitto` on loopback, started, killed and restarted on one port;
and a subscriber that keeps what it receives."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from polling import wait_for
from rtsp_server import port_open, stable_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_missing() -> str | None:
    """Why the broker cannot run here (a skip reason), or None."""
    return None if Path(MOSQUITTO).is_file() else "mosquitto is not installed (Debian package `mosquitto`)"


class Broker:
    """`mosquitto` listening on 127.0.0.1:`port`, anonymous, no persistence."""

    def __init__(self) -> None:
        self.port = stable_port()
        self._folder = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self._config = self._folder / "mosquitto.conf"
        self._config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self._config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: port_open(self.port), 10, "mosquitto listening", period=0.05)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self._folder, ignore_errors=True)


class Subscriber:
    """A paho client subscribed to `topic` on `broker`, keeping (topic, payload, retained) of each message."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def received(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for name, payload, _ in self.messages if name == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
