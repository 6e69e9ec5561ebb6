"""Degradations of webcam and streamed video, applied to reals and fakes alike so that none of them tells one
from the other: colour casts, blur, sensor noise, down-up scaling, JPEG and H.264 compression.

H.264 is real libx264 (PyAV) on a single intra frame at a constant QP: each QP's encoder and decoder are kept
per thread, which makes a 128 px frame cost about 0.7 ms instead of 5 ms for opening codecs every call; an
intra frame at a constant QP depends on nothing but itself, so the result is the same as from fresh codecs.
"""

from __future__ import annotations

import fractions
import threading

import av
import cv2
import numpy as np
from av.video.codeccontext import VideoCodecContext

CLEAN = 0.1  # probability that the image is returned as it is
# Each step happens with its probability, in this order: the camera's, then scaling and compression.
CAST = 0.3  # white balance and gamma
CAST_GAIN = 0.12  # red and blue gains relative to green: 1 +- this
CAST_GAMMA = (0.8, 1.25)
BLUR = 0.2
BLUR_SIGMA = (0.3, 1.2)  # px of a REFERENCE_SIDE px crop
NOISE = 0.2
NOISE_SIGMA = (1.0, 6.0)  # grey levels
RESCALE = 0.3
RESCALE_FACTOR = (1.2, 3.0)  # down by this (area), back up (bilinear or bicubic)
COMPRESS = 0.7  # probability of compression, then of a second one (re-compression) after it
RECOMPRESS = 0.25
H264 = 0.4  # share of H.264 among compressions, the rest JPEG
JPEG_QUALITY = (30, 95)
H264_QP = (22, 44)  # a constant quantiser, in steps of H264_QP_STEP (each step's codecs are kept)
H264_QP_STEP = 2
REFERENCE_SIDE = 128

_codecs = threading.local()


def _h264_codecs(width: int, height: int, qp: int) -> tuple[VideoCodecContext, VideoCodecContext]:
    """This thread's libx264 encoder (intra only, constant QP) and H.264 decoder for frames of this size."""
    cache: dict[tuple[int, int, int], tuple[VideoCodecContext, VideoCodecContext]] = (
        _codecs.__dict__.setdefault("cache", {})
    )
    if (width, height, qp) not in cache:
        encoder, decoder = av.CodecContext.create("libx264", "w"), av.CodecContext.create("h264", "r")
        assert isinstance(encoder, VideoCodecContext) and isinstance(decoder, VideoCodecContext)
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = fractions.Fraction(1, 25)
        encoder.options = {
            "qp": str(qp),
            "preset": "ultrafast",
            "tune": "zerolatency",
            "threads": "1",
            "x264-params": "keyint=1:scenecut=0",
        }
        encoder.open()
        decoder.options = {"threads": "1"}
        decoder.open()
        cache[(width, height, qp)] = (encoder, decoder)
    return cache[(width, height, qp)]


def h264(image: np.ndarray, qp: int) -> np.ndarray:
    """An RGB uint8 image through libx264 as one intra frame at constant quantiser `qp` (4:2:0) and back."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")  # 4:2:0 needs even sides
    encoder, decoder = _h264_codecs(width + width % 2, height + height % 2, qp)
    frames = [
        frame
        for packet in encoder.encode(av.VideoFrame.from_ndarray(padded, format="rgb24"))
        for frame in decoder.decode(packet)
    ]
    if len(frames) != 1:
        raise RuntimeError(f"H.264 round trip gave {len(frames)} frames for one")
    return frames[0].to_ndarray(format="rgb24")[:height, :width]


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """An RGB uint8 image through JPEG (OpenCV's default 4:2:0 chroma) at `quality` and back."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _cast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gains = np.array(
        [rng.uniform(1 - CAST_GAIN, 1 + CAST_GAIN), 1.0, rng.uniform(1 - CAST_GAIN, 1 + CAST_GAIN)]
    )
    gamma = rng.uniform(*CAST_GAMMA)
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    table = np.clip(np.round(255.0 * np.clip(levels * gains, 0, 1) ** gamma), 0, 255).astype(np.uint8)
    return cv2.LUT(image, table[None])


def _compress(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < H264:
        steps = (H264_QP[1] - H264_QP[0]) // H264_QP_STEP
        return h264(image, H264_QP[0] + H264_QP_STEP * int(rng.integers(steps + 1)))
    return jpeg(image, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A degraded copy of an RGB uint8 (H, W, 3) image (or the image itself, with probability CLEAN): colour
    cast, blur, noise, down-up scaling and one or two JPEG or H.264 compressions, each with its probability."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if rng.random() < CLEAN:
        return image
    height, width = image.shape[:2]
    out = np.ascontiguousarray(image)
    if rng.random() < CAST:
        out = _cast(out, rng)
    if rng.random() < BLUR:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(*BLUR_SIGMA) * max(height, width) / REFERENCE_SIDE)
    if rng.random() < NOISE:
        noise = rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(*NOISE_SIGMA)
        out = np.clip(np.round(out + noise), 0, 255).astype(np.uint8)
    if rng.random() < RESCALE:
        factor = rng.uniform(*RESCALE_FACTOR)
        small = cv2.resize(
            out, (max(1, round(width / factor)), max(1, round(height / factor))), interpolation=cv2.INTER_AREA
        )
        up = cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC
        out = cv2.resize(small, (width, height), interpolation=up)
    if rng.random() < COMPRESS:
        out = _compress(out, rng)
        if rng.random() < RECOMPRESS:
            out = _compress(out, rng)
    return out
