"""One definition per setting: the flags of `serve`, `run` and `bench` are made from `ServiceConfig`'s fields, with
the same defaults and the same allowed values as the TOML file and the environment."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path
from typing import get_args

import pytest

from stream.cli import build_parser
from stream.cli.settings_flags import add_setting_arguments, flag
from stream.config import (
    BATCH_SETTINGS,
    FRAME_SETTINGS,
    MESH_FOR,
    MODEL_SETTINGS,
    Bounds,
    ConfigError,
    ServiceConfig,
    load_config,
)

SETTINGS = {item.name: item for item in fields(ServiceConfig)}


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_mesh_for_choices_are_the_overlay_type() -> None:
    from stream.pipeline.overlay import MeshFor

    assert get_args(MeshFor) == MESH_FOR


@pytest.mark.parametrize(
    ("bounds", "text", "inside", "outside"),
    [
        (Bounds(1), ">= 1", [1, 10**9], [0, -1, math.nan]),
        (Bounds(0, low_open=True), "> 0", [1e-9, 5.0], [0.0, math.inf, math.nan]),
        (Bounds(0, 1), "in [0, 1)", [0.0, 0.99], [1.0, -0.1]),
        (Bounds(0, 1, low_open=True, high_open=False), "in (0, 1]", [1.0, 0.5], [0.0]),
        (Bounds(0, 1, low_open=True), "between 0 and 1 (exclusive)", [0.5], [0.0, 1.0]),
    ],
)
def test_bounds_say_what_they_allow(
    bounds: Bounds, text: str, inside: list[float], outside: list[float]
) -> None:
    assert str(bounds) == text
    assert all(value in bounds for value in inside) and not any(value in bounds for value in outside)


@pytest.mark.parametrize("command", ["run", "bench"])
def test_run_and_bench_default_to_the_settings_defaults(command: str) -> None:
    argv = ["run", "clip.mp4", "-o", "out.mp4"] if command == "run" else ["bench", "overhead"]
    args = parse(*argv)
    names = [*MODEL_SETTINGS, *FRAME_SETTINGS]
    expected = {name: SETTINGS[name].default for name in names}
    if command == "bench":
        expected["mesh_for"] = "all"  # the benchmarks' worst case: every face meshed
    assert {name: getattr(args, name) for name in names} == expected


def test_bench_live_takes_the_batch_and_pinning_settings_with_their_defaults() -> None:
    args = parse("bench", "live")
    assert {name: getattr(args, name) for name in (*BATCH_SETTINGS, "pin_threads")} == {
        name: SETTINGS[name].default for name in (*BATCH_SETTINGS, "pin_threads")
    }


def test_serve_flags_leave_unset_settings_to_the_file_and_environment(tmp_path: Path) -> None:
    args = parse("serve", "--detect-every", "5", "--mesh-for", "all", "--loopback-ice")
    from stream.cli.serve import SERVE_FLAGS

    given = {name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name) is not None}
    assert given == {"detect_every": 5, "mesh_for": "all", "loopback_ice": True}
    toml = tmp_path / "fakeweb.toml"
    toml.write_text("detect_every = 2\nmesh_every = 4\n", encoding="utf-8")
    config = load_config(toml, environ={"FAKEWEB_DATA_DIR": str(tmp_path)}, overrides=given)
    assert (config.detect_every, config.mesh_every, config.mesh_for) == (5, 4, "all")


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("detect_every", "0", "must be >= 1, got 0"),
        ("min_confidence", "1", "must be between 0 and 1 (exclusive), got 1.0"),
        ("batch_max_wait_ms", "-1", "must be >= 0, got -1.0"),
        ("ema_alpha", "nan", "must be in (0, 1], got nan"),
    ],
)
def test_a_value_the_flag_refuses_the_configuration_refuses_too(
    name: str, text: str, reason: str, tmp_path: Path
) -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_setting_arguments(parser, [name], defaults=True)
    with pytest.raises(argparse.ArgumentError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parser.parse_args([flag(name), text])
    with pytest.raises(ConfigError, match=name):
        load_config(environ={"FAKEWEB_DATA_DIR": str(tmp_path), f"FAKEWEB_{name.upper()}": text})


def test_every_flag_help_shows_its_default() -> None:
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser, [*MODEL_SETTINGS, *FRAME_SETTINGS], defaults=True)
    help_text = " ".join(parser.format_help().split())
    assert (
        "Run the detector on every Nth processed frame; the tracker and the mesh bridge the others (default: 3)"
        in help_text
    )
    assert "`" not in help_text
