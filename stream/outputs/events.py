"""A stream's events: a face judged manipulated (or, as a setting, suspect for long enough), from its verdict's
start to its end, kept with an annotated snapshot and the face crops the model judged (`EventStore`).

`EventRecorder` is a `ResultSink` on the stream's worker thread. An event opens when a track's verdict becomes
`manipulated`, or has been `suspect` for `suspect_seconds` (0: never from suspect alone); it follows the track's
smoothed score (peak, mean) and keeps its best-scored crops; it closes when the track turns `real` or is gone.
Opening copies the annotated frame (the snapshot), closing copies the crops: the store's thread encodes and
writes them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from stream.outputs.event_store import Event, EventStore
from stream.pipeline.scoring import Verdict

if TYPE_CHECKING:
    from stream.pipeline.pipeline import FrameResult
    from stream.sources.frames import Frame

MAX_CROPS = 3


@dataclass
class _Following:
    """An open event and what it has gathered so far."""

    event: Event
    scores: list[float] = field(default_factory=list)
    crops: list[tuple[float, np.ndarray]] = field(default_factory=list)
    """(score, crop) of the best-scored classified crops, best first, at most MAX_CROPS."""


def new_event_id(now: float) -> str:
    """Sortable by time and unique: `20261207-153012-3f9a2c`."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:6]}"


class EventRecorder:
    """Opens, follows and closes the events of stream `stream_id` from its processed frames.

    `model_version()` names the model judging now; `on_open(verdict)` runs once per event opened (metrics).
    """

    def __init__(
        self,
        stream_id: str,
        store: EventStore,
        model_version: Callable[[], str],
        suspect_seconds: float = 0.0,
        on_open: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stream_id = stream_id
        self._store = store
        self._model_version = model_version
        self._suspect_seconds = suspect_seconds
        self._on_open = on_open
        self._clock = clock
        self._following: dict[int, _Following] = {}
        self._suspect_since: dict[int, float] = {}

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        now = self._clock()
        present = set()
        for face in result.faces:
            track = face.track_id
            present.add(track)
            following = self._following.get(track)
            if following is None:
                if self._opens(track, face.verdict, now):
                    following = self._open(track, face.verdict, now, frame.image)
                else:
                    continue
            elif face.verdict is Verdict.REAL:
                self._close(track, now)
                continue
            self._follow(following, face.verdict, face.probability, result.crops.get(track))
        for track in set(self._following) - present:
            self._close(track, now)
        for track in set(self._suspect_since) - present:
            del self._suspect_since[track]

    def event_of(self, track: int) -> str | None:
        """The id of the open event of `track`, if it has one (worker thread)."""
        following = self._following.get(track)
        return None if following is None else following.event.event_id

    def close_all(self) -> None:
        """The stream stops: every open event ends now."""
        now = self._clock()
        for track in list(self._following):
            self._close(track, now)

    def _opens(self, track: int, verdict: Verdict, now: float) -> bool:
        if verdict is Verdict.MANIPULATED:
            return True
        if verdict is not Verdict.SUSPECT:
            self._suspect_since.pop(track, None)
            return False
        since = self._suspect_since.setdefault(track, now)
        return self._suspect_seconds > 0 and now - since >= self._suspect_seconds

    def _open(self, track: int, verdict: Verdict, now: float, image: np.ndarray) -> _Following:
        event = Event(
            event_id=new_event_id(now),
            stream=self.stream_id,
            track_id=track,
            verdict=verdict.value,
            started_at=now,
            model_version=self._model_version(),
            snapshot="snapshot.jpg",
        )
        self._store.submit(event, snapshot=image.copy())
        if self._on_open is not None:
            self._on_open(verdict.value)
        following = self._following[track] = _Following(event)
        return following

    @staticmethod
    def _follow(
        following: _Following, verdict: Verdict, score: float | None, crop: np.ndarray | None
    ) -> None:
        if verdict is Verdict.MANIPULATED and following.event.verdict != Verdict.MANIPULATED.value:
            following.event = replace(
                following.event, verdict=verdict.value
            )  # a suspect face turned manipulated
        if score is None:
            return
        following.scores.append(score)
        if crop is not None:
            following.crops.append((score, crop.copy()))
            following.crops.sort(key=lambda item: -item[0])
            del following.crops[MAX_CROPS:]

    def _close(self, track: int, now: float) -> None:
        following = self._following.pop(track)
        scores = following.scores
        event = replace(
            following.event,
            status="closed",
            ended_at=now,
            peak_score=max(scores, default=0.0),
            mean_score=float(np.mean(scores)) if scores else 0.0,
            samples=len(scores),
            crops=tuple(f"crop-{n}.jpg" for n in range(len(following.crops))),
        )
        self._store.submit(event, crops=[crop for _, crop in following.crops])
