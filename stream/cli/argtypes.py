"""Value types for argparse: numbers within bounds (`stream.config.Bounds`), refused as usage errors otherwise
(`must be >= 1, got 0`). The settings' flags take theirs from their setting (`stream.cli.settings_flags`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from stream.config import AT_LEAST_ONE, NOT_NEGATIVE, POSITIVE, Bounds

_EXPECTED = {int: "an integer", float: "a number"}


def number(kind: type, bounds: Bounds | None = None) -> Callable[[str], Any]:
    """An argparse type: a `kind` (int or float) within `bounds`."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_EXPECTED[kind]}, got {text!r}") from None
        if bounds is not None and value not in bounds:
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


positive_int = number(int, AT_LEAST_ONE)
non_negative_int = number(int, NOT_NEGATIVE)
positive_float = number(float, POSITIVE)
