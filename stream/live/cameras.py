"""The configured RTSP cameras, persisted as JSON and written atomically so a crash never corrupts or loses it.

Cameras come from two places. The API (`Camera.new`) accepts only `rtsp://` and `rtsps://` URLs, checked up front
(`check_stream_url`). The camera file (`cameras.json`), which only operators can edit, may also hold `file://`
cameras (a recording played as a camera): through the API they would let any API user make the server read its
local files. Camera names are unique, ignoring case.

Several service processes (replicas, `stream.live.sharding`) may share one list: a change takes an exclusive
`flock` on `<list>.lock` next to it and re-reads the file first, so no replica's change overwrites another's, and
`reload` picks up what others (or an operator) changed. A list the process cannot write (a Kubernetes ConfigMap)
is read-only: changes through the API are refused with `CameraStorageError`.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from models.errors import FakewebError
from stream.runtime.files import write_atomically
from stream.sources.rtsp import redact_url

MAX_NAME_LENGTH = 80
API_SCHEMES = ("rtsp", "rtsps")
"""The URL schemes a camera added through the API may use."""
FILE_SCHEMES = (*API_SCHEMES, "file")
"""The URL schemes a camera of the camera file may use."""
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_IPV6_HINT = " (an IPv6 address goes in brackets: rtsp://[2001:db8::1]:554/path)"


class CameraConfigError(FakewebError):
    """A camera definition is invalid, or the camera file cannot be read."""


class CameraNameTaken(CameraConfigError):
    """Another camera already has this name (compared ignoring case)."""


class CameraStorageError(FakewebError):
    """The camera list cannot be saved (disk full, read-only, ...); the list is left as it was."""


@dataclass(frozen=True)
class Camera:
    """One configured camera. `url` may hold credentials: show `public_url`, never `url`.

    Constructed directly (from the camera file) only the scheme is checked, so a file saved by an older version
    still loads; `new` (the API) checks the whole URL.
    """

    camera_id: str
    name: str
    url: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", self.camera_id):
            raise CameraConfigError(f"invalid camera id {self.camera_id!r}")
        if not self.name.strip() or len(self.name) > MAX_NAME_LENGTH:
            raise CameraConfigError(f"camera name must be 1-{MAX_NAME_LENGTH} characters")
        parts = urlsplit(self.url)
        if parts.scheme not in FILE_SCHEMES or not (parts.netloc or parts.path):
            raise CameraConfigError(f"camera URL must be {', '.join(s + '://' for s in FILE_SCHEMES)}...")

    @property
    def public_url(self) -> str:
        return redact_url(self.url)

    @staticmethod
    def new(name: str, url: str) -> Camera:
        """A camera added through the API, with a new id; its URL must pass `check_stream_url`."""
        url = url.strip()
        check_stream_url(url)
        return Camera(f"cam-{uuid.uuid4().hex[:8]}", name.strip(), url)


def check_stream_url(url: str) -> None:
    """Refuse, naming the problem, a URL the API cannot take: not rtsp(s)://, spaces or control characters, no
    valid host name or IP address, a port outside 1-65535.

    The host is not looked up (cameras may be added before the network is up): a name that does not resolve
    shows later as the camera's `last_error`. Messages never quote the URL, which may hold credentials.
    """
    if any(char.isspace() or not char.isprintable() for char in url):
        raise CameraConfigError("camera URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced brackets, or a bracketed host that is not an IP address
        raise CameraConfigError("camera URL host is not a valid IPv6 address" + _IPV6_HINT) from exc
    if parts.scheme == "file":
        raise CameraConfigError(
            "file:// cameras can only be configured in the camera file, not through the API"
        )
    if parts.scheme not in API_SCHEMES:
        raise CameraConfigError("camera URL must start with rtsp:// or rtsps://")
    _check_host(parts)
    _check_port(parts)


def _check_host(parts: SplitResult) -> None:
    host = parts.hostname
    if not host:
        raise CameraConfigError("camera URL has no host: rtsp://[user:password@]host[:port]/path")
    if parts.netloc.rpartition("@")[2].startswith("["):
        _check_address(ipaddress.IPv6Address, host, "IPv6 address")
    elif re.fullmatch(r"[0-9.]+", host):
        _check_address(ipaddress.IPv4Address, host, "IPv4 address")
    elif len(host) > 253 or not all(map(_HOST_LABEL.fullmatch, host.removesuffix(".").split("."))):
        raise CameraConfigError("camera URL host is not a valid host name or IP address")


def _check_address(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], host: str, what: str) -> None:
    try:
        kind(host)
    except ValueError as exc:
        raise CameraConfigError(f"camera URL host is not a valid {what}") from exc


def _check_port(parts: SplitResult) -> None:
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = -1
    if port is not None and not 1 <= port <= 65535:
        hint = _IPV6_HINT if parts.netloc.rpartition("@")[2].count(":") > 1 else ""
        raise CameraConfigError("camera URL port must be a number from 1 to 65535" + hint)


class CameraList:
    """The cameras in a JSON file; every change is written to a temp file, fsynced, then renamed over it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cameras: dict[str, Camera] = self._read()
        self._signature = self._file_signature()
        self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        """Delete temp files a crash left between writing and renaming (the list itself is intact). Done under
        the file lock, which every write holds: no other replica is in the middle of one."""
        if not self.path.parent.is_dir():
            return
        try:
            lock = self._file_lock()
        except OSError:
            return  # a read-only list: nothing of ours to clean up
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in self.path.parent.glob(f".{self.path.name}.*"):
                stale.unlink(missing_ok=True)
        finally:
            os.close(lock)

    def _file_lock(self) -> int:
        """An open descriptor of `<list>.lock` (created if needed), for `flock`."""
        return os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)

    def _file_signature(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime in ns) of the file, None when it is absent: a rename or rewrite changes it."""
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _read(self) -> dict[str, Camera]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            cameras = [Camera(**entry) for entry in data["cameras"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CameraConfigError(f"{self.path}: cannot read camera list ({exc})") from exc
        return {camera.camera_id: camera for camera in cameras}

    def reload(self) -> bool:
        """Re-read the file if it changed since this process last read or wrote it; True when it did.
        A file that cannot be read now (an editor's half-written save) keeps the cameras known before."""
        with self._lock:
            signature = self._file_signature()
            if signature == self._signature:
                return False
            cameras = self._read()
            changed = cameras != self._cameras
            self._cameras, self._signature = cameras, signature
            return changed

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Camera]]:
        """Hold this process's lock and every process's file lock; yield the cameras as the file has them now."""
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                lock = self._file_lock()
            except OSError as exc:
                raise CameraStorageError(f"the camera list is read-only here: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self._cameras = self._read()
                except CameraConfigError as exc:  # unreadable now: a change cannot be saved either
                    raise CameraStorageError(f"cannot save the camera list: {exc}") from exc
                yield self._cameras
            finally:
                os.close(lock)  # releases the flock

    def _write(self, cameras: dict[str, Camera]) -> None:
        try:
            payload = json.dumps({"cameras": [asdict(c) for c in cameras.values()]}, indent=2) + "\n"
            write_atomically(self.path, payload.encode())
        except OSError as exc:
            raise CameraStorageError(f"cannot save the camera list: {exc.strerror or exc}") from exc
        self._cameras, self._signature = cameras, self._file_signature()

    def all(self) -> list[Camera]:
        with self._lock:
            return list(self._cameras.values())

    def get(self, camera_id: str) -> Camera | None:
        with self._lock:
            return self._cameras.get(camera_id)

    def add(self, camera: Camera) -> None:
        """Save a new camera; CameraNameTaken if another has its name, ignoring case."""
        with self._changing() as cameras:
            if camera.camera_id in cameras:
                raise CameraConfigError(f"camera {camera.camera_id} already exists")
            name = camera.name.casefold()
            if any(other.name.casefold() == name for other in cameras.values()):
                raise CameraNameTaken(f"a camera named {camera.name!r} already exists (names ignore case)")
            self._write({**cameras, camera.camera_id: camera})

    def remove(self, camera_id: str) -> bool:
        with self._changing() as cameras:
            if camera_id not in cameras:
                return False
            self._write({k: v for k, v in cameras.items() if k != camera_id})
            return True
