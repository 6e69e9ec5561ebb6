"""Cameras shared by several service processes (replicas): each camera runs on exactly one of them.

The owner of a camera is chosen by rendezvous (highest random weight) hashing of its id over the replica
indices: every replica computes the same owner from the shared camera list alone, with no coordination. Going
from N to N + 1 replicas moves about 1/(N + 1) of the cameras (those the new replica wins), and removing the last
replica moves only its own cameras. A request for a camera another replica runs is forwarded to that replica's
`replica_url` (`stream.live.forward`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from models.errors import FakewebError


class Elsewhere(FakewebError):
    """The camera runs on another replica, reached at `location`: the request is forwarded there."""

    def __init__(self, camera_id: str, replica: int, location: str) -> None:
        super().__init__(f"camera {camera_id} runs on replica {replica}: {location}")
        self.replica = replica
        self.location = location


def owner(camera_id: str, replicas: int) -> int:
    """The replica index (0 .. replicas - 1) that runs `camera_id`: the one with the highest hash weight."""
    return max(range(replicas), key=lambda replica: _weight(camera_id, replica))


def _weight(camera_id: str, replica: int) -> bytes:
    return hashlib.sha256(f"{replica}\0{camera_id}".encode()).digest()


@dataclass(frozen=True)
class Shard:
    """This process's place among the replicas: index `replica` of `replicas`, peers reached at `url_template`
    with `{replica}` replaced by their index."""

    replica: int = 0
    replicas: int = 1
    url_template: str = ""

    def owner(self, camera_id: str) -> int:
        return owner(camera_id, self.replicas)

    def owns(self, camera_id: str) -> bool:
        return self.replicas == 1 or self.owner(camera_id) == self.replica

    def url_of(self, replica: int) -> str:
        """Replica `replica`'s base URL, without a trailing slash."""
        return self.url_template.replace("{replica}", str(replica)).rstrip("/")
