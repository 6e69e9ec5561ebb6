"""Model store backend on a local or mounted folder: each write goes to a temporary file, then os.replace."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from models.errors import ModelStoreError

FILE_MODE = 0o644
CHUNK = 1 << 20


class LocalBackend:
    """Objects are files under `root`; a missing root is an empty store, created by the first write."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def read(self, key: str) -> bytes | None:
        with self._os_errors(f"read {key}"):
            try:
                return (self.root / key).read_bytes()
            except FileNotFoundError:
                return None

    def write(self, key: str, data: bytes) -> None:
        with self._os_errors(f"write {key}"), self._replace(key) as handle:
            handle.write(data)

    def upload(self, key: str, source: Path, sha256: str) -> None:
        with self._os_errors(f"write {key}"), self._replace(key) as handle, source.open("rb") as src:
            digest = hashlib.sha256()
            for chunk in iter(lambda: src.read(CHUNK), b""):
                digest.update(chunk)
                handle.write(chunk)
            if digest.hexdigest() != sha256:
                raise ModelStoreError(f"{source} changed while publishing: its checksum no longer matches")

    def download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self.root / key, dest)
        except FileNotFoundError as exc:
            raise ModelStoreError(f"{self.url}: missing object {key}") from exc

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(path.relative_to(self.root).as_posix() for path in base.rglob("*") if path.is_file())

    @contextmanager
    def _replace(self, key: str) -> Iterator[BinaryIO]:
        """A temporary file beside `key`, flushed to disk and renamed over `key` when the block succeeds."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, FILE_MODE)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _os_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise ModelStoreError(f"{self.url}: cannot {action}: {exc.strerror or exc}") from exc
