"""Size and start-to-ready of a built serving image: `python .ci/measure-image.py IMAGE [STARTS]` (root, podman).

The image's own CMD runs (its port swapped for a free one, a token set) through its root file system as its user,
as tests/test_images.py runs it; the time is from starting the process to the first 200 from /readyz.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from image_rootfs import ImageRootfs, podman
from rtsp_server import free_port


def seconds_to_ready(rootfs: ImageRootfs) -> float:
    port = str(free_port())
    command = [port if arg == "8080" else arg for arg in rootfs.config["Cmd"]]
    started = time.monotonic()
    server = subprocess.Popen(rootfs.command(*command, env={"FAKEWEB_TOKEN": "measure-image-token"}))
    try:
        while server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"the service exited with {server.returncode} before it was ready")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    image, starts = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image))
    print(f"{image}: {size / 1e6:.0f} MB")
    with ImageRootfs(image, ("/data", "/data/model-cache")) as rootfs:
        for start in range(1, starts + 1):
            print(f"start {start}: ready after {seconds_to_ready(rootfs):.2f} s")


if __name__ == "__main__":
    main()
