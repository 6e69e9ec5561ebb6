"""A stream's face verdicts for its viewers: one JSON message per processed frame on their WebRTC data channels.

`VerdictChannels` is a `ResultSink` (`stream.outputs.fanout`) called on the worker thread; messages are sent on the event
loop, and only to open channels whose send buffer is not backed up (a slow viewer misses messages, it never
delays the others).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel

from stream.sources.rtsp import CameraState

if TYPE_CHECKING:
    from stream.pipeline.pipeline import FaceResult, FrameResult
    from stream.sources.frames import Frame

MAX_BUFFERED_BYTES = 256 * 1024
"""A channel with more than this waiting to be sent skips messages until it has caught up."""


def face_json(face: FaceResult, event: str | None = None) -> dict[str, Any]:
    """One face as the API and the data channels show it; `event`: the id of the face's open event, if any
    (the page reviews a live verdict through it)."""
    shown = {
        "track_id": face.track_id,
        "box": face.box.as_list(),
        "probability": None if face.probability is None else round(face.probability, 3),
        "verdict": face.verdict.value,
    }
    if event is not None:
        shown["event"] = event
    return shown


class VerdictChannels:
    """The data channels of a stream's peers, and the faces of each processed frame sent to them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stream_id: str,
        event_of: Callable[[int], str | None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.channels: set[RTCDataChannel] = set()
        self._event_of = event_of or (lambda track: None)
        """The open event of a track (`EventRecorder.event_of`), sent with its face."""
        self._loop = loop
        self._live = True

    def attach(self, channel: RTCDataChannel) -> None:
        """Event loop: send the verdicts on `channel` too, until it closes."""
        self.channels.add(channel)
        channel.on("close", partial(self.channels.discard, channel))

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        """Worker thread: send the frame's faces, unless its camera went down meanwhile (they are gone)."""
        if self.channels and self._live:
            faces = [face_json(face, self._event_of(face.track_id)) for face in result.faces]
            self.publish(result.index, faces)

    def on_camera_state(self, state: CameraState) -> None:
        """Camera thread: a camera that stops being live shows no faces any more, also to its viewers."""
        self._live = state is CameraState.LIVE
        if not self._live:
            self.publish(None, [])

    def publish(self, frame: int | None, faces: list[dict[str, Any]]) -> None:
        """Any thread: send the faces of a frame (None: no frame) to the open channels."""
        if not self.channels:
            return
        message = json.dumps({"stream": self.stream_id, "frame": frame, "faces": faces})
        try:
            self._loop.call_soon_threadsafe(self._send, message)
        except RuntimeError:  # the loop closed at shutdown
            pass

    def _send(self, message: str) -> None:
        for channel in list(self.channels):
            if channel.readyState == "open" and channel.bufferedAmount < MAX_BUFFERED_BYTES:
                channel.send(message)
