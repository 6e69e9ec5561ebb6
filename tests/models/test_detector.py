"""BlazeFace run as a plain TFLite interpreter: the same detections as MediaPipe's own face detection graph."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import mediapipe as mp
import numpy as np
import pytest
from project_paths import SHARED_DATA
from skimage.data import astronaut

from models.blazeface import (
    FULL_RANGE,
    SHORT_RANGE,
    RawFaces,
    anchor_centres,
    suppression_clusters,
    weighted_nms,
)
from models.bundled import FACE_DETECTION_SHORT_RANGE, BundledModel, face_mesh_tessellation
from models.detector import RANGE_SETTINGS, DetectorConfig, FaceDetector, range_for
from models.errors import ModelPackageError
from models.geometry import Box, Detection
from models.manifest import Manifest
from models.preprocess import CropSpec
from stream.cli import build_parser, pipeline_config
from stream.config import DETECTOR_RANGES, ConfigError, ServiceConfig, load_config
from stream.live.cameras import CameraList
from stream.live.service import LiveService
from stream.outputs.metrics import Metrics

SHARED_IMAGES = SHARED_DATA / "images"


def mediapipe_detections(image: np.ndarray, detector_range: str) -> list[Detection]:
    """What `mp.solutions.face_detection` finds, in pixels."""
    height, width = image.shape[:2]
    selection = 0 if detector_range == "short" else 1
    with mp.solutions.face_detection.FaceDetection(model_selection=selection) as graph:
        found = graph.process(image).detections or []
    detections = []
    for face in found:
        rel = face.location_data.relative_bounding_box
        box = Box(
            max(0.0, rel.xmin * width),
            max(0.0, rel.ymin * height),
            min(float(width), (rel.xmin + rel.width) * width),
            min(float(height), (rel.ymin + rel.height) * height),
        )
        points = [(kp.x * width, kp.y * height) for kp in face.location_data.relative_keypoints]
        detections.append(Detection(box, float(face.score[0]), np.array(points, dtype=np.float32)))
    return detections


def assert_same_detections(image: np.ndarray, detector_range: str) -> None:
    expected = mediapipe_detections(image, detector_range)
    with FaceDetector(DetectorConfig(range=detector_range)) as detector:  # type: ignore[arg-type]
        found = detector.detect(image)
    assert len(found) == len(expected) > 0
    for face in found:
        twin = max(expected, key=lambda other: other.box.iou(face.box))
        assert face.box.iou(twin.box) > 0.99
        assert face.score == pytest.approx(twin.score, abs=1e-3)
        assert np.abs(face.keypoints - twin.keypoints).max() < 0.01 * face.box.width


def test_anchor_layouts_match_the_models_outputs() -> None:
    assert anchor_centres(SHORT_RANGE).shape == (896, 2)
    assert anchor_centres(FULL_RANGE).shape == (2304, 2)
    for spec in (SHORT_RANGE, FULL_RANGE):
        centres = anchor_centres(spec)
        assert ((centres > 0) & (centres < 1)).all()


@pytest.mark.parametrize("detector_range", ["short", "full"])
def test_astronaut_matches_mediapipe(detector_range: str) -> None:
    assert_same_detections(astronaut(), detector_range)


@pytest.mark.parametrize("detector_range", ["short", "full"])
def test_wide_and_tall_frames_are_letterboxed_like_mediapipe(detector_range: str) -> None:
    face = astronaut()[40:300, 120:380]
    wide = np.full((300, 640, 3), 90, dtype=np.uint8)
    wide[20:280, 360:620] = face
    tall = np.full((640, 300, 3), 160, dtype=np.uint8)
    tall[300:560, 20:280] = face
    assert_same_detections(wide, detector_range)
    assert_same_detections(tall, detector_range)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "detector_range"),
    [
        ("kit_with_rose.jpg", "short"),
        ("kit_with_rose.jpg", "full"),
        ("two_people.jpg", "short"),
        ("two_people.jpg", "full"),
        (
            "obama_and_biden.jpg",
            "full",
        ),  # small faces in a large photo: short range finds none, like MediaPipe
    ],
)
def test_real_photos_match_mediapipe(name: str, detector_range: str) -> None:
    path = SHARED_IMAGES / name
    if not path.is_file():
        pytest.skip(f"shared data absent: {path}")
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert_same_detections(image, detector_range)


def test_weighted_nms_averages_each_cluster_by_score() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]], dtype=np.float32)
    scores = np.array([0.6, 0.9, 0.7], dtype=np.float32)
    keypoints = np.repeat(boxes[:, None, :2], 6, axis=1)
    kept = weighted_nms(RawFaces(boxes, scores, keypoints))
    np.testing.assert_allclose(kept.scores, [0.9, 0.7])
    np.testing.assert_allclose(kept.boxes[0], (boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(kept.boxes[1], boxes[2])
    np.testing.assert_allclose(kept.keypoints[0, 0], kept.boxes[0, :2], rtol=1e-6)
    empty = weighted_nms(RawFaces(boxes[:0], scores[:0], keypoints[:0]))
    assert empty.boxes.shape == (0, 4) and empty.keypoints.shape == (0, 6, 2)


def test_a_frame_without_faces_gives_nothing() -> None:
    with FaceDetector() as detector:
        assert detector.detect(np.full((480, 640, 3), 128, dtype=np.uint8)) == []


def test_a_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "face_detection_short_range.tflite"
    broken.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelPackageError, match="cannot load the bundled MediaPipe model"):
        BundledModel(broken)


def test_bundled_model_scales_the_image_into_its_input_as_a_float_tensor_would() -> None:
    """`run` converts in place in the interpreter's buffer; it must equal feeding the float tensor, on every
    call, and its outputs must not change when the next call reuses the buffers."""
    import tensorflow as tf

    reference = tf.lite.Interpreter(model_path=str(FACE_DETECTION_SHORT_RANGE), num_threads=1)
    reference.allocate_tensors()
    model = BundledModel(FACE_DETECTION_SHORT_RANGE)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    first = model.run(images[0], 2.0 / 255.0, -1.0)
    kept = [out.copy() for out in first]
    for image in images:
        reference.set_tensor(
            reference.get_input_details()[0]["index"], (image.astype(np.float32) * (2.0 / 255.0) - 1.0)[None]
        )
        reference.invoke()
        expected = [reference.get_tensor(out["index"]) for out in reference.get_output_details()]
        for got, want in zip(model.run(image, 2.0 / 255.0, -1.0), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for before, after in zip(first, kept, strict=True):
        np.testing.assert_array_equal(before, after)
    model.close()


def test_weighted_nms_keeps_two_faces_side_by_side_apart() -> None:
    """Candidates of two touching faces overlap little (IoU well under 0.3): two clusters, each averaged on its
    own face, so suppression never draws a box between them."""
    rng = np.random.default_rng(3)
    faces = np.array([[0.20, 0.30, 0.30, 0.40], [0.29, 0.32, 0.39, 0.42]], dtype=np.float32)
    boxes = np.concatenate([face + rng.normal(0.0, 0.005, (6, 4)) for face in faces]).astype(np.float32)
    scores = rng.uniform(0.5, 0.9, 12).astype(np.float32)
    keypoints = np.repeat(boxes[:, None, :2], 6, axis=1)
    clusters = suppression_clusters(RawFaces(boxes, scores, keypoints))
    assert sorted(sorted(int(i) // 6 for i in cluster) for cluster in clusters) == [[0] * 6, [1] * 6]
    kept = weighted_nms(RawFaces(boxes, scores, keypoints))
    for box in kept.boxes:
        assert min(np.abs(box - face).max() for face in faces) < 0.01


def test_suppression_clusters_start_at_the_best_remaining_score() -> None:
    boxes = np.array(
        [[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.31, 0.3], [0.5, 0.5, 0.7, 0.7], [0.12, 0.1, 0.32, 0.3]],
        dtype=np.float32,
    )
    faces = RawFaces(boxes, np.array([0.6, 0.9, 0.7, 0.8], np.float32), np.zeros((4, 6, 2), np.float32))
    assert [cluster.tolist() for cluster in suppression_clusters(faces)] == [[1, 3, 0], [2]]
    assert suppression_clusters(RawFaces(boxes[:0], faces.scores[:0], faces.keypoints[:0])) == []


def test_detections_are_the_candidates_after_suppression() -> None:
    image = astronaut()
    with FaceDetector() as detector:
        found = detector.detect(image)
        kept = weighted_nms(detector.candidates(image))
    assert len(found) == len(kept.boxes) == 1
    np.testing.assert_allclose(found[0].box.to_array(), kept.boxes[0], atol=1e-3)
    np.testing.assert_allclose(found[0].keypoints, kept.keypoints[0], atol=1e-3)


@pytest.mark.shared_data
def test_short_range_sees_two_small_faces_as_one_where_full_range_parts_them(shared_data: Path) -> None:
    """Frame 262 of two_people_stage.mp4 (640x360): two people side by side in the audience, faces 60-85 px
    (hand-checked centres). Short range returns one box over both; it is the model's own best candidate, not
    suppression blending two faces. Full range returns one box per face."""
    with av.open(str(shared_data / "video" / "two_people_stage.mp4")) as container:
        frames = container.decode(video=0)
        image = next(frame for index, frame in enumerate(frames) if index == 262).to_ndarray(format="rgb24")
    centres = [(339, 90), (404, 140)]

    def holding(box: np.ndarray | Box) -> int:
        x1, y1, x2, y2 = box.to_array() if isinstance(box, Box) else box
        return sum(x1 <= x <= x2 and y1 <= y <= y2 for x, y in centres)

    with FaceDetector(DetectorConfig(range="full")) as full:
        assert sorted(holding(d.box) for d in full.detect(image) if holding(d.box)) == [1, 1]
    with FaceDetector(DetectorConfig(range="short")) as short:
        assert [holding(d.box) for d in short.detect(image) if holding(d.box)] == [2]
        raw = short.candidates(image)
    assert holding(raw.boxes[np.argmax(raw.scores)]) == 2


def test_auto_range_is_short_for_browser_webcams_and_full_for_cameras_and_files() -> None:
    assert {source: range_for("auto", source) for source in ("browser", "camera", "file")} == {
        "browser": "short",
        "camera": "full",
        "file": "full",
    }
    for setting in ("short", "full"):
        assert {range_for(setting, source) for source in ("browser", "camera", "file")} == {setting}
    with pytest.raises(ValueError, match="auto, short, full"):
        range_for("far", "camera")
    assert RANGE_SETTINGS == DETECTOR_RANGES


def test_the_service_setting_defaults_to_auto_and_refuses_unknown_ranges() -> None:
    assert ServiceConfig().detector_range == "auto"
    assert load_config(environ={"FAKEWEB_DETECTOR_RANGE": "short"}).detector_range == "short"
    with pytest.raises(ConfigError, match="detector_range must be one of auto, short, full, got 'far'"):
        load_config(environ={"FAKEWEB_DETECTOR_RANGE": "far"})


def _manifest() -> Manifest:
    return Manifest(
        version="v1",
        created_at="2025-01-01T00:00:00+00:00",
        architecture="tiny-conv",
        crop=CropSpec(size=32),
        threshold=0.5,
        files={"model.tflite": "0" * 64},
    )


@pytest.mark.parametrize(
    ("setting", "browser", "camera"),
    [("auto", "short", "full"), ("short", "short", "short"), ("full", "full", "full")],
)
def test_live_streams_detect_with_the_range_of_their_kind(
    tmp_path: Path, setting: str, browser: str, camera: str
) -> None:
    holder = SimpleNamespace(current=SimpleNamespace(package=SimpleNamespace(manifest=_manifest())))
    config = ServiceConfig(data_dir=tmp_path, detector_range=setting)
    service = LiveService(config, holder, Metrics(), CameraList(tmp_path / "cameras.json"))  # type: ignore[arg-type]
    assert service._pipeline_config("browser").detector.range == browser
    assert service._pipeline_config("camera").detector.range == camera


@pytest.mark.parametrize(("flags", "expected"), [((), "full"), (("--detector-range", "short"), "short")])
def test_fakeweb_run_detects_with_full_range_unless_told(flags: tuple[str, ...], expected: str) -> None:
    args = build_parser().parse_args(["run", "clip.mp4", "-o", "out.mp4", *flags])
    classifier = SimpleNamespace(package=SimpleNamespace(manifest=_manifest()))
    assert pipeline_config(args, classifier).detector.range == expected  # type: ignore[arg-type]


def test_face_mesh_tessellation_read_from_the_wheel_by_path_is_mediapipes_own() -> None:
    assert face_mesh_tessellation() == mp.solutions.face_mesh.FACEMESH_TESSELATION
    assert len(face_mesh_tessellation()) == 2556
