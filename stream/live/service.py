"""The live service: streams (browser webcams and RTSP cameras), their peers and viewers, limits, the camera list
and the services all streams share.

The event loop does I/O only. Each stream's frames follow its `StreamRoute` (`stream.live.route`: source -> worker ->
pipeline -> outputs); classification of all streams goes through one `ClassifierBatcher`; annotated frames are
encoded once per stream and every viewer's `ViewerTrack` hands the same VP8 packets to its sender.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    RTCTransportStats,
)
from aiortc.mediastreams import MediaStreamTrack

from models.errors import FakewebError
from models.manifest import Manifest
from stream.config import ServiceConfig
from stream.live.batcher import ClassifierBatcher
from stream.live.cameras import Camera, CameraConfigError, CameraList
from stream.live.events_api import event_json
from stream.live.reload import ModelHolder
from stream.live.route import StreamRoute
from stream.live.sharding import Elsewhere, Shard
from stream.live.worker import FairGate, StreamWorker
from stream.outputs.encoder import EncoderSettings
from stream.outputs.event_store import EventStore
from stream.outputs.events import EventRecorder
from stream.outputs.feed import AnnotatedFeed
from stream.outputs.metrics import Metrics, StreamLabels
from stream.outputs.mqtt import MqttNotifier
from stream.outputs.verdicts import face_json
from stream.outputs.viewer import ViewerTrack, offers_vp8, send_to
from stream.outputs.webhook import WebhookNotifier
from stream.pipeline.pipeline import PipelineConfig, StreamPipeline
from stream.pipeline.scoring import ScoringConfig
from stream.runtime.affinity import CpuSplit, RolePinning
from stream.runtime.cpu_split import CpuSplitter, RoleLoad, start_pinning, stop_pinning
from stream.sources.rtsp import CameraState, RtspCamera, RtspConfig

logger = logging.getLogger(__name__)

StreamKind = Literal["browser", "camera"]


class LimitReached(FakewebError):
    """A configured maximum (streams, viewers) is reached; the request is refused with 503."""


class NotFound(FakewebError):
    """No stream with that id."""


class BadOffer(FakewebError):
    """A WebRTC offer that cannot be used; the request is refused with 400."""


@dataclass
class LiveStream:
    """One stream: its route and everything the service attaches to it."""

    stream_id: str
    kind: StreamKind
    name: str
    label: str
    route: StreamRoute
    camera: Camera | None = None
    peers: set[RTCPeerConnection] = field(default_factory=set)
    """Peer connections receiving this stream's annotated video (its own browser's, and viewers')."""
    reported: Counter[str] = field(default_factory=Counter)
    """Counts already copied into the metrics (drops, reconnects, decode errors)."""

    @property
    def worker(self) -> StreamWorker:
        return self.route.worker

    @property
    def feed(self) -> AnnotatedFeed:
        return self.route.feed

    @property
    def reader(self) -> RtspCamera | None:
        return self.route.reader

    @property
    def status(self) -> str:
        if self.reader is not None:
            return self.reader.state.value
        return "live" if self.worker.stats.processed else "connecting"

    @property
    def down(self) -> bool:
        """A camera not delivering frames now: its last fps and faces are out of date."""
        return self.reader is not None and self.reader.state is not CameraState.LIVE

    def describe(self) -> dict[str, Any]:
        """The stream as the API shows it; a camera that is down shows 0 fps and no faces."""
        stats = self.worker.stats
        down = self.down
        return {
            "id": self.stream_id,
            "kind": self.kind,
            "name": self.name,
            "url": self.camera.public_url if self.camera else None,
            "status": self.status,
            "fps": 0.0 if down else round(stats.fps, 1),
            "frames_received": stats.received,
            "frames_processed": stats.processed,
            "frames_dropped": self.worker.dropped,
            "viewers": len(self.peers),
            "faces": [] if down else [face_json(face) for face in stats.faces],
            **self._reader_health(),
            "rtsp_out": None if self.route.publisher is None else self.route.publisher.describe(),
        }

    def _reader_health(self) -> dict[str, Any]:
        """The camera's last failure and when it tries again (as seconds from now and as UTC time)."""
        stats = self.reader.stats if self.reader is not None else None
        retry_in = stats.retry_in if stats is not None else None
        retry_at = None if retry_in is None else datetime.now(timezone.utc) + timedelta(seconds=retry_in)
        return {
            "last_error": stats.last_error if stats is not None else None,
            "retry_in_seconds": None if retry_in is None else round(retry_in, 1),
            "next_retry_at": None if retry_at is None else retry_at.isoformat(timespec="milliseconds"),
        }


PEER_CLOSE_TIMEOUT = 5.0
PEER_SILENCE_SECONDS = 15
"""A connected peer that sends nothing for this many checks in a row (one a second) is closed: a crashed or
killed browser, or a lost network. Live browsers send RTCP at least every 1.5 s even when they only receive;
without this check only ICE consent expiry would notice, after about 30 s."""


async def _close_quietly(peer: RTCPeerConnection) -> None:
    """Close a peer, whatever state a malformed offer left it in.

    aiortc can fail half-way through `close()` on a peer whose description it half applied (and a second
    `close()` would then wait forever); stop its transports one by one instead, so no socket is left open.
    """
    try:
        await asyncio.wait_for(peer.close(), PEER_CLOSE_TIMEOUT)
        return
    except Exception as exc:  # noqa: BLE001 - see above
        logger.debug("closing a peer failed (%s: %s); stopping its transports", type(exc).__name__, exc)
    transports: list[Any] = []
    for transceiver in peer.getTransceivers():
        dtls = transceiver.receiver.transport
        transports += [transceiver, dtls, getattr(dtls, "transport", None)]
    sctp = peer.sctp
    if sctp is not None:
        transports += [sctp, sctp.transport, getattr(sctp.transport, "transport", None)]
    for transport in transports:
        if transport is None:
            continue
        try:
            await asyncio.wait_for(transport.stop(), PEER_CLOSE_TIMEOUT)
        except Exception:  # noqa: BLE001 - best effort, one by one
            continue


def _pin_by_role(mode: str, pinning: RolePinning, on_change: Callable[[bool], None]) -> CpuSplitter | None:
    """Start pinning the service's threads (`pinning`) by role over the CPUs this process may use
    (`pin_threads`): logs the split, reports the state to `on_change` now and at each switch, and returns the
    `auto` mode's splitter."""
    cpus = frozenset(os.sched_getaffinity(0))
    split = CpuSplit.of(cpus)
    if mode == "off" or split is None:
        if mode == "on":
            logger.warning("pin_threads needs two or more CPUs; threads are not pinned")
        on_change(False)
        return None
    logger.info(
        "pinning workers to CPUs %s, decoders and encoders to CPUs %s%s",
        sorted(split.model),
        sorted(split.codec),
        " while the load allows" if mode == "auto" else "",
    )
    on_change(True)

    def report(pinned: bool, load: RoleLoad) -> None:
        if pinned:
            logger.info("threads pinned by role again (%s)", load)
        else:
            logger.info("a role starves while the other has room: threads share every CPU (%s)", load)
        on_change(pinned)

    return start_pinning(mode, cpus, pinning, report)


def ice_configuration(config: ServiceConfig) -> RTCConfiguration | None:
    """The ICE servers of the service's peers: `ice_servers` (TURN ones with `ice_username`/`ice_credential`);
    none at all with `loopback_ice` (on a loopback-only host no STUN server is reachable: aiortc's default, a
    public one, would only delay the answer and send queries off the machine); else aiortc's default."""
    if config.loopback_ice:
        return RTCConfiguration(iceServers=[])
    if not config.ice_servers:
        return None
    servers = []
    for url in config.ice_servers:
        if url.startswith(("turn:", "turns:")):
            servers.append(RTCIceServer(url, config.ice_username or None, config.ice_credential or None))
        else:
            servers.append(RTCIceServer(url))
    return RTCConfiguration(iceServers=servers)


class LiveService:
    """Owns streams, peers and the shared batcher; created once by the app and closed on shutdown."""

    def __init__(
        self, config: ServiceConfig, holder: ModelHolder, metrics: Metrics, cameras: CameraList
    ) -> None:
        self.config = config
        self.holder = holder
        self.metrics = metrics
        self.cameras = cameras
        self.labels = StreamLabels()
        self.pinning = RolePinning()
        """Where the service's threads run by role (`pin_threads`); unpinned until `start`."""
        self.batcher = ClassifierBatcher(
            holder,
            max_batch=config.batch_max_size,
            max_wait=config.batch_max_wait_ms / 1000.0,
            on_batch=metrics.observe_batch,
            pinning=self.pinning,
        )
        self.gate = FairGate(config.max_parallel_frames or len(os.sched_getaffinity(0)))
        """Permits to process a frame, shared by every stream's worker (see `stream.worker`)."""
        self.streams: dict[str, LiveStream] = {}
        self.peers: set[RTCPeerConnection] = set()
        self.events: EventStore | None = None
        """The events of every stream (`stream.outputs.events`); None with `events` off."""
        self.notifier: MqttNotifier | None = None
        """Event notifications over MQTT (`mqtt_url`); None when off."""
        self.webhook: WebhookNotifier | None = None
        """Event notifications as HTTP POSTs (`webhook_url`); None when off."""
        if config.events:
            self.events = EventStore(
                config.events_dir, config.event_retention(), on_failure=metrics.count_event_write_failure
            )
            mqtt_settings = config.mqtt()
            if mqtt_settings is not None:
                self.notifier = MqttNotifier(mqtt_settings, describe=event_json)
                self.events.subscribe(self.notifier.on_event)
            if config.webhook_url:
                self.webhook = WebhookNotifier(config.webhook_url, describe=event_json)
                self.events.subscribe(self.webhook.on_event)
        self.shard = Shard(config.replica_id, config.replicas, config.replica_url)
        """Which cameras of the (shared) camera list this process runs (`stream.live.sharding`)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._removals: set[asyncio.Future[None]] = set()
        self._closing: dict[RTCPeerConnection, asyncio.Future[None]] = {}  # closes in progress
        self._closed: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()
        self._adding = 0
        """Cameras being added (their file write in progress): they hold a stream slot already."""
        self._splitter: CpuSplitter | None = None
        self._scoring: tuple[Manifest, ScoringConfig] | None = None
        """The last scoring settings built and the manifest they were built for."""

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._splitter = _pin_by_role(self.config.pin_threads, self.pinning, self.metrics.set_threads_pinned)
        self.batcher.start()
        if self.events is not None:
            self.events.start()
        if self.notifier is not None:
            self.notifier.start()
        if self.webhook is not None:
            self.webhook.start()
        cameras = [camera for camera in self.cameras.all() if self.shard.owns(camera.camera_id)]
        if len(cameras) > self.config.max_streams:
            logger.warning(
                "%d cameras are configured but max_streams is %d: starting all of them; new streams are "
                "refused until there are fewer",
                len(cameras),
                self.config.max_streams,
            )
        for camera in cameras:
            self._start_camera(camera, configured=True)
        self._spawn(self._follow_camera_list())

    async def _follow_camera_list(self) -> None:
        """Every `camera_poll_seconds`, re-read the camera list: start this replica's cameras that appeared in
        it (added through another replica, or by an operator), stop the ones that left it."""
        while True:
            await asyncio.sleep(self.config.camera_poll_seconds)
            try:
                await asyncio.to_thread(self.cameras.reload)
            except CameraConfigError as exc:
                logger.warning("camera list not re-read, keeping the cameras running: %s", exc)
                continue
            # Every time, not only when this re-read saw a change: a request may have re-read it meanwhile.
            await self._reconcile_cameras()

    async def _reconcile_cameras(self) -> None:
        listed = {
            camera.camera_id: camera for camera in self.cameras.all() if self.shard.owns(camera.camera_id)
        }
        running = {sid for sid, stream in self.streams.items() if stream.camera is not None}
        for camera_id in running - set(listed):
            logger.info("camera %s left the camera list: stopping it", camera_id)
            await self._remove_stream(camera_id)
        for camera_id in set(listed) - running:
            logger.info("camera %s joined the camera list: starting it", camera_id)
            self._start_camera(listed[camera_id], configured=True)

    def _elsewhere(self, stream_id: str) -> Elsewhere | None:
        """Where a camera of the shared list that another replica runs is reached; None for any other id.
        An id this replica does not know yet re-reads the list first: another replica may have just added it."""
        if stream_id in self.streams or self.shard.replicas == 1:
            return None
        if self.cameras.get(stream_id) is None:
            try:
                self.cameras.reload()  # a stat, and a small read when the file changed
            except CameraConfigError:
                return None
        if self.cameras.get(stream_id) is None or self.shard.owns(stream_id):
            return None
        replica = self.shard.owner(stream_id)
        return Elsewhere(stream_id, replica, self.shard.url_of(replica))

    def others(self) -> list[dict[str, Any]]:
        """The cameras of the shared list that other replicas run: id, name, replica and its stream's URL."""
        others = []
        for camera in self.cameras.all():
            replica = self.shard.owner(camera.camera_id)
            if not self.shard.owns(camera.camera_id):
                url = f"{self.shard.url_of(replica)}/api/streams/{camera.camera_id}"
                others.append({"id": camera.camera_id, "name": camera.name, "replica": replica, "url": url})
        return others

    async def close(self) -> None:
        """Close every peer, stop readers and workers, then the batcher: nothing is left running.

        Streams stop in parallel (a camera blocked on a silent server takes a few seconds to give up), and
        removals that closing peers started elsewhere are awaited too, so the batcher stops only once no
        worker can call it.
        """
        await asyncio.gather(*(peer.close() for peer in list(self.peers)), return_exceptions=True)
        self.peers.clear()
        await asyncio.gather(
            *(self._remove_stream(sid) for sid in list(self.streams)), return_exceptions=True
        )
        await asyncio.gather(*list(self._removals), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.batcher.stop()
        if self.events is not None:
            await asyncio.to_thread(self.events.close)  # what the streams' last events queued is written
        if self.notifier is not None:
            await asyncio.to_thread(self.notifier.close)
        if self.webhook is not None:
            await asyncio.to_thread(self.webhook.close)
        stop_pinning(self._splitter, self.pinning)
        self.metrics.set_threads_pinned(False)

    @property
    def ready(self) -> bool:
        return self.holder.current is not None and self.batcher.running

    # -- streams -----------------------------------------------------------------------------------------------
    def _pipeline_config(self, kind: StreamKind = "camera") -> PipelineConfig:
        """A new stream's settings; the detector range follows its kind when `detector_range` is `auto`."""
        crop = self.holder.current.package.manifest.crop
        return PipelineConfig.from_settings(self.config, crop, self._scoring_config(), kind)

    def _scoring_config(self) -> ScoringConfig:
        """The scoring settings for the model in use: its manifest's threshold and the service's settings.

        Every stream's pipeline follows this on every frame, so a hot-swapped model with a new threshold takes
        effect in running streams too. One object per manifest, built once (any thread may call this).
        """
        manifest = self.holder.current.package.manifest
        cached = self._scoring
        if cached is None or cached[0] is not manifest:
            cached = (manifest, self.config.scoring(manifest.threshold))
            self._scoring = cached
        return cached[1]

    def _check_stream_limit(self) -> None:
        if len(self.streams) + self._adding >= self.config.max_streams:
            self.metrics.count_rejected("max_streams")
            raise LimitReached(f"stream limit reached ({self.config.max_streams} streams)")

    def _create_stream(
        self, stream_id: str, kind: StreamKind, name: str, camera: Camera | None, limit: bool = True
    ) -> LiveStream:
        """Create and start a stream's route; `limit` False for cameras of the saved list and reserved slots."""
        assert self._loop is not None, "service not started"
        if limit:
            self._check_stream_limit()
        label = self.labels.label_for(stream_id, kind)
        pipeline = StreamPipeline(
            stream_id, self._pipeline_config(kind), self.batcher.classify, scoring=self._scoring_config
        )
        encoder = EncoderSettings(bitrate=self.config.video_bitrate_kbps * 1000)
        events = None
        if self.events is not None:
            events = EventRecorder(
                stream_id,
                self.events,
                lambda: self.holder.current.package.manifest.version,
                self.config.events_suspect_seconds,
                on_open=lambda verdict: self.metrics.count_event(label, verdict),
            )
        route = StreamRoute(
            pipeline,
            label,
            self._loop,
            self.metrics,
            encoder,
            self.gate,
            self.pinning,
            self.config.rtsp_out(),
            events,
        )
        stream = LiveStream(stream_id, kind, name, label, route, camera)
        self.streams[stream_id] = stream
        route.start()
        return stream

    async def _remove_stream(self, stream_id: str) -> None:
        """Forget the stream at once and stop it; `close` awaits removals still running when it is called."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        removal = asyncio.ensure_future(self._stop_stream(stream))
        self._removals.add(removal)
        removal.add_done_callback(self._removals.discard)
        await asyncio.shield(removal)

    async def _stop_stream(self, stream: LiveStream) -> None:
        """Stop the route (source, worker, the video of every peer watching), close the peers' connections."""
        await stream.route.stop()
        await asyncio.gather(*(self._close_peer(peer) for peer in list(stream.peers)), return_exceptions=True)
        released = self.labels.release(stream.stream_id)
        if released is not None:
            self.metrics.forget_stream(released)

    # -- cameras -----------------------------------------------------------------------------------------------
    def _start_camera(self, camera: Camera, configured: bool = False) -> LiveStream:
        """Start a camera's stream; a `configured` camera (saved, or its slot reserved) skips the limit. A camera
        already running (the list's re-read started it while its addition was being saved) stays as it is."""
        running = self.streams.get(camera.camera_id)
        if running is not None:
            return running
        stream = self._create_stream(camera.camera_id, "camera", camera.name, camera, limit=not configured)
        config = self.config
        stream.route.read_camera(
            camera.url,
            RtspConfig(
                stall_timeout=config.rtsp_stall_seconds,
                backoff_schedule=config.rtsp_backoff_seconds,
                max_width=config.max_width,
                max_height=config.max_height,
            ),
        )
        return stream

    def add_fed_stream(self, stream_id: str, name: str) -> LiveStream:
        """A stream processed as a camera's, whose frames the caller offers (`StreamRoute.offer`): the live
        benchmark's feeders. It counts against `max_streams` and is removed like any other."""
        return self._create_stream(stream_id, "camera", name, None)

    async def add_camera(self, name: str, url: str) -> dict[str, Any]:
        """Save a new camera (rtsp:// or rtsps://, a name no other camera has), then start it. Its stream slot
        is reserved before the file is written, so concurrent additions never save more cameras than
        `max_streams` allows."""
        camera = Camera.new(name, url)
        self._check_stream_limit()
        self._adding += 1
        try:
            await asyncio.to_thread(self.cameras.add, camera)
        finally:
            self._adding -= 1
        if not self.shard.owns(camera.camera_id):  # saved: its replica starts it at its next re-read
            replica = self.shard.owner(camera.camera_id)
            return {"id": camera.camera_id, "name": camera.name, "kind": "camera", "replica": replica}
        return self._start_camera(camera, configured=True).describe()

    async def remove_stream(self, stream_id: str) -> None:
        stream = self.streams.get(stream_id)
        if stream is None and self._elsewhere(stream_id) is not None:
            # Off the shared list: the replica that runs it stops it at its next re-read.
            await asyncio.to_thread(self.cameras.remove, stream_id)
            return
        if stream is None:
            raise NotFound(f"no stream {stream_id}")
        if stream.camera is not None:
            await asyncio.to_thread(self.cameras.remove, stream_id)
        await self._remove_stream(stream_id)

    def describe(self, stream_id: str) -> dict[str, Any]:
        """The stream as the API shows it; Elsewhere for a camera another replica runs."""
        return self.stream(stream_id).describe()

    def stream(self, stream_id: str) -> LiveStream:
        """The running stream `stream_id`; Elsewhere for a camera another replica runs, else NotFound."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        elsewhere = self._elsewhere(stream_id)
        if elsewhere is not None:
            raise elsewhere
        raise NotFound(f"no stream {stream_id}")

    def refresh_metrics(self) -> None:
        """Copy gauges (queues, states, viewers) and new drops, reconnects and decode errors into the metrics."""
        metrics = self.metrics
        streams = list(self.streams.values())
        metrics.set_queue_depth("detect", sum(stream.worker.queue_depth for stream in streams))
        metrics.set_stream_states(Counter(stream.status for stream in streams))
        metrics.set_viewers(len(self.peers))
        for stream in streams:
            worker = stream.worker
            totals = {"dropped_stale": worker.dropped_stale, "dropped_overload": worker.dropped_overload}
            if stream.reader is not None:
                stats = stream.reader.stats
                totals.update(reconnects=stats.reconnects, decode_error=stats.decode_errors)
            for name, total in totals.items():
                new = total - stream.reported[name]
                if new <= 0:
                    continue
                stream.reported[name] = total
                if name == "reconnects":
                    for _ in range(new):
                        metrics.count_reconnect(stream.label)
                else:
                    metrics.count_frame(stream.label, name, new)
        connected: Counter[str] = Counter()
        for stream in streams:
            publisher = stream.route.publisher
            if publisher is None:
                continue
            for name, total in publisher.totals().items():
                new = total - stream.reported[f"rtsp_out_{name}"]
                if new > 0:
                    stream.reported[f"rtsp_out_{name}"] = total
                    metrics.count_rtsp_out(stream.label, name, new)
            connected[stream.label] += publisher.stats.connected
        metrics.set_rtsp_out_connected(connected)

    # -- WebRTC ------------------------------------------------------------------------------------------------
    def _new_peer(self) -> RTCPeerConnection:
        if len(self.peers) >= self.config.max_viewers:
            self.metrics.count_rejected("max_viewers")
            raise LimitReached(f"viewer limit reached ({self.config.max_viewers} peer connections)")
        peer = RTCPeerConnection(ice_configuration(self.config))
        self.peers.add(peer)
        self._spawn(self._expire_silent(weakref.ref(peer)))
        return peer

    async def _answer(self, peer: RTCPeerConnection, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the offer and answer it; a peer that has not connected `connect_timeout_seconds` later is
        closed, so offers that are never followed by a connection do not hold a viewer or stream slot."""
        if not offers_vp8(offer.sdp):
            await self._close_peer(peer)
            self.metrics.count_rejected("bad_offer")
            raise BadOffer("cannot use this offer: its video has no VP8, the only codec the service sends")
        try:
            await peer.setRemoteDescription(offer)
            await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:  # aiortc raises many kinds on a malformed offer
            await self._close_peer(peer)
            self.metrics.count_rejected("bad_offer")
            # aiortc's ValueErrors describe the offer; anything else is its internals tripping over it.
            reason = " ".join(str(exc).split())[:200] if isinstance(exc, ValueError) else ""
            logger.debug("refused an offer: %s: %s", type(exc).__name__, exc)
            raise BadOffer(f"cannot use this offer: {reason or 'malformed session description'}") from exc
        self._spawn(self._expire_unconnected(weakref.ref(peer)))
        return peer.localDescription

    async def _expire_unconnected(self, reference: weakref.ref[RTCPeerConnection]) -> None:
        """Close the peer if it has not connected in time (held weakly: a peer closed meanwhile is freed)."""
        await asyncio.sleep(self.config.connect_timeout_seconds)
        peer = reference()
        if peer is not None and peer in self.peers and peer.connectionState != "connected":
            logger.info(
                "closing a peer that did not connect within %g s (state %s)",
                self.config.connect_timeout_seconds,
                peer.connectionState,
            )
            self.metrics.count_rejected("connect_timeout")
            await self._close_peer(peer)

    async def _expire_silent(self, reference: weakref.ref[RTCPeerConnection]) -> None:
        """Close the peer once it has been connected and silent for `PEER_SILENCE_SECONDS` checks in a row
        (held weakly between checks: a peer closed meanwhile is freed).

        Checks count, not the time between them: a stalled event loop delays them instead of counting its own
        stall as silence.
        """
        last, silent = -1, 0
        while silent < PEER_SILENCE_SECONDS:
            await asyncio.sleep(1.0)
            received = await self._packets_received(reference)
            if received is None:
                return
            silent = silent + 1 if received >= 0 and received == last else 0
            last = received
        peer = reference()
        if peer is not None:
            logger.info("closing a peer silent for %d s (its browser gone or its network lost)", silent)
            await self._close_peer(peer)

    async def _packets_received(self, reference: weakref.ref[RTCPeerConnection]) -> int | None:
        """Packets (media, RTCP, DTLS) the peer has received so far; -1 while it is not connected, None once it
        is closed."""
        peer = reference()
        if peer is None or peer not in self.peers:
            return None
        if peer.connectionState != "connected":
            return -1
        report = await peer.getStats()
        return sum(stats.packetsReceived for stats in report.values() if isinstance(stats, RTCTransportStats))

    async def _close_peer(self, peer: RTCPeerConnection) -> None:
        """Forget the peer and close it, once: later calls wait for the first close to end."""
        self.peers.discard(peer)
        for stream in self.streams.values():
            stream.peers.discard(peer)
        if peer in self._closed:
            return
        closing = self._closing.get(peer)
        if closing is None:
            closing = self._closing[peer] = asyncio.ensure_future(_close_quietly(peer))
            closing.add_done_callback(lambda _: self._forget_closed(peer))
        await asyncio.shield(closing)

    def _forget_closed(self, peer: RTCPeerConnection) -> None:
        self._closing.pop(peer, None)
        self._closed.add(peer)  # weakly: a closed peer is freed as soon as nothing else holds it

    async def browser_offer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """A browser sends its webcam; it receives the annotated video and face verdicts on a data channel."""
        peer = self._new_peer()
        stream_id = f"browser-{uuid.uuid4().hex[:8]}"
        try:
            stream = self._create_stream(stream_id, "browser", "My camera", None)
        except LimitReached:
            await self._close_peer(peer)
            raise
        self._attach(peer, stream)

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._spawn(stream.route.receive(track, self.config.max_width, self.config.max_height))

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed"):
                await self._close_peer(peer)
                await self._remove_stream(stream_id)

        try:
            return await self._answer(peer, offer)
        except BaseException:
            await self._close_peer(peer)
            await self._remove_stream(stream_id)
            raise

    async def view_offer(self, stream_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """A browser watches a stream's annotated video (receive only) and its face verdicts."""
        stream = self.stream(stream_id)
        peer = self._new_peer()
        try:
            self._attach(peer, stream)
        except BaseException:
            await self._close_peer(peer)
            raise

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed"):
                await self._close_peer(peer)

        try:
            return await self._answer(peer, offer)
        except BaseException:
            await self._close_peer(peer)
            raise

    def _attach(self, peer: RTCPeerConnection, stream: LiveStream) -> None:
        """Send `stream`'s annotated video to `peer`, and its face verdicts on the data channels it opens."""
        peer.on("datachannel", stream.route.verdicts.attach)
        stream.peers.add(peer)
        send_to(peer, ViewerTrack(stream.feed))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
