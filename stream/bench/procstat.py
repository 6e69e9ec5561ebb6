"""Process CPU time, memory and per-thread CPU (Linux `stream.runtime.procfs`), sampled on a background thread.

No psutil: this process's stat gives user + system ticks, its statm the resident pages, and each thread's stat
its ticks, matched to Python threads by `Thread.native_id`. Every reader takes the `proc` to read (default the
real /proc).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from stream.runtime.procfs import PROCFS, Procfs
from stream.runtime.thread_names import thread_kind

_POOLS = ("asyncio_", "ThreadPoolExecutor-")
"""Name prefixes of Python's thread pools, whose threads are counted together (one name per slot)."""


def cpu_seconds(proc: Procfs = PROCFS) -> float:
    """CPU seconds (user + system) used by this process so far, all threads."""
    return proc.process_cpu_seconds()


def rss_bytes(proc: Procfs = PROCFS) -> int:
    """Resident set size of this process."""
    return proc.rss_bytes()


def load_average(proc: Procfs = PROCFS) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages of the machine."""
    return proc.load_average()


def thread_schedstat(proc: Procfs = PROCFS) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of the calling thread so far."""
    return proc.thread_schedstat(threading.get_native_id())


def thread_group(name: str) -> str:
    """A Python thread's name without its per-stream or per-slot suffix: `worker-cam-1` -> `worker`."""
    kind = thread_kind(name)
    if kind is not None:
        return kind
    return next((prefix[:-1] for prefix in _POOLS if name.startswith(prefix)), name)


def thread_cpu_seconds(proc: Procfs = PROCFS) -> dict[str, float]:
    """CPU seconds per thread group: Python threads by name group, every other thread as `native`."""
    named = {thread.native_id: thread_group(thread.name) for thread in threading.enumerate()}
    totals: dict[str, float] = defaultdict(float)
    for tid in proc.thread_ids():
        try:
            seconds = proc.thread_cpu_seconds(tid)
        except (OSError, ValueError):
            continue  # the thread ended while we read
        totals[named.get(tid, "native")] += seconds
    return dict(totals)


@dataclass
class Sample:
    """One sample: seconds since the start, CPU % of one core since the previous sample, RSS in MiB."""

    t: float
    cpu_percent: float
    rss_mib: float


class ProcessSampler:
    """Samples CPU and RSS every `period` seconds between `start()` and `stop()`."""

    def __init__(self, period: float = 1.0, proc: Procfs = PROCFS) -> None:
        self.period = period
        self.proc = proc
        self.samples: list[Sample] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = (0.0, 0.0)  # (wall, cpu) seconds
        self._end = (0.0, 0.0)

    def start(self) -> None:
        self._start = (time.monotonic(), cpu_seconds(self.proc))
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._end = (time.monotonic(), cpu_seconds(self.proc))
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
            now, used = time.monotonic(), cpu_seconds(self.proc)
            percent = 100.0 * (used - cpu) / (now - wall) if now > wall else 0.0
            self.samples.append(Sample(now - self._start[0], percent, rss_bytes(self.proc) / 2**20))
            wall, cpu = now, used
