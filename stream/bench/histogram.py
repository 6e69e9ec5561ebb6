"""A fixed-memory latency histogram, so a long benchmark run does not grow the process it measures."""

from __future__ import annotations

import math

import numpy as np

from stream.bench.report import Timing

_LOW = 1e-5  # seconds: everything below lands in the first bucket
_HIGH = 100.0  # seconds: everything above lands in the last bucket
_PER_DECADE = 60  # bucket edges 3.9 % apart


class Histogram:
    """Counts of seconds in log-spaced buckets (3.9 % wide from 10 us to 100 s), plus their exact sum.

    Percentiles are read at the geometric middle of their bucket: within 2 % of the true value. Not
    thread-safe: each histogram has one writer (a thread or the event loop).
    """

    __slots__ = ("counts", "total", "count")

    _BUCKETS = int(math.log10(_HIGH / _LOW) * _PER_DECADE) + 1

    def __init__(self) -> None:
        self.counts = np.zeros(self._BUCKETS, dtype=np.int64)
        self.total = 0.0
        self.count = 0

    def add(self, seconds: float) -> None:
        index = int(math.log10(max(seconds, _LOW) / _LOW) * _PER_DECADE)
        self.counts[min(index, self._BUCKETS - 1)] += 1
        self.total += seconds
        self.count += 1

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.total += other.total
        self.count += other.count

    def percentile(self, q: float) -> float:
        """The `q`-th percentile (0-100) in seconds; 0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return _LOW * 10 ** ((index + 0.5) / _PER_DECADE)

    def timing(self) -> Timing:
        """Count, mean, p50 and p99 in milliseconds."""
        if not self.count:
            return Timing(0, 0.0, 0.0, 0.0)
        return Timing(
            self.count,
            1000.0 * self.total / self.count,
            1000.0 * self.percentile(50),
            1000.0 * self.percentile(99),
        )
