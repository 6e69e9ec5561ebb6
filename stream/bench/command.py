"""`fakeweb bench BENCHMARK`: runs one benchmark from parsed arguments, prints its tables, writes its JSON."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from models.classifier import Classifier
from models.errors import FakewebError
from models.package import ModelPackage
from stream.bench.clip import default_clip, make_face_clip
from stream.bench.report import Report
from stream.pipeline.pipeline import PipelineConfig
from stream.sources.file_source import FileSource

LoadModel = Callable[[argparse.Namespace], Classifier]
PipelineFor = Callable[[argparse.Namespace, Classifier], PipelineConfig]

CLIP_CACHE = Path(tempfile.gettempdir()) / "fakeweb-bench"


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _clip(args: argparse.Namespace) -> Path:
    """The clip named on the command line (checked to be a readable video), else the built-in one."""
    if args.clip is None:
        return default_clip(CLIP_CACHE)
    clip = Path(args.clip)
    FileSource(clip).close()
    return clip


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise FakewebError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def _batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FakewebError(f"batches must be comma-separated integers, got {text!r}") from None
    if not batches or min(batches) < 1:
        raise FakewebError(f"batch sizes must be >= 1, got {text!r}")
    return batches


def _kernels(args: argparse.Namespace, clip: Path) -> Report:
    from stream.bench.kernels import KernelSettings, run_kernels

    settings = KernelSettings(
        clip=clip,
        package=ModelPackage.load(Path(args.model)),
        frames=args.frames,
        repeat=args.repeat,
        batches=_batches(args.batches),
        tflite_threads=args.threads,
        savedmodel=not args.no_savedmodel,
        savedmodel_device=args.device,
        batcher=not args.no_batcher,
        scaling=not args.no_scaling,
        scaling_seconds=args.scaling_seconds,
        paced_rate=None if args.no_paced else 30.0,
    )
    return run_kernels(settings, _progress)


def _live(args: argparse.Namespace, clip: Path | None) -> Report:
    from stream.bench.live import LiveSettings, run_live
    from stream.config import BATCH_SETTINGS, FRAME_SETTINGS, MODEL_SETTINGS, ServiceConfig
    from stream.live.reload import ModelHolder, verify_candidate

    names = (*MODEL_SETTINGS, *FRAME_SETTINGS, *BATCH_SETTINGS, "pin_threads", "rtsp_out_url", "events")
    config = ServiceConfig(
        data_dir=CLIP_CACHE / "data",
        model=args.model,
        max_streams=max(args.streams, 1),
        **{name: getattr(args, name) for name in names},
    )
    rtsp = tuple(args.rtsp or ())
    settings = LiveSettings(
        config=config,
        streams=args.streams,
        seconds=args.seconds,
        warmup=args.warmup,
        viewers=args.viewers,
        clip=clip,
        rtsp=rtsp,
        window=args.window,
        switch_interval=None if args.switch_interval_ms is None else args.switch_interval_ms / 1000.0,
    )
    classifier = verify_candidate(
        ModelPackage.load(Path(args.model)), args.device, args.backend, args.threads
    )
    return run_live(settings, ModelHolder(classifier), _progress)


def run_benchmark(args: argparse.Namespace, load_model: LoadModel, pipeline_for: PipelineFor) -> int:
    """Run the benchmark `args.benchmark` names; print its report and write its JSON if asked.

    The clip and the JSON folder are checked before any model loads, so a typo fails at once.
    """
    if args.benchmark == "make-clip":
        width, height = _size(args.size)
        print(make_face_clip(Path(args.out), (width, height), args.fps, args.seconds))
        return 0
    if args.json and not Path(args.json).parent.is_dir():
        raise FakewebError(f"output folder not found: {Path(args.json).parent}")
    clip = None if args.benchmark == "live" and args.rtsp else _clip(args)
    if args.benchmark == "live":
        report = _live(args, clip)
    elif clip is None:
        raise AssertionError("only a live run from RTSP cameras has no clip")
    elif args.benchmark == "kernels":
        report = _kernels(args, clip)
    else:
        classifier = load_model(args)
        config = pipeline_for(args, classifier)
        if args.benchmark == "seed":
            from stream.bench.seed import run_seed

            report = run_seed(clip, config, classifier, args.frames)
        else:
            from stream.bench.overhead import run_overhead

            report = run_overhead(clip, config, classifier, args.frames, args.repeat, args.warmup)
    print(report.render())
    if args.json:
        report.write_json(Path(args.json))
    return 0
