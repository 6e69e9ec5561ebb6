"""A live stream's route: its frames from the source, through the worker and the pipeline, to the outputs.

    source     an RTSP camera's reader thread (`read_camera`; it only decodes), a browser's WebRTC track drained
               on the event loop (`receive`), or anything else that calls `offer`
    -> offer     into the worker's `LatestSlot`: the newest frame wins, a replaced one is counted as dropped
    -> worker    the stream's `StreamWorker` thread takes it once it holds a `FairGate` permit and converts it
                 to RGB within the size cap (`frames.rgb_within`)
    -> pipeline  `StreamPipeline.process`: detect, track, classify through the shared batcher, smooth, mesh, draw
    -> outputs   a `Fanout`, each sink isolated from the others: the annotated feed (encoded once, VP8, for
                 every viewer), the metrics, the verdicts on the viewers' data channels, the events (manipulated
                 faces kept with a snapshot), and with RTSP out on, the publication to a media server (encoded
                 once, H.264); `outputs.add` adds one

`LiveService` builds one route per stream and keeps the rest: peers, limits, the camera list.
"""

from __future__ import annotations

import asyncio
import time

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.live.worker import FairGate, FrameInput, StreamWorker
from stream.outputs.encoder import EncoderSettings
from stream.outputs.events import EventRecorder
from stream.outputs.fanout import Fanout, FrameMetrics
from stream.outputs.feed import AnnotatedFeed
from stream.outputs.metrics import Metrics
from stream.outputs.rtsp_out import RtspOutSettings, RtspPublisher
from stream.outputs.verdicts import VerdictChannels
from stream.pipeline.pipeline import StreamPipeline
from stream.runtime.affinity import RolePinning
from stream.sources.frames import DecodedFrame, Frame
from stream.sources.rtsp import RtspCamera, RtspConfig


class StreamRoute:
    """One stream's frames from its source to its outputs: `start` it, give it a source, `stop` it.

    `loop` is the service's event loop (viewers and data channels live there); `label` names the stream in the
    metrics; `gate` is shared by every stream's worker; `pinning` places the threads the route starts (worker,
    encoder, camera reader, RTSP publisher) by role, unpinned without one; `rtsp_out` publishes the annotated
    video to a media server too; `events` records the stream's events.
    """

    def __init__(
        self,
        pipeline: StreamPipeline,
        label: str,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        encoder: EncoderSettings,
        gate: FairGate | None = None,
        pinning: RolePinning | None = None,
        rtsp_out: RtspOutSettings | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self.stream_id = pipeline.stream_id
        self.pinning = pinning or RolePinning()
        frame_metrics = FrameMetrics(metrics, label)
        self.feed = AnnotatedFeed(
            loop,
            self.stream_id,
            encoder,
            on_ready=frame_metrics.observe_end_to_end,  # capture to encoded for the viewers
            on_encode=metrics.observe_encode,
            pinning=self.pinning,
        )
        self.verdicts = VerdictChannels(loop, self.stream_id, None if events is None else events.event_of)
        self.outputs = Fanout(self.stream_id, [self.feed, frame_metrics, self.verdicts])
        self.events = events
        if events is not None:
            self.outputs.add(events)
        self.publisher: RtspPublisher | None = None
        if rtsp_out is not None:
            self.publisher = RtspPublisher(
                self.stream_id, rtsp_out, on_encode=metrics.observe_rtsp_out_encode, pinning=self.pinning
            )
            self.outputs.add(self.publisher)
        self.worker = StreamWorker(pipeline, self.outputs.on_result, gate, self.pinning)
        self.reader: RtspCamera | None = None

    def start(self) -> None:
        self.feed.start()
        if self.publisher is not None:
            self.publisher.start()
        self.worker.start()

    def offer(self, frame: FrameInput) -> None:
        """Any thread: the source's newest frame. Never blocks; a frame the worker has not taken yet is dropped."""
        self.worker.submit(frame)

    def read_camera(self, url: str, config: RtspConfig) -> None:
        """Read a camera into the route: its pictures to `offer` (converted by the worker, so a dropped one costs
        its decode only), its "offline" placeholders straight to the video outputs, its state changes to the verdicts."""
        self.reader = RtspCamera(
            self.stream_id,
            url,
            on_decoded=self.offer,
            on_state=self.verdicts.on_camera_state,
            config=config,
            on_placeholder=self._placeholder,
            pinning=self.pinning,
        )
        self.reader.start()

    def _placeholder(self, frame: Frame) -> None:
        """A camera's "offline" picture, straight to the video outputs: recorders keep a picture while it is down."""
        self.feed.publish(frame)
        if self.publisher is not None:
            self.publisher.publish(frame)

    async def receive(self, track: MediaStreamTrack, max_width: int, max_height: int) -> None:
        """Event loop: `offer` a browser's frames as fast as they arrive (aiortc's queues are unbounded), to be
        converted within max_width x max_height by the worker; returns when the track ends."""
        index = 0
        while True:
            try:
                picture = await track.recv()
            except MediaStreamError:
                return
            if isinstance(picture, av.VideoFrame):
                self.offer(
                    DecodedFrame(self.stream_id, index, picture, time.monotonic(), max_width, max_height)
                )
                index += 1

    async def stop(self) -> None:
        """Stop the source, then the worker (it finishes its frame and releases its pipeline), then the feed,
        which ends every viewer's video, then the RTSP publication; open events end."""
        if self.reader is not None:
            await asyncio.to_thread(self.reader.stop)
        await asyncio.to_thread(self.worker.stop)
        if self.events is not None:
            self.events.close_all()
        await self.feed.close()
        if self.publisher is not None:
            await asyncio.to_thread(self.publisher.close)
