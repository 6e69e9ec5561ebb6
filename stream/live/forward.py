"""Requests for a camera another replica runs, passed on to it (`stream.live.sharding`).

The client asked any replica (a Kubernetes Service picks one): that replica sends the same request, with the
client's credentials, to the camera's replica at its `replica_url` and returns the answer as it came, marked with
`X-Fakeweb-Replica`. A redirect would do for API clients inside the cluster, but browsers cannot reach pod
addresses; through the forward they can watch any camera (the video itself then flows between the browser and the
camera's replica over WebRTC, which needs reachable ICE addresses: docs/kubernetes.md).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from stream.live.sharding import Elsewhere

FORWARDED_HEADER = "X-Fakeweb-Forwarded"
"""Set on forwarded requests: a replica never forwards one again (replicas that disagree on the replica count
would otherwise pass a request around)."""
REPLICA_HEADER = "X-Fakeweb-Replica"
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=30)
"""A WebRTC answer can take a few seconds (ICE gathering)."""
PASSED_ON = ("Authorization", "Content-Type", "Cookie")


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def forward(request: web.Request, elsewhere: Elsewhere) -> web.Response:
    """The answer of the camera's replica to `request`; 502 when it cannot be reached, 409 on a loop."""
    if request.headers.get(FORWARDED_HEADER):
        return error(409, f"{elsewhere} (replicas disagree on who runs it: check their replica settings)")
    headers = {name: request.headers[name] for name in PASSED_ON if name in request.headers}
    headers[FORWARDED_HEADER] = "1"
    body = await request.read()
    try:
        async with (
            aiohttp.ClientSession(timeout=FORWARD_TIMEOUT) as session,
            session.request(
                request.method,
                elsewhere.location + request.path_qs,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as reply,
        ):
            payload = await reply.read()
            answer = web.Response(
                status=reply.status, body=payload, headers={REPLICA_HEADER: str(elsewhere.replica)}
            )
            if reply.content_type:
                answer.content_type = reply.content_type
            return answer
    except (aiohttp.ClientError, TimeoutError) as exc:
        return error(
            502,
            f"replica {elsewhere.replica} ({elsewhere.location}) cannot be reached: {exc or type(exc).__name__}",
        )
