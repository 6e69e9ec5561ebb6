"""What every benchmark shares: timing summaries, plain-text tables, the machine's state, JSON reports."""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.bench.procstat import load_average

if TYPE_CHECKING:
    from models.classifier import Classifier
    from stream.pipeline.pipeline import PipelineConfig

_PACKAGES = (
    "ai-edge-litert",
    "tensorflow-cpu",
    "mediapipe",
    "av",
    "aiortc",
    "opencv-contrib-python",
    "opencv-python-headless",
    "numpy",
)


@dataclass(frozen=True)
class Timing:
    """Summary of repeated measurements, in milliseconds."""

    count: int
    mean: float
    p50: float
    p99: float

    @staticmethod
    def of(seconds: Sequence[float]) -> Timing:
        if not len(seconds):
            return Timing(0, 0.0, 0.0, 0.0)
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        return Timing(len(ms), float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))

    def to_dict(self) -> dict[str, float]:
        return {
            "n": self.count,
            "mean_ms": round(self.mean, 3),
            "p50_ms": round(self.p50, 3),
            "p99_ms": round(self.p99, 3),
        }


@dataclass(frozen=True)
class Calls:
    """Repeated calls: the wall seconds of each, and the process CPU seconds (all threads) of them all.

    CPU time barely moves when other processes load the machine, wall time does: on a busy machine compare CPU.
    """

    wall: list[float]
    cpu: float

    @property
    def timing(self) -> Timing:
        return Timing.of(self.wall)

    @property
    def cpu_ms(self) -> float:
        """Process CPU milliseconds per call."""
        return 1000.0 * self.cpu / len(self.wall) if self.wall else 0.0


def time_calls(call: Callable[[], object], repeat: int, warmup: int = 3) -> Calls:
    """Time `repeat` calls of `call` after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    wall = []
    cpu_started = time.process_time()
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        wall.append(time.perf_counter() - started)
    return Calls(wall, time.process_time() - cpu_started)


def time_kernel(make: Callable[[], Callable[[int], object]], repeat: int) -> Calls:
    """Time `repeat` calls of a fresh kernel instance from `make`, each on the next input (see `calls.Call`)."""
    call = make()
    inputs = itertools.count()
    return time_calls(lambda: call(next(inputs)), repeat)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


@dataclass
class Table:
    """A titled table of rows; numbers are right-aligned, the first column left-aligned."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"{self.title}: row has {len(row)} cells, table has {len(self.columns)} columns")
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [self.columns, *[[_cell(value) for value in row] for row in self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]

        def line(row: list[str]) -> str:
            first = row[0].ljust(widths[0])
            return "  ".join(
                [first, *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
            )

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [self.title, rule, line(cells[0]), rule, *(line(row) for row in cells[1:]), rule]
        return "\n".join(out + self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [[round(v, 3) if isinstance(v, float) else v for v in row] for row in self.rows],
            "notes": self.notes,
        }


def environment() -> dict[str, Any]:
    """The machine and library versions a figure was taken with."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "packages": versions,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@dataclass
class Report:
    """One benchmark run: its tables, raw results for the JSON, and the load average before and after."""

    benchmark: str
    settings: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = field(default_factory=load_average)
    load_after: tuple[float, float, float] | None = None

    def finish(self) -> Report:
        self.load_after = load_average()
        return self

    def render(self) -> str:
        settings = "  ".join(f"{key}={value}" for key, value in self.settings.items())
        after = self.load_after or load_average()
        lines = [
            f"fakeweb bench {self.benchmark}  {settings}",
            f"load average (1/5/15 min): {_loads(self.load_before)} before, {_loads(after)} after; "
            f"{os.cpu_count()} CPUs",
        ]
        return "\n\n".join(["\n".join(lines), *(table.render() for table in self.tables)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "settings": self.settings,
            "environment": environment(),
            "load_average": {
                "before": list(self.load_before),
                "after": list(self.load_after or load_average()),
            },
            "tables": [table.to_dict() for table in self.tables],
            "results": self.results,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")


def pipeline_settings(
    clip: Path, config: PipelineConfig, classifier: Classifier, frames: int
) -> dict[str, Any]:
    """The settings of a benchmark that runs the pipeline over `frames` frames of `clip`, for its `Report`."""
    return {
        "clip": clip.name,
        "frames": frames,
        "model": classifier.version,
        "backend": classifier.backend,
        "detect_every": config.detect_every,
        "mesh_every": config.mesh_every,
        "classify_every": config.scoring.classify_every,
        "mesh_for": config.overlay.mesh_for,
    }


def _loads(values: tuple[float, float, float]) -> str:
    return "/".join(f"{value:.2f}" for value in values)
