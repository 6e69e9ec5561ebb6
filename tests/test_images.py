"""The container images: the serving set they install, their Dockerfiles, docker-compose.yml against them, and
the CPU image itself, smoke-tested through its root file system.

The static checks always run. The smoke tests need an image built by `bash .ci/build-image` (`.ci/run` builds it
where podman runs and names it in FAKEWEB_IMAGE), root, and podman; elsewhere they skip and say so. The GPU and
Gaudi images cannot be built here (their base images cannot be pulled): they are checked statically only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from project_paths import ROOT
from rtsp_server import free_port

from models.package import load_default_package

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SERVING_SET = ROOT / "docker" / "serving.txt"
MEDIAPIPES_OWN = {"mediapipe", "jax", "jaxlib", "opencv-contrib-python"}
"""Project dependencies the images leave out or replace: serving reads MediaPipe's files and never imports it."""
DOCKERFILES = {  # Dockerfile: (base image, the device its CMD asks for, or None for the default)
    "Dockerfile": ("python:3.11-slim-bookworm", None),
    "docker/Dockerfile.gpu": ("tensorflow/tensorflow:2.15.0-gpu", "gpu"),
    "docker/Dockerfile.hpu": (
        "vault.habana.ai/gaudi-docker/1.14.0/ubuntu22.04/habanalabs/tensorflow-installer-tf-cpu-2.15.0:latest",
        "hpu",
    ),
}
COMPOSE = ROOT / "docker-compose.yml"
TOKEN = "image-smoke-test-token"


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip().lower()


def requirement_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pinned(name: str) -> str:
    """constraints.txt's version of `name` (the same on both Pythons)."""
    (line,) = [line for line in requirement_lines(ROOT / "constraints.txt") if requirement_name(line) == name]
    return line.split("==", 1)[1]


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def instruction(found: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :] for line in found if line.startswith(keyword + " ")]


def compose_app() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["app"])


def compose_volume_targets() -> tuple[str, ...]:
    return tuple(str(volume).split(":")[1] for volume in compose_app()["volumes"])


# -- static: what the images install and run -------------------------------------------------------------------


def test_serving_set_is_the_projects_dependencies_without_mediapipes_own() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    expected = [line for line in project if requirement_name(line) not in MEDIAPIPES_OWN]
    serving = requirement_lines(SERVING_SET)
    headless = [line for line in serving if requirement_name(line) == "opencv-python-headless"]
    assert sorted(line for line in serving if line not in headless) == sorted(expected)
    assert headless == [f"opencv-python-headless=={pinned('opencv-contrib-python')}"]
    assert "mediapipe==0.10.21" in project  # the version the images install with --no-deps


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_serving_dockerfile_installs_the_serving_set_and_runs_as_a_user(name: str) -> None:
    base, device = DOCKERFILES[name]
    found = instructions(ROOT / name)
    assert instruction(found, "FROM") == [base]
    assert "COPY constraints.txt docker/serving.txt ./" in found
    runs = " ".join(instruction(found, "RUN"))
    assert "pip install -c constraints.txt -r serving.txt" in runs
    assert 'pip install --no-deps -c constraints.txt "mediapipe==0.10.21" .' in runs
    assert "import stream.live.service" in runs  # the build fails if serving imports something left out
    assert instruction(found, "USER") == ["fakeweb"] and "useradd --system --uid 10001" in runs
    assert instruction(found, "EXPOSE") == ["8080"]
    (cmd,) = (json.loads(line) for line in instruction(found, "CMD"))
    assert cmd[:2] == ["fakeweb", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == "8080"
    assert (cmd[cmd.index("--device") + 1] if "--device" in cmd else None) == device
    for source in instruction(found, "COPY")[0].split()[:-1]:
        assert (ROOT / source).is_file(), f"{name} copies {source}, which does not exist"


def test_compose_app_matches_the_cpu_image() -> None:
    found = instructions(ROOT / "Dockerfile")
    app = compose_app()
    assert (ROOT / app["build"] / "Dockerfile").is_file()
    assert [port.split(":")[-1] for port in app["ports"]] == instruction(found, "EXPOSE")
    runs = " ".join(instruction(found, "RUN"))
    for target in compose_volume_targets():  # each volume's mount point exists and belongs to the user
        assert target in runs.split("mkdir -p", 1)[1] or target == instruction(found, "WORKDIR")[-1]
    assert "chown -R fakeweb /data" in runs and "ENV FAKEWEB_DATA_DIR=/data" in found
    assert app["healthcheck"]["test"][:2] == ["CMD", "python"]


# -- the built CPU image -------------------------------------------------------------------------------------

IMAGE = os.environ.get("FAKEWEB_IMAGE", "")
needs_image = pytest.mark.skipif(
    not IMAGE or shutil.which("podman") is None or os.geteuid() != 0,
    reason="no built image: set FAKEWEB_IMAGE after `bash .ci/build-image` (needs root and podman; .ci/run does both)",
)


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Any]:
    from image_rootfs import ImageRootfs

    with ImageRootfs(IMAGE, compose_volume_targets()) as mounted:
        yield mounted


def run_in(rootfs: Any, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(rootfs.command(*argv), capture_output=True, text=True, timeout=timeout)


@needs_image
def test_image_has_no_tensorflow_jax_or_gui_opencv(rootfs: Any) -> None:
    listed = run_in(rootfs, "python", "-m", "pip", "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"ai-edge-litert", "mediapipe", "opencv-python-headless", "fakeweb-live"} <= names
    assert not names & {
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "jaxlib",
        "matplotlib",
        "opencv-contrib-python",
    }


@needs_image
def test_image_user_writes_its_volumes_and_not_the_installed_code(rootfs: Any) -> None:
    assert rootfs.user not in ("", "root", "0")
    for volume in compose_volume_targets():
        assert run_in(rootfs, "touch", f"{volume}/probe").returncode == 0, volume
    site = run_in(rootfs, "python", "-c", "import stream, os; print(os.path.dirname(stream.__file__))")
    assert run_in(rootfs, "touch", f"{site.stdout.strip()}/probe").returncode != 0


@needs_image
def test_image_serves_the_shipped_model_and_passes_composes_healthcheck(rootfs: Any) -> None:
    port = str(free_port())
    command = [
        port if arg == "8080" else arg for arg in rootfs.config["Cmd"]
    ]  # the image's CMD, on a free port
    server = subprocess.Popen(
        rootfs.command(*command, env={"FAKEWEB_TOKEN": TOKEN}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        body = wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        assert body["ready"] is True and load_default_package().manifest.version in json.dumps(body["model"])
        healthcheck = [arg.replace("8080", port) for arg in compose_app()["healthcheck"]["test"][1:]]
        assert run_in(rootfs, *healthcheck, timeout=30).returncode == 0
        status = Path(f"/proc/{server.pid}/status").read_text()  # chroot and env exec: the same process
        assert re.search(r"^Uid:\s+10001\b", status, re.MULTILINE), "the service runs as the image's user"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode(errors="replace")
    assert server.returncode == 0, output[-2000:]


@needs_image
def test_image_annotates_a_clip_with_fakeweb_run(rootfs: Any) -> None:
    made = run_in(rootfs, "fakeweb", "bench", "make-clip", "/data/clip.mp4")
    assert made.returncode == 0, made.stderr
    done = run_in(rootfs, "fakeweb", "run", "/data/clip.mp4", "--output", "/data/annotated.mp4")
    assert done.returncode == 0, done.stderr
    assert "300 frames processed" in done.stdout and "faces in 300 frames" in done.stdout
    assert (rootfs.tree / "data" / "annotated.mp4").stat().st_size > 10_000


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the image's service exited: {server.communicate()[0].decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.load(response))
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")
