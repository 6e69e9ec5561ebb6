"""Optional CPU pinning of threads by the work they do: the models on one half of the CPUs, the codecs on the other.

A frame's kernels (decode, detect, mesh, classify, draw, encode) cost 25-33 % more interleaved on one core than
back to back (docs/performance.md, "Overhead"). Pinned, each core runs fewer of them: the workers and the
classifier batcher (role "model") on the first half of the process's CPUs, rounded up; the decoding readers and
the encoders (role "codec") on the rest. Threads that the libraries start (FFmpeg, libvpx, TFLite) inherit the
pin of the thread that starts them.

The split is fixed: when one half's work outgrows its CPUs while the other's idle, pinning costs capacity. So it
is off unless `ServiceConfig.pin_threads` turns it on, process-wide.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

Role = Literal["model", "codec"]


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


_split: CpuSplit | None = None


def pin_threads(split: CpuSplit | None) -> None:
    """From now on, threads entering a `role` are pinned to its CPUs in `split`; None stops pinning."""
    global _split
    _split = split


@contextmanager
def role(name: Role) -> Iterator[None]:
    """Pin the calling thread to the CPUs of its role while inside; without a split, do nothing.

    A thread that cannot be pinned (a CPU set the system refuses) logs a warning and runs unpinned.
    """
    split = _split
    if split is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, split.cpus(name))
    except OSError as exc:
        logger.warning("cannot pin a %s thread to CPUs %s: %s", name, sorted(split.cpus(name)), exc)
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def runs_as(name: Role, target: Callable[[], None]) -> Callable[[], None]:
    """`target` wrapped to run inside `role(name)`: a thread's target, pinned when the thread starts."""

    def run() -> None:
        with role(name):
            target()

    return run
