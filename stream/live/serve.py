"""`fakeweb serve`: load the model (a folder, or an alias of a model store followed for hot reload), start the
service and the web server, and shut everything down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import OpenSSL.SSL
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from models.package import ModelPackage
from models.store import open_store
from stream.config import ServiceConfig, make_data_dir
from stream.live.app import create_app
from stream.live.cameras import CameraList
from stream.live.reload import ModelHolder, ModelWatcher, parse_model_ref, verify_candidate
from stream.live.service import LiveService
from stream.outputs.metrics import Metrics, metrics_handler

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    holder: ModelHolder
    watcher: ModelWatcher | None


def load_model(config: ServiceConfig, metrics: Metrics) -> LoadedModel:
    """The serving model: verified before the server starts; a store alias also gets a watcher."""
    reference = parse_model_ref(config.model)
    if isinstance(reference, Path):
        classifier = verify_candidate(
            ModelPackage.load(reference), config.device, config.backend, config.threads
        )
        holder, watcher = ModelHolder(classifier), None
    else:
        watcher = ModelWatcher(
            open_store(reference.store_url),
            reference.alias,
            config.model_cache_dir,
            device=config.device,
            backend=config.backend,
            threads=config.threads,
            interval=config.model_poll_seconds,
            on_swap=lambda version: _on_swap(metrics, watcher),
            on_reject=lambda version, reason: metrics.count_model_reload("rejected"),
        )
        holder = watcher.load_initial()
    current = holder.current
    metrics.set_model(current.version, current.backend, current.device)
    metrics.set_model_loaded(True)
    return LoadedModel(holder, watcher)


def _on_swap(metrics: Metrics, watcher: ModelWatcher | None) -> None:
    metrics.count_model_reload("swapped")
    if watcher is not None:
        current = watcher.holder.current
        metrics.set_model(current.version, current.backend, current.device)


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a client's fault, answered 400) as an ERROR with a traceback:
    a client could fill the log with them. Make each a one-line DEBUG record, as aiohttp does for non-HTTP
    data."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        reason = " ".join(str(error).split())[:200]
        record.msg, record.args = f"{record.getMessage()}: malformed request ({reason})", ()
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_malformed_requests() -> None:
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequestFilter) for existing in server_logger.filters):
        server_logger.addFilter(MalformedRequestFilter())


PEER_SETUP_TASK = "RTCPeerConnection.__connect"
SCTP_TASK_PREFIX = "RTCSctpTransport."
SCTP_SHUTDOWN_ERRORS = (ConnectionError, OpenSSL.SSL.Error)


def quiet_aiortc_task_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log as one DEBUG line, not as an ERROR with a traceback, what aiortc's own tasks raise when a peer goes:
    - a connection setup task failing on a malformed offer (already refused with 400 and counted as
      `bad_offer`);
    - an SCTP transport task still sending while the DTLS transport beneath it shuts down (a known aiortc race,
      aiortc/aiortc#1040: "Cannot send encrypted data, not connected" or OpenSSL's "protocol is shutdown").
    Every other unhandled error keeps the default handling."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        future = context.get("future")
        coroutine = future.get_coro() if isinstance(future, asyncio.Task) else None
        task = getattr(coroutine, "__qualname__", "")
        error = context.get("exception")
        if task == PEER_SETUP_TASK and isinstance(error, Exception):
            logger.debug("a WebRTC connection setup failed: %s: %s", type(error).__name__, error)
        elif task.startswith(SCTP_TASK_PREFIX) and isinstance(error, SCTP_SHUTDOWN_ERRORS):
            logger.debug("a closing peer's data channel stopped sending: %s: %s", type(error).__name__, error)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def use_loopback_ice() -> None:
    """Make aioice offer 127.0.0.1 as its host candidate (for machines whose only interface is loopback)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


async def _refresh_metrics(service: LiveService, metrics: Metrics, period: float = 1.0) -> None:
    """Copy the service's gauges and drop counters into the metrics once a `period`."""
    while True:
        service.refresh_metrics()
        await asyncio.sleep(period)


@dataclass
class RunningService:
    """What `serving` started: the service (streams, peers) and its metrics, reachable at `url`."""

    service: LiveService
    metrics: Metrics
    url: str


@asynccontextmanager
async def serving(config: ServiceConfig) -> AsyncIterator[RunningService]:
    """Create the data folder, load the model, start the service, the web server and the model watcher; on exit
    stop all of them.

    Shutdown order: the model watcher, then the web server (no new requests), then the service (peers closed,
    camera readers and stream workers joined, the batcher stopped last, once no worker can call it).
    """
    if config.loopback_ice:
        use_loopback_ice()
    quiet_malformed_requests()
    quiet_aiortc_task_errors(asyncio.get_running_loop())
    make_data_dir(config.data_dir)  # before a store model's download creates it with the default mode
    metrics = Metrics()
    loaded = await asyncio.to_thread(load_model, config, metrics)
    cameras = CameraList(config.cameras_file)
    service = LiveService(config, loaded.holder, metrics, cameras)
    app = create_app(service, metrics_handler(metrics.registry))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    refresher: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        if loaded.watcher is not None:
            loaded.watcher.start()
        refresher = asyncio.ensure_future(_refresh_metrics(service, metrics))
        yield RunningService(service, metrics, f"http://{config.host}:{config.port}")
    finally:
        logger.info("shutting down")
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        if loaded.watcher is not None:
            await asyncio.to_thread(loaded.watcher.stop)
        await runner.cleanup()
        logger.info("stopped")


SERVICE_LOGGERS = ("stream", "models")


def show_service_events() -> None:
    """Log the service's own INFO lines (a camera live again, a model swapped, the store reachable again).

    The command line logs warnings only; an unattended service must also say when a failure is over.
    Third-party libraries stay at their level; `--verbose` (DEBUG) is left alone.
    """
    for name in SERVICE_LOGGERS:
        service_logger = logging.getLogger(name)
        if service_logger.getEffectiveLevel() > logging.INFO:
            service_logger.setLevel(logging.INFO)


async def run_service(config: ServiceConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or SIGINT/SIGTERM arrives; then close peers, readers, workers, watcher."""
    show_service_events()
    stop = stop or asyncio.Event()
    async with serving(config) as running:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            version = running.service.holder.version
            print(f"FakeWeb Live on {running.url}/ (model {version})", flush=True)
            await stop.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
