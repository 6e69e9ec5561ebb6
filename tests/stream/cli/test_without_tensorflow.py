"""The CPU serving path as the slim image runs it: no TensorFlow, jax or matplotlib, mediapipe only as files.

Each command runs in a child Python through `tests/without_tensorflow.py`, which hides those packages; the image
itself is smoke-tested in tests/test_images.py where podman can build it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest
from project_paths import ROOT
from server_process import ServerProcess

WITHOUT_TENSORFLOW = ("tests/without_tensorflow.py",)

pytestmark = pytest.mark.slow


def fakeweb(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *WITHOUT_TENSORFLOW, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_hiding_script_makes_tensorflow_absent_and_mediapipe_files_only() -> None:
    probe = (
        "import sys; sys.argv = ['x']; import runpy; "
        "hide = runpy.run_path('tests/without_tensorflow.py')['hide_packages']; hide(); "
        "import importlib.util as u; print('tf', u.find_spec('tensorflow')); "
        "exec('try:\\n import mediapipe\\nexcept ImportError as e:\\n print(\"mediapipe refused\")'); "
        "from models.bundled import face_mesh_tessellation; print('edges', len(face_mesh_tessellation()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["tf None", "mediapipe refused", "edges 2556"]


def test_run_annotates_a_clip_without_tensorflow(tmp_path: Path) -> None:
    clip, annotated = tmp_path / "clip.mp4", tmp_path / "annotated.mp4"
    made = fakeweb("bench", "make-clip", str(clip))
    assert made.returncode == 0, made.stderr
    done = fakeweb("run", str(clip), "--output", str(annotated))
    assert done.returncode == 0, done.stderr
    assert "faces in" in done.stdout and "face-frames by verdict" in done.stdout
    with av.open(str(annotated)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 300


def test_savedmodel_backend_without_tensorflow_names_the_extra(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    assert fakeweb("bench", "make-clip", str(clip)).returncode == 0
    done = fakeweb("run", str(clip), "--output", str(tmp_path / "out.mp4"), "--backend", "savedmodel")
    assert done.returncode == 2
    assert "needs TensorFlow" in done.stderr and "fakeweb-live[tf]" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_is_ready_and_reports_metrics_without_tensorflow(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, entry=WITHOUT_TENSORFLOW).start()
    try:
        status, body = server.request("GET", "/readyz")
        assert status == 200, body
        status, metrics = server.request("GET", "/metrics")
        assert status == 200 and "fakeweb_" in metrics
    finally:
        server.stop()
