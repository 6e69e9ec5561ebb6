"""RTSP out against a real media server: GStreamer's RTSP server in RECORD mode (`RtspRecordServer`), which writes
what it is sent to MPEG-TS files that PyAV reads back.

The publisher alone: frames arrive at their size and colours; the server killed and restarted: frames meanwhile are
counted as dropped and publishing resumes. Through `LiveService` with two cameras: each stream's annotated video
(the overlay drawn) reaches its own path, the metrics and the API show it, and while the server is down both
streams keep being processed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import background, face_crop, paste_face, write_h264
from live_helpers import save_file_camera, until
from polling import wait_for
from route_helpers import shipped_classifier
from rtsp_server import RtspRecordServer, gst_rtsp_missing

from models.geometry import Box
from stream.config import ConfigError, ServiceConfig
from stream.live.cameras import CameraList
from stream.live.reload import ModelHolder
from stream.live.service import LiveService
from stream.outputs.metrics import Metrics
from stream.outputs.rtsp_out import RtspOutSettings, RtspPublisher
from stream.sources.frames import Frame

missing = gst_rtsp_missing()
needs_gst = pytest.mark.skipif(missing is not None, reason=missing or "")

SIZE = (320, 240)
FAST_RETRY = (0.2,)


def recorded_frames(path: Path | None) -> list[np.ndarray]:
    """The RGB frames in a recording so far (the server may still be writing its end)."""
    if path is None or not path.exists():
        return []
    images = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                images.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError:
        pass  # a packet cut short at the file's growing end
    return images


@pytest.fixture()
def recorded_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "recorded"
    folder.mkdir()
    return folder


def test_settings_need_an_rtsp_url_and_a_stream_placeholder() -> None:
    assert RtspOutSettings("rtsp://h:8554").url("cam-1") == "rtsp://h:8554/fakeweb/cam-1"
    assert RtspOutSettings("rtsp://h:8554/", path="/live/{stream}/hd").url("x") == "rtsp://h:8554/live/x/hd"
    with pytest.raises(ConfigError, match="rtsp://"):
        ServiceConfig(rtsp_out_url="http://h:8554")
    with pytest.raises(ConfigError, match="stream"):
        ServiceConfig(rtsp_out_url="rtsp://h:8554", rtsp_out_path="fakeweb/all")
    with pytest.raises(ConfigError, match="rtsp_out_profile"):
        ServiceConfig(rtsp_out_url="rtsp://h:8554", rtsp_out_profile="high")
    assert ServiceConfig().rtsp_out() is None


def solid(rgb: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((SIZE[1], SIZE[0], 3), dtype=np.uint8)
    image[:] = rgb
    return image


def publish_for(publisher: RtspPublisher, image: np.ndarray, seconds: float, fps: float = 30) -> None:
    for index in range(round(seconds * fps)):
        publisher.publish(Frame("solid", index, image.copy(), time.monotonic()))
        time.sleep(1 / fps)


@needs_gst
@pytest.mark.slow
def test_publisher_sends_frames_and_resumes_after_the_server_restarts(recorded_dir: Path) -> None:
    server = RtspRecordServer(recorded_dir, ("fakeweb/solid",))
    server.start()
    settings = RtspOutSettings(server.url_base, backoff_schedule=FAST_RETRY, keyframe_interval=0.5)
    publisher = RtspPublisher("solid", settings)
    publisher.start()
    try:
        publish_for(publisher, solid((200, 30, 30)), 2.0)
        first = wait_for(lambda: recorded_frames(server.recording("fakeweb/solid")), 5, "frames recorded")
        assert publisher.stats.connected and publisher.stats.sent >= 50
        (thread,) = [thread for thread in threading.enumerate() if thread.name == "rtsp-out-solid"]
        assert thread.native_id is not None  # the live viewers' encoders go first on a busy CPU:
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        assert first[0].shape == (SIZE[1], SIZE[0], 3)
        assert np.abs(first[-1].astype(int) - (200, 30, 30)).mean() < 6  # the colours survive the trip
        first_file = server.recording("fakeweb/solid")

        server.kill()
        publish_for(publisher, solid((30, 30, 200)), 1.0)
        assert not publisher.stats.connected and publisher.stats.dropped_disconnected > 0
        assert publisher.stats.last_error

        server.start()
        publish_for(publisher, solid((30, 200, 30)), 2.0)
        again = wait_for(
            lambda: (
                server.recording("fakeweb/solid") != first_file
                and recorded_frames(server.recording("fakeweb/solid"))
            ),
            5,
            "frames recorded after the restart",
        )
        assert publisher.stats.connected and publisher.stats.reconnects == 1
        assert np.abs(again[-1].astype(int) - (30, 200, 30)).mean() < 6
    finally:
        publisher.close()
        server.kill()
    assert not publisher.stats.connected


@needs_gst
@pytest.mark.slow
def test_publication_holds_its_bitrate_on_busy_pictures(recorded_dir: Path) -> None:
    """x264's rate control budgets bits per frame from the frame rate: with the 90 kHz time base alone it
    would give each frame a few bytes. Noise is the hardest picture; the recording must carry about the bitrate."""
    rng = np.random.default_rng(0)
    with RtspRecordServer(recorded_dir, ("fakeweb/noise",)) as server:
        publisher = RtspPublisher("noise", RtspOutSettings(server.url_base, bitrate=1_000_000))
        publisher.start()
        started = time.monotonic()
        for index in range(90):
            noise = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
            publisher.publish(Frame("noise", index, noise, time.monotonic()))
            time.sleep(1 / 30)
        seconds = time.monotonic() - started
        publisher.close()
        recording = server.recording("fakeweb/noise")
    assert publisher.stats.sent >= 80 and recording is not None
    megabits_per_second = recording.stat().st_size * 8 / seconds / 1e6
    assert 0.6 < megabits_per_second < 1.6, megabits_per_second


def still_face_clip(folder: Path) -> tuple[Path, Box, np.ndarray]:
    """4 s of one face standing still: any recorded frame shows the same picture, plus the overlay."""
    image = background(*SIZE)
    box = paste_face(image, face_crop(), (SIZE[0] * 0.5, SIZE[1] * 0.55), round(SIZE[1] * 0.6))
    path = write_h264(folder / "still_face.mp4", (image for _ in range(100)), Fraction(25))
    return path, box, image


async def _publish_two_cameras(service: LiveService, server: RtspRecordServer) -> dict[str, object]:
    await service.start()
    try:
        routes = {camera: service.streams[camera].route for camera in ("cam-a", "cam-b")}
        publishers = {camera: route.publisher for camera, route in routes.items()}
        assert all(publishers.values())
        await until(lambda: all(p.stats.sent >= 40 for p in publishers.values() if p), 30, "40 frames sent")
        described = service.describe("cam-a")
        service.refresh_metrics()
        sent_metric = service.metrics.registry.get_sample_value(
            "fakeweb_rtsp_out_frames_total", {"stream": "cam-a", "outcome": "sent"}
        )
        server.kill()
        processed = {camera: route.worker.stats.processed for camera, route in routes.items()}
        await asyncio.sleep(1.5)  # the server down: the streams go on, their publications drop frames
        processed_while_down = {
            camera: route.worker.stats.processed - processed[camera] for camera, route in routes.items()
        }
        dropped_while_down = {camera: p.stats.dropped_disconnected for camera, p in publishers.items() if p}
        server.start()
        await until(lambda: all(p.stats.reconnects == 1 for p in publishers.values() if p), 10, "reconnected")
        await asyncio.sleep(1.0)
        service.refresh_metrics()
        registry = service.metrics.registry
        return {
            "described": described,
            "sent_metric": sent_metric,
            "processed_while_down": processed_while_down,
            "dropped_while_down": dropped_while_down,
            "reconnect_metric": registry.get_sample_value(
                "fakeweb_rtsp_out_reconnects_total", {"stream": "cam-a"}
            ),
            "connected_metric": registry.get_sample_value("fakeweb_rtsp_out_connected", {"stream": "cam-b"}),
            "encode_count": registry.get_sample_value("fakeweb_rtsp_out_encode_duration_seconds_count", {}),
        }
    finally:
        await service.close()


@needs_gst
@pytest.mark.slow
def test_service_publishes_each_annotated_stream_and_keeps_serving_while_the_server_is_down(
    tmp_path: Path, recorded_dir: Path
) -> None:
    clip, face, source = still_face_clip(tmp_path)
    for name in ("a", "b"):
        save_file_camera(tmp_path, name, clip)
    server = RtspRecordServer(recorded_dir, ("fakeweb/cam-a", "fakeweb/cam-b"))
    server.start()
    config = ServiceConfig(
        data_dir=tmp_path,
        pin_threads="off",
        mesh_for="all",
        rtsp_out_url=server.url_base,
        rtsp_backoff_seconds=FAST_RETRY,
    )
    service = LiveService(
        config, ModelHolder(shipped_classifier()), Metrics(), CameraList(config.cameras_file)
    )
    try:
        outcome = asyncio.run(_publish_two_cameras(service, server))
    finally:
        server.kill()

    described = outcome["described"]
    assert isinstance(described, dict)
    assert described["rtsp_out"]["url"] == f"{server.url_base}/fakeweb/cam-a"
    assert described["rtsp_out"]["connected"] is True and described["rtsp_out"]["frames_sent"] >= 40
    assert outcome["sent_metric"] is not None and outcome["sent_metric"] >= 40
    assert outcome["reconnect_metric"] == 1 and outcome["connected_metric"] == 1
    assert outcome["encode_count"] is not None and outcome["encode_count"] >= 80
    assert all(count >= 15 for count in outcome["processed_while_down"].values())  # type: ignore[union-attr]
    assert all(count >= 15 for count in outcome["dropped_while_down"].values())  # type: ignore[union-attr]

    for camera in ("cam-a", "cam-b"):
        frames = recorded_frames(server.recording(f"fakeweb/{camera}"))
        assert len(frames) >= 20, camera
        picture = frames[-1].astype(int)
        assert picture.shape == source.shape
        difference = np.abs(picture - source).mean(axis=2)
        x1, y1, x2, y2 = (round(v) for v in (face.x1, face.y1, face.x2, face.y2))
        in_face = difference[y1:y2, x1:x2].mean()
        corner = difference[-40:, :40].mean()  # far from the face and its label
        assert in_face > 3 * corner and in_face > 8, (camera, in_face, corner)  # the mesh is drawn
