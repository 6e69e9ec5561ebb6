"""The one conversion of a decoded picture (a camera's or a browser's) into the pipeline's RGB `Frame`."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from clips import background, face_crop, paste_face

from stream.runtime.timing import StageTimes
from stream.sources.frames import DecodedFrame, fitted_size, rgb_within
from stream.sources.rtsp import RtspCamera


def picture(width: int, height: int) -> tuple[np.ndarray, av.VideoFrame]:
    """An RGB image with a face, and the yuv420p picture a decoder would give for it."""
    image = background(width, height)
    paste_face(image, face_crop(), (width / 2, height / 2), height // 2)
    return image, av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


@pytest.mark.parametrize(
    ("size", "cap", "expected"),
    [
        ((320, 240), (1280, 720), (320, 240)),
        ((1280, 720), (1280, 720), (1280, 720)),
        ((1920, 1080), (1280, 720), (1280, 720)),
        ((1080, 1920), (1280, 720), (405, 720)),
        ((320, 240), (160, 100), (133, 100)),  # rounded to the nearest pixel, not made even
        ((10000, 1), (1280, 720), (1280, 1)),  # never below one pixel
    ],
)
def test_fitted_size_keeps_the_aspect_within_the_cap(
    size: tuple[int, int], cap: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert fitted_size(*size, *cap) == expected


@pytest.mark.parametrize(
    ("size", "cap"), [((640, 480), (1280, 720)), ((1280, 720), (640, 360)), ((321, 241), (160, 100))]
)
def test_rgb_within_converts_and_downscales_in_one_pass(size: tuple[int, int], cap: tuple[int, int]) -> None:
    image, decoded = picture(*size)
    rgb = rgb_within(decoded, *cap)
    width, height = fitted_size(*size, *cap)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    reference = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    assert np.abs(rgb.astype(float) - reference).mean() < 4.0  # yuv420p's chroma and the filter: a few levels


def test_a_decoded_frame_becomes_a_frame_timed_as_decode() -> None:
    _, decoded = picture(1920, 1080)
    times = StageTimes()
    frame = DecodedFrame("cam", 7, decoded, 12.5, 1280, 720, 900, Fraction(1, 90000)).to_frame(times)
    assert (frame.stream_id, frame.index, frame.capture_time, frame.seconds) == ("cam", 7, 12.5, 0.01)
    assert (frame.width, frame.height) == (1280, 720)
    assert list(times.seconds) == ["decode"]


@pytest.mark.parametrize("consumers", [{}, {"on_frame": print, "on_decoded": print}])
def test_a_camera_hands_its_frames_to_exactly_one_consumer(consumers: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RtspCamera("cam", "rtsp://127.0.0.1/x", **consumers)  # type: ignore[arg-type]
