"""Soak run (a benchmark, not a test): a real `fakeweb serve` process for N minutes with 4 RTSP cameras, one
permanent viewer, viewers joining and leaving, and a camera killed and restored every minute. Every 10 s it
samples the server's memory (VmRSS), threads and open files, from /metrics the p99 end-to-end latency and
the frames processed and dropped over the last 10 s, and the CPU (% of one core) of the server, of this process
(its aiortc viewers decode what they receive), of the RTSP servers and of the rest of the machine; at the end it
prints a Markdown table and a summary.

    /work/venv/bin/python tests/soak_run.py --minutes 10 [--out soak.md]

Not collected by pytest (the file name does not start with test_). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import aiohttp  # noqa: E402
from clips import moving_face_clip  # noqa: E402
from fault_helpers import STEADY_MALLOC, clip, loopback_ice, open_files, quantile, rss_mb  # noqa: E402
from live_helpers import Client, add_camera, samples, stream, wait_for  # noqa: E402
from rtsp_server import RtspTestServer, gst_rtsp_missing  # noqa: E402
from server_process import ServerProcess  # noqa: E402

from stream.runtime.procfs import PROCFS, stat_cpu_seconds  # noqa: E402

LATENCY = "fakeweb_end_to_end_latency_seconds"


@dataclass
class Sample:
    minute: float
    rss_mb: float
    threads: int
    open_files: int
    p99_ms: float
    processed_fps: float
    dropped_fps: float
    viewers: int
    reconnects: int
    load: float
    cpu: dict[str, float]
    """% of one core over the last period: server, soak (this process), rtsp (the camera servers), other."""


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads); 0 for a process that is gone."""
    try:
        return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0


class CpuMeter:
    """CPU seconds of the server, this process, the RTSP servers and the machine, as deltas between reads."""

    def __init__(self, server_pid: int, rtsp: list[RtspTestServer]) -> None:
        self.server_pid = server_pid
        self.rtsp = rtsp
        self.rtsp_spent: dict[int, float] = {}  # seconds of each camera process seen, by pid
        self.previous = self._read()

    def _rtsp_seconds(self) -> float:
        """Seconds of every camera process seen so far (a killed one counts what it had at the last read)."""
        for server in self.rtsp:
            if server.pid is not None:
                self.rtsp_spent[server.pid] = process_cpu_seconds(server.pid) or self.rtsp_spent.get(
                    server.pid, 0.0
                )
        return sum(self.rtsp_spent.values())

    def _read(self) -> dict[str, float]:
        times = os.times()
        return {
            "server": process_cpu_seconds(self.server_pid),
            "soak": times.user + times.system,
            "rtsp": self._rtsp_seconds(),
            "machine": sum(PROCFS.cpu_busy_seconds().values()),
        }

    def percent(self, seconds: float) -> dict[str, float]:
        """Each part's CPU over the last `seconds`, in % of one core; `other` is the machine's remainder."""
        current = self._read()
        spent = {key: current[key] - self.previous[key] for key in current}
        self.previous = current
        spent["other"] = spent["machine"] - spent["server"] - spent["soak"] - spent["rtsp"]
        return {key: 100 * value / seconds for key, value in spent.items()}


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def totals(text: str) -> tuple[dict[float, float], float, float, float, float]:
    """(latency buckets summed over streams, processed, dropped, viewers, reconnects) of a /metrics page."""
    buckets: dict[float, float] = {}
    processed = dropped = viewers = reconnects = 0.0
    for (name, labels), value in samples(text).items():
        label = dict(labels)
        if name == f"{LATENCY}_bucket":
            bound = math.inf if label["le"] == "+Inf" else float(label["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif name == "fakeweb_frames_total" and label.get("outcome") == "processed":
            processed += value
        elif name == "fakeweb_frames_total" and label.get("outcome", "").startswith("dropped"):
            dropped += value
        elif name == "fakeweb_viewers":
            viewers = value
        elif name == "fakeweb_reconnects_total":
            reconnects += value
    return buckets, processed, dropped, viewers, reconnects


async def soak(minutes: float, period: float, seed: int) -> tuple[list[Sample], dict[str, float]]:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="fakeweb-soak-"))
    face, _ = moving_face_clip(folder)
    clips = [
        face,
        clip(folder / "vga.mp4", (640, 480)),
        clip(folder / "cif.mp4", (352, 288)),
        clip(folder / "no_face.mp4", (320, 240), face=False),
    ]
    rtsp = [RtspTestServer(path, path=f"cam{index}") for index, path in enumerate(clips)]
    for server in rtsp:
        server.start()
    env = {"FAKEWEB_CLASSIFY_EVERY": "5", **STEADY_MALLOC}
    service = ServerProcess(folder / "data", "--loopback-ice", env=env).start()
    assert service.process is not None
    pid = service.process.pid
    try:
        cameras = [add_camera(service, f"cam{index}", server.url) for index, server in enumerate(rtsp)]
        for camera_id in cameras:
            wait_for(lambda cid=camera_id: stream(service, cid)["frames_processed"] > 10, 30, "camera live")
        async with aiohttp.ClientSession(service.url) as http:
            permanent = Client(ice_servers=[])
            await permanent.connect(http, f"/api/streams/{cameras[0]}/view")
            transient: list[tuple[Client, float]] = []
            killed: tuple[RtspTestServer, float] | None = None
            started = time.monotonic()
            end = started + minutes * 60
            next_sample, next_kill, next_join = started, started + 60, started + 5
            previous = totals((await asyncio.to_thread(service.request, "GET", "/metrics"))[1])
            meter = CpuMeter(pid, rtsp)
            result: list[Sample] = []
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_join:  # a viewer joins a random camera for 10-40 s
                    viewer = Client(ice_servers=[])
                    await viewer.connect(http, f"/api/streams/{rng.choice(cameras)}/view")
                    transient.append((viewer, now + rng.uniform(10, 40)))
                    next_join = now + rng.uniform(5, 20)
                for viewer, leave_at in list(transient):
                    if now >= leave_at:
                        await viewer.close()
                        transient.remove((viewer, leave_at))
                if killed is None and now >= next_kill:  # a camera crashes...
                    target = rng.choice(rtsp[1:])
                    await asyncio.to_thread(target.kill)
                    killed, next_kill = (target, now + rng.uniform(3, 10)), now + 60
                elif killed is not None and now >= killed[1]:  # ...and comes back
                    await asyncio.to_thread(killed[0].start)
                    killed = None
                if now >= next_sample + period:
                    _, text = await asyncio.to_thread(service.request, "GET", "/metrics")
                    current = totals(text)
                    seconds = now - next_sample
                    p99 = quantile(0.99, previous[0], current[0])
                    result.append(
                        Sample(
                            minute=(now - started) / 60,
                            rss_mb=rss_mb(pid),
                            threads=threads_of(pid),
                            open_files=open_files(service),
                            p99_ms=p99 * 1000,
                            processed_fps=(current[1] - previous[1]) / seconds,
                            dropped_fps=(current[2] - previous[2]) / seconds,
                            viewers=int(current[3]),
                            reconnects=int(current[4]),
                            load=os.getloadavg()[0],
                            cpu=meter.percent(seconds),
                        )
                    )
                    last = result[-1]
                    print(
                        f"{last.minute:5.1f} min  rss {last.rss_mb:6.0f} MB  threads {last.threads:3d}  "
                        f"files {last.open_files:4d}  p99 {last.p99_ms:6.0f} ms  "
                        f"{last.processed_fps:5.1f} fps  dropped {last.dropped_fps:5.1f}/s  "
                        f"viewers {last.viewers}  reconnects {last.reconnects}  load {last.load:.1f}  "
                        f"cpu {cpu_text(last.cpu)}",
                        flush=True,
                    )
                    previous, next_sample = current, now
                await asyncio.sleep(0.2)
            for viewer, _ in transient:
                await viewer.close()
            await permanent.close()
            summary = {"permanent_viewer_frames": float(permanent.frames)}
        return result, summary
    finally:
        service.stop()
        for server in rtsp:
            server.kill()


CPU_PARTS = ("server", "soak", "rtsp", "other")


def cpu_text(cpu: dict[str, float]) -> str:
    return " ".join(f"{part} {cpu[part]:.0f}%" for part in CPU_PARTS)


def table(rows: list[Sample]) -> str:
    lines = [
        "| minute | RSS (MB) | threads | open files | p99 latency (ms) | processed fps | dropped fps | viewers "
        "| reconnects | load avg | CPU % server / soak / rtsp / other |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cpu = " / ".join(f"{row.cpu[part]:.0f}" for part in CPU_PARTS)
        lines.append(
            f"| {row.minute:.1f} | {row.rss_mb:.0f} | {row.threads} | {row.open_files} | {row.p99_ms:.0f} "
            f"| {row.processed_fps:.1f} | {row.dropped_fps:.1f} | {row.viewers} | {row.reconnects} | {row.load:.1f} "
            f"| {cpu} |"
        )
    return "\n".join(lines)


def blocks(rows: list[Sample], minutes: float = 10.0, slow_ms: float = 40.0) -> str:
    """Per block of `minutes`: samples, those with p99 over `slow_ms`, the worst p99, mean CPU of each part and
    the load average at the block's end: whether the latency tail moves with the server's CPU or its
    neighbours'."""
    lines = [
        f"| minutes | samples | p99 > {slow_ms:.0f} ms | max p99 (ms) | CPU % server / soak / rtsp / other | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    count = max(1, math.ceil(max(row.minute for row in rows) / minutes)) if rows else 0
    for index in range(count):
        block = [row for row in rows if index * minutes <= row.minute < (index + 1) * minutes]
        if not block:
            continue
        finite = [row.p99_ms for row in block if math.isfinite(row.p99_ms)]
        cpu = " / ".join(f"{statistics.fmean(row.cpu[part] for row in block):.0f}" for part in CPU_PARTS)
        lines.append(
            f"| {index * minutes:.0f}-{(index + 1) * minutes:.0f} | {len(block)} "
            f"| {sum(1 for value in finite if value > slow_ms)} | {max(finite, default=math.nan):.0f} "
            f"| {cpu} | {block[-1].load:.1f} |"
        )
    return "\n".join(lines)


def summarize(rows: list[Sample]) -> str:
    """RSS and p99 in the first and last third of the run (the first minute, warm-up, left out)."""
    steady = [row for row in rows if row.minute >= 1.0] or rows
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]

    def median(values: list[float]) -> float:
        finite = [value for value in values if math.isfinite(value)]
        return statistics.median(finite) if finite else math.nan

    return (
        f"RSS median {median([r.rss_mb for r in first]):.0f} MB in the first third, "
        f"{median([r.rss_mb for r in last]):.0f} MB in the last (max {max(r.rss_mb for r in steady):.0f}); "
        f"p99 median {median([r.p99_ms for r in first]):.0f} ms -> {median([r.p99_ms for r in last]):.0f} ms; "
        f"threads {first[0].threads} -> {last[-1].threads}; open files {first[0].open_files} -> "
        f"{last[-1].open_files}; load average {min(r.load for r in rows):.1f}-{max(r.load for r in rows):.1f}; "
        f"CPU % of a core, first third -> last: "
        + ", ".join(
            f"{part} {median([r.cpu[part] for r in first]):.0f} -> {median([r.cpu[part] for r in last]):.0f}"
            for part in CPU_PARTS
        )
        + "."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--period", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the table and summary to this Markdown file")
    args = parser.parse_args()
    reason = gst_rtsp_missing()
    if reason:
        print(f"cannot soak: {reason}", file=sys.stderr)
        return 2
    with loopback_ice():
        rows, extra = asyncio.run(soak(args.minutes, args.period, args.seed))
    report = (
        f"{table(rows)}\n\n{blocks(rows)}\n\n{summarize(rows)} "
        f"Permanent viewer frames: {extra['permanent_viewer_frames']:.0f}.\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
