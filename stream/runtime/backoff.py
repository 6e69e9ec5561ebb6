"""Waits between reconnect attempts: cameras (`stream.sources.rtsp`) and RTSP publishing (`stream.outputs.rtsp_out`)."""

from __future__ import annotations

from collections.abc import Sequence


class Backoff:
    """Reconnect delays: one step of `schedule` per failure in a row; the last step repeats.

    The count starts over once a connection has stayed live for `reset_after` seconds.
    """

    def __init__(self, schedule: Sequence[float], reset_after: float) -> None:
        self.schedule = tuple(schedule)
        self.reset_after = reset_after
        self.failures = 0

    def after_failure(self, live_for: float | None) -> float:
        """Count a failed connection (live `live_for` s, None if never); return the wait before the next."""
        if live_for is not None and live_for >= self.reset_after:
            self.failures = 0
        delay = self.schedule[min(self.failures, len(self.schedule) - 1)]
        self.failures += 1
        return delay
