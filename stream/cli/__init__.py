"""`fakeweb`: the command line, composed from serving's commands and training's.

    fakeweb run      annotate a video file             stream.cli.run       -> stream.cli.run_file
    fakeweb serve    the live service                  stream.cli.serve     -> stream.live.serve
    fakeweb bench    the performance suite             stream.cli.bench     -> stream.bench
    fakeweb train    train a model                     stream.cli.training  -> training.train
    fakeweb eval     evaluate a model                  stream.cli.training  -> training.evaluate

The training commands are the one place where serving's package imports `training`, explicitly and only when
such a command runs (`stream.cli.training`). Heavy imports (TensorFlow, MediaPipe, the service) wait until a
command's arguments and settings are checked, so a usage error answers at once.

One convention for every command:
- exit 0: done.
- exit 2, usage error: argparse's usage and one line `fakeweb <command>: error: <reason>`.
- exit 2, expected failure (FakewebError: bad input, model or settings; OSError: a file, folder or port the
  system refuses): one line `fakeweb: error: <reason>` on stderr, no traceback.
- exit 130: interrupted (Ctrl-C), one line `fakeweb: interrupted`.
- Anything else is a bug and ends with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from models.errors import FakewebError
from stream.cli.bench import add_bench_parser
from stream.cli.events import add_events_parser
from stream.cli.pipeline_options import pipeline_config, scoring_config
from stream.cli.run import add_run_parser
from stream.cli.serve import add_serve_arguments, add_serve_parser
from stream.cli.training import TRAINING_COMMANDS, add_training_parsers, run_training

__all__ = ["add_serve_arguments", "build_parser", "main", "pipeline_config", "scoring_config"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The parser of `fakeweb`: one subcommand per command; each sets `handler(args) -> exit status`."""
    parser = argparse.ArgumentParser(prog="fakeweb", description="Real-time detector of manipulated faces.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_parser(commands)
    add_bench_parser(commands)
    add_serve_parser(commands)
    add_events_parser(commands)
    add_training_parsers(commands)
    return parser


def exit_status(command: Callable[[], int]) -> int:
    """Run `command` under the convention of the module docstring; returns the process exit status."""
    try:
        return int(command())
    except (FakewebError, OSError) as exc:
        print(f"fakeweb: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fakeweb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """`fakeweb ARGS...` (`argv`, default the process's); returns the exit status. Usage errors exit (2)."""
    # TensorFlow's C++ INFO lines (oneDNN, CPU features) would bury the one-line errors; warnings still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in TRAINING_COMMANDS:
        return exit_status(lambda: run_training(arguments[0], arguments[1:]))
    args = build_parser().parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return exit_status(lambda: args.handler(args))
