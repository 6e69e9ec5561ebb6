"""A live route in process: a browser's track from a clip, the real pipeline and shipped model, its real outputs
(feed, metrics, verdicts on a data channel) plus added sinks; no server, no peer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from clips import ClipTruth
from live_helpers import until
from route_helpers import (
    BrokenSink,
    ClipTrack,
    FakeChannel,
    ResultRecorder,
    clip_images,
    shipped_classifier,
    threads_of,
)

from models.classifier import Classifier
from stream.config import ServiceConfig
from stream.live.route import StreamRoute
from stream.outputs.encoder import EncoderSettings
from stream.outputs.metrics import BROWSER_LABEL, Metrics
from stream.pipeline.pipeline import PipelineConfig, StreamPipeline

STREAM = "browser-route"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return shipped_classifier()


@dataclass
class Outcome:
    offered: int
    processed: int
    dropped: int
    recorder: ResultRecorder
    channel: FakeChannel
    failures: dict[str, int]
    metrics: Metrics
    threads_running: list[str]
    threads_after_stop: list[str]


async def _route_a_clip(classifier: Classifier, images: list[np.ndarray], settings: ServiceConfig) -> Outcome:
    """The clip as a browser's camera through a route built as the service builds a browser stream's."""
    metrics = Metrics()
    manifest = classifier.package.manifest
    scoring = settings.scoring(manifest.threshold)
    config = PipelineConfig.from_settings(settings, manifest.crop, scoring, "browser")
    pipeline = StreamPipeline(STREAM, config, classifier.predict)
    route = StreamRoute(pipeline, BROWSER_LABEL, asyncio.get_running_loop(), metrics, EncoderSettings())
    recorder, channel = ResultRecorder(), FakeChannel()
    route.outputs.add(BrokenSink())  # before the recorder: it must still get every frame
    route.outputs.add(recorder)
    route.verdicts.attach(channel)
    worker = route.worker
    route.start()
    try:
        await route.receive(ClipTrack(images, fps=25), settings.max_width, settings.max_height)
        await until(lambda: worker.stats.processed + worker.dropped == len(images), 10, "every frame taken")
        await until(lambda: len(channel.messages) == worker.stats.processed, 2, "every verdict sent")
        running = threads_of(STREAM)
    finally:
        await route.stop()
    return Outcome(
        len(images),
        worker.stats.processed,
        worker.dropped,
        recorder,
        channel,
        dict(route.outputs.failures),
        metrics,
        running,
        threads_of(STREAM),
    )


def test_a_clip_flows_through_the_route_to_every_sink_even_past_a_broken_one(
    moving_face_video: tuple[Path, ClipTruth],
    classifier: Classifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    images = clip_images(moving_face_video[0])  # 50 frames, 320x240, one face
    settings = ServiceConfig(data_dir=tmp_path, max_width=256, max_height=192)
    outcome = asyncio.run(_route_a_clip(classifier, images, settings))

    processed = outcome.processed
    assert processed >= 10 and processed + outcome.dropped == outcome.offered  # a busy machine drops some
    recorder = outcome.recorder
    assert len(recorder.results) == processed
    assert set(recorder.sizes) == {(256, 192)}  # converted within the cap by the worker
    assert recorder.with_faces() >= 0.8 * processed
    assert outcome.failures == {"BrokenSink": processed}
    assert sum("output BrokenSink failed" in record.getMessage() for record in caplog.records) == 1

    messages = outcome.channel.messages
    assert [message["frame"] for message in messages] == [result.index for result in recorder.results]
    faces = [face for message in messages for face in message["faces"]]
    assert faces and all(set(face) == {"track_id", "box", "probability", "verdict"} for face in faces)
    assert len({face["track_id"] for face in faces}) == 1  # one face, one track

    sample = outcome.metrics.registry.get_sample_value
    assert sample("fakeweb_frames_total", {"stream": BROWSER_LABEL, "outcome": "processed"}) == processed
    assert sample("fakeweb_stage_duration_seconds_count", {"stage": "decode"}) == processed

    assert sorted(outcome.threads_running) == [f"encoder-{STREAM}", f"worker-{STREAM}"]
    assert outcome.threads_after_stop == []
