"""A /proc tree in a folder, for the readers of `stream.runtime.procfs` (`Procfs(root)`): this process's threads with
their names and CPU times, and the machine's CPUs."""

from __future__ import annotations

import shutil
from pathlib import Path

from stream.runtime.procfs import TICK, Procfs


class FakeProc:
    """Writes the files `Procfs` reads below `root`; `procfs` reads them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procfs = Procfs(root)

    def task(self, tid: int) -> Path:
        return self.root / "self" / "task" / str(tid)

    def thread(self, tid: int, name: str, ran: float = 0.0, waited: float = 0.0) -> None:
        """Thread `tid` named `name`, `ran` seconds on a CPU (as user time) and `waited` seconds for one."""
        task = self.task(tid)
        task.mkdir(parents=True, exist_ok=True)
        (task / "comm").write_text(name + "\n")
        fields = ["S", *["0"] * 10, str(round(ran * TICK)), "0", *["0"] * 10]  # utime is field 14
        (task / "stat").write_text(f"{tid} ({name}) {' '.join(fields)}\n")
        (task / "schedstat").write_text(f"{round(ran * 1e9)} {round(waited * 1e9)} 1\n")

    def end(self, tid: int) -> None:
        """Thread `tid` ended: its folder is gone."""
        shutil.rmtree(self.task(tid))

    def cpus(self, busy: dict[int, float]) -> None:
        """The machine's CPUs, each busy for its seconds in `busy` (as user time) and idle 100 s."""
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
        lines += [
            f"cpu{cpu} {round(seconds * TICK)} 0 0 {100 * int(TICK)} 0 0 0 0 0 0"
            for cpu, seconds in busy.items()
        ]
        (self.root / "stat").write_text("\n".join(lines) + "\n")
