"""The per-stream pipeline: detect -> track -> classify (batched) -> smooth -> mesh -> draw, on one frame at a time.

One `StreamPipeline` per stream. It owns the stream's detector, tracker, scorer and mesher (none of which are
thread-safe) and is called from one thread. Classification is a callable passed in, so a file run can call the
classifier directly while the live service routes crops through its cross-stream batcher.

The probability a face carries (in `FaceResult`, on the overlay label) is its smoothed score, the one its verdict
is decided on, and None while the verdict is "unknown" (`stream.pipeline.scoring`). When the model can change under the
pipeline (hot reload), a `ScoringSource` gives the scoring settings of the model in use, checked on every frame:
when they change (a new threshold), every track's score restarts, as the old model's evidence does not carry
over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.detector import DetectorConfig, FaceDetector, SourceKind, range_for
from models.geometry import Box
from models.landmarks import FaceMesher
from models.preprocess import CropSpec, crop_face
from stream.pipeline.overlay import FaceOverlay, MeshFor, OverlayConfig, draw_overlays, wants_mesh
from stream.pipeline.scoring import ScoringConfig, TrackScorer, Verdict
from stream.pipeline.tracker import IouTracker, TrackerConfig, TrackState
from stream.runtime.timing import StageTimes
from stream.sources.frames import Frame

logger = logging.getLogger(__name__)

ClassifyFn = Callable[[np.ndarray], np.ndarray]
"""(N, S, S, 3) uint8 crops -> (N,) probabilities that each face is manipulated."""
ScoringSource = Callable[[], ScoringConfig]
"""The scoring settings for the model in use now (its threshold); cheap, called once or twice per frame."""


class PipelineSettings(Protocol):
    """The per-frame settings a pipeline is built from: `stream.config.ServiceConfig`, or parsed flags."""

    @property
    def detector_range(self) -> str: ...
    @property
    def min_confidence(self) -> float: ...
    @property
    def detect_every(self) -> int: ...
    @property
    def mesh_every(self) -> int: ...
    @property
    def mesh_for(self) -> MeshFor: ...


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes one stream's processing; the crop spec and threshold come from the model.

    The detector runs on every `detect_every`th processed frame, FaceMesh on every `mesh_every`th (in between,
    each face's last mesh follows its box). These have no default here: the settings' (`from_settings`) are the
    ones the service, `fakeweb run` and the benchmarks use.
    """

    crop: CropSpec
    detect_every: int
    mesh_every: int
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)

    @classmethod
    def from_settings(
        cls, settings: PipelineSettings, crop: CropSpec, scoring: ScoringConfig, source: SourceKind
    ) -> PipelineConfig:
        """A `source`'s pipeline as `settings` say; the detector range follows the source when it is `auto`."""
        return cls(
            crop=crop,
            detect_every=settings.detect_every,
            mesh_every=settings.mesh_every,
            detector=DetectorConfig(range_for(settings.detector_range, source), settings.min_confidence),
            scoring=scoring,
            overlay=OverlayConfig(mesh_for=settings.mesh_for),
        )

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.mesh_every < 1:
            raise ValueError(f"mesh_every must be >= 1, got {self.mesh_every}")


@dataclass(frozen=True)
class FaceResult:
    """One tracked face in one frame."""

    track_id: int
    box: Box
    state: TrackState
    probability: float | None
    verdict: Verdict


@dataclass
class FrameResult:
    """What the pipeline found in a frame and how long each stage took."""

    stream_id: str
    index: int
    pts_seconds: float | None
    capture_time: float
    faces: list[FaceResult]
    times: StageTimes
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    """The face crops classified in this frame, by track id, as cut for the model (before any drawing; on every
    other sample of a track the model saw their mirror image)."""


class StreamPipeline:
    """Processes the frames of one stream in order, drawing the overlay onto each frame's image in place."""

    def __init__(
        self,
        stream_id: str,
        config: PipelineConfig,
        classify: ClassifyFn,
        scoring: ScoringSource | None = None,
    ) -> None:
        """`scoring`, if given, is followed on every frame and replaces `config.scoring` (see the module doc)."""
        self.stream_id = stream_id
        self.config = config
        self._classify = classify
        self._scoring = scoring
        self._detector = FaceDetector(config.detector)
        self._tracker = IouTracker(config.tracker)
        self._scorer = TrackScorer(config.scoring)
        self._mesher = FaceMesher()
        self._frames_since_detection = config.detect_every  # the first frame runs the detector
        self._frames_since_mesh = config.mesh_every

    def process(self, frame: Frame, times: StageTimes | None = None) -> FrameResult:
        """Run every stage on `frame` (its image is annotated in place) and return the per-face results."""
        times = times or StageTimes()
        image = frame.image
        # Counted over processed frames, not frame indices: a live stream drops frames, and a cadence on the
        # index could miss the detector for ever (e.g. every third frame processed, detect_every 3).
        run_detector = self._frames_since_detection >= self.config.detect_every
        self._frames_since_detection = 1 if run_detector else self._frames_since_detection + 1
        detections = None
        if run_detector:
            with times.measure("detect"):
                detections = self._detector.detect(image)
        with times.measure("track"):
            tracks = self._tracker.update(detections)
            removed = self._tracker.pop_removed()
            if removed:
                self._scorer.forget(removed)
                self._mesher.forget(removed)
        self._follow_scoring()
        # Faces are classified at their detector boxes (what the model was trained on), not predicted ones.
        fresh = [track for track in tracks if track.time_since_update == 0]
        due = [track for track in fresh if self._scorer.due(track.track_id, frame.index)]
        if due:
            with times.measure("crop"):
                crops = np.stack([crop_face(image, track.box, self.config.crop) for track in due])
                # Every other sample of a track is its mirror image: the EMA then averages both views at no cost.
                views = np.stack(
                    [
                        crop[:, ::-1] if self._scorer.get(track.track_id).samples % 2 else crop
                        for crop, track in zip(crops, due, strict=True)
                    ]
                )
            with times.measure("classify"):
                probabilities = self._classify(views)
            # A model swapped while these crops were classified may have scored them: drop the samples, and
            # the next frame starts the scores afresh under the new model's settings.
            if self._scoring is None or self._scoring() == self._scorer.config:
                for track, probability in zip(due, probabilities, strict=True):
                    self._scorer.update(track.track_id, float(probability), frame.index)

        run_mesh = self._frames_since_mesh >= self.config.mesh_every
        self._frames_since_mesh = 1 if run_mesh else self._frames_since_mesh + 1
        overlays: list[FaceOverlay] = []
        faces: list[FaceResult] = []
        with times.measure("mesh"):
            for track in tracks:
                score = self._scorer.get(track.track_id)
                # The smoothed score the verdict is based on (None while unknown), never the raw sample.
                verdict = score.verdict.value
                landmarks = None
                if wants_mesh(self.config.overlay, verdict):
                    landmarks = None if run_mesh else self._mesher.follow(track.track_id, track.box)
                    if landmarks is None:
                        landmarks = self._mesher.landmarks(image, track.track_id, track.box, track.keypoints)
                overlays.append(FaceOverlay(track.track_id, track.box, score.probability, verdict, landmarks))
                faces.append(
                    FaceResult(track.track_id, track.box, track.state, score.probability, score.verdict)
                )
        with times.measure("draw"):
            draw_overlays(image, overlays, self.config.overlay)
        classified = dict(zip((track.track_id for track in due), crops, strict=True)) if due else {}
        return FrameResult(
            self.stream_id, frame.index, frame.seconds, frame.capture_time, faces, times, classified
        )

    @property
    def scoring(self) -> ScoringConfig:
        """The scoring settings in use."""
        return self._scorer.config

    def _follow_scoring(self) -> None:
        """Restart every track's score if the scoring source gives new settings."""
        if self._scoring is None:
            return
        current = self._scoring()
        if current == self._scorer.config:
            return
        logger.info(
            "stream %s: scoring settings changed (threshold %g -> %g); every face's score restarts",
            self.stream_id,
            self._scorer.config.threshold,
            current.threshold,
        )
        self._scorer = TrackScorer(current)

    @property
    def mesh_runs(self) -> int:
        """FaceMesh inferences so far."""
        return self._mesher.model_runs

    def close(self) -> None:
        self._detector.close()
        self._mesher.close()
