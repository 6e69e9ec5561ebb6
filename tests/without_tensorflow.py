"""Run the `fakeweb` CLI as the slim CPU image has it: `python tests/without_tensorflow.py ARGS...`.

The image (Dockerfile, docker/serving-cpu.txt) has no TensorFlow, jax, matplotlib or sentencepiece, and holds
mediapipe installed without its dependencies, so importing mediapipe fails there. Here the first four are made
absent (`sys.modules[name] = None`: `find_spec` says None, `import` raises) and mediapipe stays findable, with its
files, but refuses to import. A serving path that still imports any of them fails under this script.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ABSENT = ("tensorflow", "keras", "jax", "jaxlib", "matplotlib", "sentencepiece")


class _RefuseToLoad(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        raise ImportError(f"{module.__name__} is installed without its dependencies and cannot be imported")


class _FilesOnly(importlib.abc.MetaPathFinder):
    """Finds mediapipe's modules where they are installed but will not load them."""

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if name.split(".")[0] != "mediapipe":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = _RefuseToLoad()
        return spec


def hide_packages() -> None:
    for name in ABSENT:
        sys.modules[name] = None  # type: ignore[assignment]
    sys.meta_path.insert(0, _FilesOnly())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    hide_packages()
    from stream.cli import main

    sys.exit(main(sys.argv[1:]))
