"""Flags made from the settings' one definition (`stream.config.ServiceConfig`): a flag's name, type, allowed values,
default and help are its setting's, so `fakeweb serve`, `run` and `bench` take the same values with the same
defaults and refuse the same ones (as usage errors, before anything loads)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import MISSING, Field, fields
from typing import Any

from stream.cli.argtypes import number
from stream.config import ServiceConfig, setting_type
from stream.settings_doc import shown_default

SETTINGS = {item.name: item for item in fields(ServiceConfig)}


def flag(name: str) -> str:
    """The flag of a setting: `--detect-every` for `detect_every`."""
    return "--" + name.replace("_", "-")


def add_setting_arguments(
    parser: argparse._ActionsContainer, names: Iterable[str], *, defaults: bool
) -> None:
    """A flag for each setting in `names`, on `parser` or one of its argument groups. With `defaults`, a flag not
    given takes its setting's default (`run`, `bench`); without, it is None and leaves the setting to the TOML
    file, the environment or its default (`serve`)."""
    for name in names:
        item = SETTINGS[name]
        options: dict[str, Any] = {"help": _help(item, defaults)}
        if defaults:
            if item.default is MISSING:
                raise ValueError(f"setting {name} has no fixed default for its flag")
            options["default"] = item.default
        kind = setting_type(item)
        if item.metadata["choices"]:
            options["choices"] = item.metadata["choices"]
        elif kind is bool:
            options["action"] = (
                argparse.BooleanOptionalAction
            )  # --name and --no-name: either default can be left
            options.setdefault("default", None)
        elif kind in (int, float):
            options["type"] = number(kind, item.metadata["bounds"])
        parser.add_argument(flag(name), **options)


def _help(item: Field[Any], defaults: bool) -> str:
    """The setting's help as plain text; with `defaults`, the flag's own default (a command may change it)."""
    default = "%(default)s" if defaults else shown_default(item).replace("%", "%%")
    text = item.metadata["help"].replace("%", "%%")
    return f"{text.removesuffix('.')} (default: {default})".replace("`", "")
