"""One viewer's video: the stream's shared VP8 packets, handed to its `RTCRtpSender`, which only packetises them.

A VP8 frame refers to the frames before it, so a viewer never skips a packet and carries on: it takes packets in
order while they are still in the feed's short backlog, and a viewer that falls further behind (or has just joined)
sends nothing until a keyframe, which it requests. Viewers therefore keep the latest-wins behaviour (at most the
backlog behind) without decoding artifacts; a skip costs a wait of up to `EncoderSettings.min_keyframe_gap`.
"""

from __future__ import annotations

import re

import av
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.outputs.encoder import EncodedFrame
from stream.outputs.feed import AnnotatedFeed

VP8_ONLY = [
    codec
    for codec in RTCRtpSender.getCapabilities("video").codecs
    if codec.mimeType.lower() in ("video/vp8", "video/rtx")
]
"""Codec preferences of a viewer's transceiver: the shared packets are VP8 (with retransmission)."""

_VP8_RTPMAP = re.compile(r"^a=rtpmap:\d+ VP8/90000", re.MULTILINE | re.IGNORECASE)


def offers_vp8(sdp: str) -> bool:
    """False when a video section of the offer lacks VP8, the only codec viewers can be sent."""
    sections = re.split(r"^m=", sdp, flags=re.MULTILINE)[1:]
    return all(_VP8_RTPMAP.search(section) for section in sections if section.startswith("video"))


class ViewerTrack(MediaStreamTrack):
    """A viewer's video track: `recv` returns the stream's encoded packets (see the module's docstring).

    `sent` and `skipped` count packets handed to the sender and passed over after the first one sent.
    """

    kind = "video"

    def __init__(self, feed: AnnotatedFeed) -> None:
        super().__init__()
        self._feed = feed
        self._cursor: int | None = None
        """Sequence of the newest frame taken or passed over; None before the first `recv`."""
        self._synced = False
        self.sent = 0
        self.skipped = 0

    async def recv(self) -> av.Packet:
        return (await self.next_frame()).packet

    async def next_frame(self) -> EncodedFrame:
        """The next frame to send: the one after the last, or a keyframe when the viewer is not in step."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._cursor is None:
            self._cursor = self._feed.join()
        while True:
            frames = await self._feed.newer_than(self._cursor)
            chosen = self._choose(frames, self._cursor)
            if chosen is None:
                self._feed.request_keyframe()
                self._skip_through(frames[-1].sequence)
                continue
            self._skip_through(chosen.sequence - 1)
            self._cursor = chosen.sequence
            self.sent += 1
            return chosen

    def _choose(self, frames: list[EncodedFrame], cursor: int) -> EncodedFrame | None:
        """The frame after `cursor` when in step, else the newest keyframe; None when neither is there."""
        if self._synced and frames[0].sequence == cursor + 1:
            return frames[0]
        keyframe = next((frame for frame in reversed(frames) if frame.keyframe), None)
        self._synced = keyframe is not None
        return keyframe

    def _skip_through(self, sequence: int) -> None:
        """Pass over the frames after the cursor up to `sequence` (counted once a frame was sent)."""
        assert self._cursor is not None
        if self.sent:
            self.skipped += sequence - self._cursor
        self._cursor = sequence

    def request_keyframe(self) -> None:
        """The viewer lost pictures (a PLI or FIR): ask the shared encoder for a keyframe."""
        self._feed.request_keyframe()

    def stop(self) -> None:
        if self.readyState == "live" and self._cursor is not None:
            self._feed.leave()
        super().stop()


def send_to(peer: RTCPeerConnection, track: ViewerTrack) -> None:
    """Send `track` on `peer`, negotiated as VP8, with the viewer's PLI and FIR reaching the shared encoder.

    Call before applying the offer. aiortc's `RTCRtpSender` answers PLI/FIR by calling its `_send_keyframe`,
    which only flags the encoder it runs itself, never used for packets: that method is replaced on this sender.
    """
    sender = peer.addTrack(track)
    transceiver = next(t for t in peer.getTransceivers() if t.sender is sender)
    transceiver.setCodecPreferences(VP8_ONLY)
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
