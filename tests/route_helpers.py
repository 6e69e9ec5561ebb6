"""In-process stand-ins at the edges of a live route: a browser's camera track from a clip, sinks that record or
fail, and a data channel that keeps what it is sent. The pipeline and the model between them are the real ones."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from models.classifier import Classifier, load_classifier
from models.package import DEFAULT_PACKAGE_DIR, ModelPackage
from stream.pipeline.pipeline import FrameResult
from stream.sources.file_source import FileSource
from stream.sources.frames import Frame


def shipped_classifier() -> Classifier:
    """The model `fakeweb serve` uses by default, on the CPU."""
    return load_classifier(ModelPackage.load(DEFAULT_PACKAGE_DIR), device="cpu", backend="tflite")


def clip_images(path: Path) -> list[np.ndarray]:
    with FileSource(path) as source:
        return [frame.image for frame in source.frames()]


class ClipTrack(MediaStreamTrack):
    """A browser's camera as aiortc hands it over: decoded yuv420p pictures at `fps`, ending after the last."""

    kind = "video"

    def __init__(self, images: list[np.ndarray], fps: float) -> None:
        super().__init__()
        self._pictures = [
            av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p") for image in images
        ]
        self._period = 1.0 / fps

    async def recv(self) -> av.VideoFrame:
        if not self._pictures:
            raise MediaStreamError
        await asyncio.sleep(self._period)
        return self._pictures.pop(0)


class ResultRecorder:
    """A sink keeping the size of every frame it gets and what the pipeline found in it."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.results: list[FrameResult] = []

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        self.sizes.append((frame.width, frame.height))
        self.results.append(result)

    def with_faces(self) -> int:
        return sum(1 for result in self.results if result.faces)


class BrokenSink:
    """A sink that fails on every frame."""

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        raise RuntimeError("a broken output")


class FakeChannel:
    """An open WebRTC data channel that keeps the messages sent on it (sent on the event loop)."""

    readyState = "open"
    bufferedAmount = 0

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[], None]] = {}

    def on(self, event: str, handler: Callable[[], None]) -> None:
        self.handlers[event] = handler

    def send(self, message: str) -> None:
        self.messages.append(json.loads(message))


def threads_of(stream_id: str) -> list[str]:
    """The live threads serving `stream_id` (worker, encoder, camera reader and watchdog)."""
    return [thread.name for thread in threading.enumerate() if thread.name.endswith(f"-{stream_id}")]
