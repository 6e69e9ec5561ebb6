"""The events API: list (filters, pages), one event, its pictures, an operator's review, delete. Behind the token
like all of /api/: these are pictures of people's faces."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from aiohttp import web

from models.errors import FakewebError
from stream.live.request_body import read_json
from stream.outputs.event_store import REVIEW_OUTCOMES, Event, EventStore

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_OFFSET = 10**9
MAX_NOTE = 1000
MAX_REVIEW_BYTES = 4096


class EventNotFound(FakewebError):
    """No such event (or picture), or events are off."""


class BadQuery(FakewebError):
    """A query parameter that cannot be used; refused with 400."""


def event_json(event: Event) -> dict[str, object]:
    """The event as the API shows it: times as UTC ISO 8601, pictures as URLs."""
    data = event.to_json()
    data = {"id": data.pop("event_id"), **data}
    data["started_at"] = iso(event.started_at)
    data["ended_at"] = None if event.ended_at is None else iso(event.ended_at)
    data["snapshot"] = None if event.snapshot is None else f"/api/events/{event.event_id}/{event.snapshot}"
    data["crops"] = [f"/api/events/{event.event_id}/{name}" for name in event.crops]
    if event.review is not None:
        data["review"] = {**event.review, "reviewed_at": iso(event.review["reviewed_at"])}
    return data


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def _time(query: dict[str, str], name: str) -> float | None:
    """`since`/`until`: ISO 8601 with a time zone, or seconds since the epoch."""
    value = query.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadQuery(f"{name}: not a time ({value!r}); give ISO 8601 or seconds since the epoch") from exc
    if parsed.tzinfo is None:
        raise BadQuery(f"{name}: give a time zone ({value!r}), e.g. 2026-12-07T15:00:00+00:00")
    return parsed.timestamp()


def _flag(query: dict[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise BadQuery(f"{name} must be true or false")
    return value == "true"


def _count(query: dict[str, str], name: str, default: int, most: int) -> int:
    try:
        value = int(query.get(name, default))
    except ValueError as exc:
        raise BadQuery(f"{name} must be an integer") from exc
    if not 0 <= value <= most:
        raise BadQuery(f"{name} must be between 0 and {most}")
    return value


class EventRoutes:
    """Handlers over the service's `EventStore` (None: events are off, every route answers 404)."""

    def __init__(self, store: EventStore | None, on_review: Callable[[str], None] | None = None) -> None:
        self._store = store
        self._on_review = on_review

    def store(self) -> EventStore:
        if self._store is None:
            raise EventNotFound("events are off (setting `events`)")
        return self._store

    async def list_events(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        events = self.store().list(
            stream=query.get("stream"),
            since=_time(query, "since"),
            until=_time(query, "until"),
            verdict=query.get("verdict"),
            reviewed=_flag(query, "reviewed"),
        )
        offset = _count(query, "offset", 0, MAX_OFFSET)
        limit = _count(query, "limit", DEFAULT_PAGE, MAX_PAGE)
        page = events[offset : offset + limit]
        return web.json_response({"events": [event_json(event) for event in page], "total": len(events)})

    async def get_event(self, request: web.Request) -> web.Response:
        event = self.store().get(request.match_info["event_id"])
        if event is None:
            raise EventNotFound(f"no event {request.match_info['event_id']}")
        return web.json_response(event_json(event))

    async def picture(self, request: web.Request) -> web.FileResponse:
        path = self.store().file(request.match_info["event_id"], request.match_info["name"])
        if path is None:
            raise EventNotFound(
                f"no picture {request.match_info['name']} in event {request.match_info['event_id']}"
            )
        return web.FileResponse(
            path, headers={"Content-Type": "image/jpeg", "Cache-Control": "private, max-age=3600"}
        )

    async def review_event(self, request: web.Request) -> web.Response:
        """An operator marks the event: {"outcome": "correct" | "real", "note": "..."}."""
        data = await read_json(request, MAX_REVIEW_BYTES)
        outcome, note = data.get("outcome"), data.get("note", "")
        if outcome not in REVIEW_OUTCOMES or not isinstance(note, str) or len(note) > MAX_NOTE:
            raise BadQuery(
                f"give outcome ({' or '.join(REVIEW_OUTCOMES)}) and an optional note under {MAX_NOTE} characters"
            )
        event = self.store().review(request.match_info["event_id"], outcome, note)
        if event is None:
            raise EventNotFound(f"no event {request.match_info['event_id']}")
        if self._on_review is not None:
            self._on_review(outcome)
        return web.json_response(event_json(event))

    async def delete_event(self, request: web.Request) -> web.Response:
        if not self.store().delete(request.match_info["event_id"]):
            raise EventNotFound(f"no event {request.match_info['event_id']}")
        return web.Response(status=204)

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/events", self.list_events)
        app.router.add_get("/api/events/{event_id}", self.get_event)
        app.router.add_delete("/api/events/{event_id}", self.delete_event)
        app.router.add_get("/api/events/{event_id}/{name}", self.picture)
        app.router.add_post("/api/events/{event_id}/review", self.review_event)
