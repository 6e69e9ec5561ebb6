"""`AnnotatedFeed`: frames published by a worker thread are encoded once, only while someone watches, and every viewer
gets the same packets; closing ends the viewers' video and stops the encoder thread."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from stream.outputs.feed import AnnotatedFeed, yuv420p_frame
from stream.outputs.viewer import ViewerTrack
from stream.sources.frames import Frame


def test_yuv420p_frame_crops_odd_edges() -> None:
    frame = yuv420p_frame(np.zeros((241, 321, 3), np.uint8))
    assert (frame.format.name, frame.width, frame.height) == ("yuv420p", 320, 240)


@dataclass
class Outcome:
    received: dict[str, list[av.Packet]]
    encoded: int
    ready: int
    encodes: int
    viewers_after_stop: int
    threads: list[str]


async def _two_viewers(frames: int) -> Outcome:
    ready: list[float] = []
    encodes: list[float] = []
    feed = AnnotatedFeed(asyncio.get_running_loop(), "cam", on_ready=ready.append, on_encode=encodes.append)
    feed.start()
    image = np.full((48, 64, 3), 120, np.uint8)
    feed.publish(Frame("cam", 0, image, 0.0))  # nobody watches: not encoded
    first, second = ViewerTrack(feed), ViewerTrack(feed)
    received: dict[str, list[av.Packet]] = {"first": [], "second": []}

    async def watch(name: str, track: ViewerTrack) -> None:
        while len(received[name]) < frames:
            received[name].append(await track.recv())

    watchers = [asyncio.ensure_future(watch("first", first)), asyncio.ensure_future(watch("second", second))]
    while feed.viewers < 2:
        await asyncio.sleep(0.01)
    publisher = threading.Thread(target=_publish, args=(feed, image, frames))
    publisher.start()
    await asyncio.wait_for(asyncio.gather(*watchers), 20)
    publisher.join()
    stats = feed.encoder.stats
    first.stop()
    second.stop()
    viewers_after_stop = feed.viewers
    await feed.close()
    threads = [thread.name for thread in threading.enumerate()]
    return Outcome(received, stats.frames, len(ready), len(encodes), viewers_after_stop, threads)


def _publish(feed: AnnotatedFeed, image: np.ndarray, frames: int) -> None:
    """The worker thread's side: publish at about 100 fps, slow enough for both viewers to keep up."""
    for index in range(frames):
        feed.publish(Frame("cam", index, image, float(index)))
        threading.Event().wait(0.01)


def test_one_encode_for_two_viewers_who_get_the_same_packets() -> None:
    result = asyncio.run(_two_viewers(frames=20))
    received = result.received
    assert [id(packet) for packet in received["first"]] == [id(packet) for packet in received["second"]]
    assert received["first"][0].is_keyframe
    assert result.encoded == result.encodes == result.ready == 20, "once per frame, not per viewer"
    decoder = av.CodecContext.create("vp8", "r")
    assert sum(len(decoder.decode(packet)) for packet in received["first"]) == 20
    assert result.viewers_after_stop == 0
    assert "encoder-cam" not in result.threads, "close stops the encoder thread"


async def _closing_ends_a_waiting_viewer() -> None:
    feed = AnnotatedFeed(asyncio.get_running_loop(), "cam")
    feed.start()
    track = ViewerTrack(feed)
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.05)
    await feed.close()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 5)
    feed.publish(
        Frame("cam", 0, np.zeros((48, 64, 3), np.uint8), 0.0)
    )  # a late frame from the worker is ignored


def test_closing_ends_a_waiting_viewer() -> None:
    asyncio.run(_closing_ends_a_waiting_viewer())


def test_backlog_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="backlog must be >= 1"):
            AnnotatedFeed(loop, "cam", backlog=0)
    finally:
        loop.close()
