"""`fakeweb serve`: load the model (a folder, or an alias of a model store followed for hot reload), start the
service and the web server, and shut everything down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import aioice.ice
from aiohttp import web

from models.package import ModelPackage
from models.store import open_store
from stream.app import create_app
from stream.cameras import CameraList
from stream.config import ServiceConfig
from stream.metrics import Metrics, metrics_handler
from stream.reload import ModelHolder, ModelWatcher, parse_model_ref, verify_candidate
from stream.service import LiveService

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


def use_loopback_ice() -> None:
    """Make aioice offer 127.0.0.1 as its host candidate (for machines whose only interface is loopback)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


async def _refresh_metrics(service: LiveService, metrics: Metrics, period: float = 1.0) -> None:
    """Copy the service's gauges and drop counters into the metrics once a `period`."""
    while True:
        service.refresh_metrics()
        await asyncio.sleep(period)


async def run_service(config: ServiceConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or SIGINT/SIGTERM arrives; then close peers, readers, workers, watcher."""
    if config.loopback_ice:
        use_loopback_ice()
    metrics = Metrics()
    loaded = await asyncio.to_thread(load_model, config, metrics)
    cameras = CameraList(config.cameras_file)
    service = LiveService(config, loaded.holder, metrics, cameras)
    app = create_app(service, metrics_handler(metrics.registry))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    if loaded.watcher is not None:
        loaded.watcher.start()
    refresher = asyncio.ensure_future(_refresh_metrics(service, metrics))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"FakeWeb Live on http://{config.host}:{config.port}/ (model {loaded.holder.version})", flush=True)
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        refresher.cancel()
        if loaded.watcher is not None:
            await asyncio.to_thread(loaded.watcher.stop)
        await runner.cleanup()
