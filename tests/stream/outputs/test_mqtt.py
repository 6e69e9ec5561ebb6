"""Event notifications over MQTT against a real broker (Debian `mosquitto`, started by the test): availability
(retained, with the last will), one message per event change, and a broker restart survived."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import Broker, Subscriber, mosquitto_missing
from polling import wait_for
from project_paths import ROOT

from stream.config import ConfigError, ServiceConfig
from stream.outputs.event_store import Event, EventStore
from stream.outputs.mqtt import MqttNotifier, MqttSettings

pytestmark = pytest.mark.skipif(mosquitto_missing() is not None, reason=mosquitto_missing() or "")


@pytest.fixture()
def broker() -> Iterator[Broker]:
    with Broker() as running:
        yield running


def event(event_id: str, status: str = "open") -> Event:
    return Event(event_id, "cam-1", 3, "manipulated", time.time(), "v1", status=status)


def test_settings_are_checked() -> None:
    assert ServiceConfig().mqtt() is None
    assert ServiceConfig(mqtt_url="mqtt://u:p@h:1884").mqtt() == MqttSettings("mqtt://u:p@h:1884")
    with pytest.raises(ConfigError, match="mqtt://"):
        ServiceConfig(mqtt_url="http://h")
    with pytest.raises(ConfigError, match="prefix"):
        ServiceConfig(mqtt_url="mqtt://h", mqtt_topic_prefix="a/#")


def test_availability_and_event_changes_reach_the_broker(broker: Broker, tmp_path: Path) -> None:
    settings = MqttSettings(broker.url, prefix="site1")
    store = EventStore(tmp_path / "events")
    notifier = MqttNotifier(settings)
    store.subscribe(notifier.on_event)
    notifier.start()
    wait_for(lambda: notifier.connected, 10, "connected")
    late = Subscriber(broker, "site1/#")  # joins after "online" was published: gets it retained
    try:
        wait_for(lambda: late.received("site1/available") == ["online"], 10, "retained online")
        store.submit(event("e1"))
        store.submit(event("e1", status="closed"))
        messages = wait_for(
            lambda: len(late.received("site1/events")) == 2 and late.received("site1/events"), 10, "events"
        )
        first, last = (json.loads(message) for message in messages)
        assert (first["type"], first["event"]["event_id"]) == ("new", "e1")
        assert (last["type"], last["event"]["status"]) == ("end", "closed")
        notifier.close()
        wait_for(lambda: late.received("site1/available")[-1:] == ["offline"], 10, "offline on a clean stop")
    finally:
        late.close()


def test_the_notifier_rides_out_a_broker_restart(broker: Broker, tmp_path: Path) -> None:
    notifier = MqttNotifier(MqttSettings(broker.url))
    notifier.start()
    try:
        wait_for(lambda: notifier.connected, 10, "connected")
        broker.kill()
        wait_for(lambda: not notifier.connected, 10, "the loss noticed")
        notifier.on_event(event("while-down"))  # queued, not lost, and nothing waits
        broker.start()
        listener = Subscriber(broker, "fakeweb/#")
        wait_for(lambda: notifier.connected and notifier.stats.connects == 2, 20, "reconnected")
        wait_for(lambda: "online" in listener.received("fakeweb/available"), 10, "online again")
        notifier.on_event(event("after", status="closed"))
        ids = wait_for(
            lambda: (
                {json.loads(m)["event"]["event_id"] for m in listener.received("fakeweb/events")} >= {"after"}
                and {json.loads(m)["event"]["event_id"] for m in listener.received("fakeweb/events")}
            ),
            10,
            "the event after the restart",
        )
        assert "after" in ids
        listener.close()
    finally:
        notifier.close()


def test_a_service_that_vanishes_is_reported_offline_by_the_broker(broker: Broker) -> None:
    code = (
        "import sys, time; sys.path.insert(0, '.');"
        "from stream.outputs.mqtt import MqttNotifier, MqttSettings;"
        f"n = MqttNotifier(MqttSettings('{broker.url}')); n.start();"
        "[time.sleep(0.05) for _ in range(200) if not n.connected]; print('connected', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    listener = Subscriber(broker, "fakeweb/available")
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "connected"
        wait_for(lambda: listener.received("fakeweb/available")[-1:] == ["online"], 10, "online")
        child.send_signal(signal.SIGKILL)  # no clean DISCONNECT: the broker sends the last will
        child.wait(10)
        wait_for(lambda: listener.received("fakeweb/available")[-1:] == ["offline"], 10, "the last will")
    finally:
        child.kill()
        listener.close()
