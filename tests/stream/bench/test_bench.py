"""`fakeweb bench`: every benchmark runs end to end on a small clip and prints its tables and writes its JSON.

Runs are tiny (a few frames, about a second); speed is never asserted, only the structure of what is reported.
The live benchmark also runs against a real GStreamer RTSP server when one can run here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from rtsp_server import RtspTestServer, gst_rtsp_missing

from stream.bench.histogram import Histogram
from stream.bench.procstat import (
    ProcessSampler,
    cpu_seconds,
    rss_bytes,
    thread_cpu_seconds,
    thread_group,
)
from stream.bench.report import Table, Timing, time_calls
from stream.cli import main
from stream.runtime.timing import STAGES


@pytest.fixture(autouse=True)
def _quiet_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` sets a TF_CPP_MIN_LOG_LEVEL default; keep it from leaking into later tests."""
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in one-face clip, made small by `fakeweb bench make-clip`: 320x240, 15 fps, 1 s."""
    path = tmp_path_factory.mktemp("bench") / "face.mp4"
    code, stdout = call(
        ["bench", "make-clip", str(path), "--size", "320x240", "--fps", "15", "--seconds", "1"]
    )
    assert code == 0 and stdout.strip() == str(path)
    return path


def call(argv: list[str]) -> tuple[int, str]:
    """`main(argv)` in-process: exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def bench(name: str, clip: Path, package: Path, tmp_path: Path, *options: str) -> tuple[str, dict[str, Any]]:
    """Run `fakeweb bench NAME CLIP ... --json` on the tiny model; its stdout and parsed JSON."""
    report = tmp_path / f"{name}.json"
    argv = [
        "bench",
        name,
        str(clip),
        "--model",
        str(package),
        "--device",
        "cpu",
        "--json",
        str(report),
        *options,
    ]
    code, stdout = call(argv)
    assert code == 0
    return stdout, json.loads(report.read_text())


def check_header(stdout: str, report: dict[str, Any], name: str) -> None:
    """The first lines name the benchmark and the load average; the JSON has the machine and load."""
    lines = stdout.splitlines()
    assert lines[0].startswith(f"fakeweb bench {name}  ")
    assert re.match(
        r"load average \(1/5/15 min\): [\d.]+/[\d.]+/[\d.]+ before, [\d.]+/[\d.]+/[\d.]+ after", lines[1]
    )
    assert report["benchmark"] == name
    assert len(report["load_average"]["before"]) == 3 and len(report["load_average"]["after"]) == 3
    assert report["environment"]["cpus"] >= 1 and report["environment"]["packages"]["av"]
    for table in report["tables"]:
        assert table["title"] in stdout
        assert all(len(row) == len(table["columns"]) for row in table["rows"])


def rows(report: dict[str, Any], title_start: str) -> dict[str, list[Any]]:
    """The rows of the table whose title starts with `title_start`, by first cell."""
    table = next(t for t in report["tables"] if t["title"].startswith(title_start))
    return {row[0].strip(): row for row in table["rows"]}


def test_make_clip_writes_the_asked_size_rate_and_length(clip: Path) -> None:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        assert stream.average_rate == 15
    assert len(frames) == 15


def test_kernels_reports_every_kernel_and_batch(clip: Path, tiny_package: Path, tmp_path: Path) -> None:
    stdout, report = bench(
        "kernels", clip, tiny_package, tmp_path, "--frames", "4", "--repeat", "2", "--batches", "1,2",
        "--scaling-seconds", "0.05",
    )  # fmt: skip
    check_header(stdout, report, "kernels")
    kernels = rows(report, "Kernels alone")
    expected = [
        "control: python loop", "control: sha256 1 MiB", "decode h264 -> rgb24", "of which yuv -> rgb24",
        "detect short", "detect full", "mesh (face region, tracking)", "crop", "classify tflite b1",
        "classify tflite b2", "classify savedmodel b1", "classify savedmodel b2", "draw mesh + label",
        "draw box + label", "rgb24 -> yuv420p (swscale)", "publish: rgb24 -> yuv420p (cv2)",
        "publish + encode vp8 (stream encoder)", "encode vp8 (aiortc, rgb24 in)", "encode vp8 (aiortc, cv2 yuv in)",
        "encode h264 (aiortc, rgb24 in)",
    ]  # fmt: skip
    assert list(kernels) == expected
    columns = report["tables"][0]["columns"]
    assert (
        columns[-4:] == ["paced CPU ms", "2-thread x", "GIL held ms", "beside py x"] and "CPU ms" in columns
    )
    for name, row in kernels.items():
        assert row[2] == 2 and row[3] > 0, name  # calls and mean ms
        paced, scaling, held, slowdown = row[-4:]
        unscaled = name in ("classify tflite b2", "classify savedmodel b2")
        assert (paced is None) == (scaling is None) == (held is None) == (slowdown is None) == unscaled, name
    result = report["results"]["kernels"]["classify tflite b2"]
    assert result["items"] == 2 and result["unit"] == "crop" and result["n"] == 2
    assert set(rows(report, "Classifier through the ClassifierBatcher")) == {"tflite", "savedmodel"}
    assert report["results"]["batcher"]["tflite x2"]["mean_batch"] >= 1


def test_kernels_without_optional_parts(clip: Path, tiny_package: Path, tmp_path: Path) -> None:
    stdout, report = bench(
        "kernels", clip, tiny_package, tmp_path, "--frames", "2", "--repeat", "1", "--batches", "4",
        "--no-savedmodel", "--no-batcher", "--no-scaling", "--no-paced",
    )  # fmt: skip
    check_header(stdout, report, "kernels")
    columns = report["tables"][0]["columns"]
    assert len(report["tables"]) == 1 and "GIL held ms" not in columns and "paced CPU ms" not in columns
    assert [name for name in rows(report, "Kernels alone") if name.startswith("classify")] == [
        "classify tflite b4"
    ]


def test_live_runs_paced_streams_through_the_service(clip: Path, tiny_package: Path, tmp_path: Path) -> None:
    stdout, report = bench(
        "live", clip, tiny_package, tmp_path, "--streams", "2", "--viewers", "2", "--seconds", "1.5",
        "--warmup", "1", "--window", "0.5", "--pin-threads", "on",
    )  # fmt: skip
    check_header(stdout, report, "live")
    assert report["settings"]["streams"] == 2 and report["settings"]["mesh_for"] == "all"
    assert report["settings"]["viewers"] == 2
    streams = report["results"]["streams"]
    assert set(streams) == {"bench-0", "bench-1"}
    for stream in streams.values():
        assert stream["source_fps"] > 0 and stream["delivered_fps"] >= 0
        assert set(stream["drops"]) == {
            "stale_in_worker_slot", "overload_waiting_for_a_permit", "replaced_before_encode", "viewer_skipped",
            "pipeline_errors", "decode_errors",
        }  # fmt: skip
        assert set(stream["end_to_end"]) == {"n", "mean_ms", "p50_ms", "p99_ms"}
        encode = stream["encode"]
        assert 0 < encode["encoded_fps"] <= stream["processed_fps"] + 1, "once per frame, not per viewer"
        assert encode["cpu_ms_per_frame"] > 0
    assert list(rows(report, "Encoding per stream")) == ["bench-0", "bench-1"]
    assert report["results"]["thread_cpu_seconds"]["encoder"] > 0
    assert sum(stream["end_to_end"]["n"] for stream in streams.values()) > 0
    assert set(report["results"]["stages"]) == {*STAGES, "total"}
    process = report["results"]["process"]
    assert process["cpu_percent"] > 0 and process["rss_mib_max"] > 0
    can_pin = len(os.sched_getaffinity(0)) >= 2
    assert process["pinned_percent"] == pytest.approx(100.0 if can_pin else 0.0, abs=0.1)
    assert process["pin_switches"] == 0  # "on" is a fixed split
    assert report["results"]["samples"] and report["results"]["thread_cpu_seconds"]["worker"] > 0
    assert len(rows(report, "Over time")) == 3


def test_live_reads_rtsp_cameras(clip: Path, tiny_package: Path, tmp_path: Path) -> None:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
    with RtspTestServer(clip) as server:
        stdout, report = bench(
            "live", clip, tiny_package, tmp_path, "--rtsp", server.url, "--streams", "1", "--seconds", "1",
            "--warmup", "1.5",
        )  # fmt: skip
    check_header(stdout, report, "live")
    assert report["settings"]["source"] == "rtsp"
    (stream,) = report["results"]["streams"].values()
    assert stream["source_fps"] > 0 and stream["end_to_end"]["n"] > 0


def test_seed_compares_both_designs(clip: Path, tiny_package: Path, tmp_path: Path) -> None:
    stdout, report = bench("seed", clip, tiny_package, tmp_path, "--frames", "5")
    check_header(stdout, report, "seed")
    designs = report["results"]["designs"]
    assert [design["name"] for design in designs] == ["fakeweb", "seed"]
    for design in designs:
        # ours counts delivered frames: its encoder keeps the newest, as live (a frame may be replaced)
        assert design["frames"] + design["dropped"] == 5 and design["frames"] >= 1
        assert design["fps"] > 0 and design["frames_per_cpu_second"] > 0
        assert set(design["stages_ms"]) == set(STAGES)
    assert designs[1]["dropped"] == 0  # the seed design encodes every frame on its one thread
    assert designs[0]["faces"] == 5  # faces are counted over processed frames
    assert report["results"]["speedup"] > 0 and report["results"]["speedup_cpu"] > 0
    assert re.search(r"speed-up over the seed design: \d+\.\dx frames/s", stdout)
    assert set(rows(report, "Pipeline vs seed")) == {*STAGES, "total", "frames/s", "frames/CPU-s", "faces"}


def test_overhead_sets_the_pipeline_against_its_kernels(
    clip: Path, tiny_package: Path, tmp_path: Path
) -> None:
    stdout, report = bench(
        "overhead", clip, tiny_package, tmp_path, "--frames", "20", "--warmup", "4", "--repeat", "2"
    )
    check_header(stdout, report, "overhead")
    results = report["results"]
    assert results["frames"] == 20 and report["settings"]["warmup"] == 4
    calls = results["kernel_calls"]
    assert calls["decode"] == calls["encode"] == 20  # the warm-up frames are not counted
    assert calls["detect"] == 6  # every third processed frame (the default cadence): 6, 9, ..., 21 of 0-23
    assert calls["mesh"] > 0 and calls["classify b1"] >= 1  # every face meshed; classified every 10 frames
    assert calls["crop"] == sum(
        int(name[10:]) * n for name, n in calls.items() if name.startswith("classify b")
    )
    assert set(results["kernels"]) >= {"decode", "detect", "crop", "mesh", "encode"}
    for key in ("overhead", "in_order_over_alone", "pipeline_over_in_order"):
        assert set(results[key]) == {"wall", "cpu"}
    # The three per-frame costs are consistent with the ratios reported between them.
    alone, in_order = results["kernels_cpu_ms_per_frame"], results["in_order_cpu_ms_per_frame"]
    measured = results["cpu_ms_per_frame"]
    assert results["overhead"]["cpu"] == pytest.approx(measured / alone - 1, abs=1e-3)
    assert results["in_order_over_alone"]["cpu"] == pytest.approx(in_order / alone - 1, abs=1e-3)
    assert results["pipeline_over_in_order"]["cpu"] == pytest.approx(measured / in_order - 1, abs=1e-3)
    pinned = len(os.sched_getaffinity(0)) >= 2  # pinning by role needs two CPUs
    threaded = ["live_threads_unpinned", *(["live_threads_pinned", "live_threads_auto"] if pinned else [])]
    for name in threaded:
        threads = results[name]
        assert threads["frames"] == threads["kernel_calls"]["decode"] == 20
        assert (
            0 < threads["encoded"] == threads["kernel_calls"]["encode"] <= 20
        )  # the encoder keeps the newest
        assert threads["kernel_calls"]["detect"] == 6
        assert threads["overhead_cpu"] == pytest.approx(
            threads["cpu_ms_per_frame"] / threads["kernels_cpu_ms_per_frame"] - 1, abs=1e-3
        )
    table = rows(report, "Pipeline per-frame cost")
    assert list(table) == [
        *STAGES,
        "untimed glue",
        "total wall",
        "total CPU",
        "live threads, unpinned CPU",
        *(["live threads, pinned CPU", "live threads, auto CPU"] if pinned else []),
    ]
    assert "overhead over the sum of the kernels alone" in stdout and "threaded as the live path" in stdout
    assert "run in the pipeline's order" in stdout


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["seed", "clip.mp4", "--frames", "0"], "argument --frames: must be >= 1, got 0"),
        (["live", "--streams", "0"], "argument --streams: must be >= 1, got 0"),
        (["live", "--seconds", "0"], "argument --seconds: must be > 0, got 0.0"),
        (["kernels", "--scaling-seconds", "x"], "argument --scaling-seconds: expected a number, got 'x'"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"fakeweb bench {argv[0]}: error: {reason}")


def test_missing_clip_and_json_folder_are_one_line_errors(
    clip: Path, tiny_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "seed", str(tmp_path / "missing.mp4"), "--model", str(tiny_package)]) == 2
    assert capsys.readouterr().err.startswith("fakeweb: error: ")
    json_path = str(tmp_path / "no" / "report.json")
    assert main(["bench", "seed", str(clip), "--model", str(tiny_package), "--json", json_path]) == 2
    assert "output folder not found" in capsys.readouterr().err


# -- the shared pieces ------------------------------------------------------------------------------------------


def test_table_renders_aligned_columns_and_refuses_short_rows() -> None:
    table = Table("T", ["name", "ms"])
    table.add("a", 1.0)
    table.add("longer", 12345.6)
    table.add("none", None)
    lines = table.render().splitlines()
    assert lines[0] == "T" and lines[2].split() == ["name", "ms"]
    assert {len(line) for line in lines[1:]} == {len(lines[1])}
    assert lines[4].split() == ["a", "1.00"] and lines[5].split() == ["longer", "12346"]
    assert lines[6].split() == ["none", "-"]
    with pytest.raises(ValueError, match="row has 1 cells"):
        table.add("x")


def test_timing_summaries() -> None:
    timing = Timing.of([0.001] * 99 + [0.101])
    assert timing.count == 100 and timing.p50 == pytest.approx(1.0)
    assert timing.mean == pytest.approx(2.0) and timing.p99 > 1.0
    assert Timing.of([]) == Timing(0, 0.0, 0.0, 0.0)
    calls = time_calls(lambda: time.sleep(0.002), repeat=3, warmup=1)
    assert len(calls.wall) == 3 and min(calls.wall) >= 0.002 and calls.cpu_ms < 2.0


def test_histogram_percentiles_within_two_percent_and_merge() -> None:
    values = np.random.default_rng(0).lognormal(np.log(0.02), 0.8, 5000)
    first, second = Histogram(), Histogram()
    for value in values[:2500]:
        first.add(float(value))
    for value in values[2500:]:
        second.add(float(value))
    first.merge(second)
    assert first.count == 5000 and first.total == pytest.approx(values.sum())
    for q in (50, 90, 99):
        assert first.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.03)
    timing = first.timing()
    assert timing.mean == pytest.approx(1000 * values.mean()) and timing.count == 5000
    empty = Histogram()
    assert empty.percentile(99) == 0.0 and empty.timing() == Timing(0, 0.0, 0.0, 0.0)
    extremes = Histogram()
    extremes.add(0.0)
    extremes.add(1e6)
    assert extremes.percentile(1) < 2e-5 and extremes.percentile(100) > 50


def test_process_figures_come_from_proc() -> None:
    assert cpu_seconds() > 0 and rss_bytes() > 10 * 2**20
    assert thread_group("worker-bench-0") == "worker" and thread_group("asyncio_3") == "asyncio"
    assert thread_group("classifier-batcher") == "classifier-batcher"
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], name="worker-spin")
    sampler = ProcessSampler(period=0.05)
    sampler.start()
    spinner.start()
    time.sleep(0.3)
    groups = thread_cpu_seconds()
    stop.set()
    spinner.join()
    sampler.stop()
    assert groups["worker"] > 0 and "MainThread" in groups
    assert sampler.samples and sampler.cpu_percent > 0 and sampler.samples[-1].rss_mib > 10
