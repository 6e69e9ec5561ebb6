"""Running code in `.venv-hpu` (Python 3.10, tensorflow-cpu 2.15.0 and the real habana-tensorflow, no Gaudi driver),
which `.ci/run` builds from pyenv's 3.10."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
HPU_PYTHON = ROOT / ".venv-hpu" / "bin" / "python"

needs_hpu_venv = pytest.mark.skipif(
    not HPU_PYTHON.exists(), reason=".venv-hpu (Python 3.10 + habana-tensorflow) not built"
)


def run_probe(code: str) -> dict[str, Any]:
    """Run `code` in `.venv-hpu` with the repository importable; return what it printed as `RESULT <json>`."""
    completed = subprocess.run(
        [str(HPU_PYTHON), "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result
