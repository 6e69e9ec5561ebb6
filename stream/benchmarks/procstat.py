"""Process CPU time, memory and per-thread CPU from /proc (Linux), sampled on a background thread.

No psutil: `/proc/self/stat` gives user + system ticks, `/proc/self/statm` the resident pages, and
`/proc/self/task/<tid>/stat` each thread's ticks, matched to Python threads by `Thread.native_id`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from stream.procfs import stat_cpu_seconds

_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc/self")
_GROUPS = ("worker-", "encoder-", "rtsp-read-", "rtsp-watch-", "feeder-", "asyncio_", "ThreadPoolExecutor-")
"""Thread name prefixes whose threads are counted together (one thread per stream or per pool slot)."""


def cpu_seconds() -> float:
    """CPU seconds (user + system) used by this process so far, all threads."""
    return stat_cpu_seconds((_PROC / "stat").read_text())


def rss_bytes() -> int:
    """Resident set size of this process."""
    return int((_PROC / "statm").read_text().split()[1]) * _PAGE


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages of the machine."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def thread_schedstat() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of the calling thread so far.

    The rest of a thread's wall time it was blocked: sleeping, waiting for I/O, a lock or the GIL.
    """
    on_cpu, waiting = (_PROC / "task" / str(threading.get_native_id()) / "schedstat").read_text().split()[:2]
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def thread_group(name: str) -> str:
    """A Python thread's name without its per-stream or per-slot suffix: `worker-cam-1` -> `worker`."""
    for prefix in _GROUPS:
        if name.startswith(prefix):
            return prefix[:-1]
    return name


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds per thread group: Python threads by name group, every other thread as `native`."""
    named = {thread.native_id: thread_group(thread.name) for thread in threading.enumerate()}
    totals: dict[str, float] = defaultdict(float)
    for task in (_PROC / "task").iterdir():
        try:
            seconds = stat_cpu_seconds((task / "stat").read_text())
        except (OSError, ValueError):
            continue  # the thread ended while we read
        totals[named.get(int(task.name), "native")] += seconds
    return dict(totals)


@dataclass
class Sample:
    """One sample: seconds since the start, CPU % of one core since the previous sample, RSS in MiB."""

    t: float
    cpu_percent: float
    rss_mib: float


class ProcessSampler:
    """Samples CPU and RSS every `period` seconds between `start()` and `stop()`."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.samples: list[Sample] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = (0.0, 0.0)  # (wall, cpu) seconds
        self._end = (0.0, 0.0)

    def start(self) -> None:
        self._start = (time.monotonic(), cpu_seconds())
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._end = (time.monotonic(), cpu_seconds())
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return self._end[1] - self._start[1]

    @property
    def cpu_percent(self) -> float:
        """Mean CPU % of one core over the run (200 % = both cores of a 2-core machine)."""
        wall = self._end[0] - self._start[0]
        return 100.0 * self.cpu_seconds / wall if wall > 0 else 0.0

    def _run(self) -> None:
        wall, cpu = self._start
        while not self._stopping.wait(self.period):
            now, used = time.monotonic(), cpu_seconds()
            percent = 100.0 * (used - cpu) / (now - wall) if now > wall else 0.0
            self.samples.append(Sample(now - self._start[0], percent, rss_bytes() / 2**20))
            wall, cpu = now, used
