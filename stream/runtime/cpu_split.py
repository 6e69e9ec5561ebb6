"""The CPU split that follows the load (`pin_threads = "auto"`): pin by role while each role's work fits its half
of the CPUs, share every CPU while one role starves and the other's CPUs have room.

Pinned by role, a frame costs about 8 % less CPU (docs/performance.md, row 8), but a fixed split loses capacity
when one role's work outgrows its CPUs while the other's idle. Every `period` seconds `CpuSplitter` reads from
/proc each role's CPU time and wait for a CPU (its threads and the library threads they started) and how busy
each role's CPUs were (`RoleLoad`); `should_pin` decides and `RolePinning.repin` moves the threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stream.runtime.affinity import ROLES, CpuSplit, Role, RolePinning, role_threads
from stream.runtime.procfs import PROCFS, Procfs

logger = logging.getLogger(__name__)

FITS = 0.75
"""A role fits its CPUs while its threads keep them busy for at most this share of their time."""
FULL = 0.9
"""A role's CPUs are full when busy (with any work) for at least this share of their time..."""
STARVED_WAIT = 0.25
"""...and a pinned role starves when its threads also waited this many seconds per second per CPU for one."""
DEFAULT_PERIOD = 2.0
PIN_AGAIN_AFTER = 15
"""Shared, the roles are pinned again only once they have fitted for this many periods in a row (30 s by
default): sharing is immediate, to keep capacity; pinning waits, so that a load on the edge does not flap."""


@dataclass(frozen=True)
class RoleLoad:
    """Per role over a period: its threads' CPU time (CPUs' worth), their wait for a CPU (seconds per second),
    and how busy its CPUs of the split were with any work, this process's or another's (0-1)."""

    busy: dict[Role, float]
    waiting: dict[Role, float]
    cpus_busy: dict[Role, float]

    def __str__(self) -> str:
        return "; ".join(
            f"{name}: {self.busy[name]:.2f} CPUs busy, {self.waiting[name]:.2f} s/s waiting for a CPU, "
            f"its CPUs {100 * self.cpus_busy[name]:.0f} % busy"
            for name in ROLES
        )


def should_pin(pinned: bool, load: RoleLoad, split: CpuSplit) -> bool:
    """Whether the roles should be pinned over the next period, given how they ran over the last one.

    Shared, pin when each role's threads would fit its half. Pinned, share when a role starves (its CPUs full,
    its threads waiting for one) while the other role's CPUs have room to lend; when both are full, pinning's
    cheaper frames are the better use of the machine.
    """
    size = {name: len(split.cpus(name)) for name in ROLES}
    if not pinned:
        return all(load.busy[name] <= FITS * size[name] for name in ROLES)
    starved = {
        name: load.cpus_busy[name] >= FULL and load.waiting[name] >= STARVED_WAIT * size[name]
        for name in ROLES
    }
    room = {name: load.cpus_busy[name] <= FITS for name in ROLES}
    return not any(starved[name] and room[other] for name, other in (ROLES, ROLES[::-1]))


class RoleClock:
    """Each role's seconds on a CPU and waiting for one, summed over its threads (ended ones included), and the
    busy seconds of each role's CPUs in `split`, read from `proc`. A thread that starts and ends between two
    reads is not seen."""

    def __init__(self, split: CpuSplit, proc: Procfs = PROCFS) -> None:
        self.split = split
        self.proc = proc
        self._threads: dict[int, tuple[Role, float, float]] = {}  # the last figures of each live thread
        self._ended = {name: (0.0, 0.0) for name in ROLES}
        self._previous = self._totals()

    def _read_threads(self) -> None:
        current: dict[int, tuple[Role, float, float]] = {}
        for tid, name in role_threads(self.proc):
            try:
                ran, (_, waited) = self.proc.thread_cpu_seconds(tid), self.proc.thread_schedstat(tid)
            except (OSError, IndexError, ValueError):
                continue  # it ended while we read: its last figures go to the ended ones below
            current[tid] = (name, ran, waited)
        for tid, (name, ran, waited) in self._threads.items():
            if tid not in current:
                ended_ran, ended_waited = self._ended[name]
                self._ended[name] = (ended_ran + ran, ended_waited + waited)
        self._threads = current

    def _totals(self) -> tuple[float, dict[Role, float], dict[Role, float], dict[Role, float]]:
        self._read_threads()
        on_cpu = {name: self._ended[name][0] for name in ROLES}
        waiting = {name: self._ended[name][1] for name in ROLES}
        for name, ran, waited in self._threads.values():
            on_cpu[name] += ran
            waiting[name] += waited
        per_cpu = self.proc.cpu_busy_seconds()
        cpus = {name: sum(per_cpu.get(cpu, 0.0) for cpu in self.split.cpus(name)) for name in ROLES}
        return time.monotonic(), on_cpu, waiting, cpus

    def load(self) -> RoleLoad:
        """The roles' load since the last call (or since this clock was made)."""
        now, then = self._totals(), self._previous
        self._previous = now
        seconds = max(now[0] - then[0], 1e-9)
        return RoleLoad(
            busy={name: (now[1][name] - then[1][name]) / seconds for name in ROLES},
            waiting={name: (now[2][name] - then[2][name]) / seconds for name in ROLES},
            cpus_busy={  # /proc/stat counts in 10 ms ticks: over a short span the share can pass 1 by a tick
                name: min(1.0, (now[3][name] - then[3][name]) / (seconds * len(self.split.cpus(name))))
                for name in ROLES
            },
        )


class CpuSplitter:
    """Pins the roles' threads while the load allows (`should_pin`, `PIN_AGAIN_AFTER`), on a thread of its own;
    starts pinned. It sets the split of `pinning`, and reads the load from `pinning.proc`.

    `on_change(pinned, load)` is called at each switch. Every period it also pins the threads started since the
    last one: a thread inherits its creator's CPUs, not the current split.
    """

    def __init__(
        self,
        cpus: frozenset[int],
        pinning: RolePinning,
        period: float = DEFAULT_PERIOD,
        on_change: Callable[[bool, RoleLoad], None] | None = None,
    ) -> None:
        split = CpuSplit.of(cpus)
        if split is None:
            raise ValueError("a CPU split needs two or more CPUs")
        self.split = split
        self.cpus = cpus
        self.period = period
        self.pinned = False
        self.switches = 0
        self._fitted = 0  # periods in a row that the roles, shared, would have fitted pinned
        self._on_change = on_change
        self._pinning = pinning
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._pinning.repin(self.split, self.cpus)
        self.pinned = True
        self._thread = threading.Thread(target=self._run, name="cpu-split", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following the load and give every role thread every CPU back."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._pinning.repin(None, self.cpus)
        self.pinned = False

    def _decide(self, load: RoleLoad) -> bool:
        wanted = should_pin(self.pinned, load, self.split)
        if self.pinned or not wanted:
            self._fitted = 0
            return wanted
        self._fitted += 1
        return self._fitted >= PIN_AGAIN_AFTER

    def _run(self) -> None:
        clock = RoleClock(self.split, self._pinning.proc)
        while not self._stopping.wait(self.period):
            load = clock.load()
            try:
                pinned = self._decide(load)
                self._pinning.repin(self.split if pinned else None, self.cpus)
            except Exception:  # the split is an optimisation: never let it end the thread
                logger.exception("the CPU split failed to change; it tries again in %.0f s", self.period)
                continue
            if pinned != self.pinned:
                self.pinned = pinned
                self.switches += 1
                if self._on_change is not None:
                    self._on_change(pinned, load)


def start_pinning(
    mode: str,
    cpus: frozenset[int],
    pinning: RolePinning,
    on_change: Callable[[bool, RoleLoad], None] | None = None,
) -> CpuSplitter | None:
    """Pin the role threads of `pinning` as the `pin_threads` mode says, over `cpus`: `on` a fixed split for the
    threads that enter a role from now on, `auto` a started `CpuSplitter` (returned, with `on_change`), `off`,
    or fewer than two CPUs, nothing. `stop_pinning` undoes it."""
    split = CpuSplit.of(cpus)
    if mode == "off" or split is None:
        return None
    if mode == "on":
        pinning.split = split
        return None
    splitter = CpuSplitter(cpus, pinning, on_change=on_change)
    splitter.start()
    return splitter


def stop_pinning(splitter: CpuSplitter | None, pinning: RolePinning) -> None:
    """Undo `start_pinning`: stop the splitter if there is one; threads entering a role are no longer pinned."""
    if splitter is not None:
        splitter.stop()
    pinning.split = None
