"""Tests for stream.pipeline.tracker: assignment, lifecycle, prediction and id bookkeeping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.geometry import Box, Detection
from stream.pipeline.tracker import IouTracker, Track, TrackerConfig, TrackState


def det(x: float, y: float = 0.0, size: float = 100.0, score: float = 0.9) -> Detection:
    """A square face at (x, y) with six keypoints at its top-left corner."""
    keypoints = np.tile(np.array([x, y], dtype=np.float32), (6, 1))
    return Detection(Box(x, y, x + size, y + size), score, keypoints)


def ids_by_x(tracks: list[Track]) -> list[int]:
    return [t.track_id for t in sorted(tracks, key=lambda t: t.box.x1)]


def test_new_track_is_visible_at_once_and_confirmed_after_min_hits() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=3))
    states = []
    for _ in range(4):
        (track,) = tracker.update([det(0)])
        states.append(track.state)
        assert track.track_id == 1
    assert states == [TrackState.TENTATIVE, TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.CONFIRMED]
    assert track.hits == 4 and track.age == 4 and track.misses == 0 and track.time_since_update == 0


def test_min_hits_one_confirms_immediately() -> None:
    (track,) = IouTracker(TrackerConfig(min_hits=1)).update([det(0)])
    assert track.state is TrackState.CONFIRMED


def test_tentative_track_that_misses_once_is_removed() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=2))
    tracker.update([det(0)])
    assert tracker.update([]) == []
    assert tracker.tracks == []
    assert tracker.pop_removed() == [1]
    (track,) = tracker.update([det(0)])
    assert track.track_id == 2 and track.state is TrackState.TENTATIVE


def test_two_moving_faces_keep_their_ids() -> None:
    tracker = IouTracker()
    for frame in range(30):
        tracks = tracker.update([det(500 - 8 * frame, 50 + 3 * frame), det(100 + 8 * frame, 20)])
        assert len(tracks) == 2
        by_id = {t.track_id: t for t in tracks}
        assert set(by_id) == {1, 2}
        assert by_id[1].box.x1 == 500 - 8 * frame and by_id[2].box.x1 == 100 + 8 * frame
    assert all(t.state is TrackState.CONFIRMED for t in tracks)


def test_nearby_overlapping_faces_with_jitter_keep_ids() -> None:
    rng = np.random.default_rng(0)
    tracker = IouTracker()
    for _ in range(40):
        jitter = rng.uniform(-6, 6, size=4)
        tracks = tracker.update([det(200 + jitter[0], jitter[1]), det(270 + jitter[2], 10 + jitter[3])])
        assert ids_by_x(tracks) == [1, 2]


def crossing_run(config: TrackerConfig) -> list[list[int]]:
    """Two faces moving 40 px/frame towards each other, swapping places at frame 4, 10 px apart vertically."""
    tracker = IouTracker(config)
    history = []
    for frame in range(8):
        tracks = tracker.update([det(40 * frame, 0), det(280 - 40 * frame, 10)])
        left_mover = min(tracks, key=lambda t: t.box.y1)  # the face at y=0 moves right
        right_mover = max(tracks, key=lambda t: t.box.y1)
        history.append([left_mover.track_id, right_mover.track_id])
    return history


def test_crossing_faces_keep_ids_thanks_to_velocity() -> None:
    assert crossing_run(TrackerConfig()) == [[1, 2]] * 8
    # Control: without motion prediction, IoU alone swaps the ids at the crossing.
    assert crossing_run(TrackerConfig(max_speed=0.0)) != [[1, 2]] * 8


def test_hungarian_picks_global_best_where_greedy_fails() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=1, iou_threshold=0.3))
    tracker.update([det(0), det(60)])  # track 1 at x=0, track 2 at x=60
    d1, d2 = det(20), det(-30)
    a, b = Box(0, 0, 100, 100), Box(60, 0, 160, 100)
    # Greedy takes the best pair (1, d1) and leaves track 2 with d2 (IoU < threshold): a lost track, a new id.
    assert a.iou(d1.box) > max(a.iou(d2.box), b.iou(d1.box))
    assert b.iou(d2.box) < 0.3 <= min(a.iou(d2.box), b.iou(d1.box))
    tracks = tracker.update([d1, d2])
    by_id = {t.track_id: t.box.x1 for t in tracks}
    assert by_id == {1: -30, 2: 20}
    assert tracker.pop_removed() == [] and len(tracker.tracks) == 2


@pytest.mark.parametrize(
    ("gap", "same_id"),
    [(1, True), (5, True), (6, False), (10, False)],
)
def test_face_reappearing_within_max_age_keeps_id(gap: int, same_id: bool) -> None:
    tracker = IouTracker(TrackerConfig(max_age=5))
    tracker.update([det(0)])
    tracker.update([det(0)])
    for _ in range(gap):
        assert tracker.update([]) == []
    if same_id:
        (lost,) = tracker.tracks
        assert lost.state is TrackState.LOST and lost.misses == gap
    else:
        assert tracker.tracks == []
    (track,) = tracker.update([det(0)])
    assert (track.track_id == 1) is same_id
    assert track.state is (TrackState.CONFIRMED if same_id else TrackState.TENTATIVE)
    assert tracker.pop_removed() == ([] if same_id else [1])


def test_none_updates_carry_boxes_forward_without_counting_misses() -> None:
    tracker = IouTracker(TrackerConfig(velocity_damping=0.5, max_age=2))
    tracker.update([det(0)])
    tracker.update([det(10, 4)])  # velocity (10, 4) px/frame
    expected_x, expected_y, step = 10.0, 4.0, 1.0
    for frame in range(1, 6):
        (track,) = tracker.update(None)
        expected_x += 10 * step
        expected_y += 4 * step
        step *= 0.5
        assert track.box.x1 == pytest.approx(expected_x) and track.box.y1 == pytest.approx(expected_y)
        assert (track.box.width, track.box.height) == pytest.approx((100.0, 100.0))
        np.testing.assert_allclose(track.keypoints[0], [expected_x, expected_y], rtol=1e-6)
        assert track.state is TrackState.CONFIRMED and track.misses == 0 and track.time_since_update == frame


def test_velocity_is_per_frame_when_detector_runs_every_n_frames() -> None:
    tracker = IouTracker(TrackerConfig(velocity_damping=1.0))
    tracker.update([det(0)])
    tracker.update(None)
    tracker.update(None)
    tracker.update([det(30)])  # 30 px in 3 frames
    (track,) = tracker.update(None)
    assert track.box.x1 == pytest.approx(40.0)


def test_velocity_is_clipped_to_max_speed() -> None:
    tracker = IouTracker(TrackerConfig(max_speed=0.1, velocity_damping=1.0))
    tracker.update([det(0)])
    tracker.update([det(30, -30)])
    (track,) = tracker.update(None)
    assert (track.box.x1, track.box.y1) == pytest.approx((40.0, -40.0))


def test_lost_track_is_predicted_and_rematched_with_same_id() -> None:
    tracker = IouTracker()  # default damping 0.9
    tracker.update([det(0)])
    tracker.update([det(30)])
    for _ in range(3):
        assert tracker.update([]) == []
    (lost,) = tracker.tracks
    assert lost.state is TrackState.LOST and lost.box.x1 > 100
    (track,) = tracker.update([det(170)])  # kept moving behind an occluder: no overlap with the last seen box
    assert track.track_id == 1 and track.state is TrackState.CONFIRMED and track.misses == 0


def test_ids_are_never_reused_and_removed_ids_pop_once() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=1, max_age=1))
    seen: list[int] = []
    removed: list[int] = []
    for round_ in range(5):
        x = 1000.0 * round_  # a new place each round, so nothing matches the previous faces
        seen += [t.track_id for t in tracker.update([det(x), det(x + 300)])]
        tracker.update([])
        assert tracker.pop_removed() == []
        tracker.update([])
        removed += tracker.pop_removed()
        assert tracker.pop_removed() == []
    assert seen == list(range(1, 11))
    assert removed == seen


def test_update_returns_visible_tracks_and_tracks_includes_lost() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=1))
    tracker.update([det(0), det(500)])
    tracks = tracker.update([det(0)])
    assert [t.track_id for t in tracks] == [1] and all(t.visible for t in tracks)
    assert [(t.track_id, t.state) for t in tracker.tracks] == [
        (1, TrackState.CONFIRMED),
        (2, TrackState.LOST),
    ]


@pytest.mark.parametrize(
    ("kwargs", "valid"),
    [
        ({}, True),
        (
            {"iou_threshold": 1.0, "min_hits": 1, "max_age": 0, "velocity_damping": 0.0, "max_speed": 0.0},
            True,
        ),
        ({"iou_threshold": 0.0}, False),
        ({"iou_threshold": 1.1}, False),
        ({"min_hits": 0}, False),
        ({"max_age": -1}, False),
        ({"velocity_damping": -0.1}, False),
        ({"velocity_damping": 1.5}, False),
        ({"max_speed": -1.0}, False),
    ],
)
def test_config_validation(kwargs: dict[str, Any], valid: bool) -> None:
    if valid:
        TrackerConfig(**kwargs)
    else:
        with pytest.raises(ValueError):
            TrackerConfig(**kwargs)
