"""The HTTP face of the service (aiohttp): the page, the REST API, WebRTC signalling, health and metrics."""

from __future__ import annotations

import hmac
import html
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from models.errors import FakewebError
from stream.live.cameras import CameraConfigError, CameraNameTaken, CameraStorageError
from stream.live.events_api import BadQuery, EventNotFound, EventRoutes
from stream.live.forward import forward
from stream.live.openapi import OPENAPI
from stream.live.request_body import BadRequest, read_json
from stream.live.service import BadOffer, LimitReached, LiveService, NotFound
from stream.live.sharding import Elsewhere

logger = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("service", LiveService)
TOKEN_COOKIE = "fakeweb_token"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/login", "/favicon.ico"})
ICON_MAX_AGE = 7 * 24 * 3600
"""Seconds browsers may cache the icon."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _status_for(exc: FakewebError) -> int:
    if isinstance(exc, LimitReached | CameraStorageError):
        return 503
    if isinstance(exc, NotFound | EventNotFound):
        return 404
    if isinstance(exc, CameraNameTaken):
        return 409
    if isinstance(exc, BadRequest | BadOffer | CameraConfigError | BadQuery):
        return 400
    return 400


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Expected failures become JSON errors with a message; anything else a 500 without internals."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Elsewhere as exc:  # another replica runs the camera: the same request, answered there
        return await forward(request, exc)
    except FakewebError as exc:
        return error(_status_for(exc), str(exc))
    except Exception:  # the server must answer and stay up
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal error")


def token_matches(presented: str, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one.

    Header and form values that are not valid UTF-8 reach us with surrogate escapes; they are compared as the
    bytes that were sent (and never match) instead of failing to encode.
    """
    sent = presented.encode("utf-8", "surrogateescape")
    return bool(sent) and hmac.compare_digest(sent, token.encode("utf-8"))


def auth_middleware(token: str | None) -> Any:
    """Without a token everything is open (the server then binds loopback only); with one, all but health."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path in PUBLIC_PATHS:
            return await handler(request)
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        presented = presented or request.cookies.get(TOKEN_COOKIE, "")
        if token_matches(presented, token):
            return await handler(request)
        if request.path.startswith("/api/"):
            return error(401, "missing or wrong token")
        raise web.HTTPFound("/login")

    return middleware


def parse_offer(data: dict[str, Any]) -> RTCSessionDescription:
    sdp, kind = data.get("sdp"), data.get("type")
    if kind != "offer":
        raise BadOffer("'type' must be 'offer'")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise BadOffer("'sdp' must be an SDP text starting with v=0")
    if "m=video" not in sdp:
        raise BadOffer("the offer has no video section")
    return RTCSessionDescription(sdp=sdp, type="offer")


def _page(name: str) -> str:
    return resources.files("stream.live").joinpath("web").joinpath(name).read_text(encoding="utf-8")


def login_form(status: int = 200, message: str = "") -> web.Response:
    """The sign-in form, with `message` (plain text, never the token sent) above it."""
    text = _page("login.html").replace("<!--message-->", html.escape(message))
    return web.Response(status=status, text=text, content_type="text/html")


def login_refusal(presented: str, token: str | None) -> str | None:
    """Why signing in with `presented` is refused (never quoting it), or None when it is accepted."""
    if not presented:
        return "No token was sent: type the access token."
    if token is None:
        return "This server has no access token: open the page without signing in."
    if not token_matches(presented, token):
        return "Wrong token: check it and try again."
    return None


class Routes:
    """Request handlers; each reads the service from the app."""

    @staticmethod
    def service(request: web.Request) -> LiveService:
        return request.app[SERVICE_KEY]

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=_page("index.html"), content_type="text/html")

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(text=_page("app.js"), content_type="application/javascript")

    async def icon(self, request: web.Request) -> web.Response:
        return web.Response(
            text=_page("favicon.svg"),
            content_type="image/svg+xml",
            headers={"Cache-Control": f"public, max-age={ICON_MAX_AGE}"},
        )

    async def login_page(self, request: web.Request) -> web.Response:
        return login_form()

    async def login(self, request: web.Request) -> web.Response:
        token = self.service(request).config.token
        try:
            form = await request.post()
        except (ValueError, LookupError, AssertionError):  # a broken form body or an unknown charset
            return login_form(400, "The form could not be read (a malformed body or an unknown charset).")
        presented = str(form.get("token", ""))
        refusal = login_refusal(presented, token)
        if refusal is not None:
            return login_form(401, refusal)
        response = web.HTTPFound("/")
        response.set_cookie(TOKEN_COOKIE, presented, httponly=True, samesite="Strict")
        raise response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        service = self.service(request)
        body = {
            "ready": service.ready,
            "model": service.holder.describe(),
            "streams": len(service.streams),
            "replica": service.shard.replica,
            "replicas": service.shard.replicas,
        }
        return web.json_response(body, status=200 if service.ready else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def list_streams(self, request: web.Request) -> web.Response:
        service = self.service(request)
        streams = [s.describe() for s in service.streams.values()]
        return web.json_response({"streams": streams, "elsewhere": service.others()})

    async def add_stream(self, request: web.Request) -> web.Response:
        service = self.service(request)
        data = await read_json(request, service.config.max_offer_bytes)
        name, url = data.get("name"), data.get("url")
        if not isinstance(name, str) or not isinstance(url, str):
            raise CameraConfigError("'name' and 'url' must be strings")
        return web.json_response(await service.add_camera(name, url), status=201)

    async def get_stream(self, request: web.Request) -> web.Response:
        return web.json_response(self.service(request).describe(request.match_info["stream_id"]))

    async def delete_stream(self, request: web.Request) -> web.Response:
        await self.service(request).remove_stream(request.match_info["stream_id"])
        return web.Response(status=204)

    async def webrtc_offer(self, request: web.Request) -> web.Response:
        service = self.service(request)
        offer = parse_offer(await read_json(request, service.config.max_offer_bytes))
        answer = await service.browser_offer(offer)
        return web.json_response({"sdp": answer.sdp, "type": answer.type})

    async def view_stream(self, request: web.Request) -> web.Response:
        service = self.service(request)
        service.stream(request.match_info["stream_id"])  # another replica's camera: forwarded, body unread
        offer = parse_offer(await read_json(request, service.config.max_offer_bytes))
        answer = await service.view_offer(request.match_info["stream_id"], offer)
        return web.json_response({"sdp": answer.sdp, "type": answer.type})


def create_app(service: LiveService, metrics_handler: Handler) -> web.Application:
    """The aiohttp application around a started-on-startup, closed-on-cleanup `LiveService`."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware(service.config.token)],
        client_max_size=service.config.max_offer_bytes,
    )
    app[SERVICE_KEY] = service
    routes = Routes()
    app.router.add_get("/", routes.index)
    app.router.add_get("/app.js", routes.script)
    app.router.add_get("/favicon.ico", routes.icon)
    app.router.add_get("/login", routes.login_page)
    app.router.add_post("/login", routes.login)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/openapi.json", routes.openapi)
    app.router.add_get("/api/streams", routes.list_streams)
    app.router.add_post("/api/streams", routes.add_stream)
    app.router.add_get("/api/streams/{stream_id}", routes.get_stream)
    app.router.add_delete("/api/streams/{stream_id}", routes.delete_stream)
    app.router.add_post("/api/streams/{stream_id}/view", routes.view_stream)
    app.router.add_post("/api/webrtc/offer", routes.webrtc_offer)
    EventRoutes(service.events, on_review=service.metrics.count_review).register(app)

    async def on_startup(app: web.Application) -> None:
        await service.start()

    async def on_cleanup(app: web.Application) -> None:
        await service.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
