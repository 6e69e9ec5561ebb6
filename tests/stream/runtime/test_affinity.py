"""CPU pinning by role (`stream.runtime.affinity`, the `pin_threads` setting): the split of the CPUs, the pin of a
thread while in its role of a `RolePinning`, and the service's own threads pinned when asked and not otherwise."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import aiohttp
import pytest
from clips import ClipTruth
from fake_proc import FakeProc
from live_helpers import json_request, save_file_camera, until
from rtsp_server import free_port

from stream.config import load_config
from stream.live.serve import serving
from stream.runtime.affinity import CpuSplit, Role, RolePinning, role_threads

ALL_CPUS = frozenset(os.sched_getaffinity(0))
needs_two_cpus = pytest.mark.skipif(len(ALL_CPUS) < 2, reason="pinning by role needs two or more CPUs")


@pytest.fixture
def split() -> CpuSplit:
    """This process's CPUs split by role."""
    split = CpuSplit.of(ALL_CPUS)
    assert split is not None
    return split


@pytest.mark.parametrize(
    ("cpus", "model", "codec"),
    [
        ([0, 1], {0}, {1}),
        ([3, 1, 2, 0], {0, 1}, {2, 3}),
        ([0, 1, 2], {0, 1}, {2}),
        ([2, 2, 7], {2}, {7}),
    ],
)
def test_the_models_get_the_first_half_of_the_cpus_rounded_up(
    cpus: list[int], model: set[int], codec: set[int]
) -> None:
    assert CpuSplit.of(cpus) == CpuSplit(frozenset(model), frozenset(codec))


@pytest.mark.parametrize("cpus", [[], [4], [4, 4]])
def test_fewer_than_two_cpus_cannot_be_split(cpus: list[int]) -> None:
    assert CpuSplit.of(cpus) is None


def cpus_of_a_thread_running_as(pinning: RolePinning, name: Role) -> frozenset[int]:
    """The CPUs a new thread started with `pinning.runs_as(name, ...)` may run on while in its target."""
    seen: list[frozenset[int]] = []

    def record() -> None:
        seen.append(frozenset(os.sched_getaffinity(0)))

    thread = threading.Thread(target=pinning.runs_as(name, record))
    thread.start()
    thread.join()
    return seen[0]


@needs_two_cpus
def test_a_thread_runs_on_its_roles_cpus_and_gets_its_own_back(split: CpuSplit) -> None:
    pinning = RolePinning(split)
    assert cpus_of_a_thread_running_as(pinning, "model") == split.model
    assert cpus_of_a_thread_running_as(pinning, "codec") == split.codec
    with pinning.role("codec"):
        assert frozenset(os.sched_getaffinity(0)) == split.codec
    assert frozenset(os.sched_getaffinity(0)) == ALL_CPUS


def test_without_a_split_roles_change_nothing() -> None:
    pinning = RolePinning()
    assert cpus_of_a_thread_running_as(pinning, "model") == ALL_CPUS
    with pinning.role("codec"):
        assert frozenset(os.sched_getaffinity(0)) == ALL_CPUS


@needs_two_cpus
def test_each_pinning_keeps_its_own_split(split: CpuSplit) -> None:
    """No process-wide split: a pinned service's threads and another part's unpinned ones side by side."""
    pinned, unpinned = RolePinning(split), RolePinning()
    assert cpus_of_a_thread_running_as(pinned, "model") == split.model
    assert cpus_of_a_thread_running_as(unpinned, "model") == ALL_CPUS


def test_role_threads_are_read_from_the_given_proc(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    for tid, name in enumerate(["m:worker-cam", "c:encoder-cam", "av:h264:df0", "python"], start=11):
        proc.thread(tid, name)
    proc.task(15).mkdir()  # a thread that ended while being read: no comm file
    assert sorted(role_threads(proc.procfs)) == [(11, "model"), (12, "codec"), (13, "codec")]


def test_a_role_names_the_thread_in_the_given_proc_and_gives_the_name_back(tmp_path: Path) -> None:
    proc, tid = FakeProc(tmp_path), threading.get_native_id()
    proc.thread(tid, "pytest")
    with RolePinning(proc=proc.procfs).role("codec"):
        assert proc.procfs.thread_name(tid) == f"c:{threading.current_thread().name}"[:15]
    assert proc.procfs.thread_name(tid) == "pytest"


@needs_two_cpus
@pytest.mark.parametrize("mode", ["on", "off", "auto"])
def test_the_service_pins_its_threads_only_when_asked(
    mode: str, tmp_path: Path, moving_face_video: tuple[Path, ClipTruth]
) -> None:
    """A real service with a recorded camera: the worker and the classifier batcher on the model CPUs, the
    camera's reader and the stream's encoder on the codec CPUs; the event loop's thread keeps every CPU. `auto`
    starts pinned, and one camera is far too little load to change that (tests/stream/runtime/test_cpu_split.py changes it);
    /metrics says whether the threads are pinned."""

    pinnings: list[RolePinning] = []

    async def scenario() -> tuple[dict[str, frozenset[int]], str]:
        overrides = {"port": free_port(), "data_dir": tmp_path, "pin_threads": mode}
        camera_id = save_file_camera(tmp_path, "recorded", moving_face_video[0])
        async with (
            serving(load_config(overrides=overrides)) as running,
            aiohttp.ClientSession(running.url) as http,
        ):
            pinnings.append(running.service.pinning)

            async def processing() -> bool:
                state = await json_request(http, "GET", f"/api/streams/{camera_id}")
                return bool(state["frames_processed"] > 0)

            await until(processing, 30, "frames processed")
            async with http.get("/metrics") as response:
                metrics = await response.text()
            return {
                thread.name.split("-")[0] if "-" in thread.name else thread.name: frozenset(
                    os.sched_getaffinity(thread.native_id or 0)
                )
                for thread in threading.enumerate()
                if thread.name.startswith(("worker-", "classifier-", "rtsp-read-", "encoder-", "MainThread"))
            }, metrics

    affinity, metrics = asyncio.run(scenario())
    split = CpuSplit.of(ALL_CPUS)
    assert split is not None
    pinned = mode != "off"
    assert f"fakeweb_threads_pinned {1.0 if pinned else 0.0}" in metrics
    model, codec = (split.model, split.codec) if pinned else (ALL_CPUS, ALL_CPUS)
    assert affinity == {
        "worker": model,
        "classifier": model,
        "rtsp": codec,
        "encoder": codec,
        "MainThread": ALL_CPUS,
    }
    assert pinnings[0].split is None, "the service unpinned on close"
    assert cpus_of_a_thread_running_as(pinnings[0], "model") == ALL_CPUS
