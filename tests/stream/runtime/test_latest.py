"""The one-item slot between stages: the newest item wins; replaced items are counted, and those the consumer was
held back from taking (after `wait`, before `get`) are told apart."""

from __future__ import annotations

import threading

import pytest

from stream.runtime.latest import LatestSlot, SlotClosed


def test_a_put_replaces_the_untaken_item_and_counts_it() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for item in range(3):
        assert slot.put(item)
    assert slot.get(timeout=0) == 2
    assert (slot.dropped, slot.dropped_held, slot.delivered) == (2, 0, 1)
    assert slot.get(timeout=0) is None


def test_items_replaced_between_wait_and_get_count_as_held() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(0)
    slot.put(1)  # replaced while the consumer was busy elsewhere
    assert slot.wait(timeout=0)
    slot.put(2)  # replaced while the consumer was held back: it had seen an item
    slot.put(3)
    assert slot.get(timeout=0) == 3
    slot.put(4)
    slot.put(5)  # busy again: not held
    assert (slot.dropped, slot.dropped_held) == (4, 2)


def test_a_wait_that_sees_nothing_holds_nothing() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert not slot.wait(timeout=0)
    slot.put(0)
    slot.put(1)
    assert (slot.dropped, slot.dropped_held) == (1, 0)


def test_close_wakes_a_waiting_consumer_and_refuses_later_puts() -> None:
    slot: LatestSlot[int] = LatestSlot()
    woken = threading.Event()

    def consume() -> None:
        with pytest.raises(SlotClosed):
            slot.wait(timeout=5)
        woken.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    slot.close()
    consumer.join(5)
    assert woken.is_set()
    assert not slot.put(0)
