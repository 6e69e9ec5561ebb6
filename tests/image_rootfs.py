"""A built container image run without a container engine: its root file system, chrooted into as its user.

`podman run` cannot start containers here (crun: setrlimit RLIMIT_NOFILE not permitted), so, as
../shared/TESTING.md describes, the image is mounted with `podman image mount`, its volumes get fresh tmpfs
mounts owned by the image's user, `/proc` is mounted, and commands run through `chroot --userspec` with the
image's environment and working directory. Needs root and podman.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout.strip()


class ImageRootfs:
    """`with ImageRootfs(image, volumes) as rootfs:` then `rootfs.command(...)` gives an argv to run inside it."""

    def __init__(self, image: str, volumes: tuple[str, ...]) -> None:
        self.image = image
        self.volumes = volumes
        self.config: dict[str, Any] = json.loads(podman("image", "inspect", image))[0]["Config"]
        self.tree = Path()
        self._mounted: list[Path] = []

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "root")

    def ids(self) -> tuple[int, int]:
        """(uid, gid) of the image's user, from the image's own /etc/passwd."""
        for line in (self.tree / "etc" / "passwd").read_text().splitlines():
            name, _, uid, gid, *_ = line.split(":")
            if self.user in (name, uid):
                return int(uid), int(gid)
        raise LookupError(f"{self.image}: user {self.user!r} is not in /etc/passwd")

    def __enter__(self) -> ImageRootfs:
        self.tree = Path(podman("image", "mount", self.image))
        try:
            uid, gid = self.ids()
            for volume in self.volumes:
                target = self.tree / volume.lstrip("/")
                target.mkdir(parents=True, exist_ok=True)  # inside an already mounted volume
                self._mount("-t", "tmpfs", "-o", f"mode=0755,uid={uid},gid={gid}", "tmpfs", target)
            self._mount("-t", "proc", "proc", self.tree / "proc")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _mount(self, *args: str | Path) -> None:
        target = Path(args[-1])
        subprocess.run(["mount", *map(str, args)], check=True)
        self._mounted.append(target)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for target in reversed(self._mounted):
            subprocess.run(["umount", "--lazy", str(target)], check=False)
        self._mounted.clear()
        subprocess.run(["podman", "image", "unmount", self.image], check=False, capture_output=True)

    def command(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        """The argv that runs `argv` in the image as its user, in its working directory, with its environment."""
        uid, gid = self.ids()
        variables = [*self.config.get("Env", []), *(f"{key}={value}" for key, value in (env or {}).items())]
        home = next((v.split("=", 1)[1] for v in variables if v.startswith("HOME=")), "/data")
        return [
            "chroot", f"--userspec={uid}:{gid}", str(self.tree),
            "/usr/bin/env", "-i", "-C", self.config.get("WorkingDir") or "/", f"HOME={home}", *variables, *argv,
        ]  # fmt: skip
