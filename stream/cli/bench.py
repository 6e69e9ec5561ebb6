"""`fakeweb bench BENCHMARK [CLIP]`: the performance suite (docs/performance.md, `stream.bench`)."""

from __future__ import annotations

import argparse
from typing import Any

from stream.cli.argtypes import non_negative_int, positive_float, positive_int
from stream.cli.pipeline_options import (
    add_model_arguments,
    add_pipeline_arguments,
    load_model,
    pipeline_config,
)
from stream.cli.settings_flags import add_setting_arguments
from stream.config import BATCH_SETTINGS


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark `args` name."""
    from stream.bench.command import run_benchmark

    return run_benchmark(args, load_model, pipeline_config)


def add_bench_parser(commands: Any) -> None:
    """`fakeweb bench` and one subcommand per benchmark, added to the `commands` subparsers."""
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
        parser.set_defaults(handler=run_bench)
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
    add_setting_arguments(live, (*BATCH_SETTINGS, "pin_threads", "rtsp_out_url", "events"), defaults=True)
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
    clip.set_defaults(handler=run_bench)
