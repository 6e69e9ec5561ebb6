"""This process's threads and CPU time as Linux reports them in /proc: the one reader of /proc for the CPU split
(`stream.runtime.affinity`, `stream.runtime.cpu_split`), the benchmarks' sampler (`stream.bench.procstat`) and the soak.

`Procfs(root)` reads below `root`, /proc by default; tests and containers can point it elsewhere, as
client_python's `ProcessCollector(proc=...)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))
"""Clock ticks per second: the unit of the CPU times in /proc."""
PAGE = os.sysconf("SC_PAGE_SIZE")
"""Bytes per page: the unit of the memory sizes in /proc/<pid>/statm."""


def stat_cpu_seconds(stat_line: str) -> float:
    """utime + stime seconds from a /proc/<pid>[/task/<tid>]/stat line (the fields after the command name)."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass(frozen=True)
class Procfs:
    """/proc below `root`: this process (`self`), its threads (`self/task/<tid>`) and the machine.

    A thread can end between two reads: its files then raise OSError (FileNotFoundError, ProcessLookupError).
    """

    root: Path = Path("/proc")

    @property
    def _self(self) -> Path:
        return self.root / "self"

    def _task(self, tid: int) -> Path:
        return self._self / "task" / str(tid)

    def thread_ids(self) -> Iterator[int]:
        """The ids of this process's threads now."""
        for task in (self._self / "task").iterdir():
            yield int(task.name)

    def thread_name(self, tid: int) -> str:
        """A thread's system name (its first 15 bytes, as `top -H` shows it)."""
        return (self._task(tid) / "comm").read_text().rstrip("\n")

    def rename_thread(self, tid: int, name: str) -> None:
        """Give a thread of this process a system name; the kernel keeps its first 15 bytes."""
        (self._task(tid) / "comm").write_text(name.encode()[:15].decode(errors="ignore"))

    def thread_cpu_seconds(self, tid: int) -> float:
        """Seconds a thread has run on a CPU (user + system)."""
        return stat_cpu_seconds((self._task(tid) / "stat").read_text())

    def thread_schedstat(self, tid: int) -> tuple[float, float]:
        """(seconds on a CPU, seconds runnable but waiting for a CPU) of a thread so far.

        The rest of a thread's wall time it was blocked: sleeping, waiting for I/O, a lock or the GIL.
        """
        on_cpu, waiting = (self._task(tid) / "schedstat").read_text().split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9

    def process_cpu_seconds(self) -> float:
        """CPU seconds (user + system) used by this process so far, all threads."""
        return stat_cpu_seconds((self._self / "stat").read_text())

    def rss_bytes(self) -> int:
        """Resident set size of this process."""
        return int((self._self / "statm").read_text().split()[1]) * PAGE

    def load_average(self) -> tuple[float, float, float]:
        """The 1, 5 and 15 minute load averages of the machine."""
        one, five, fifteen = (self.root / "loadavg").read_text().split()[:3]
        return float(one), float(five), float(fifteen)

    def cpu_busy_seconds(self) -> dict[int, float]:
        """Seconds each CPU of the machine has been busy (neither idle nor waiting for I/O), from /proc/stat."""
        busy: dict[int, float] = {}
        for line in (self.root / "stat").read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            ticks = [int(value) for value in values[:8]]  # user nice system idle iowait irq softirq steal
            busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / TICK
        return busy


PROCFS = Procfs()
"""The real /proc."""
