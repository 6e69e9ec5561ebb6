"""The CPU split that follows the load (`stream.runtime.cpu_split`, `pin_threads = "auto"`): the decision, the roles'
load read from /proc, and real threads moved between pinned and shared as their load changes."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_proc import FakeProc
from polling import wait_for

from stream.runtime import cpu_split
from stream.runtime.affinity import ROLES, CpuSplit, Role, RolePinning, role_of, role_threads
from stream.runtime.cpu_split import PIN_AGAIN_AFTER, CpuSplitter, RoleClock, RoleLoad, should_pin

ALL_CPUS = frozenset(os.sched_getaffinity(0))
TWO = CpuSplit(frozenset({0}), frozenset({1}))
needs_two_cpus = pytest.mark.skipif(len(ALL_CPUS) < 2, reason="pinning by role needs two or more CPUs")


def load(
    model: float,
    codec: float,
    waiting: tuple[float, float] = (0.0, 0.0),
    cpus: tuple[float, float] | None = None,
) -> RoleLoad:
    """A role load: busy CPUs' worth per role, waiting s/s per role, each role's CPUs busy (0-1; default: busy
    over the role's CPUs of the two-CPU split)."""
    return RoleLoad(
        busy={"model": model, "codec": codec},
        waiting={"model": waiting[0], "codec": waiting[1]},
        cpus_busy={"model": (cpus or (model, codec))[0], "codec": (cpus or (model, codec))[1]},
    )


@pytest.mark.parametrize(
    ("pinned", "now", "expected"),
    [
        (False, load(0.5, 0.4), True),  # both fit their one CPU: pin
        (False, load(0.9, 0.2), False),  # the model role would not fit: stay shared
        (False, load(0.2, 1.3), False),
        (True, load(1.0, 0.3, waiting=(0.8, 0)), False),  # model starves, the codec CPU has room: share
        (True, load(0.4, 0.98, waiting=(0, 0.5)), False),  # and the other way round
        (True, load(1.0, 0.95, waiting=(0.8, 0.6)), True),  # both full: pinning is cheaper
        (True, load(1.0, 0.3), True),  # one busy thread, nothing waiting for a CPU: more CPUs would not help
        (
            True,
            load(0.7, 0.3, waiting=(0.8, 0)),
            True,
        ),  # waits, but its CPU is not full: bursts, not starving
        (True, load(1.0, 0.8, waiting=(0.8, 0)), True),  # starves, but the codec CPU has little to lend
        (
            True,
            load(0.6, 0.2, waiting=(0.8, 0), cpus=(1.0, 0.3)),
            False,
        ),  # its CPU full with other work: share
        (True, load(1.0, 0.2, waiting=(0.8, 0), cpus=(1.0, 0.9)), True),  # the codec CPU busy with other work
    ],
)
def test_should_pin(pinned: bool, now: RoleLoad, expected: bool) -> None:
    assert should_pin(pinned, now, TWO) is expected


def test_should_pin_scales_with_the_cpus_of_each_role() -> None:
    split = CpuSplit.of(range(4))
    assert split is not None and len(split.model) == len(split.codec) == 2
    assert should_pin(False, load(1.4, 1.2), split)  # 70 % and 60 % of two CPUs each
    assert not should_pin(True, load(1.9, 0.5, waiting=(1.0, 0), cpus=(0.95, 0.25)), split)
    assert should_pin(True, load(1.9, 0.5, waiting=(0.3, 0), cpus=(0.95, 0.25)), split)  # 0.15 s/s per CPU


@pytest.mark.parametrize(
    ("name", "expected"),
    [("m:worker-cam-1", "model"), ("c:encoder-cam", "codec"), ("av:h264:df0", "codec"), ("python", None)],
)
def test_a_threads_role_is_read_from_its_name(name: str, expected: Role | None) -> None:
    assert role_of(name) == expected


def burn(seconds: float) -> None:
    """Keep a CPU busy for `seconds` of wall time in native code that releases the GIL."""
    block = bytes(1 << 20)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hashlib.sha256(block).digest()


def test_a_role_carries_its_name_to_the_threads_it_starts_and_gives_it_back() -> None:
    """Library threads inherit their creator's system name: a plain thread started in a role stands for them."""
    seen: dict[str, Role | None] = {}
    release = threading.Event()

    def child() -> None:
        seen["child"] = dict(role_threads()).get(threading.get_native_id())
        release.wait(10)

    def parent() -> None:
        helper = threading.Thread(target=child)
        helper.start()
        while "child" not in seen:
            time.sleep(0.01)
        release.set()
        helper.join()

    with RolePinning().role("codec"):
        parent()
    assert seen["child"] == "codec"
    assert threading.get_native_id() not in dict(role_threads()), "the name is given back on leaving the role"


@needs_two_cpus
def test_the_clock_reads_each_roles_cpu_and_keeps_ended_threads() -> None:
    split = CpuSplit.of(ALL_CPUS)
    assert split is not None
    clock = RoleClock(split)
    worker = threading.Thread(target=RolePinning().runs_as("model", lambda: burn(0.4)), name="clock-test")
    worker.start()
    time.sleep(0.2)
    first = clock.load()  # sees the thread while it runs
    worker.join()
    second = clock.load()
    total = clock.load()
    assert first.busy["model"] > 0.2  # seconds of CPU per second of wall time
    assert first.busy["codec"] == pytest.approx(0.0, abs=0.05)
    assert 0.0 <= first.cpus_busy["model"] <= 1.0 and sum(first.cpus_busy.values()) > 0.1
    assert second.busy["model"] >= 0.0 and total.busy["model"] == pytest.approx(0.0, abs=0.05), (
        "an ended thread's time stays counted: no negative load, no load after it ended"
    )


def test_the_clock_reads_the_given_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 2 s: the model thread ran 1 s and waited 0.4 s; the codec thread that ended keeps its time counted
    and a new one ran 0.5 s; CPU 0 (model) was busy 1.5 s, CPU 1 (codec) 1 s."""
    now = iter([0.0, 2.0])
    monkeypatch.setattr(cpu_split, "time", SimpleNamespace(monotonic=lambda: next(now)))
    proc = FakeProc(tmp_path)
    proc.thread(1, "m:worker-a", ran=1.0, waited=0.5)
    proc.thread(2, "c:encoder-a", ran=2.0)
    proc.thread(3, "python", ran=9.0)
    proc.cpus({0: 10.0, 1: 20.0})
    clock = RoleClock(TWO, proc.procfs)
    proc.thread(1, "m:worker-a", ran=2.0, waited=0.9)
    proc.end(2)
    proc.thread(4, "c:rtsp-read-b", ran=0.5)
    proc.cpus({0: 11.5, 1: 21.0})
    load = clock.load()
    assert load.busy == pytest.approx({"model": 0.5, "codec": 0.25})
    assert load.waiting == pytest.approx({"model": 0.2, "codec": 0.0})
    assert load.cpus_busy == pytest.approx({"model": 0.75, "codec": 0.5})


def role_cpus(name: str) -> frozenset[int]:
    """The CPUs the thread called `name` may run on."""
    (thread,) = [thread for thread in threading.enumerate() if thread.name == name]
    assert thread.native_id is not None
    return frozenset(os.sched_getaffinity(thread.native_id))


def pinned_to(thread_name: str, cpus: frozenset[int]) -> bool:
    return role_cpus(thread_name) == cpus


until = partial(wait_for, period=0.05)


@dataclass
class Split:
    """A splitter under test, the pinning it sets, and the changes it reported."""

    splitter: CpuSplitter
    pinning: RolePinning
    changes: list[bool]


@pytest.fixture
def split() -> Iterator[Split]:
    changes: list[bool] = []
    pinning = RolePinning()
    splitter = CpuSplitter(ALL_CPUS, pinning, period=0.25, on_change=lambda pinned, _: changes.append(pinned))
    yield Split(splitter, pinning, changes)
    splitter.stop()


def wait_until_stopped(stop: threading.Event) -> None:
    stop.wait(30)


def codec_cpus_busy(split: CpuSplit, seconds: float = 1.0) -> float:
    """How busy the codec CPUs of `split` were over `seconds` (0-1) with any work, measured as the splitter
    measures them; this test's process is idle meanwhile."""
    clock = RoleClock(split)
    time.sleep(seconds)
    return clock.load().cpus_busy["codec"]


@needs_two_cpus
def test_the_split_shares_the_cpus_while_a_role_is_starved_and_pins_again_after(split: Split) -> None:
    """Real threads: an idle worker and encoder start pinned; two model threads hashing on one CPU starve while
    the codec CPU idles, so the split shares every CPU until they stop, then, after a while, pins again.

    The codec CPU must idle for that: while another job keeps it busy, sharing would rightly not happen, so the
    test skips, saying how busy it was."""
    codec_busy = codec_cpus_busy(split.splitter.split)
    if codec_busy > 0.5:
        pytest.skip(f"needs the codec CPUs idle, but other work kept them {100 * codec_busy:.0f} % busy")
    splitter, stop = split.splitter, threading.Event()
    idle = [
        threading.Thread(
            target=split.pinning.runs_as(name, partial(wait_until_stopped, stop)),
            name=f"idle-{name}",
            daemon=True,
        )
        for name in ROLES
    ]
    splitter.start()
    for thread in idle:
        thread.start()
    for name in ROLES:
        until(partial(pinned_to, f"idle-{name}", splitter.split.cpus(name)), 5, f"the {name} thread pinned")

    burning = threading.Event()

    def hash_while_burning() -> None:
        while burning.is_set():
            burn(0.05)

    burning.set()
    busy = [
        threading.Thread(target=split.pinning.runs_as("model", hash_while_burning), name=f"busy-{n}")
        for n in range(2)
    ]
    for thread in busy:
        thread.start()
    try:
        until(lambda: not splitter.pinned, 20, "the split to share the CPUs")
        assert role_cpus("idle-model") == role_cpus("idle-codec") == role_cpus("busy-0") == ALL_CPUS
        time.sleep(1.0)
        assert not splitter.pinned, "shared, the model role uses more than its half: it stays shared"
    finally:
        burning.clear()
        for thread in busy:
            thread.join()
    time.sleep(4 * splitter.period)
    assert not splitter.pinned, f"pinned again only after fitting for {PIN_AGAIN_AFTER} periods in a row"
    until(lambda: splitter.pinned, 20, "the split to pin again")
    assert role_cpus("idle-model") == splitter.split.model and role_cpus("idle-codec") == splitter.split.codec
    assert splitter.switches == 2 and split.changes == [False, True], "each switch reported once"
    splitter.stop()
    assert role_cpus("idle-model") == role_cpus("idle-codec") == ALL_CPUS, "stopped, every CPU is given back"
    stop.set()


@needs_two_cpus
def test_repin_moves_threads_that_started_before_the_split() -> None:
    split = CpuSplit.of(ALL_CPUS)
    assert split is not None
    stop, started = threading.Event(), threading.Event()

    def wait() -> None:
        started.set()
        stop.wait(10)

    pinning = RolePinning()
    thread = threading.Thread(target=pinning.runs_as("codec", wait), name="early-codec")
    thread.start()
    try:
        assert started.wait(5)
        assert role_cpus("early-codec") == ALL_CPUS
        assert pinning.repin(split, ALL_CPUS) >= 1
        assert role_cpus("early-codec") == split.codec
        pinning.repin(None, ALL_CPUS)
        assert role_cpus("early-codec") == ALL_CPUS
    finally:
        stop.set()
        thread.join()
