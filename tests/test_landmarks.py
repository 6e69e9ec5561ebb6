"""Tests for models.landmarks: FaceMesh on the face region, mapped back to frame pixels, track lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import mediapipe as mp
import numpy as np
import pytest
from skimage.data import astronaut

from models.detector import DetectorConfig, FaceDetector
from models.geometry import Box, Detection
from models.landmarks import NUM_LANDMARKS, FaceMesher, normalized_xy

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"

Move = tuple[float, int, int, tuple[int, int]]  # scale, dx, dy, output (width, height)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="module")
def face(image: np.ndarray) -> Detection:
    with FaceDetector() as detector:
        (found,) = detector.detect(image)
    return found


@pytest.fixture(scope="module")
def reference(image: np.ndarray, face: Detection) -> np.ndarray:
    """Landmarks of the astronaut's face in the untouched image."""
    with FaceMesher() as mesher:
        points = mesher.landmarks(image, 0, face.box)
    assert points is not None
    return points


@pytest.fixture
def mesher() -> Iterator[FaceMesher]:
    with FaceMesher() as instance:
        yield instance


def fraction_inside(points: np.ndarray, box: Box) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(np.mean((x >= box.x1) & (x < box.x2) & (y >= box.y1) & (y < box.y2)))


def test_landmarks_are_468_frame_pixels_inside_the_detector_box(
    reference: np.ndarray, face: Detection
) -> None:
    assert reference.shape == (NUM_LANDMARKS, 2)
    assert reference.dtype == np.float32
    box = face.box
    assert fraction_inside(reference, box) > 0.9
    margin = 0.25 * box.width  # the mesh reaches the forehead above BlazeFace's box
    enlarged = Box(box.x1 - margin, box.y1 - margin, box.x2 + margin, box.y2 + margin)
    assert fraction_inside(reference, enlarged) == 1.0


# BlazeFace keypoints: 0 right eye, 1 left eye, 2 nose tip, 3 mouth centre (subject's right = image left).
@pytest.mark.parametrize(
    ("part", "mesh_indices", "keypoint"),
    [
        ("right eye", [33, 133, 159, 145], 0),
        ("left eye", [362, 263, 386, 374], 1),
        ("nose tip", [1], 2),
        ("mouth centre", [13, 14], 3),
    ],
)
def test_mesh_parts_are_near_blazeface_keypoints(
    reference: np.ndarray, face: Detection, part: str, mesh_indices: list[int], keypoint: int
) -> None:
    distance = np.linalg.norm(reference[mesh_indices].mean(axis=0) - face.keypoints[keypoint])
    assert distance < 0.08 * face.box.width, part


def assert_follows(
    mesher: FaceMesher, track_id: int, image: np.ndarray, face: Detection, reference: np.ndarray, move: Move
) -> None:
    """The landmarks of the astronaut moved by `move` are the reference landmarks moved the same way."""
    scale, dx, dy, size = move
    matrix = np.array([[scale, 0, dx], [0, scale, dy]], dtype=np.float32)
    moved = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR)
    box = Box.from_array(face.box.to_array() * scale + [dx, dy, dx, dy])
    points = mesher.landmarks(moved, track_id, box)
    assert points is not None, move
    error = np.linalg.norm(points - (reference * scale + [dx, dy]), axis=1)
    side = face.box.width * scale
    assert np.median(error) < 0.02 * side, move
    assert error.max() < 0.05 * side, move


@pytest.mark.parametrize(
    "move",
    [
        (1.0, 37, 21, (640, 600)),
        (1.0, -150, -60, (640, 480)),  # face near the top-left corner: the crop is clipped and not square
        (2.0, 0, 0, (1024, 1024)),
        (0.75, 100, 50, (640, 480)),
    ],
)
def test_landmarks_follow_a_moved_and_scaled_face(
    image: np.ndarray, face: Detection, reference: np.ndarray, mesher: FaceMesher, move: Move
) -> None:
    assert_follows(mesher, 0, image, face, reference, move)


def test_tracked_face_moving_and_zooming_keeps_an_accurate_mesh(
    image: np.ndarray, face: Detection, reference: np.ndarray, mesher: FaceMesher
) -> None:
    """One track over frames whose crop moves and changes size, as in a stream (FaceMesh in tracking mode)."""
    for scale, dx, dy in [(1.0, 0, 0), (1.1, 10, 5), (1.25, 20, 10), (1.4, 30, 15), (1.2, 40, 20)]:
        assert_follows(mesher, 5, image, face, reference, (scale, dx, dy, (640, 480)))


@pytest.mark.parametrize(
    ("scene", "box"),
    [
        ("noise", Box(200, 150, 360, 310)),
        ("grey", Box(200, 150, 360, 310)),
        ("astronaut", Box(0, 0, 120, 120)),  # the flag
        ("astronaut", Box(380, 150, 500, 270)),  # the shuttle
        ("astronaut", Box(600, 600, 700, 700)),  # outside the frame
    ],
)
def test_region_without_a_face_gives_none(
    image: np.ndarray, mesher: FaceMesher, scene: str, box: Box
) -> None:
    frames = {
        "noise": np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "grey": np.full((480, 640, 3), 128, dtype=np.uint8),
        "astronaut": image,
    }
    assert mesher.landmarks(frames[scene], 7, box) is None


def test_tracked_face_that_disappears_gives_none(
    image: np.ndarray, face: Detection, mesher: FaceMesher
) -> None:
    for _ in range(3):
        assert mesher.landmarks(image, 1, face.box) is not None
    erased = image.copy()
    erased[:260, 120:340] = 128
    assert mesher.landmarks(erased, 1, face.box) is None


def test_adjacent_faces_each_get_their_own_mesh(image: np.ndarray, mesher: FaceMesher) -> None:
    tile = image[60:200, 170:280]  # the face, 110 px wide: each face's crop takes in part of its neighbour
    frame = np.full((300, 400, 3), 128, dtype=np.uint8)
    frame[50:190, 80:190] = tile
    frame[50:190, 190:300] = tile
    with FaceDetector() as detector:
        faces = sorted(detector.detect(frame), key=lambda d: d.box.x1)
    assert len(faces) == 2
    for _ in range(2):  # first frame (detection) and second frame (tracking)
        for track_id, found in enumerate(faces):
            points = mesher.landmarks(frame, track_id, found.box)
            assert points is not None
            assert fraction_inside(points, found.box) > 0.9
    assert mesher.track_ids == {0, 1}


class CountingFaceMesh(mp.solutions.face_mesh.FaceMesh):  # type: ignore[misc]
    """The real FaceMesh, recording its instances, their arguments and closes."""

    created: list[CountingFaceMesh] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kwargs = kwargs
        self.closed = False
        CountingFaceMesh.created.append(self)

    def close(self) -> None:
        self.closed = True
        super().close()


def test_instances_are_per_track_lazy_and_freed_by_forget_and_close(
    image: np.ndarray, face: Detection, monkeypatch: pytest.MonkeyPatch
) -> None:
    CountingFaceMesh.created = []
    monkeypatch.setattr(mp.solutions.face_mesh, "FaceMesh", CountingFaceMesh)
    mesher = FaceMesher()
    assert mesher.track_ids == frozenset()
    for track_id in (1, 2, 1):
        mesher.landmarks(image, track_id, face.box)
    first, second = CountingFaceMesh.created
    assert mesher.track_ids == {1, 2}
    tracking = {"static_image_mode": False, "max_num_faces": 1, "refine_landmarks": False}
    assert first.kwargs.items() >= tracking.items()

    mesher.forget([1, 99])
    assert mesher.track_ids == {2}
    assert first.closed and not second.closed

    mesher.close()
    assert mesher.track_ids == frozenset()
    assert second.closed

    assert mesher.landmarks(image, 1, face.box) is not None  # reusable after close: a new instance
    assert len(CountingFaceMesh.created) == 3
    mesher.close()


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({}, True),
        ({"context": 1.0, "min_confidence": 0.3}, True),
        ({"context": 0.9}, False),
        ({"min_confidence": 0.0}, False),
        ({"min_confidence": 1.0}, False),
    ],
)
def test_config_validation(kwargs: dict[str, float], ok: bool) -> None:
    if ok:
        FaceMesher(**kwargs).close()
    else:
        with pytest.raises(ValueError):
            FaceMesher(**kwargs)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name", ["kit_with_rose.jpg", "obama-720p.jpg", "obama_and_biden.jpg", "two_people.jpg"]
)
def test_every_face_in_real_photos_gets_a_mesh_in_its_own_box(name: str) -> None:
    path = SHARED_IMAGES / name
    if not path.is_file():
        pytest.skip(f"shared data absent: {path}")
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    with FaceDetector(DetectorConfig(range="full")) as detector:
        faces = detector.detect(image)
    assert faces
    with FaceMesher() as mesher:
        for track_id, found in enumerate(faces):
            points = mesher.landmarks(image, track_id, found.box)
            assert points is not None
            assert fraction_inside(points, found.box) > 0.9
            assert np.linalg.norm(points[1] - found.keypoints[2]) < 0.12 * found.box.width


def landmark_list(count: int, **fields: float) -> Any:
    """A NormalizedLandmarkList of `count` landmarks with distinct x, y, z and the given extra fields."""
    from mediapipe.framework.formats import landmark_pb2

    values = np.random.default_rng(count).uniform(-0.2, 1.2, (count, 3)).astype(np.float32)
    message = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in values:
        message.landmark.add(x=x, y=y, z=z, **fields)
    return message


@pytest.mark.parametrize(
    "message",
    [
        landmark_list(NUM_LANDMARKS),
        landmark_list(3, visibility=0.5),  # 22-byte records: the plain loop
        landmark_list(1, presence=0.0),
        landmark_list(0),
    ],
    ids=["facemesh layout", "with visibility", "with presence", "empty"],
)
def test_normalized_xy_matches_reading_each_landmark(message: Any) -> None:
    expected = np.array([(p.x, p.y) for p in message.landmark], dtype=np.float32).reshape(-1, 2)
    points = normalized_xy(message)
    assert points.dtype == np.float32 and points.shape == expected.shape
    np.testing.assert_array_equal(points, expected)
    points += 1.0  # a fresh, writable array


def test_normalized_xy_falls_back_when_a_coordinate_is_missing() -> None:
    message = landmark_list(4)
    message.landmark[2].ClearField("z")
    message.landmark.add(x=0.5, y=0.25, z=0.0, visibility=1.0)
    expected = np.array([(p.x, p.y) for p in message.landmark], dtype=np.float32)
    np.testing.assert_array_equal(normalized_xy(message), expected)
