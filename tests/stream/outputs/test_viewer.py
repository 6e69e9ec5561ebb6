"""`ViewerTrack` and `send_to`: a viewer starts at a keyframe, takes frames in order within the backlog, skips to a
keyframe (asking for one) when further behind; its peer negotiates VP8 only and its PLIs reach the shared encoder.

Encoded frames are handed to the feed by hand (its encoder thread is not started): the viewer's choices are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

from stream.outputs.encoder import EncodedFrame
from stream.outputs.feed import AnnotatedFeed
from stream.outputs.viewer import ViewerTrack, offers_vp8, send_to

KEY = "key"


def run(
    scenario: Callable[[AnnotatedFeed, list[int]], Awaitable[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run `scenario(feed, requests)`; `requests` grows by one per keyframe request reaching the encoder."""

    async def main() -> None:
        feed = AnnotatedFeed(asyncio.get_running_loop(), "cam", backlog=3)
        requests: list[int] = []
        monkeypatch.setattr(feed.encoder, "request_keyframe", lambda: requests.append(1))
        await scenario(feed, requests)

    asyncio.run(main())


def add(feed: AnnotatedFeed, *frames: int | str) -> None:
    """Encoded frames with the next sequence numbers; KEY before a number makes that one a keyframe."""
    keyframe = False
    for item in frames:
        if item == KEY:
            keyframe = True
            continue
        assert isinstance(item, int)
        feed._add(EncodedFrame(item, av.Packet(b"\0"), keyframe, 0.0))  # the encoder's hand-off
        keyframe = False


async def sequence_of(track: ViewerTrack) -> int:
    return (await asyncio.wait_for(track.next_frame(), 2)).sequence


async def is_waiting(task: asyncio.Future[EncodedFrame]) -> bool:
    await asyncio.sleep(0.01)
    return not task.done()


async def synced_viewer(feed: AnnotatedFeed) -> ViewerTrack:
    """A viewer that joined and was sent the keyframe 0."""
    track = ViewerTrack(feed)
    first = asyncio.ensure_future(track.next_frame())
    await is_waiting(first)
    add(feed, KEY, 0)
    await first
    return track


def test_a_new_viewer_starts_at_a_keyframe_then_takes_frames_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(feed: AnnotatedFeed, requests: list[int]) -> None:
        add(feed, KEY, 0, 1)  # before the viewer: never sent to it
        track = ViewerTrack(feed)
        first = asyncio.ensure_future(track.next_frame())
        assert await is_waiting(first)
        assert feed.viewers == 1 and requests == [1], "joining asks for a keyframe"
        add(feed, 2, 3)
        assert await is_waiting(first), "frames before a keyframe are of no use to it"
        add(feed, KEY, 4)
        assert (await first).sequence == 4
        add(feed, 5, 6, 7)
        assert [await sequence_of(track) for _ in range(3)] == [5, 6, 7], "three behind: still in order"
        assert (track.sent, track.skipped) == (4, 0)

    run(scenario, monkeypatch)


def test_a_viewer_beyond_the_backlog_asks_for_a_keyframe_and_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario(feed: AnnotatedFeed, requests: list[int]) -> None:
        track = await synced_viewer(feed)
        add(feed, 1, 2, 3, 4, 5)  # frame 1 fell out of the backlog (3, 4, 5)
        waiting = asyncio.ensure_future(track.next_frame())
        assert await is_waiting(waiting) and requests == [1, 1]
        add(feed, 6)
        assert await is_waiting(waiting)
        add(feed, KEY, 7)
        assert (await waiting).sequence == 7
        assert track.skipped == 6

    run(scenario, monkeypatch)


def test_a_viewer_beyond_the_backlog_skips_to_a_keyframe_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(feed: AnnotatedFeed, requests: list[int]) -> None:
        track = await synced_viewer(feed)
        add(feed, 1, 2, KEY, 3, 4)
        assert [await sequence_of(track) for _ in range(2)] == [3, 4]
        assert track.skipped == 2 and requests == [1], "no request: a keyframe was there"

    run(scenario, monkeypatch)


def test_stopping_leaves_the_feed_and_ends_the_track(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(feed: AnnotatedFeed, requests: list[int]) -> None:
        track, idle = ViewerTrack(feed), ViewerTrack(feed)
        waiting = asyncio.ensure_future(track.next_frame())
        await is_waiting(waiting)
        waiting.cancel()
        track.stop()
        idle.stop()  # never received: it had not joined
        assert feed.viewers == 0
        with pytest.raises(MediaStreamError):
            await track.recv()

    run(scenario, monkeypatch)


def test_send_to_negotiates_vp8_and_forwards_pli(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(feed: AnnotatedFeed, requests: list[int]) -> None:
        local = RTCConfiguration(iceServers=[])
        server, client = RTCPeerConnection(local), RTCPeerConnection(local)
        try:
            client.addTransceiver("video", direction="recvonly")
            await client.setLocalDescription(await client.createOffer())
            assert "H264" in client.localDescription.sdp
            send_to(server, ViewerTrack(feed))
            await server.setRemoteDescription(client.localDescription)
            await server.setLocalDescription(await server.createAnswer())
            answer = server.localDescription.sdp
            assert "VP8/90000" in answer and "H264" not in answer
            (sender,) = server.getSenders()
            pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
            await sender._handle_rtcp_packet(pli)  # what the transport calls on RTCP
            assert requests == [1]
        finally:
            await asyncio.gather(server.close(), client.close())

    run(scenario, monkeypatch)


VIDEO_VP8 = "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
VIDEO_H264 = "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        (VIDEO_VP8, True),
        (VIDEO_VP8.replace("VP8", "vp8"), True),
        (VIDEO_H264, False),
        (AUDIO, True),
        (AUDIO + VIDEO_VP8, True),
        (VIDEO_VP8 + VIDEO_H264, False),
        ("", True),
    ],
)
def test_offers_vp8(media: str, expected: bool) -> None:
    assert offers_vp8("v=0\r\ns=-\r\nt=0 0\r\n" + media) is expected
