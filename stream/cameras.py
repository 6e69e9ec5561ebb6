"""The configured RTSP cameras, persisted as JSON and written atomically so a crash never corrupts or loses it."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from models.errors import FakewebError
from stream.rtsp import redact_url

MAX_NAME_LENGTH = 80
URL_SCHEMES = ("rtsp", "rtsps", "file")


class CameraConfigError(FakewebError):
    """A camera definition is invalid, or the camera file cannot be read."""


class CameraStorageError(FakewebError):
    """The camera list cannot be saved (disk full, read-only, ...); the list is left as it was."""


@dataclass(frozen=True)
class Camera:
    """One configured camera. `url` may hold credentials: show `public_url`, never `url`."""

    camera_id: str
    name: str
    url: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", self.camera_id):
            raise CameraConfigError(f"invalid camera id {self.camera_id!r}")
        if not self.name.strip() or len(self.name) > MAX_NAME_LENGTH:
            raise CameraConfigError(f"camera name must be 1-{MAX_NAME_LENGTH} characters")
        parts = urlsplit(self.url)
        if parts.scheme not in URL_SCHEMES or not (parts.netloc or parts.path):
            raise CameraConfigError(f"camera URL must be {', '.join(s + '://' for s in URL_SCHEMES)}...")

    @property
    def public_url(self) -> str:
        return redact_url(self.url)

    @staticmethod
    def new(name: str, url: str) -> Camera:
        return Camera(f"cam-{uuid.uuid4().hex[:8]}", name.strip(), url.strip())


class CameraList:
    """The cameras in a JSON file; every change is written to a temp file, fsynced, then renamed over it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cameras: dict[str, Camera] = self._read()
        self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        """Delete temp files a crash left between writing and renaming (the list itself is intact)."""
        if not self.path.parent.is_dir():
            return
        for stale in self.path.parent.glob(f".{self.path.name}.*"):
            stale.unlink(missing_ok=True)

    def _read(self) -> dict[str, Camera]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            cameras = [Camera(**entry) for entry in data["cameras"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CameraConfigError(f"{self.path}: cannot read camera list ({exc})") from exc
        return {camera.camera_id: camera for camera in cameras}

    def _write(self, cameras: dict[str, Camera]) -> None:
        try:
            self._replace_file(cameras)
        except OSError as exc:
            raise CameraStorageError(f"cannot save the camera list: {exc.strerror or exc}") from exc

    def _replace_file(self, cameras: dict[str, Camera]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"cameras": [asdict(c) for c in cameras.values()]}, indent=2) + "\n"
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_name, 0o600)
            os.replace(temp_name, self.path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def all(self) -> list[Camera]:
        with self._lock:
            return list(self._cameras.values())

    def get(self, camera_id: str) -> Camera | None:
        with self._lock:
            return self._cameras.get(camera_id)

    def add(self, camera: Camera) -> None:
        with self._lock:
            if camera.camera_id in self._cameras:
                raise CameraConfigError(f"camera {camera.camera_id} already exists")
            updated = {**self._cameras, camera.camera_id: camera}
            self._write(updated)
            self._cameras = updated

    def remove(self, camera_id: str) -> bool:
        with self._lock:
            if camera_id not in self._cameras:
                return False
            updated = {k: v for k, v in self._cameras.items() if k != camera_id}
            self._write(updated)
            self._cameras = updated
            return True
