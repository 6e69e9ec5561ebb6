"""`LiveService` in process: a saved `file:` camera (a clip played at its frame rate) through each stream's route,
with the real pipeline and shipped model; outputs attached to a running stream; removal stops every thread."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from clips import ClipTruth
from live_helpers import save_file_camera, until
from route_helpers import BrokenSink, FakeChannel, ResultRecorder, shipped_classifier, threads_of

from models.classifier import Classifier
from stream.config import ServiceConfig
from stream.live.cameras import CameraList
from stream.live.reload import ModelHolder
from stream.live.service import LiveService
from stream.outputs.metrics import Metrics
from stream.pipeline.scoring import Verdict


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return shipped_classifier()


async def _watch_then_remove(service: LiveService, camera_id: str) -> dict[str, Any]:
    await service.start()
    try:
        route = service.streams[camera_id].route
        channel, recorder = FakeChannel(), ResultRecorder()
        route.verdicts.attach(channel)
        route.outputs.add(BrokenSink())
        route.outputs.add(recorder)
        await until(lambda: recorder.with_faces() >= 10, 30, "10 frames with a face recorded")
        await until(lambda: any(message["faces"] for message in channel.messages), 2, "verdicts sent")
        described = service.describe(camera_id)
        running = threads_of(camera_id)
        await service.remove_stream(camera_id)
        return {
            "described": described,
            "running": sorted(running),
            "after_removal": threads_of(camera_id),
            "streams": list(service.streams),
            "cameras": service.cameras.all(),
            "failures": dict(route.outputs.failures),
            "recorded": len(recorder.results),
        }
    finally:
        await service.close()


def test_a_camera_is_routed_to_its_outputs_and_removing_it_stops_its_threads(
    tmp_path: Path, moving_face_video: tuple[Path, ClipTruth], classifier: Classifier
) -> None:
    camera_id = save_file_camera(tmp_path, "door", moving_face_video[0])
    config = ServiceConfig(data_dir=tmp_path, pin_threads="off")
    service = LiveService(config, ModelHolder(classifier), Metrics(), CameraList(config.cameras_file))
    outcome = asyncio.run(_watch_then_remove(service, camera_id))

    described = outcome["described"]
    assert described["status"] == "live" and described["frames_processed"] >= 10
    assert described["faces"] and described["faces"][0]["verdict"] in {v.value for v in Verdict}
    # The broken sink, added first, failed on every frame the recorder got after it (and stopped none).
    assert outcome["failures"]["BrokenSink"] >= outcome["recorded"] >= 10
    assert outcome["running"] == sorted(
        f"{role}-{camera_id}" for role in ("encoder", "rtsp-read", "rtsp-watch", "worker")
    )
    assert outcome["after_removal"] == [] and outcome["streams"] == [] and outcome["cameras"] == []
