"""Bounded polling for tests: wait until something holds, fail with what was awaited after a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float, what: str, period: float = 0.2) -> T:
    """Call `probe` every `period` s until it returns something truthy and return that; AssertionError after
    `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s (last: {value!r})")
        time.sleep(period)
