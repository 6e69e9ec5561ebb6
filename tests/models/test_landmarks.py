"""Tests for models.landmarks: FaceMesh on the face region, mapped back to frame pixels, track lifecycle."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import mediapipe as mp
import numpy as np
import pytest
from project_paths import SHARED_DATA
from skimage.data import astronaut

from models.detector import DetectorConfig, FaceDetector
from models.geometry import Box, Detection
from models.landmarks import NUM_LANDMARKS, FaceMesher

SHARED_IMAGES = SHARED_DATA / "images"

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


def test_tracks_are_followed_from_their_landmarks_and_forgotten(image: np.ndarray, face: Detection) -> None:
    mesher = FaceMesher()
    assert mesher.track_ids == frozenset()
    for track_id in (1, 2, 1):
        assert mesher.landmarks(image, track_id, face.box) is not None
    assert mesher.track_ids == {1, 2}
    mesher.forget([1, 99])
    assert mesher.track_ids == {2}
    mesher.close()
    assert mesher.track_ids == frozenset()
    assert mesher.landmarks(image, 1, face.box) is not None  # usable after close


def test_the_tracked_region_follows_a_jumping_box(
    image: np.ndarray, face: Detection, mesher: FaceMesher
) -> None:
    """A track whose box jumps (e.g. re-associated after a cut) is meshed where the box is, not where it was."""
    assert mesher.landmarks(image, 3, face.box) is not None
    moved = np.full((512, 1024, 3), 128, dtype=np.uint8)
    moved[:, 500:1012] = image
    box = Box.from_array(face.box.to_array() + [500, 0, 500, 0])
    points = mesher.landmarks(moved, 3, box)
    assert points is not None
    assert fraction_inside(points, box) > 0.9


def test_follow_moves_the_last_mesh_with_the_box(
    image: np.ndarray, face: Detection, reference: np.ndarray, mesher: FaceMesher
) -> None:
    """Between mesh runs the drawn mesh is the last one moved and scaled with the box: close to a fresh run."""
    assert mesher.follow(4, face.box) is None  # no landmarks yet
    assert mesher.landmarks(image, 4, face.box) is not None
    scale, dx, dy = 1.1, 12, -6
    box = Box.from_array(face.box.to_array() * scale + [dx, dy, dx, dy])
    followed = mesher.follow(4, box)
    assert followed is not None
    cx, cy = face.box.center
    error = np.linalg.norm(followed - (reference * scale + [dx, dy]), axis=1)
    assert np.median(error) < 0.03 * box.width
    assert mesher.follow(4, Box(cx, cy, cx + 3 * box.width, cy + 3 * box.height)) is None  # grew 3x: re-run


def mediapipe_face_mesh(image: np.ndarray) -> list[np.ndarray]:
    """Landmarks from MediaPipe's own FaceMesh graph (static images), in pixels."""
    height, width = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4) as graph:
        found = graph.process(image).multi_face_landmarks or []
    return [
        np.array([(p.x * width, p.y * height) for p in face.landmark], dtype=np.float32) for face in found
    ]


def test_first_landmarks_equal_mediapipe_face_mesh(image: np.ndarray, face: Detection) -> None:
    """The same model, region and sampling as MediaPipe's graph: the same landmarks."""
    (expected,) = mediapipe_face_mesh(image)
    with FaceMesher() as mesher:
        points = mesher.landmarks(image, 0, face.box, face.keypoints)
    assert points is not None
    error = np.linalg.norm(points - expected, axis=1)
    assert error.max() < 0.005 * face.box.width


def test_a_tilted_face_is_sampled_upright(image: np.ndarray, face: Detection, reference: np.ndarray) -> None:
    """The region turns with the eyes: a face rotated 30 degrees gets the rotated mesh."""
    cx, cy = face.box.center
    rotation = cv2.getRotationMatrix2D((cx, cy), 30, 1.0)
    tilted = cv2.warpAffine(image, rotation, image.shape[1::-1], flags=cv2.INTER_LINEAR)
    with FaceDetector() as detector:
        (found,) = detector.detect(tilted)
    with FaceMesher() as mesher:
        points = mesher.landmarks(tilted, 0, found.box, found.keypoints)
        assert points is not None
        expected = reference @ rotation[:, :2].T + rotation[:, 2]
        error = np.linalg.norm(points - expected, axis=1)
        assert np.median(error) < 0.03 * face.box.width
        upright = mesher.landmarks(tilted, 1, found.box)  # no keypoints: an upright region, a worse mesh
    assert upright is None or np.median(np.linalg.norm(upright - expected, axis=1)) >= np.median(error)


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({}, True),
        ({"min_confidence": 0.3}, True),
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
