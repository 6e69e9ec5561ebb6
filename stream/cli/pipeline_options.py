"""The model and pipeline options that `fakeweb run` and `fakeweb bench` share, and what they build: the
classifier, the verdict settings and the pipeline settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from models.classifier import Classifier, load_classifier
from models.errors import FakewebError
from models.package import DEFAULT_PACKAGE_DIR, ModelPackage
from stream.cli.settings_flags import add_setting_arguments
from stream.config import MODEL_SETTINGS, PIPELINE_SETTINGS
from stream.pipeline.scoring import SETTINGS as SCORING_SETTINGS
from stream.pipeline.scoring import ScoringConfig

if TYPE_CHECKING:
    from stream.pipeline.pipeline import PipelineConfig


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model` (a package folder) and the classifier's settings."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=str(DEFAULT_PACKAGE_DIR), help="model package folder (default: the shipped model)"
    )
    add_setting_arguments(group, MODEL_SETTINGS, defaults=True)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The per-frame settings (`stream.config.FRAME_SETTINGS`), with their defaults."""
    add_setting_arguments(parser.add_argument_group("pipeline"), PIPELINE_SETTINGS, defaults=True)
    verdicts = parser.add_argument_group("verdicts (docs/operations.md, stream/pipeline/scoring.py)")
    add_setting_arguments(verdicts, SCORING_SETTINGS, defaults=True)


def load_model(args: argparse.Namespace) -> Classifier:
    package = ModelPackage.load(Path(args.model))
    return load_classifier(package, device=args.device, backend=args.backend, num_threads=args.threads)


def pipeline_config(args: argparse.Namespace, classifier: Classifier) -> PipelineConfig:
    """The pipeline of a video file, as the flags say, for `classifier`'s model."""
    # Imported here: MediaPipe imports TensorFlow, which usage errors and --help should not wait for.
    from stream.pipeline.pipeline import PipelineConfig

    manifest = classifier.package.manifest
    return PipelineConfig.from_settings(args, manifest.crop, scoring_config(args, manifest.threshold), "file")


def scoring_config(args: argparse.Namespace, threshold: float) -> ScoringConfig:
    """The verdict settings of the command line for a model whose manifest gives `threshold`."""
    try:
        return ScoringConfig.from_settings(threshold, args)
    except ValueError as exc:
        raise FakewebError(f"verdict settings: {exc}") from exc
