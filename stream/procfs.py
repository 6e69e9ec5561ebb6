"""CPU time as Linux reports it in /proc: of a process or thread from its `stat` line, of each CPU from /proc/stat.

Shared by the CPU split (`stream.cpu_split`), the benchmarks' sampler (`stream.benchmarks.procstat`) and the soak.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))
"""Clock ticks per second: the unit of the CPU times in /proc."""
_STAT = Path("/proc/stat")


def stat_cpu_seconds(stat_line: str) -> float:
    """utime + stime seconds from a /proc/<pid>[/task/<tid>]/stat line (the fields after the command name)."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_busy_seconds() -> dict[int, float]:
    """Seconds each CPU of the machine has been busy (neither idle nor waiting for I/O), from /proc/stat."""
    busy: dict[int, float] = {}
    for line in _STAT.read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(value) for value in values[:8]]  # user nice system idle iowait irq softirq steal
        busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / TICK
    return busy
