"""The kernels as callables on real inputs: the clip's frames, their face boxes and meshes, face crops.

Each `make_*` builds an independent instance (its own detector, codec, interpreter...) whose `call(i)` runs the
kernel once on input `i` (inputs cycle), so a benchmark can time it alone or run one instance per thread.
"""

from __future__ import annotations

import fractions
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from models.classifier import Classifier
from models.detector import DetectorConfig, FaceDetector
from models.geometry import Box
from models.landmarks import FaceMesher
from models.preprocess import CropSpec, crop_face
from stream.outputs.encoder import EncoderSettings, vp8_codec
from stream.outputs.feed import yuv420p_frame
from stream.pipeline.overlay import FaceOverlay, OverlayConfig, draw_overlays
from stream.sources.file_source import open_video

Call = Callable[[int], object]
"""A kernel instance: call(i) runs the kernel once on input i."""

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
_MEBIBYTE = bytes(2**20)


@dataclass
class Inputs:
    """The clip's first frames that show a face: RGB images, the face's box and mesh, crops; the packets."""

    clip: Path
    images: list[np.ndarray]
    boxes: list[Box]
    meshes: list[np.ndarray]
    crops: np.ndarray
    packets: list[av.Packet]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return int(self.images[0].shape[1]), int(self.images[0].shape[0])


def load_inputs(clip: Path, frames: int, crop: CropSpec) -> Inputs:
    """Decode the first `frames` frames of `clip`, keeping those where a face and its mesh are found."""
    container, stream = open_video(clip)
    packets: list[av.Packet] = []
    decoded: list[np.ndarray] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets.append(packet)
            decoded += [frame.to_ndarray(format="rgb24") for frame in stream.decode(packet)]
            if len(decoded) >= frames:
                break
    finally:
        container.close()
    images, boxes, meshes = [], [], []
    with FaceDetector() as detector, FaceMesher() as mesher:
        for image in decoded[:frames]:
            found = detector.detect(image)
            mesh = mesher.landmarks(image, 1, found[0].box) if found else None
            if mesh is not None:
                images.append(image)
                boxes.append(found[0].box)
                meshes.append(mesh)
    if not images:
        raise ValueError(f"{clip}: no face with a mesh in its first {frames} frames")
    crops = np.stack([crop_face(image, box, crop) for image, box in zip(images, boxes, strict=True)])
    return Inputs(clip, images, boxes, meshes, crops, packets)


class _Decoder:
    """H.264 -> RGB as FileSource does it: the clip's packets in a loop, a threaded codec context of its own."""

    def __init__(self, inputs: Inputs) -> None:
        self._container, stream = open_video(inputs.clip)
        self._context = stream.codec_context
        self._packets = inputs.packets

    def __call__(self, i: int) -> object:
        packet = self._packets[i % len(self._packets)]
        return [frame.to_ndarray(format="rgb24") for frame in self._context.decode(packet)]


def make_decode(inputs: Inputs) -> Call:
    return _Decoder(inputs)


def make_to_rgb(inputs: Inputs) -> Call:
    """yuv420p -> rgb24 alone (the decoder's `to_ndarray`), on frames of its own: PyAV frames are not shared
    between threads (each keeps its swscale context)."""
    frames = [
        av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        for image in inputs.images[:10]
    ]
    return lambda i: frames[i % len(frames)].to_ndarray(format="rgb24")


def make_detect(inputs: Inputs, config: DetectorConfig) -> Call:
    detect, images = FaceDetector(config).detect, inputs.images
    return lambda i: detect(images[i % len(images)])


def make_mesh(inputs: Inputs) -> Call:
    """FaceMesh in tracking mode on the face region, consecutive frames (the pipeline's use)."""
    landmarks, images, boxes = FaceMesher().landmarks, inputs.images, inputs.boxes
    return lambda i: landmarks(images[i % len(images)], 1, boxes[i % len(boxes)])


def make_crop(inputs: Inputs, spec: CropSpec) -> Call:
    images, boxes = inputs.images, inputs.boxes
    return lambda i: crop_face(images[i % len(images)], boxes[i % len(boxes)], spec)


def make_classify(classifier: Classifier, inputs: Inputs, batch: int) -> Call:
    crops, indices = inputs.crops, np.arange(batch)
    return lambda i: classifier.predict(crops[(indices + i) % len(crops)])


def make_draw(inputs: Inputs, with_mesh: bool) -> Call:
    """One face drawn: the tessellation and label of a manipulated face, or the box and label of a real one."""
    canvases = [image.copy() for image in inputs.images]
    config = OverlayConfig(mesh_for="all")
    verdict = "manipulated" if with_mesh else "real"

    def call(i: int) -> object:
        k = i % len(canvases)
        face = FaceOverlay(1, inputs.boxes[k], 0.9, verdict, inputs.meshes[k] if with_mesh else None)
        draw_overlays(canvases[k], [face], config)
        return None

    return call


def make_to_yuv(inputs: Inputs) -> Call:
    """rgb24 -> yuv420p alone with swscale, the conversion the encoders start with."""
    frames = [av.VideoFrame.from_ndarray(image, format="rgb24") for image in inputs.images[:10]]
    return lambda i: frames[i % len(frames)].reformat(format="yuv420p")


def make_to_yuv_cv2(inputs: Inputs) -> Call:
    """rgb24 array -> yuv420p VideoFrame with OpenCV, as `AnnotatedFeed.publish` does for every processed frame."""
    images = inputs.images
    return lambda i: yuv420p_frame(images[i % len(images)])


def stream_encode(width: int, height: int) -> Callable[[np.ndarray, int], object]:
    """What the live path does with each drawn frame: publish it (OpenCV yuv420p) and encode it with the stream
    encoder's VP8 settings (`stream.outputs.encoder.vp8_codec`), once for all viewers; called with (image, index)."""
    codec = vp8_codec(width // 2 * 2, height // 2 * 2, EncoderSettings().bitrate)

    def encode(image: np.ndarray, index: int) -> object:
        frame = yuv420p_frame(image)
        frame.pts, frame.time_base = index * 3000, VIDEO_TIME_BASE
        return codec.encode(frame)

    return encode


def make_stream_encode(inputs: Inputs) -> Call:
    """`stream_encode` on the clip's frames."""
    encode, images = stream_encode(*inputs.size), inputs.images
    return lambda i: encode(images[i % len(images)], i)


def make_encode(inputs: Inputs, codec: str, convert: str = "swscale") -> Call:
    """aiortc's own encoder (`vp8` or `h264`) at 30 fps timestamps, as RTCRtpSender calls it: on rgb24 frames
    (the encoder converts with swscale), or with `convert="cv2"` on yuv420p frames converted by OpenCV."""
    encoder = Vp8Encoder() if codec == "vp8" else H264Encoder()
    images = inputs.images

    def call(i: int) -> object:
        image = images[i % len(images)]
        frame = (
            yuv420p_frame(image) if convert == "cv2" else av.VideoFrame.from_ndarray(image, format="rgb24")
        )
        frame.pts, frame.time_base = i * 3000, VIDEO_TIME_BASE
        return encoder.encode(frame)

    return call


def pipeline_kernels(
    inputs: Inputs, detector: DetectorConfig, spec: CropSpec
) -> dict[str, Callable[[], Call]]:
    """Makers of the kernels the live pipeline runs besides the classifier, by the name of the work they do:
    decode, detect, crop, mesh, draw mesh, draw box, encode (publish and VP8)."""
    return {
        "decode": partial(make_decode, inputs),
        "detect": partial(make_detect, inputs, detector),
        "crop": partial(make_crop, inputs, spec),
        "mesh": partial(make_mesh, inputs),
        "draw mesh": partial(make_draw, inputs, True),
        "draw box": partial(make_draw, inputs, False),
        "encode": partial(make_stream_encode, inputs),
    }


def sha256_control(_: int) -> object:
    """Single-threaded native code that releases the GIL: sha256 of 1 MiB."""
    return hashlib.sha256(_MEBIBYTE).digest()


def python_control(_: int) -> object:
    """Pure Python that holds the GIL throughout."""
    total = 0
    for value in range(20_000):
        total += value
    return total
