"""Events: the recorder opens, follows and closes them from a stream's verdicts; the store writes them to a real
folder atomically, reloads them after a restart, keeps to its retention limits, and loses events, not the
service, when the disk is full (a real tiny tmpfs, where the test runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from polling import wait_for

from models.geometry import Box
from stream.outputs.event_store import EVENT_FILE, QUEUE_SIZE, Event, EventStore, Retention
from stream.outputs.events import EventRecorder
from stream.pipeline.pipeline import FaceResult, FrameResult
from stream.pipeline.scoring import Verdict
from stream.pipeline.tracker import TrackState
from stream.runtime.timing import StageTimes
from stream.sources.frames import Frame


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def frame_with(
    faces: dict[int, tuple[Verdict, float | None]], crops: dict[int, float] | None = None
) -> tuple[Frame, FrameResult]:
    """A frame whose tracks have these (verdict, smoothed score); `crops` gives tracks a classified crop whose
    pixels are its score x 255 (so a test can tell which crops were kept)."""
    image = np.full((48, 64, 3), 90, dtype=np.uint8)
    results = [
        FaceResult(track, Box(10, 10, 30, 30), TrackState.CONFIRMED, score, verdict)
        for track, (verdict, score) in faces.items()
    ]
    classified = {
        track: np.full((16, 16, 3), round(score * 255), np.uint8) for track, score in (crops or {}).items()
    }
    return Frame("cam", 0, image, 0.0), FrameResult("cam", 0, None, 0.0, results, StageTimes(), classified)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[EventStore]:
    events = EventStore(tmp_path / "events")
    events.start()
    yield events
    events.close()


def recorder(
    store: EventStore, clock: Clock, suspect_seconds: float = 0.0
) -> tuple[EventRecorder, list[str]]:
    opened: list[str] = []
    return EventRecorder("cam", store, lambda: "v1", suspect_seconds, opened.append, clock), opened


def written(store: EventStore, event_id: str) -> dict[str, object]:
    return dict(json.loads((store.folder / event_id / EVENT_FILE).read_text()))


def test_a_manipulated_face_opens_an_event_kept_until_it_turns_real(store: EventStore) -> None:
    clock = Clock()
    events, opened = recorder(store, clock)
    events.on_result(*frame_with({1: (Verdict.UNKNOWN, None), 2: (Verdict.REAL, 0.1)}))
    assert store.list() == []
    for score in (0.91, 0.97, 0.93, 0.95):
        clock.now += 1
        events.on_result(*frame_with({1: (Verdict.MANIPULATED, score)}, crops={1: score}))
    clock.now += 1
    events.on_result(*frame_with({1: (Verdict.REAL, 0.2)}))
    store.close()

    (event,) = store.list()
    assert opened == ["manipulated"] and event.status == "closed" and event.model_version == "v1"
    assert (event.started_at, event.ended_at) == (1_800_000_001.0, 1_800_000_005.0)
    assert event.peak_score == 0.97 and event.mean_score == pytest.approx(0.94) and event.samples == 4
    assert event.crops == ("crop-0.jpg", "crop-1.jpg", "crop-2.jpg")
    assert written(store, event.event_id)["status"] == "closed"
    best = store.file(event.event_id, "crop-0.jpg")
    assert best is not None and best.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    kept = [store.file(event.event_id, name) for name in event.crops]
    brightness = [float(cv2.imread(str(path)).mean()) for path in kept if path is not None]
    assert brightness == sorted(brightness, reverse=True) and brightness[0] == pytest.approx(
        0.97 * 255, abs=3
    )
    assert store.file(event.event_id, "snapshot.jpg") is not None
    assert store.file(event.event_id, "../event.json") is None


def test_a_track_that_leaves_or_a_stream_that_stops_closes_its_event(store: EventStore) -> None:
    clock = Clock()
    events, _ = recorder(store, clock)
    events.on_result(*frame_with({1: (Verdict.MANIPULATED, 0.9), 2: (Verdict.MANIPULATED, 0.95)}))
    clock.now += 2
    events.on_result(*frame_with({2: (Verdict.MANIPULATED, 0.96)}))  # track 1 is gone
    assert [e.status for e in sorted(store.list(), key=lambda e: e.track_id)] == ["closed", "open"]
    clock.now += 2
    events.close_all()
    assert {(e.track_id, e.status, e.ended_at) for e in store.list()} == {
        (1, "closed", 1_800_000_002.0),
        (2, "closed", 1_800_000_004.0),
    }


def test_suspect_opens_an_event_only_after_the_set_time_and_turns_it_manipulated(store: EventStore) -> None:
    clock = Clock()
    never, _ = recorder(store, clock)
    for _ in range(5):
        clock.now += 10
        never.on_result(*frame_with({1: (Verdict.SUSPECT, 0.6)}))
    assert store.list() == []

    events, opened = recorder(store, clock, suspect_seconds=5)
    events.on_result(*frame_with({1: (Verdict.SUSPECT, 0.6)}))
    clock.now += 4
    events.on_result(*frame_with({1: (Verdict.SUSPECT, 0.6)}))
    assert store.list() == []
    clock.now += 1
    events.on_result(*frame_with({1: (Verdict.SUSPECT, 0.7)}))
    clock.now += 1
    events.on_result(*frame_with({1: (Verdict.MANIPULATED, 0.9)}))
    events.close_all()
    (event,) = store.list()
    assert opened == ["suspect"] and event.verdict == "manipulated" and event.started_at == 1_800_000_055.0


def test_events_left_open_by_a_crash_are_interrupted_after_a_restart(tmp_path: Path) -> None:
    now = time.time()
    first = EventStore(tmp_path / "events")
    first.start()
    first.submit(Event("e1", "cam", 1, "manipulated", now, "v1"), snapshot=np.zeros((8, 8, 3), np.uint8))
    first.submit(Event("e2", "cam", 2, "manipulated", now + 1, "v1", status="closed", ended_at=now + 2))
    first.close()  # the process "dies" with e1 open
    again = EventStore(tmp_path / "events")
    assert {e.event_id: e.status for e in again.list()} == {"e1": "interrupted", "e2": "closed"}
    assert again.get("e1") is not None and again.get("e1").ended_at is not None  # type: ignore[union-attr]
    assert written(again, "e1")["status"] == "interrupted"


def test_retention_keeps_the_newest_events_within_count_age_and_size(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = EventStore(
        tmp_path / "events", Retention(max_count=3, max_age_days=1.0, max_bytes=10_000_000), clock=clock
    )
    store.start()
    for n in range(5):
        store.submit(
            Event(f"e{n}", "cam", n, "manipulated", 1_000_000.0 + n, "v1", status="closed", ended_at=1.0)
        )
    store.close()
    assert [e.event_id for e in store.list()] == ["e4", "e3", "e2"]
    assert not (tmp_path / "events" / "e0").exists()

    clock.now += 2 * 86400  # two days later, all are too old
    store.prune()
    assert store.list() == []

    sized = EventStore(tmp_path / "sized", Retention(max_bytes=1500), clock=clock)
    sized.start()
    picture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # ~10 KB as JPEG
    for n in range(3):
        sized.submit(
            Event(
                f"s{n}",
                "cam",
                n,
                "manipulated",
                clock.now + n,
                "v1",
                snapshot="snapshot.jpg",
                status="closed",
            ),
            snapshot=picture,
        )
    sized.close()
    assert sized.list() == []  # each event alone is over the byte limit


def test_a_full_writer_queue_drops_and_counts_events_instead_of_blocking(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events")  # not started: nothing drains the queue
    for n in range(QUEUE_SIZE + 5):
        store.submit(Event(f"e{n}", "cam", n, "manipulated", float(n), "v1"))
    assert store.stats.dropped == 5 and len(store.list()) == QUEUE_SIZE + 5


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_costs_the_pictures_and_is_counted_but_never_raises(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        failures: list[int] = []
        store = EventStore(folder / "events", on_failure=lambda: failures.append(1))
        store.start()
        noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # ~300 KB as JPEG
        now = time.time()
        store.submit(
            Event("big", "cam", 1, "manipulated", now, "v1", snapshot="snapshot.jpg"), snapshot=noise
        )
        store.submit(Event("small", "cam", 2, "manipulated", now, "v1", status="closed", ended_at=now + 1))
        wait_for(lambda: store.stats.failed + store.stats.written == 2, 10, "both writes done")
        store.close()
        assert store.stats.failed == 1 and failures == [1] and store.stats.written == 1
        assert store.file("big", "snapshot.jpg") is None  # no half-written picture left
        assert not list((folder / "events" / "big").glob(".*"))  # nor temp files
        assert written(store, "small")["status"] == "closed"
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_review_of_an_open_event_is_kept_when_it_closes(store: EventStore) -> None:
    clock = Clock()
    events, _ = recorder(store, clock)
    events.on_result(*frame_with({1: (Verdict.MANIPULATED, 0.9)}))
    (opened,) = store.list()
    assert store.review(opened.event_id, "real", "a poster") is not None
    clock.now += 1
    events.close_all()
    store.close()
    assert store.get(opened.event_id).review["outcome"] == "real"  # type: ignore[union-attr]
    assert written(store, opened.event_id)["review"]["note"] == "a poster"  # type: ignore[index]
    with pytest.raises(ValueError, match="outcome"):
        store.review(opened.event_id, "unsure")
