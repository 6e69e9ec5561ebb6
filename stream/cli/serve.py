"""`fakeweb serve`: the live service. Its flags override the TOML file and the environment (docs/settings.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stream.cli.settings_flags import add_setting_arguments
from stream.config import BATCH_SETTINGS, FRAME_SETTINGS, MODEL_SETTINGS, check_model_reference, load_config
from stream.settings_doc import serve_epilog

SERVE_FLAGS = (
    "host",
    "port",
    "token",
    "data_dir",
    "model",
    *MODEL_SETTINGS,
    "max_streams",
    "max_viewers",
    "model_poll_seconds",
    "loopback_ice",
    "pin_threads",
    "rtsp_out_url",
    *FRAME_SETTINGS,
    *BATCH_SETTINGS,
)
"""The settings `fakeweb serve` also takes as flags; the others come from the TOML file or the environment."""


def add_serve_parser(commands: Any) -> None:
    """`fakeweb serve`, added to the `commands` subparsers."""
    serve = commands.add_parser(
        "serve",
        help="run the live service (web page, WebRTC, RTSP cameras)",
        description="Run the live service: web page, WebRTC, RTSP cameras.\nEvery setting is listed below "
        "and in docs/settings.md.",
        epilog=serve_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=serve_live)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `fakeweb serve`: `--config` and the settings of `SERVE_FLAGS` (none given: TOML,
    environment, default)."""
    parser.add_argument("--config", help="TOML configuration file (every setting: docs/settings.md)")
    add_setting_arguments(parser, SERVE_FLAGS, defaults=False)


def serve_live(args: argparse.Namespace) -> int:
    """Validate the settings, then run the service until it is stopped."""
    overrides = {name: getattr(args, name) for name in SERVE_FLAGS}
    config = load_config(Path(args.config) if args.config else None, overrides=overrides)
    check_model_reference(config.model)
    # Imported only now: the service's modules load MediaPipe and TensorFlow (seconds), which a bad setting
    # should not wait for.
    import asyncio

    from stream.live.serve import run_service

    asyncio.run(run_service(config))
    return 0
