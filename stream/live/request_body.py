"""Request bodies the API accepts: JSON objects up to a size, refused with a clear 400 otherwise."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from models.errors import FakewebError


class BadRequest(FakewebError):
    """A request body that cannot be read (too large, not a JSON object); refused with 400."""


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, refusing bodies over `max_bytes` and anything but an object."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadRequest(f"request body too large ({request.content_length} bytes, limit {max_bytes})")
    body = await request.content.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise BadRequest(f"request body too large (limit {max_bytes} bytes)")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # also too deep nesting, integers over 4300 digits
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise BadRequest(f"body is not valid JSON ({reason})") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data
