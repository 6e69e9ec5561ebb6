"""Outputs of a file run: the annotated video as H.264 MP4, and per-face results as JSON lines; each is a
`ResultSink` (`stream.outputs.fanout`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from av.video.stream import VideoStream

from stream.sources.file_source import VideoInfo

if TYPE_CHECKING:
    from stream.pipeline.pipeline import FrameResult
    from stream.sources.frames import Frame

logger = logging.getLogger(__name__)


class VideoFileSink:
    """Encodes RGB frames to H.264 (yuv420p) MP4 with the input's timestamps: same frame count and timing.

    The output time base is the input's (`info.time_base`), so pts are written unchanged; pts given in another
    time base are rescaled, a missing pts comes one frame (1 / `info.rate`, else 1/30 s) after the previous
    one, and a pts that does not increase is moved one tick past the previous one. The first frame fixes the
    size; an odd width or height is padded by one edge pixel (yuv420p needs even sizes). No file is made if
    no frame is written.
    """

    def __init__(self, path: str | Path, info: VideoInfo, *, crf: int = 23, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.rate = info.rate or Fraction(30)
        self.time_base = info.time_base or 1 / self.rate
        self._options = {"crf": str(crf), "preset": preset}
        self._step = max(1, round(1 / (self.rate * self.time_base)))
        self._container = av.open(str(self.path), mode="w")
        self._stream: VideoStream | None = None
        self._last_pts: int | None = None
        self._closed = False
        self.frames_written = 0

    def _open_stream(self, height: int, width: int) -> VideoStream:
        stream = self._container.add_stream("libx264", rate=self.rate, options=self._options)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        return stream

    def _next_pts(self, pts: int | None, time_base: Fraction | None) -> int:
        if pts is None:
            return 0 if self._last_pts is None else self._last_pts + self._step
        if time_base is not None and time_base != self.time_base:
            pts = round(pts * time_base / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            logger.debug("pts %d does not follow %d; moved past it", pts, self._last_pts)
            pts = self._last_pts + 1
        return pts

    def write(self, image: np.ndarray, pts: int | None = None, time_base: Fraction | None = None) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at `pts` (in `time_base` units, default the sink's)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        if self._stream is None:
            self._stream = self._open_stream(height, width)
        stream = self._stream
        if (height + height % 2, width + width % 2) != (stream.height, stream.width):
            raise ValueError(
                f"frame size {width}x{height} differs from the video's {stream.width}x{stream.height}"
            )
        if (height, width) != (stream.height, stream.width):
            image = np.pad(
                image, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge"
            )
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._last_pts = self._next_pts(pts, time_base)
        frame.time_base = self.time_base
        self._container.mux(stream.encode(frame))
        self.frames_written += 1

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        """Encode the processed frame at its pts, timed as its `encode` stage."""
        with result.times.measure("encode"):
            self.write(frame.image, frame.pts, frame.time_base)

    def close(self) -> None:
        """Flush the encoder and finish the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> VideoFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FaceRecord:
    """One face in one frame, as written to a results file: the JSON-lines schema is this class's fields.

    `pts` is in seconds (None without timestamps), `box` is [x1, y1, x2, y2] in pixels, `probability` is the
    probability that the face is manipulated (None when not scored), `verdict` the label shown for it.
    """

    stream: str
    frame: int
    pts: float | None
    track_id: int
    box: Sequence[float]
    probability: float | None
    verdict: str

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        object.__setattr__(self, "box", box)
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[0] > box[2] or box[1] > box[3]:
            raise ValueError(
                f"box must be finite [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, got {self.box}"
            )
        if self.frame < 0:
            raise ValueError(f"frame must be >= 0, got {self.frame}")
        if self.pts is not None and not math.isfinite(self.pts):
            raise ValueError(f"pts must be finite seconds or None, got {self.pts}")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1] or None, got {self.probability}")

    def to_json(self) -> str:
        """One JSON object on one line (no trailing newline)."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["box"] = list(self.box)
        return json.dumps(values, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> FaceRecord:
        """Parse one line written by `to_json`; the keys must be exactly the schema's."""
        values: dict[str, Any] = json.loads(line)
        expected = {field.name for field in fields(cls)}
        if set(values) != expected:
            raise ValueError(f"record keys {sorted(values)} differ from the schema {sorted(expected)}")
        return cls(**values)


def result_records(result: FrameResult) -> list[FaceRecord]:
    """The faces of one processed frame as results-file records."""
    return [
        FaceRecord(
            stream=result.stream_id,
            frame=result.index,
            pts=result.pts_seconds,
            track_id=face.track_id,
            box=face.box.as_list(),
            probability=None if face.probability is None else round(face.probability, 4),
            verdict=face.verdict.value,
        )
        for face in result.faces
    ]


class JsonlResultSink:
    """Writes `FaceRecord`s as JSON lines, flushed per frame: a crash loses at most the frame in progress."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8")
        self.records_written = 0

    def write(self, records: Iterable[FaceRecord]) -> None:
        """Write the records of one frame (none for a frame without faces) and flush them."""
        lines = [record.to_json() + "\n" for record in records]
        if lines:
            self._file.write("".join(lines))
            self._file.flush()
            self.records_written += len(lines)

    def on_result(self, frame: Frame, result: FrameResult) -> None:
        self.write(result_records(result))

    def close(self) -> None:
        """Close the file; safe to call twice."""
        self._file.close()

    def __enter__(self) -> JsonlResultSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
