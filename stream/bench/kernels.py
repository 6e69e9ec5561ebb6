"""Each native stage alone on the clip's frames: decode, detect, mesh, crop, classify, draw, publish, encode.

Per kernel: wall time per call (mean, p50, p99) over `repeat` calls and the process CPU time per call (all
threads; barely moved by other load on the machine), per item (frame, face or crop) and items/s. Then the
classifier through the `ClassifierBatcher` against standalone at the same batch size.

With `scaling`, three runs of `scaling_seconds` per kernel answer "does it let other threads run?":
- one thread, then two threads with an instance each: the throughput ratio (about 2 on an idle 2-core machine
  when the kernel releases the GIL, about 1 when it holds it; the controls show what the machine's load allows);
- one thread beside a pure-Python spinning thread: how long the spinner was blocked per kernel call (from
  /proc schedstat: robust to load) is the time the kernel holds the GIL, and the kernel's own slowdown is the
  price of taking the GIL back from a busy Python thread after every release.
Controls: a pure-Python loop (holds the GIL) and sha256 over 1 MiB (native, single-threaded, releases it).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from models.classifier import BATCH_BUCKETS, Classifier, load_classifier
from models.detector import DetectorConfig
from models.package import ModelPackage
from stream.bench.calls import (
    Call,
    Inputs,
    load_inputs,
    make_classify,
    make_crop,
    make_decode,
    make_detect,
    make_draw,
    make_encode,
    make_mesh,
    make_stream_encode,
    make_to_rgb,
    make_to_yuv,
    make_to_yuv_cv2,
    python_control,
    sha256_control,
)
from stream.bench.procstat import thread_schedstat
from stream.bench.report import Report, Table, time_kernel
from stream.live.batcher import ClassifierBatcher
from stream.live.reload import ModelHolder


@dataclass(frozen=True)
class KernelSettings:
    """The clip and model to time, calls per kernel, classifier batch sizes and backends, scaling runs."""

    clip: Path
    package: ModelPackage
    frames: int = 60
    repeat: int = 60
    batches: tuple[int, ...] = BATCH_BUCKETS
    tflite_threads: int = 1
    savedmodel: bool = True
    savedmodel_device: str = "auto"
    batcher: bool = True
    scaling: bool = True
    scaling_seconds: float = 2.0
    paced_rate: float | None = 30.0
    """Also run each per-frame kernel at this many calls per second (as the live path does), for its CPU time."""

    def __post_init__(self) -> None:
        if self.frames < 1 or self.repeat < 1 or self.scaling_seconds <= 0:
            raise ValueError("frames and repeat must be >= 1 and scaling_seconds > 0")


@dataclass
class Kernel:
    """A named kernel; `make()` builds an independent instance (one per thread when measuring scaling)."""

    name: str
    unit: str
    make: Callable[[], Call]
    items: int = 1
    """Items (frames, faces, crops) one call handles."""
    scale: bool = True
    """Whether the paced and threaded runs apply (per-frame kernels, the classifier at batch 1)."""


def build_kernels(settings: KernelSettings, inputs: Inputs) -> list[Kernel]:
    """The kernels to time, in table order."""
    spec = settings.package.manifest.crop

    def tflite() -> Classifier:
        return load_classifier(settings.package, "cpu", "tflite", num_threads=settings.tflite_threads)

    def savedmodel() -> Classifier:
        return load_classifier(settings.package, settings.savedmodel_device, "savedmodel")

    kernels = [
        Kernel("control: python loop", "call", lambda: python_control),
        Kernel("control: sha256 1 MiB", "call", lambda: sha256_control),
        Kernel("decode h264 -> rgb24", "frame", partial(make_decode, inputs)),
        Kernel("  of which yuv -> rgb24", "frame", partial(make_to_rgb, inputs)),
        Kernel("detect short", "frame", partial(make_detect, inputs, DetectorConfig(range="short"))),
        Kernel("detect full", "frame", partial(make_detect, inputs, DetectorConfig(range="full"))),
        Kernel("mesh (face region, tracking)", "face", partial(make_mesh, inputs)),
        Kernel("crop", "face", partial(make_crop, inputs, spec)),
    ]
    backends = [("tflite", tflite)] + ([("savedmodel", savedmodel)] if settings.savedmodel else [])
    for name, load in backends:
        for batch in settings.batches:
            make = partial(_classify_with, load, inputs, batch)
            kernels.append(Kernel(f"classify {name} b{batch}", "crop", make, batch, scale=batch == 1))
    return kernels + [
        Kernel("draw mesh + label", "face", partial(make_draw, inputs, True)),
        Kernel("draw box + label", "face", partial(make_draw, inputs, False)),
        Kernel("rgb24 -> yuv420p (swscale)", "frame", partial(make_to_yuv, inputs)),
        Kernel("publish: rgb24 -> yuv420p (cv2)", "frame", partial(make_to_yuv_cv2, inputs)),
        Kernel("publish + encode vp8 (stream encoder)", "frame", partial(make_stream_encode, inputs)),
        Kernel("encode vp8 (aiortc, rgb24 in)", "frame", partial(make_encode, inputs, "vp8")),
        Kernel("encode vp8 (aiortc, cv2 yuv in)", "frame", partial(make_encode, inputs, "vp8", "cv2")),
        Kernel("encode h264 (aiortc, rgb24 in)", "frame", partial(make_encode, inputs, "h264")),
    ]


def _classify_with(load: Callable[[], Classifier], inputs: Inputs, batch: int) -> Call:
    return make_classify(load(), inputs, batch)


@dataclass(frozen=True)
class ThreadRun:
    """Threads running a kernel flat out: calls/s of them all, and per call the ms each thread was blocked
    (neither on a CPU nor waiting for one: the GIL, a lock, a native helper thread) and waited for a CPU."""

    calls_per_second: float
    blocked_ms: float
    runqueue_ms: float


def run_threads(make: Callable[[], Call], threads: int, seconds: float) -> ThreadRun:
    """`threads` threads, each running its own instance of the kernel for `seconds`."""
    instances = [make() for _ in range(threads)]
    for instance in instances:
        instance(0)
    counts = [0] * threads
    blocked = [0.0] * threads
    runqueue = [0.0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def run(slot: int) -> None:
        call = instances[slot]
        start.wait()
        began, (on_cpu, waited) = time.perf_counter(), thread_schedstat()
        for i in itertools.count(1):
            call(i)
            if time.perf_counter() >= deadline[0]:
                break
        wall, (on_cpu_end, waited_end) = time.perf_counter() - began, thread_schedstat()
        counts[slot] = i
        runqueue[slot] = waited_end - waited
        blocked[slot] = wall - (on_cpu_end - on_cpu) - runqueue[slot]

    workers = [threading.Thread(target=run, args=(slot,), name=f"bench-{slot}") for slot in range(threads)]
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    calls = sum(counts)
    return ThreadRun(
        calls / (time.perf_counter() - began), 1000.0 * sum(blocked) / calls, 1000.0 * sum(runqueue) / calls
    )


@dataclass(frozen=True)
class GilProbe:
    """The kernel in one thread beside a thread running pure Python flat out.

    `held_ms`: per kernel call, how long the Python thread was blocked (waiting for the GIL: it waits for nothing
    else), about the time the kernel holds the GIL. `calls_per_second`: the kernel's own rate meanwhile; against
    its rate alone it shows the cost of taking the GIL back after each release (up to one switch interval).
    """

    calls_per_second: float
    held_ms: float


def probe_gil(make: Callable[[], Call], seconds: float) -> GilProbe:
    """Run the kernel for `seconds` beside a pure-Python spinning thread."""
    call = make()
    call(0)
    stopping = threading.Event()
    blocked = [0.0]

    def spin() -> None:
        began, (on_cpu, waited) = time.perf_counter(), thread_schedstat()
        while not stopping.is_set():
            pass
        wall, (on_cpu_end, waited_end) = time.perf_counter() - began, thread_schedstat()
        blocked[0] = wall - (on_cpu_end - on_cpu) - (waited_end - waited)

    spinner = threading.Thread(target=spin, name="bench-spin")
    spinner.start()
    began = time.perf_counter()
    calls = 0
    while time.perf_counter() - began < seconds:
        call(calls)
        calls += 1
    elapsed = time.perf_counter() - began
    stopping.set()
    spinner.join()
    return GilProbe(calls / elapsed, 1000.0 * blocked[0] / calls)


def batcher_throughput(
    classifier: Classifier, crops: np.ndarray, callers: int, seconds: float
) -> tuple[float, float]:
    """Crops/s through a ClassifierBatcher fed one crop at a time by `callers` threads; and the mean batch."""
    classifier.predict(crops[:callers])  # warm: the bucket's interpreter or trace exists before timing
    batcher = ClassifierBatcher(ModelHolder(classifier), max_batch=callers, max_wait=0.004)
    batcher.start()
    counts = [0] * callers
    deadline = time.perf_counter() + seconds

    def run(slot: int) -> None:
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                counts[slot] = i
                return
            batcher.classify(crops[(slot + i) % len(crops)][np.newaxis])

    workers = [threading.Thread(target=run, args=(slot,)) for slot in range(callers)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    batcher.stop()
    stats = batcher.stats
    return sum(counts) / elapsed, stats.crops / max(stats.batches, 1)


def run_kernels(settings: KernelSettings, progress: Callable[[str], None] | None = None) -> Report:
    """Time every kernel; return the report (tables and JSON results)."""
    report = Report(
        "kernels",
        {
            "clip": settings.clip.name,
            "model": settings.package.manifest.version,
            "crop": settings.package.manifest.crop.size,
            "repeat": settings.repeat,
            "tflite_threads": settings.tflite_threads,
        },
    )
    inputs = load_inputs(settings.clip, settings.frames, settings.package.manifest.crop)
    height, width = inputs.images[0].shape[:2]
    columns = ["kernel", "unit", "n", "mean ms", "p50 ms", "p99 ms", "CPU ms", "ms/item", "items/s"]
    if settings.paced_rate is not None:
        columns.append("paced CPU ms")
    if settings.scaling:
        columns += ["2-thread x", "GIL held ms", "beside py x"]
    table = Table(f"Kernels alone, {width}x{height}, one face", columns)
    results: dict[str, dict[str, object]] = {}
    for kernel in build_kernels(settings, inputs):
        if progress is not None:
            progress(kernel.name.strip())
        calls = time_kernel(kernel.make, settings.repeat)
        timing = calls.timing
        per_item = timing.mean / kernel.items
        row: list[object] = [kernel.name, kernel.unit, timing.count, timing.mean, timing.p50, timing.p99]
        row += [calls.cpu_ms, per_item, 1000.0 / per_item if per_item > 0 else 0.0]
        entry: dict[str, object] = {
            "unit": kernel.unit,
            "items": kernel.items,
            **timing.to_dict(),
            "cpu_ms": round(calls.cpu_ms, 3),
        }
        if settings.paced_rate is not None:
            paced = paced_cpu_ms(kernel.make, settings.paced_rate, settings.repeat) if kernel.scale else None
            entry["paced_cpu_ms"] = None if paced is None else round(paced, 3)
            row.append(paced)
        if settings.scaling:
            row += _scaling(kernel, settings.scaling_seconds, entry) if kernel.scale else [None] * 3
        table.add(*row)
        results[kernel.name.strip()] = entry
    table.notes.append(
        "CPU ms: process CPU time per call, all threads (robust to other load; wall times are not). paced CPU ms:"
        f" the same with calls paced at {settings.paced_rate or 0:g}/s as in the live path (cold caches, threads"
        " woken per call)."
    )
    if settings.scaling:
        table.notes += [
            "2-thread x: throughput of two threads (an instance each) over one: ~2 when the kernel releases the GIL"
            " and a second core is free (the controls show what the machine's load allows).",
            "GIL held ms: per call, the time a pure-Python thread beside the kernel was blocked (/proc schedstat)."
            " beside py x: the kernel's slowdown meanwhile, mostly waiting to take the GIL back after each release"
            " (up to one switch interval, 5 ms by default).",
        ]
    report.tables.append(table)
    report.results = {"kernels": results, "frame_size": [width, height], "faces": len(inputs.images)}
    if settings.batcher:
        batcher_table, report.results["batcher"] = _batcher_table(settings, inputs, results)
        report.tables.append(batcher_table)
    return report.finish()


def _batcher_table(
    settings: KernelSettings, inputs: Inputs, results: dict[str, dict[str, object]]
) -> tuple[Table, dict[str, object]]:
    table = Table(
        "Classifier through the ClassifierBatcher (callers submit one crop each) vs standalone at the same batch",
        ["backend", "callers", "crops/s", "mean batch", "standalone crops/s", "ratio"],
    )
    batcher: dict[str, object] = {}
    backends = ["tflite"] + (["savedmodel"] if settings.savedmodel else [])
    for backend in backends:
        device = "cpu" if backend == "tflite" else settings.savedmodel_device
        classifier = load_classifier(settings.package, device, backend, num_threads=settings.tflite_threads)
        for callers in (b for b in settings.batches if 2 <= b <= 16):
            rate, mean_batch = batcher_throughput(classifier, inputs.crops, callers, settings.scaling_seconds)
            standalone = results.get(f"classify {backend} b{callers}", {}).get("mean_ms")
            alone = (
                1000.0 * callers / standalone if isinstance(standalone, float) and standalone > 0 else None
            )
            ratio = rate / alone if alone else None
            table.add(backend, callers, rate, mean_batch, alone, ratio)
            batcher[f"{backend} x{callers}"] = {
                "crops_per_s": round(rate, 1),
                "mean_batch": round(mean_batch, 2),
                "ratio_to_standalone": None if ratio is None else round(ratio, 3),
            }
    table.notes.append("target on GPU/HPU: ratio >= 0.9 at the same batch size.")
    return table, batcher


def paced_cpu_ms(make: Callable[[], Call], rate: float, repeat: int) -> float:
    """Process CPU ms per call of a fresh kernel instance called `rate` times a second (at most 2 s of calls)."""
    call = make()
    for i in range(3):
        call(i)
    calls = max(1, min(repeat, round(2 * rate)))
    period = 1.0 / rate
    started = time.process_time()
    due = time.perf_counter()
    for i in range(calls):
        call(i)
        due += period
        time.sleep(max(0.0, due - time.perf_counter()))
    return 1000.0 * (time.process_time() - started) / calls


def _scaling(kernel: Kernel, seconds: float, entry: dict[str, object]) -> list[object]:
    """[2-thread x, GIL held ms, beside py x] for the table; the raw runs into `entry`."""
    one = run_threads(kernel.make, 1, seconds)
    two = run_threads(kernel.make, 2, seconds)
    probe = probe_gil(kernel.make, seconds)
    ratio = two.calls_per_second / one.calls_per_second if one.calls_per_second > 0 else None
    slowdown = one.calls_per_second / probe.calls_per_second if probe.calls_per_second > 0 else None
    entry.update(
        threads={"one": vars(one), "two": vars(two)},
        gil_probe=vars(probe),
        scaling_2_threads=None if ratio is None else round(ratio, 3),
        gil_held_ms=round(probe.held_ms, 3),
        slowdown_beside_python=None if slowdown is None else round(slowdown, 2),
    )
    return [ratio, probe.held_ms, slowdown]
