"""`fakeweb run INPUT -o OUTPUT`: annotate a video file; every file is checked before the model loads."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.errors import FakewebError
from stream.cli.pipeline_options import (
    add_model_arguments,
    add_pipeline_arguments,
    load_model,
    pipeline_config,
    scoring_config,
)
from stream.pipeline.scoring import ScoringConfig

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


def add_run_parser(commands: Any) -> None:
    """`fakeweb run`, added to the `commands` subparsers."""
    run = commands.add_parser("run", help="annotate a video file")
    run.add_argument("input", help="input video file")
    run.add_argument("-o", "--output", required=True, help="annotated output video (.mp4, H.264)")
    run.add_argument("--results", help="write per-face results as JSON lines to this file")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--realtime", action="store_true", help="pace the file at its frame rate, like a camera")
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT during the run",
    )
    add_model_arguments(run)
    add_pipeline_arguments(run)
    run.set_defaults(handler=run_file)


def check_input(path: Path) -> None:
    """Fail fast, before the model loads, when `path` is not a readable video (InputError)."""
    from stream.sources.file_source import FileSource

    FileSource(path).close()


def check_output(path: Path, suffixes: Sequence[str] | None, input_path: Path) -> None:
    """Fail before any work when `path` cannot be written as asked, or would overwrite the input."""
    if not path.parent.is_dir():
        raise FakewebError(f"output folder not found: {path.parent}")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise FakewebError(f"{path}: the output video must end in {', '.join(suffixes)}")
    if path.exists() and path.resolve() == input_path.resolve():
        raise FakewebError(f"{path}: the output would overwrite the input")


def run_file(args: argparse.Namespace) -> int:
    """Annotate `args.input` into `args.output` and print the run's summary."""
    # Fail before the model loads: the bands are fractions of the threshold, so valid for one means for all.
    scoring_config(args, ScoringConfig.threshold)
    check_input(Path(args.input))
    check_output(Path(args.output), VIDEO_SUFFIXES, Path(args.input))
    if args.results:
        check_output(Path(args.results), None, Path(args.input))
    from stream.cli.run_file import annotate_file
    from stream.outputs.metrics import Metrics, start_metrics_server

    with contextlib.ExitStack() as stack:
        metrics = None
        if args.metrics_port is not None:
            metrics = Metrics()
            stack.enter_context(start_metrics_server(args.metrics_port, metrics.registry))
        classifier = load_model(args)
        summary = annotate_file(
            Path(args.input),
            Path(args.output),
            pipeline_config(args, classifier),
            classifier,
            results_path=Path(args.results) if args.results else None,
            progress=not args.quiet,
            realtime=args.realtime,
            metrics=metrics,
        )
    print(summary.describe())
    return 0
