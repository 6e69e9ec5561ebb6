"""Files written whole or not at all: the camera list (`stream.live.cameras`) and the events
(`stream.outputs.event_store`) survive a crash, even SIGKILL, in the middle of a write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, payload: bytes) -> None:
    """`payload` as the whole of `path`, or `path` unchanged: a temp file `.<name>.*` beside it (mode 0600, as
    `mkstemp` makes it), fsynced, renamed over `path`, then the folder fsynced so that the rename lasts."""
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
