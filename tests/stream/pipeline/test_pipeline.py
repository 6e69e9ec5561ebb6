"""The per-stream pipeline: detection recall and stable track ids on synthetic clips with known face boxes,
per-frame batched classification of due crops, and tracking on the shared real videos.

The classifier itself (padded batches equal single runs, TFLite agrees with the SavedModel) is covered in
test_classifier.py (`test_padded_and_chunked_batches_match_single_runs`, `test_backends_agree`) and
test_export.py (`test_outputs_match_keras_and_vary`); here it is a stub so only the pipeline is tested.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clips import ClipTruth

from models.detector import DetectorConfig, FaceDetector
from models.landmarks import FaceMesher
from models.preprocess import CropSpec, crop_face
from stream.pipeline.overlay import OverlayConfig, label_text
from stream.pipeline.pipeline import ClassifyFn, FrameResult, PipelineConfig, StreamPipeline
from stream.pipeline.scoring import ScoringConfig
from stream.sources.file_source import FileSource
from stream.sources.frames import Frame

SPEC = CropSpec(size=32, margin=0.25)
CLIPS = ["moving_face_video", "two_faces_video"]


class RecordingClassifier:
    """A `ClassifyFn` that answers a fixed probability and keeps a copy of every batch it is given."""

    def __init__(self, probability: float = 0.3) -> None:
        self.probability = probability
        self.batches: list[np.ndarray] = []

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.batches.append(crops.copy())
        return np.full(len(crops), self.probability, dtype=np.float32)


def decoded(path: Path) -> list[Frame]:
    with FileSource(path) as source:
        return list(source.frames())


def every_frame(**config: Any) -> PipelineConfig:
    """A pipeline that runs the detector and FaceMesh on every frame unless `config` says otherwise."""
    return PipelineConfig(**{"crop": SPEC, "detect_every": 1, "mesh_every": 1, **config})


def run_pipeline(frames: list[Frame], classify: ClassifyFn | None = None, **config: Any) -> list[FrameResult]:
    """Every frame through a fresh pipeline (the frames' images are drawn on: pass copies you still need)."""
    pipeline = StreamPipeline("test", every_frame(**config), classify or RecordingClassifier())
    try:
        return [pipeline.process(frame) for frame in frames]
    finally:
        pipeline.close()


def ids_by_face(results: list[FrameResult], truth: ClipTruth) -> dict[int, Counter[int]]:
    """Per true face: how many frames each track id was the visible track covering it at IoU >= 0.5."""
    matched: dict[int, Counter[int]] = defaultdict(Counter)
    for result in results:
        for face_id, box in truth.faces[result.index].items():
            best = max(result.faces, key=lambda face: face.box.iou(box), default=None)
            if best is not None and best.box.iou(box) >= 0.5:
                matched[face_id][best.track_id] += 1
    return matched


def frames_of(results: list[FrameResult], track_id: int) -> list[int]:
    return [result.index for result in results if any(face.track_id == track_id for face in result.faces)]


@pytest.mark.parametrize("clip", CLIPS)
def test_detector_finds_the_faces(request: pytest.FixtureRequest, clip: str) -> None:
    """Recall >= 95% at IoU >= 0.5 against the pasted faces, and at most 5% of detections are not faces."""
    path, truth = request.getfixturevalue(clip)
    found = wrong = detections = 0
    with FaceDetector() as detector:
        for frame in decoded(path):
            boxes = [detection.box for detection in detector.detect(frame.image)]
            detections += len(boxes)
            found += sum(any(box.iou(face) >= 0.5 for box in boxes) for face in truth.boxes(frame.index))
            wrong += sum(all(box.iou(face) < 0.5 for face in truth.boxes(frame.index)) for box in boxes)
    faces = sum(len(faces) for faces in truth.faces)
    assert found >= 0.95 * faces, f"recall {found}/{faces}"
    assert wrong <= 0.05 * detections, f"{wrong} of {detections} detections are not faces"


@pytest.mark.parametrize("detect_every", [1, 3])
@pytest.mark.parametrize("clip", CLIPS)
def test_each_face_keeps_one_track_id(request: pytest.FixtureRequest, clip: str, detect_every: int) -> None:
    """One id per face for the whole clip, distinct between faces, and no other tracks.

    With `detect_every` N the tracker bridges the frames between detector runs; a face that appears may wait up
    to N - 1 frames for the detector.
    """
    path, truth = request.getfixturevalue(clip)
    results = run_pipeline(decoded(path), detect_every=detect_every)
    matched = ids_by_face(results, truth)
    present = Counter(face_id for faces in truth.faces for face_id in faces)
    assert sorted(matched) == sorted(present)
    for face_id, ids in matched.items():
        assert len(ids) == 1, f"face {face_id} had ids {dict(ids)}"
        assert sum(ids.values()) >= 0.95 * present[face_id] - (detect_every - 1)
    face_ids = {next(iter(ids)) for ids in matched.values()}
    assert len(face_ids) == len(present)
    assert {face.track_id for result in results for face in result.faces} == face_ids


@pytest.mark.parametrize("detect_every", [1, 3])
def test_second_face_track_starts_and_ends_with_the_face(
    two_faces_video: tuple[Path, ClipTruth], detect_every: int
) -> None:
    """Face 1 shows in frames [enter, leave): its track appears with it and is gone once it leaves (within the
    frames the detector skips), tentative until a second detection confirms it; face 0 is tracked throughout."""
    path, truth = two_faces_video
    enter = next(index for index, faces in enumerate(truth.faces) if 1 in faces)
    leave = next(index for index in range(enter, truth.frame_count) if 1 not in truth.faces[index])
    results = run_pipeline(decoded(path), detect_every=detect_every)
    matched = ids_by_face(results, truth)
    (first_id,), (second_id,) = matched[0], matched[1]

    assert frames_of(results, first_id) == list(range(truth.frame_count))
    frames = frames_of(results, second_id)
    assert frames == list(range(frames[0], frames[-1] + 1))
    assert enter <= frames[0] < enter + detect_every
    assert leave - 1 <= frames[-1] < leave - 1 + detect_every
    states = [face.state for result in results for face in result.faces if face.track_id == second_id]
    assert states == ["tentative"] * detect_every + ["confirmed"] * (len(states) - detect_every)


def test_due_faces_are_cropped_at_their_track_box_and_classified_every_k_frames(
    moving_face_video: tuple[Path, ClipTruth],
) -> None:
    path, truth = moving_face_video
    frames = decoded(path)
    first_image = frames[0].image.copy()  # the pipeline draws on the frames
    classify = RecordingClassifier(probability=0.9)
    results = run_pipeline(frames, classify, scoring=ScoringConfig(threshold=0.5, classify_every=10))

    assert [batch.shape for batch in classify.batches] == [(1, SPEC.size, SPEC.size, 3)] * math.ceil(
        truth.frame_count / 10
    )
    assert all(batch.dtype == np.uint8 for batch in classify.batches)
    np.testing.assert_array_equal(
        classify.batches[0][0], crop_face(first_image, results[0].faces[0].box, SPEC)
    )
    classified = [result.index for result in results if "classify" in result.times.seconds]
    assert classified == list(range(0, truth.frame_count, 10))
    assert all("crop" in result.times.seconds for result in results if result.index in classified)
    for result in results:
        (face,) = result.faces
        if result.index < 20:  # fewer than min_samples (3) samples: no verdict, no score
            assert face.probability is None and face.verdict == "unknown"
        else:
            assert face.probability == pytest.approx(0.9) and face.verdict == "manipulated"
        assert {"detect", "track", "mesh", "draw"} <= set(result.times.seconds)


def test_every_other_sample_of_a_track_is_its_mirror_image(moving_face_video: tuple[Path, ClipTruth]) -> None:
    """The classifier sees a track's crop, then the next one mirrored, in turn (the EMA averages both views);
    the frame result keeps each crop as cut."""
    path, _ = moving_face_video
    frames = decoded(path)[:21]
    images = [frame.image.copy() for frame in frames]  # the pipeline draws on the frames
    classify = RecordingClassifier()
    results = run_pipeline(frames, classify, scoring=ScoringConfig(threshold=0.5, classify_every=10))

    assert [len(batch) for batch in classify.batches] == [1, 1, 1]
    for batch, index, mirrored in zip(classify.batches, (0, 10, 20), (False, True, False), strict=True):
        (face,) = results[index].faces
        cut = crop_face(images[index], face.box, SPEC)
        assert not np.array_equal(cut, cut[:, ::-1])  # otherwise the test could not tell the views apart
        np.testing.assert_array_equal(batch[0], cut[:, ::-1] if mirrored else cut)
        np.testing.assert_array_equal(results[index].crops[face.track_id], cut)


class SequenceClassifier:
    """A `ClassifyFn` answering the given probabilities in turn, one per crop; `on_call` runs before answering."""

    def __init__(self, probabilities: list[float], on_call: Any = None) -> None:
        self.probabilities = iter(probabilities)
        self.calls = 0
        self.on_call = on_call

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return np.array([next(self.probabilities) for _ in crops], dtype=np.float32)


def test_faces_carry_the_smoothed_score_their_verdict_and_label_show(
    moving_face_video: tuple[Path, ClipTruth], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The score in the results and on the label is the EMA of the samples (not the last sample), none before
    min_samples; and "manipulated" only with that score at or above the threshold."""
    path, _ = moving_face_video
    samples = [0.2, 0.9, 0.9, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    scoring = ScoringConfig(
        threshold=0.5, classify_every=5, ema_alpha=0.4, min_samples=2, manipulated_after=2
    )
    labels: list[list[str]] = []
    monkeypatch.setattr(
        "stream.pipeline.pipeline.draw_overlays",
        lambda image, overlays, config: labels.append([label_text(overlay) for overlay in overlays]),
    )
    results = run_pipeline(decoded(path), SequenceClassifier(samples), scoring=scoring)
    smoothed = list(itertools.accumulate(samples, lambda ema, sample: 0.4 * sample + 0.6 * ema))
    for result, label in zip(results, labels, strict=True):
        (face,) = result.faces
        taken = result.index // 5 + 1  # samples folded in by this frame
        if taken < scoring.min_samples:
            assert (face.probability, face.verdict) == (None, "unknown")
            assert label == [f"#{face.track_id} unknown"]
            continue
        assert face.probability is not None and face.probability == pytest.approx(smoothed[taken - 1])
        assert label == [f"#{face.track_id} {face.probability:.2f} {face.verdict.value}"]
        assert (face.verdict == "manipulated") == (face.probability >= 0.5 and smoothed[taken - 2] >= 0.5)
    verdicts = [result.faces[0].verdict for result in results]
    # EMA 0.2, 0.48, 0.648, 0.749, 0.489, 0.294, ...: the raw 0.9 at frame 5 is shown as 0.48 (suspect), the
    # second score above the threshold makes "manipulated", the first below it ends it.
    assert (
        verdicts == ["unknown"] * 5 + ["suspect"] * 10 + ["manipulated"] * 5 + ["suspect"] * 5 + ["real"] * 25
    )


def test_a_new_threshold_from_the_scoring_source_restarts_the_scores(
    moving_face_video: tuple[Path, ClipTruth],
) -> None:
    """A model swapped during a classification (the 4th, frame 15) with another threshold: that frame's samples
    are dropped, the next frame restarts every score under the new settings."""
    path, _ = moving_face_video
    old = ScoringConfig(threshold=0.5, classify_every=5, ema_alpha=1.0)
    new = dataclasses.replace(old, threshold=0.7)
    serving = {"scoring": old}

    def swap_on_fourth_call(call: int) -> None:
        if call == 4:
            serving["scoring"] = new

    classify = SequenceClassifier([0.6] * 20, on_call=swap_on_fourth_call)
    pipeline = StreamPipeline("test", every_frame(scoring=old), classify, scoring=lambda: serving["scoring"])
    try:
        results = [pipeline.process(frame) for frame in decoded(path)]
        assert pipeline.scoring == new
    finally:
        pipeline.close()
    classified = [result.index for result in results if "classify" in result.times.seconds]
    assert classified == [0, 5, 10, 15, 16, 21, 26, 31, 36, 41, 46]
    verdicts = [result.faces[0].verdict for result in results]
    assert verdicts == ["unknown"] * 10 + ["manipulated"] * 6 + ["unknown"] * 10 + ["suspect"] * 24


def test_detector_cadence_counts_processed_frames_not_indices(
    moving_face_video: tuple[Path, ClipTruth],
) -> None:
    """A live stream processing every third frame still detects every third processed frame (detect_every 3)."""
    path, _ = moving_face_video
    processed = decoded(path)[::3]
    results = run_pipeline(processed, detect_every=3)
    detected = [i for i, result in enumerate(results) if "detect" in result.times.seconds]
    assert detected == list(range(0, len(processed), 3))
    assert all(result.faces for result in results[3:])


def test_faces_are_classified_only_at_fresh_detector_boxes(moving_face_video: tuple[Path, ClipTruth]) -> None:
    path, truth = moving_face_video
    frames = decoded(path)
    classify = RecordingClassifier(probability=0.9)
    results = run_pipeline(frames, classify, detect_every=3, scoring=ScoringConfig(classify_every=10))
    classified = [result.index for result in results if "classify" in result.times.seconds]
    assert classified == list(range(0, truth.frame_count, 12))  # the first detector frame 10 or more after
    assert len(classify.batches) == len(classified)
    for index in classified:
        box = truth.faces[index][0]
        assert results[index].faces[0].box.iou(box) > 0.7


def test_mesh_every_runs_facemesh_on_every_nth_frame_and_draws_a_mesh_on_all(
    moving_face_video: tuple[Path, ClipTruth], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, truth = moving_face_video
    runs: list[int] = []
    original = FaceMesher.landmarks

    def counting(self: FaceMesher, image: np.ndarray, *args: Any) -> np.ndarray | None:
        runs.append(len(runs))
        return original(self, image, *args)

    monkeypatch.setattr(FaceMesher, "landmarks", counting)
    drawn: list[int] = []
    monkeypatch.setattr(
        "stream.pipeline.pipeline.draw_overlays",
        lambda image, overlays, config: drawn.append(sum(o.landmarks is not None for o in overlays)),
    )
    results = run_pipeline(decoded(path), mesh_every=2, overlay=OverlayConfig(mesh_for="all"))
    assert len(runs) == math.ceil(truth.frame_count / 2)
    assert drawn == [len(result.faces) for result in results] and all(drawn)


def test_faces_due_in_the_same_frame_are_classified_in_one_batch(
    two_faces_video: tuple[Path, ClipTruth],
) -> None:
    """From frame 30 both faces are new, so both are due together; face 1 leaves at frame 50."""
    path, truth = two_faces_video
    classify = RecordingClassifier()
    results = run_pipeline(decoded(path)[30:], classify)
    assert [len(batch) for batch in classify.batches] == [2, 2, 1, 1, 1]
    assert [len(result.faces) for result in results] == [len(faces) for faces in truth.faces[30:]]


# -- the shared real videos --------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize("detect_every", [1, 3])
def test_talking_head_keeps_one_track_id(shared_data: Path, detect_every: int) -> None:
    """One frontal speaker for 7 s: a face in >= 95% of frames, and one id in >= 95% of those."""
    results = run_pipeline(decoded(shared_data / "video" / "talking_head.mp4"), detect_every=detect_every)
    with_face = [result for result in results if result.faces]
    assert len(with_face) >= 0.95 * len(results)
    frames_per_id = Counter(face.track_id for result in with_face for face in result.faces)
    track_id, _ = frames_per_id.most_common(1)[0]
    assert len(frames_of(with_face, track_id)) >= 0.95 * len(with_face), dict(frames_per_id)


@pytest.mark.shared_data
@pytest.mark.parametrize(("detector_range", "together"), [("short", None), ("full", 50)])
def test_two_people_stage_yields_two_long_tracks(
    shared_data: Path, detector_range: str, together: int | None
) -> None:
    """10 s of stage video with cuts (a singer, then two people side by side in the audience for ~65 frames).

    Both ranges give at least two ids that each last >= 50 frames. The full-range detector, meant for faces
    this far from the camera, also follows the two side-by-side people at once with one id each for most of
    their shot (the short-range one sees them as a single merged face there).
    """
    frames = decoded(shared_data / "video" / "two_people_stage.mp4")
    results = run_pipeline(frames, detector=DetectorConfig(range=detector_range))  # type: ignore[arg-type]
    frames_per_id = Counter(face.track_id for result in results for face in result.faces)
    assert sum(count >= 50 for count in frames_per_id.values()) >= 2, dict(frames_per_id)
    if together is not None:
        pairs = Counter(
            pair
            for result in results
            for pair in itertools.combinations(sorted(face.track_id for face in result.faces), 2)
        )
        assert pairs.most_common(1)[0][1] >= together, dict(pairs)
