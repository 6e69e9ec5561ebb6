"""CPU pinning of threads by the work they do: the models on one half of the CPUs, the codecs on the other.

A frame's kernels (decode, detect, mesh, classify, draw, encode) cost 25-33 % more interleaved on one core than
back to back (docs/performance.md, "Overhead"). Pinned, each core runs fewer of them: the workers and the
classifier batcher (role "model") on the first half of the process's CPUs, rounded up; the decoding readers and
the encoders (role "codec") on the rest.

A thread in a role carries it in its system name (`m:` or `c:` before its Python name, as `top -H` shows it).
The threads that the libraries start (FFmpeg, libvpx, TFLite) inherit both the name and the pin of the thread
that starts them; FFmpeg's frame threads rename themselves `av:...` and are codec work. So `repin` can move
every thread of a role, the libraries' included, when the split changes: `stream.runtime.cpu_split` does, following the
load, because a fixed split costs capacity when one half's work outgrows its CPUs while the other's idle.

The split in force is no process-wide global: a `RolePinning` holds it, created by whoever owns the threads (the
live service, a benchmark run) and passed to every part that starts a thread in a role. A part given none runs its
threads in their role, named by it, unpinned.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from stream.runtime.procfs import PROCFS, Procfs

logger = logging.getLogger(__name__)

Role = Literal["model", "codec"]
PIN_THREADS_MODES = ("auto", "on", "off")
"""The `pin_threads` settings: follow the load (`stream.runtime.cpu_split`), always pinned, never pinned."""
ROLES: tuple[Role, ...] = ("model", "codec")
_TAGS: dict[Role, str] = {"model": "m:", "codec": "c:"}
"""The prefix of a role's thread names; the kernel keeps 15 bytes of a name."""


@dataclass(frozen=True)
class CpuSplit:
    """The CPUs of each role."""

    model: frozenset[int]
    codec: frozenset[int]

    @staticmethod
    def of(cpus: Iterable[int]) -> CpuSplit | None:
        """The first half of `cpus` (rounded up) for the models, the rest for the codecs; None below two."""
        ordered = sorted(set(cpus))
        if len(ordered) < 2:
            return None
        half = (len(ordered) + 1) // 2
        return CpuSplit(frozenset(ordered[:half]), frozenset(ordered[half:]))

    def cpus(self, role: Role) -> frozenset[int]:
        return self.model if role == "model" else self.codec


def role_of(thread_name: str) -> Role | None:
    """The role of a thread by its system name (see the module's docstring); None for a thread in no role."""
    for name, tag in _TAGS.items():
        if thread_name.startswith(tag):
            return name
    return "codec" if thread_name.startswith("av:") else None


def role_threads(proc: Procfs = PROCFS) -> Iterator[tuple[int, Role]]:
    """(thread id, role) of every thread of this process that is in a role now."""
    for tid in proc.thread_ids():
        try:
            name = proc.thread_name(tid)
        except OSError:
            continue  # the thread ended
        found = role_of(name)
        if found is not None:
            yield tid, found


def _set_name(name: str, proc: Procfs) -> str | None:
    """Give the calling thread a system name (15 bytes kept); returns the one it had, None if it cannot."""
    tid = threading.get_native_id()
    try:
        previous = proc.thread_name(tid)
        proc.rename_thread(tid, name)
    except OSError as exc:  # no /proc: the thread keeps its name, and `repin` cannot see it
        logger.debug("cannot name a thread %r: %s", name, exc)
        return None
    return previous


class RolePinning:
    """Where threads in a role run: on their role's CPUs of `split` while one is set, anywhere while it is None.

    One per service or benchmark run, passed to the parts that start threads (`runs_as`) or run in a role
    (`role`). A thread reads `split` when it enters its role; `repin` changes the split and moves the threads
    already in a role too. Threads are named and found through `proc`.
    """

    def __init__(self, split: CpuSplit | None = None, proc: Procfs = PROCFS) -> None:
        self.split = split
        self.proc = proc

    def repin(self, split: CpuSplit | None, every_cpu: frozenset[int]) -> int:
        """Pin every thread in a role to its CPUs in `split`, or to `every_cpu` without one; new threads too.

        Returns how many threads moved. A thread that ended meanwhile is skipped.
        """
        self.split = split
        moved = 0
        for tid, name in role_threads(self.proc):
            cpus = every_cpu if split is None else split.cpus(name)
            try:
                if os.sched_getaffinity(tid) != cpus:
                    os.sched_setaffinity(tid, cpus)
                    moved += 1
            except OSError:  # ProcessLookupError: it ended; EINVAL: CPUs no longer allowed
                continue
        return moved

    def _pin_self(self, name: Role) -> set[int] | None:
        """Pin the calling thread to its role's CPUs in the current split; returns the CPUs it had, None if
        unpinned.

        A thread that cannot be pinned (a CPU set the system refuses) logs a warning and runs unpinned.
        """
        split = self.split
        if split is None:
            return None
        previous = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, split.cpus(name))
        except OSError as exc:
            logger.warning("cannot pin a %s thread to CPUs %s: %s", name, sorted(split.cpus(name)), exc)
            return None
        return previous

    @contextmanager
    def role(self, name: Role) -> Iterator[None]:
        """Run the calling thread in a role while inside: named by it, and pinned to its CPUs given a split."""
        previous_name = _set_name(_TAGS[name] + threading.current_thread().name, self.proc)
        previous_cpus = self._pin_self(name)
        try:
            yield
        finally:
            if previous_cpus is not None:
                os.sched_setaffinity(0, previous_cpus)
            if previous_name is not None:
                _set_name(previous_name, self.proc)

    def runs_as(self, name: Role, target: Callable[[], None]) -> Callable[[], None]:
        """`target` wrapped to run inside `role(name)`: a thread's target, pinned when the thread starts."""

        def run() -> None:
            with self.role(name):
                target()

        return run
