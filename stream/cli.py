"""`fakeweb`: the command line. Expected failures print one line and exit 2; no traceback."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.classifier import Classifier, load_classifier
from models.devices import DEVICE_CHOICES
from models.errors import FakewebError
from models.package import DEFAULT_PACKAGE_DIR, ModelPackage
from stream.affinity import PIN_THREADS_MODES
from stream.config import BACKENDS, DETECTOR_RANGES, MESH_FOR, check_model_reference, load_config
from stream.scoring import ScoringConfig
from stream.settings_doc import serve_epilog

if TYPE_CHECKING:
    from stream.pipeline import PipelineConfig

EXIT_ERROR = 2
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")

# `train` and `eval` live in the training package; the CLI is the one place that reaches both sides, and it
# imports training lazily so serving never loads it.
TRAINING_COMMANDS = {"train": "training.train", "eval": "training.evaluate"}
PIN_THREADS_HELP = (
    "pin the workers to half the CPUs and the decoders and encoders to the rest: on, off, or auto (default:"
    " while the load allows)"
)


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0)


def open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    value = _number(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def band_float(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=str(DEFAULT_PACKAGE_DIR), help="model package folder (default: shipped)"
    )
    group.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="accelerator (default: auto)")
    group.add_argument("--backend", default="auto", choices=BACKENDS)
    group.add_argument("--threads", type=positive_int, default=1, help="TFLite CPU threads (default: 1)")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline")
    group.add_argument(
        "--detector-range",
        default="auto",
        choices=DETECTOR_RANGES,
        help="BlazeFace model (default auto: full range for video files and cameras, short for browser webcams)",
    )
    group.add_argument(
        "--min-confidence", type=open_unit_float, default=0.5, help="face detector confidence (0-1)"
    )
    group.add_argument(
        "--detect-every", type=positive_int, default=3, help="run the detector every N processed frames"
    )
    group.add_argument(
        "--mesh-every",
        type=positive_int,
        default=2,
        help="run FaceMesh every N processed frames; between runs each mesh follows its box",
    )
    group.add_argument(
        "--classify-every",
        type=positive_int,
        default=ScoringConfig.classify_every,
        help="re-classify each face every K frames",
    )
    scoring = parser.add_argument_group("verdicts (docs/operations.md, stream/scoring.py)")
    scoring.add_argument(
        "--ema-alpha",
        type=unit_float,
        default=ScoringConfig.ema_alpha,
        help="weight of the newest sample in a face's smoothed score, in (0, 1] (default %(default)s)",
    )
    scoring.add_argument(
        "--min-samples",
        type=positive_int,
        default=ScoringConfig.min_samples,
        help="classifier samples before a face gets a verdict; unknown until then (default %(default)s)",
    )
    scoring.add_argument(
        "--manipulated-after",
        type=positive_int,
        default=ScoringConfig.manipulated_after,
        help="samples in a row at or above the threshold before 'manipulated' (default %(default)s)",
    )
    scoring.add_argument(
        "--suspect-band",
        type=band_float,
        default=ScoringConfig.suspect_band,
        help="suspect band below the threshold, as a fraction of it (default %(default)s)",
    )
    scoring.add_argument(
        "--hysteresis-band",
        type=band_float,
        default=ScoringConfig.hysteresis_band,
        help="how far below the suspect band a flagged face must fall to be real again, as a fraction of "
        "the threshold (default %(default)s)",
    )
    group.add_argument(
        "--mesh-for",
        default="manipulated",
        choices=MESH_FOR,
        help="which faces get the face mesh (flagged = suspect or manipulated)",
    )


def load_model(args: argparse.Namespace) -> Classifier:
    package = ModelPackage.load(Path(args.model))
    return load_classifier(package, device=args.device, backend=args.backend, num_threads=args.threads)


def pipeline_config(args: argparse.Namespace, classifier: Classifier) -> PipelineConfig:
    # Imported here: MediaPipe imports TensorFlow, which usage errors and --help should not wait for.
    from models.detector import DetectorConfig, range_for
    from stream.overlay import OverlayConfig
    from stream.pipeline import PipelineConfig

    manifest = classifier.package.manifest
    return PipelineConfig(
        crop=manifest.crop,
        detector=DetectorConfig(range_for(args.detector_range, "file"), args.min_confidence),
        detect_every=args.detect_every,
        mesh_every=args.mesh_every,
        scoring=scoring_config(args, manifest.threshold),
        overlay=OverlayConfig(mesh_for=args.mesh_for),
    )


def scoring_config(args: argparse.Namespace, threshold: float) -> ScoringConfig:
    """The verdict settings of the command line for a model whose manifest gives `threshold`."""
    try:
        return ScoringConfig.from_settings(threshold, args)
    except ValueError as exc:
        raise FakewebError(f"verdict settings: {exc}") from exc


def check_input(path: Path) -> None:
    """Fail fast, before the model loads, when `path` is not a readable video (InputError)."""
    from stream.file_source import FileSource

    FileSource(path).close()


def check_output(path: Path, suffixes: Sequence[str] | None, input_path: Path) -> None:
    """Fail before any work when `path` cannot be written as asked, or would overwrite the input."""
    if not path.parent.is_dir():
        raise FakewebError(f"output folder not found: {path.parent}")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise FakewebError(f"{path}: the output video must end in {', '.join(suffixes)}")
    if path.exists() and path.resolve() == input_path.resolve():
        raise FakewebError(f"{path}: the output would overwrite the input")


def _run(args: argparse.Namespace) -> int:
    # Fail before the model loads: the bands are fractions of the threshold, so valid for one means for all.
    scoring_config(args, ScoringConfig.threshold)
    check_input(Path(args.input))
    check_output(Path(args.output), VIDEO_SUFFIXES, Path(args.input))
    if args.results:
        check_output(Path(args.results), None, Path(args.input))
    from stream.metrics import Metrics, start_metrics_server
    from stream.run_file import annotate_file

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


def _bench(args: argparse.Namespace) -> int:
    from stream.benchmarks.command import run_benchmark

    return run_benchmark(args, load_model, pipeline_config)


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "host": args.host,
        "port": args.port,
        "token": args.token,
        "data_dir": args.data_dir,
        "model": args.model,
        "device": args.device,
        "backend": args.backend,
        "threads": args.threads,
        "loopback_ice": True if args.loopback_ice else None,
        "pin_threads": args.pin_threads,
        "max_streams": args.max_streams,
        "max_viewers": args.max_viewers,
        "model_poll_seconds": args.model_poll_seconds,
    }
    config = load_config(Path(args.config) if args.config else None, overrides=overrides)
    check_model_reference(config.model)
    # Imported only now: the service's modules load MediaPipe and TensorFlow (seconds), which a bad setting
    # should not wait for.
    import asyncio

    from stream.serve import run_service

    asyncio.run(run_service(config))
    return 0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (every setting: docs/settings.md)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; others need a token)")
    parser.add_argument("--port", type=int, help="port (default 8080)")
    parser.add_argument("--token", help="access token for the page and API (or FAKEWEB_TOKEN)")
    parser.add_argument(
        "--data-dir",
        help="folder for the camera list and model cache (default $XDG_DATA_HOME/fakeweb, else "
        "~/.local/share/fakeweb)",
    )
    parser.add_argument(
        "--model", help="package folder or store://<store url>@<alias> (default: shipped model)"
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, help="accelerator (default auto)")
    parser.add_argument("--backend", choices=BACKENDS)
    parser.add_argument("--threads", type=int, help="TFLite CPU threads")
    parser.add_argument("--max-streams", type=int, help="most concurrent streams (browser + cameras)")
    parser.add_argument("--max-viewers", type=int, help="most concurrent WebRTC peer connections")
    parser.add_argument("--model-poll-seconds", type=float, help="how often to check the store alias")
    parser.add_argument(
        "--loopback-ice",
        action="store_true",
        help="offer 127.0.0.1 as the ICE host address (loopback-only hosts)",
    )
    parser.add_argument("--pin-threads", choices=PIN_THREADS_MODES, help=PIN_THREADS_HELP)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_bench_parser(commands: Any) -> None:
    """`fakeweb bench BENCHMARK [CLIP]`: the performance suite (docs/performance.md)."""
    bench = commands.add_parser("bench", help="performance suite: kernels, live, seed, overhead, make-clip")
    benchmarks = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    def add(name: str, help: str, pipeline: bool = True) -> argparse.ArgumentParser:
        parser = benchmarks.add_parser(name, help=help, description=help)
        parser.add_argument(
            "clip", nargs="?", help="video clip (default: the built-in 640x480 30 fps face clip)"
        )
        parser.add_argument("--json", help="also write the report as JSON to this file")
        add_model_arguments(parser)
        if pipeline:
            add_pipeline_arguments(parser)
            parser.set_defaults(mesh_for="all")  # the worst case: every face meshed, as in the seed design
        parser.set_defaults(handler=_bench)
        return parser

    kernels = add("kernels", "each kernel alone: decode, detect, mesh, crop, classify, draw, encode", False)
    kernels.add_argument("--frames", type=positive_int, default=60, help="clip frames as inputs (default 60)")
    kernels.add_argument(
        "--repeat", type=positive_int, default=100, help="timed calls per kernel (default 100)"
    )
    kernels.add_argument(
        "--batches", default="1,2,4,8,16,32", help="classifier batch sizes (default 1,...,32)"
    )
    kernels.add_argument("--no-savedmodel", action="store_true", help="skip the SavedModel backend")
    kernels.add_argument("--no-batcher", action="store_true", help="skip the ClassifierBatcher comparison")
    kernels.add_argument("--no-scaling", action="store_true", help="skip the one vs two threads runs")
    kernels.add_argument("--no-paced", action="store_true", help="skip the runs paced at 30 calls/s")
    kernels.add_argument("--scaling-seconds", type=positive_float, default=2.0, help="per run (default 2)")

    live = add("live", "N streams paced at their frame rate through the live service, VP8-encoded once each")
    live.add_argument(
        "--rtsp", action="append", metavar="URL", help="RTSP source instead of the clip (repeat)"
    )
    live.add_argument("--streams", type=positive_int, default=4, help="concurrent streams (default 4)")
    live.add_argument(
        "--viewers",
        type=positive_int,
        default=1,
        help="viewers per stream, sharing its VP8 packets (default 1)",
    )
    live.add_argument("--seconds", type=positive_float, default=60.0, help="measured seconds (default 60)")
    live.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    live.add_argument(
        "--window", type=positive_float, default=10.0, help="seconds per over-time row (default 10)"
    )
    live.add_argument("--batch-max-size", type=positive_int, default=16, help="batcher batch (default 16)")
    live.add_argument("--pin-threads", choices=PIN_THREADS_MODES, default="auto", help=PIN_THREADS_HELP)
    live.add_argument("--batch-max-wait-ms", type=float, default=4.0, help="batcher wait (default 4 ms)")
    live.add_argument(
        "--switch-interval-ms",
        type=positive_float,
        help="Python's GIL switch interval (default: Python's, 5 ms)",
    )

    seed = add("seed", "the pipeline against the seed design on the same clip: stages and frames/s ratio")
    seed.add_argument("--frames", type=positive_int, default=300, help="frames to process (default 300)")

    overhead = add("overhead", "the pipeline's per-frame cost against the sum of its kernels")
    overhead.add_argument(
        "--frames", type=positive_int, default=600, help="measured frames to process (default 600)"
    )
    overhead.add_argument(
        "--warmup", type=non_negative_int, default=30, help="untimed frames first (default 30)"
    )
    overhead.add_argument(
        "--repeat", type=positive_int, default=60, help="timed calls per kernel alone (default 60)"
    )

    clip = benchmarks.add_parser("make-clip", help="write the built-in one-face test clip (H.264 MP4)")
    clip.add_argument("out", help="output file (.mp4)")
    clip.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    clip.add_argument("--fps", type=positive_int, default=30, help="frame rate (default 30)")
    clip.add_argument("--seconds", type=positive_float, default=10.0, help="length (default 10)")
    clip.set_defaults(handler=_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakeweb", description="Real-time detector of manipulated faces.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    run.set_defaults(handler=_run)

    add_bench_parser(commands)

    serve = commands.add_parser(
        "serve",
        help="run the live service (web page, WebRTC, RTSP cameras)",
        description="Run the live service: web page, WebRTC, RTSP cameras.\nEvery setting is listed below "
        "and in docs/settings.md.",
        epilog=serve_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    for name, module in TRAINING_COMMANDS.items():
        # Parsed by the training module itself (see main); listed here for --help.
        commands.add_parser(name, help=f"{name} a model (python -m {module} --help)", add_help=False)
    return parser


def _report_errors(handler: Callable[[], int]) -> int:
    try:
        return int(handler())
    except (FakewebError, OSError) as exc:
        # OSError: files and sockets the environment refuses (permissions, full disk, port in use).
        print(f"fakeweb: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fakeweb: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's C++ INFO lines (oneDNN, CPU features) would bury the one-line errors; warnings still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in TRAINING_COMMANDS:
        training_main = importlib.import_module(TRAINING_COMMANDS[arguments[0]]).main
        return _report_errors(lambda: training_main(arguments[1:]))
    args = build_parser().parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return _report_errors(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
