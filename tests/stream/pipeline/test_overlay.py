"""Tests for stream.pipeline.overlay: mesh or box per verdict, colour and opacity by probability, untouched pixels."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import astronaut

from models.detector import FaceDetector
from models.geometry import Box
from models.landmarks import FaceMesher
from stream.pipeline.overlay import (
    VERDICT_COLOURS,
    FaceOverlay,
    OverlayConfig,
    draw_overlays,
    label_text,
    probability_colour,
    wants_mesh,
)

GREY = 128
NO_LABEL = OverlayConfig(show_label=False)


@pytest.fixture(scope="module")
def astronaut_face() -> tuple[Box, np.ndarray]:
    """The astronaut's box and real FaceMesh landmarks, moved to the middle of a 640x480 frame."""
    image = astronaut()
    with FaceDetector() as detector:
        (found,) = detector.detect(image)
    with FaceMesher() as mesher:
        points = mesher.landmarks(image, 0, found.box)
    assert points is not None
    dx, dy = 320 - found.box.center[0], 240 - found.box.center[1]
    box = Box.from_array(found.box.to_array() + [dx, dy, dx, dy])
    return box, points + np.array([dx, dy], dtype=np.float32)


def grey_frame() -> np.ndarray:
    return np.full((480, 640, 3), GREY, dtype=np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that differ in any channel."""
    return np.any(before != after, axis=2)


def bounds(points: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns of the landmarks' bounding region enlarged by `margin` pixels."""
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    return slice(y0, y1), slice(x0, x1)


def inner(box: Box, inset: int) -> tuple[slice, slice]:
    return slice(round(box.y1) + inset, round(box.y2) - inset), slice(
        round(box.x1) + inset, round(box.x2) - inset
    )


def test_manipulated_face_gets_a_reddish_mesh_blended_within_its_region(
    astronaut_face: tuple[Box, np.ndarray],
) -> None:
    box, points = astronaut_face
    frame = grey_frame()
    draw_overlays(frame, [FaceOverlay(3, box, 0.95, "manipulated", points)], NO_LABEL)
    mask = changed(grey_frame(), frame)
    region = bounds(points, NO_LABEL.thickness + 1)
    assert mask[region].mean() > 0.2  # a dense mesh over the face
    assert mask.sum() == mask[region].sum()  # nothing outside the blended region
    red, green, blue = (frame[..., c][mask].astype(float).mean() for c in range(3))
    assert red > GREY + 80 and green < GREY - 80 and blue < GREY - 80


@pytest.mark.parametrize(("verdict", "probability"), [("real", 0.05), ("suspect", 0.6), ("unknown", None)])
def test_face_not_selected_for_a_mesh_gets_only_a_box(
    astronaut_face: tuple[Box, np.ndarray], verdict: str, probability: float | None
) -> None:
    box, points = astronaut_face
    frame = grey_frame()
    draw_overlays(frame, [FaceOverlay(3, box, probability, verdict, points)], NO_LABEL)
    mask = changed(grey_frame(), frame)
    assert not mask[inner(box, NO_LABEL.thickness + 1)].any()  # no mesh inside the face
    top_row = frame[round(box.y1), round(box.x1) : round(box.x2)]
    assert (top_row == VERDICT_COLOURS[verdict]).all()
    assert mask.sum() <= 2 * (box.width + box.height) * NO_LABEL.thickness + 8  # the outline only


def test_selected_face_without_landmarks_gets_a_box(astronaut_face: tuple[Box, np.ndarray]) -> None:
    box, _ = astronaut_face
    frame = grey_frame()
    draw_overlays(frame, [FaceOverlay(3, box, 0.9, "manipulated", None)], NO_LABEL)
    assert not changed(grey_frame(), frame)[inner(box, 2)].any()
    assert (frame[round(box.y1), round(box.x1) : round(box.x2)] == VERDICT_COLOURS["manipulated"]).all()


@pytest.mark.parametrize(
    ("mesh_for", "verdict", "expected"),
    [
        ("manipulated", "manipulated", True),
        ("manipulated", "suspect", False),
        ("manipulated", "real", False),
        ("manipulated", "unknown", False),
        ("flagged", "manipulated", True),
        ("flagged", "suspect", True),
        ("flagged", "real", False),
        ("flagged", "unknown", False),
        ("all", "manipulated", True),
        ("all", "suspect", True),
        ("all", "real", True),
        ("all", "unknown", True),
    ],
)
def test_wants_mesh_and_drawing_agree(
    astronaut_face: tuple[Box, np.ndarray], mesh_for: str, verdict: str, expected: bool
) -> None:
    config = OverlayConfig(mesh_for=mesh_for, show_label=False)  # type: ignore[arg-type]
    assert wants_mesh(config, verdict) is expected
    box, points = astronaut_face
    frame = grey_frame()
    probability = None if verdict == "unknown" else 0.5
    draw_overlays(frame, [FaceOverlay(1, box, probability, verdict, points)], config)
    assert bool(changed(grey_frame(), frame)[inner(box, 3)].any()) is expected


def test_mesh_opacity_rises_with_probability(astronaut_face: tuple[Box, np.ndarray]) -> None:
    box, points = astronaut_face
    config = OverlayConfig(min_opacity=0.2, max_opacity=0.8, show_label=False)
    probabilities = (0.0, 0.25, 0.5, 0.75, 1.0)
    frames = []
    for probability in probabilities:
        frame = grey_frame()
        draw_overlays(frame, [FaceOverlay(1, box, probability, "manipulated", points)], config)
        frames.append(frame)
    mesh = changed(grey_frame(), frames[-1])
    opacities = []
    for probability, frame in zip(probabilities, frames, strict=True):
        # The mean change of the mesh pixels towards the mesh colour, as a fraction of the full way there.
        towards = np.array(probability_colour(probability), dtype=float) - GREY
        opacities.append(float(((frame[mesh].astype(float) - GREY) @ towards).mean() / (towards @ towards)))
    assert all(a < b for a, b in zip(opacities[:-1], opacities[1:], strict=True)), opacities
    expected = [config.min_opacity + (config.max_opacity - config.min_opacity) * p for p in probabilities]
    assert opacities == pytest.approx(expected, abs=0.01)


def test_zero_opacity_leaves_the_face_untouched(astronaut_face: tuple[Box, np.ndarray]) -> None:
    box, points = astronaut_face
    frame = grey_frame()
    config = OverlayConfig(min_opacity=0.0, max_opacity=0.0, show_label=False)
    draw_overlays(frame, [FaceOverlay(1, box, 1.0, "manipulated", points)], config)
    assert not changed(grey_frame(), frame).any()


@pytest.mark.parametrize("show_label", [True, False])
def test_pixels_far_from_any_face_are_untouched(
    astronaut_face: tuple[Box, np.ndarray], show_label: bool
) -> None:
    box, points = astronaut_face
    other = Box(40, 300, 140, 400)
    frame = grey_frame()
    faces = [FaceOverlay(1, box, 0.9, "manipulated", points), FaceOverlay(2, other, 0.1, "real", None)]
    draw_overlays(frame, faces, OverlayConfig(show_label=show_label))
    mask = changed(grey_frame(), frame)
    near = np.zeros_like(mask)
    for face in faces:
        # The label sits above the box, up to ~20 px high and ~170 px wide for "#1 0.90 manipulated".
        near[max(0, round(face.box.y1) - 30) : round(face.box.y2) + 30, round(face.box.x1) - 30 :][
            :, :230
        ] = True
    near[bounds(points, 2)] = True
    assert mask.any()
    assert not mask[~near].any()
    label_area = mask[round(other.y1) - 20 : round(other.y1) - 1, round(other.x1) : round(other.x2)]
    assert bool(label_area.any()) is show_label


def test_mesh_partly_outside_the_frame_is_clipped(astronaut_face: tuple[Box, np.ndarray]) -> None:
    box, points = astronaut_face
    shift = np.array([-box.center[0], 240 - box.center[1]], dtype=np.float32)  # face centred on the left edge
    moved = Box.from_array(box.to_array() + np.tile(shift, 2))
    frame = grey_frame()
    draw_overlays(frame, [FaceOverlay(1, moved, 0.9, "manipulated", points + shift)], OverlayConfig())
    assert changed(grey_frame(), frame)[:, :40].any()


def test_draws_in_place_on_a_frame_view(astronaut_face: tuple[Box, np.ndarray]) -> None:
    box, points = astronaut_face
    canvas = np.full((480, 700, 3), GREY, dtype=np.uint8)
    frame = canvas[:, 30:670]  # not contiguous
    draw_overlays(frame, [FaceOverlay(1, box, 0.9, "manipulated", points)], NO_LABEL)
    assert changed(np.full_like(canvas, GREY), canvas)[:, 30:670].any()
    assert (canvas[:, :30] == GREY).all() and (canvas[:, 670:] == GREY).all()


@pytest.mark.parametrize(
    ("p", "rgb"),
    [
        (0.0, (0, 255, 0)),
        (0.25, (128, 255, 0)),
        (0.5, (255, 255, 0)),
        (0.75, (255, 128, 0)),
        (1.0, (255, 0, 0)),
    ],
)
def test_probability_colour(p: float, rgb: tuple[int, int, int]) -> None:
    assert probability_colour(p) == rgb


@pytest.mark.parametrize("p", [-0.01, 1.01, float("nan")])
def test_probability_colour_rejects_out_of_range(p: float) -> None:
    with pytest.raises(ValueError):
        probability_colour(p)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"verdict": "fake"},
        {"probability": 1.5},
        {"probability": -0.1},
        {"landmarks": np.zeros((478, 2), dtype=np.float32)},
        {"landmarks": np.zeros((468, 3), dtype=np.float32)},
        {"verdict": "unknown"},  # an unknown face shows no score
        {"probability": None},  # a verdict shows the score it was decided on
        {"probability": None, "verdict": "manipulated"},
    ],
)
def test_face_overlay_validation(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "track_id": 1,
        "box": Box(0, 0, 10, 10),
        "probability": 0.5,
        "verdict": "real",
        "landmarks": None,
    }
    with pytest.raises(ValueError):
        FaceOverlay(**{**fields, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mesh_for": "suspect"},
        {"min_opacity": -0.1},
        {"max_opacity": 1.1},
        {"min_opacity": 0.8, "max_opacity": 0.5},
        {"thickness": 0},
    ],
)
def test_overlay_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OverlayConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("image", [np.zeros((48, 64), np.uint8), np.zeros((48, 64, 3), np.float32)])
def test_draw_overlays_rejects_non_rgb_uint8(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        draw_overlays(image, [], OverlayConfig())


@pytest.mark.parametrize(
    ("probability", "verdict", "text"),
    [
        (None, "unknown", "#7 unknown"),
        (0.0, "real", "#7 0.00 real"),
        (0.4049, "suspect", "#7 0.40 suspect"),
        (0.5, "manipulated", "#7 0.50 manipulated"),
        (0.996, "manipulated", "#7 1.00 manipulated"),
    ],
)
def test_label_text_shows_the_score_and_verdict(probability: float | None, verdict: str, text: str) -> None:
    assert label_text(FaceOverlay(7, Box(0, 0, 10, 10), probability, verdict)) == text


def test_the_label_drawn_is_the_label_text(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    monkeypatch.setattr(
        "stream.pipeline.overlay.cv2.putText", lambda image, text, *args: written.append(text)
    )
    faces = [
        FaceOverlay(1, Box(100, 100, 200, 200), None, "unknown"),
        FaceOverlay(2, Box(300, 100, 400, 200), 0.8125, "manipulated"),
    ]
    draw_overlays(grey_frame(), faces, OverlayConfig())
    assert written == ["#1 unknown", "#2 0.81 manipulated"]
