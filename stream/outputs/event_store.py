"""Events on disk: one folder per event under the service's data directory, written atomically off the workers.

    events/<event id>/event.json   what happened (`Event.to_json`), rewritten whole on every change
    events/<event id>/snapshot.jpg the annotated frame when the event opened
    events/<event id>/crop-<n>.jpg the faces the model judged, best first, when the event closed

Every file is written atomically (`stream.runtime.files.write_atomically`), so an event written before a crash
(even SIGKILL) is whole after the restart; events the crash left open are marked `interrupted` when the store
opens. Writes run on the store's own thread behind a bounded queue: a slow or full disk costs events, counted
and logged, never a frame. Retention keeps at most `max_count` events, none older than `max_age_days` and
`max_bytes` in all, deleting the oldest first.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.runtime.files import write_atomically

logger = logging.getLogger(__name__)

EVENT_FILE = "event.json"
SNAPSHOT_FILE = "snapshot.jpg"
JPEG_QUALITY = 85
REVIEW_OUTCOMES = ("correct", "real")
"""An operator's review of an event: the face was manipulated (correct), or it is real (a false alarm)."""
QUEUE_SIZE = 64
"""Writes waiting for the disk; more are dropped (and counted) rather than held in memory."""


@dataclass(frozen=True)
class Event:
    """One manipulated (or long suspect) face on one stream, from its verdict's start to its end.

    Times are UTC seconds since the epoch; scores are the track's smoothed probability.
    """

    event_id: str
    stream: str
    track_id: int
    verdict: str
    started_at: float
    model_version: str
    status: str = "open"
    """open, closed, or interrupted (the service stopped before the event ended)."""
    ended_at: float | None = None
    peak_score: float = 0.0
    mean_score: float = 0.0
    samples: int = 0
    snapshot: str | None = None
    crops: tuple[str, ...] = ()
    review: dict[str, Any] | None = None
    """An operator's verdict on the event: {"outcome": "correct" | "real", "note": str, "reviewed_at": seconds}."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["crops"] = list(self.crops)
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> Event:
        return Event(**{**data, "crops": tuple(data.get("crops", ()))})


def change_message(event: Event, describe: Callable[[Event], Any]) -> str:
    """The notification of an event's change (MQTT and webhook alike): `{"type": "new" | "end", "event": ...}`,
    "new" while it is open; `describe` gives the event's JSON."""
    return json.dumps({"type": "new" if event.status == "open" else "end", "event": describe(event)})


@dataclass(frozen=True)
class Retention:
    max_count: int = 1000
    max_age_days: float = 30.0
    max_bytes: int = 1 << 30


@dataclass
class StoreStats:
    """Written by the store's thread; read by anyone."""

    written: int = 0
    failed: int = 0
    """Writes the disk refused (full, read-only): the event's files are incomplete, the service goes on."""
    dropped: int = 0
    """Writes dropped because the queue was full."""
    pruned: int = 0


@dataclass(frozen=True)
class _Write:
    event: Event
    snapshot: np.ndarray | None = None
    crops: tuple[np.ndarray, ...] = field(default_factory=tuple)


def jpeg(image_rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()


class EventStore:
    """The events of one service: `submit` (any thread, never blocks) writes them; the rest reads them."""

    def __init__(
        self,
        folder: Path,
        retention: Retention | None = None,
        on_failure: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self.folder = folder
        self.read_only = read_only
        """Only reads (an export while the service runs): open events stay open, nothing is pruned."""
        self.retention = retention or Retention()
        self.stats = StoreStats()
        self._on_failure = on_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self._events: dict[str, Event] = {}
        self._queue: queue.Queue[_Write | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        if not read_only:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._load()
        if not read_only:
            self.prune()

    # -- reading -----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        """Read every event; one the last run left open is `interrupted`, ended at its last write."""
        for event_file in self.folder.glob(f"*/{EVENT_FILE}"):
            try:
                event = Event.from_json(json.loads(event_file.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("event %s unreadable, skipped: %s", event_file.parent.name, exc)
                continue
            if event.status == "open" and not self.read_only:
                event = replace(event, status="interrupted", ended_at=event_file.stat().st_mtime)
                self._write_event(event)
            self._events[event.event_id] = event

    def list(
        self,
        stream: str | None = None,
        since: float | None = None,
        until: float | None = None,
        verdict: str | None = None,
        reviewed: bool | None = None,
    ) -> list[Event]:
        """Events matching every filter given, newest first."""
        with self._lock:
            events = list(self._events.values())
        selected = [
            event
            for event in events
            if (stream is None or event.stream == stream)
            and (since is None or event.started_at >= since)
            and (until is None or event.started_at < until)
            and (verdict is None or event.verdict == verdict)
            and (reviewed is None or (event.review is not None) == reviewed)
        ]
        return sorted(selected, key=lambda event: event.started_at, reverse=True)

    def get(self, event_id: str) -> Event | None:
        with self._lock:
            return self._events.get(event_id)

    def file(self, event_id: str, name: str) -> Path | None:
        """One of an event's picture files, None if the event or the file does not exist."""
        event = self.get(event_id)
        if event is None or name not in (event.snapshot, *event.crops):
            return None
        path = self.folder / event_id / name
        return path if path.is_file() else None

    def review(self, event_id: str, outcome: str, note: str = "") -> Event | None:
        """Record an operator's review ("correct": it was manipulated; "real": a false alarm) and write it;
        None if there is no such event. Listeners are not told: the event itself did not change."""
        if outcome not in REVIEW_OUTCOMES:
            raise ValueError(f"review outcome must be one of {', '.join(REVIEW_OUTCOMES)}, got {outcome!r}")
        with self._lock:
            event = self._events.get(event_id)
            if event is None:
                return None
            event = replace(event, review={"outcome": outcome, "note": note, "reviewed_at": self._clock()})
            self._events[event_id] = event
        self._enqueue(_Write(event))
        return event

    def delete(self, event_id: str) -> bool:
        with self._lock:
            if self._events.pop(event_id, None) is None:
                return False
        shutil.rmtree(self.folder / event_id, ignore_errors=True)
        return True

    # -- writing -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """`listener(event)` runs on the submitting thread for every event submitted; it must not block."""
        self._listeners.append(listener)

    def submit(
        self, event: Event, snapshot: np.ndarray | None = None, crops: Iterable[np.ndarray] = ()
    ) -> None:
        """Any thread, never blocks: save `event` (with its snapshot when it opens, its crops when it closes).
        The event is listed at once; its files follow. A review given meanwhile (an open event) is kept."""
        with self._lock:
            known = self._events.get(event.event_id)
            if known is not None and known.review is not None and event.review is None:
                event = replace(event, review=known.review)
            self._events[event.event_id] = event
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener failed on %s", event.event_id)
        self._enqueue(_Write(event, snapshot, tuple(crops)))

    def _enqueue(self, write: _Write) -> None:
        """Hand `write` to the writer thread, or drop it (counted, logged) when the writer is behind."""
        try:
            self._queue.put_nowait(write)
        except queue.Full:
            self.stats.dropped += 1
            if self._on_failure is not None:
                self._on_failure()
            logger.warning(
                "event %s not written: the event writer is behind (%d dropped)",
                write.event.event_id,
                self.stats.dropped,
            )

    def _run(self) -> None:
        while True:
            write = self._queue.get()
            if write is None:
                return
            try:
                self._write(write)
            except OSError as exc:  # a full or read-only disk: this event's files, never the service
                self.stats.failed += 1
                logger.warning(
                    "event %s not fully written (%d failures): %s",
                    write.event.event_id,
                    self.stats.failed,
                    exc,
                )
                if self._on_failure is not None:
                    self._on_failure()
            else:
                self.stats.written += 1
            if write.event.status != "open":
                self.prune()

    def _write(self, write: _Write) -> None:
        folder = self.folder / write.event.event_id
        folder.mkdir(exist_ok=True)
        event = write.event
        if write.snapshot is not None:
            write_atomically(folder / SNAPSHOT_FILE, jpeg(write.snapshot))
        for name, crop in zip(event.crops, write.crops, strict=False):
            write_atomically(folder / name, jpeg(crop))
        self._write_event(event)

    def _write_event(self, event: Event) -> None:
        payload = (json.dumps(event.to_json(), indent=2) + "\n").encode()
        write_atomically(self.folder / event.event_id / EVENT_FILE, payload)

    # -- retention ---------------------------------------------------------------------------------------------
    def prune(self) -> None:
        """Delete the oldest closed events beyond the retention limits (open ones stay)."""
        retention = self.retention
        done = [event for event in self.list() if event.status != "open"]  # newest first
        oldest_allowed = self._clock() - retention.max_age_days * 86400
        total = 0
        for index, event in enumerate(done):
            total += _size(self.folder / event.event_id)
            if (
                index >= retention.max_count
                or event.started_at < oldest_allowed
                or total > retention.max_bytes
            ):
                self.delete(event.event_id)
                self.stats.pruned += 1


def _size(folder: Path) -> int:
    try:
        return sum(entry.stat().st_size for entry in folder.iterdir())
    except OSError:
        return 0
