"""A one-item mailbox between pipeline stages: the newest item wins and every replaced item is counted as dropped.

Real-time video must never queue: a consumer slower than its producer should see the latest frame, not a backlog.
Replaced items that the consumer was held back from taking (`wait` had seen an item and no `get` had followed yet:
the worker waiting for a processing permit) are counted in `dropped_held` too; the others were replaced while the
consumer was busy.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotClosed(Exception):
    """The slot was closed while waiting for an item."""


class LatestSlot(Generic[T]):
    """Thread-safe single-item slot. `put` never blocks; `get` waits for an item newer than the last one taken."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._condition = threading.Condition()
        self._held = False
        self.dropped = 0
        self.dropped_held = 0
        self.delivered = 0

    def put(self, item: T) -> bool:
        """Store `item`, replacing (and counting) an item nobody took. Returns False when the slot is closed."""
        with self._condition:
            if self._closed:
                return False
            if self._has_item:
                self.dropped += 1
                if self._held:
                    self.dropped_held += 1
            self._item = item
            self._has_item = True
            self._condition.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to `timeout` seconds; None on timeout. Raises SlotClosed once closed."""
        with self._condition:
            self._held = False
            if not self._condition.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if self._closed:
                raise SlotClosed()
            item = self._item
            self._item = None
            self._has_item = False
            self.delivered += 1
            return item

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds until an item is waiting, without taking it; False on timeout.
        After True, items replaced before the next `get` count as `dropped_held`. Raises SlotClosed once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._has_item or self._closed, timeout)
            if self._closed:
                raise SlotClosed()
            self._held = self._has_item
            return self._has_item

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def depth(self) -> int:
        """1 when an item is waiting, else 0 (the queue-depth gauge of this stage)."""
        return int(self._has_item)

    def close(self) -> None:
        """Wake every waiter with SlotClosed; later puts are refused."""
        with self._condition:
            self._closed = True
            self._item = None
            self._has_item = False
            self._condition.notify_all()
