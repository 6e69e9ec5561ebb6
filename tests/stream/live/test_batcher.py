"""The cross-stream batcher: routing of results, batch limits, errors, stop, and swaps between batches.

Most tests use `MeanClassifier`, a deterministic Classifier whose probability is the crop mean / 255:
batching is pure logic (collect, concatenate, split back, fail, stop), and a known answer per crop lets
each test check that every caller got exactly its own probabilities. It runs the real `Classifier.predict`
(bucket padding and slicing); only `_run_bucket` is arithmetic. One test batches a real TFLiteClassifier.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from polling import wait_for

from models.classifier import Classifier, TFLiteClassifier
from models.devices import Device
from models.manifest import Manifest
from models.package import ModelPackage
from models.preprocess import CropSpec
from stream.live.batcher import BatcherStoppedError, ClassificationError, ClassifierBatcher
from stream.live.reload import ModelHolder

SIZE = 16


class MeanClassifier(Classifier):
    """Probability = offset + scale * crop mean / 255; records each predict call; can be held or made to fail.

    A crop whose mean is `poison` makes its whole batch fail. While `gate` is clear, predict waits for it.
    """

    backend = "fake"
    device: Device = "cpu"

    def __init__(
        self, version: str = "fake", offset: float = 0.0, scale: float = 1.0, delay: float = 0.0
    ) -> None:
        manifest = Manifest(
            version=version,
            created_at="2026-01-01T00:00:00+00:00",
            architecture="mean",
            crop=CropSpec(size=SIZE),
            threshold=0.5,
            files={"model.tflite": "0" * 64},
        )
        super().__init__(ModelPackage(Path("/nonexistent") / version, manifest))
        self.offset = offset
        self.scale = scale
        self.delay = delay
        self.poison: float | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[list[float]] = []

    def predict(self, crops: np.ndarray) -> np.ndarray:
        means = crops.reshape(len(crops), -1).mean(axis=1)
        self.calls.append([float(m) for m in means])
        self.entered.set()
        self.gate.wait()
        time.sleep(self.delay)
        if self.poison is not None and self.poison in means:
            raise RuntimeError("poisoned crop")
        return super().predict(crops)

    def _run_bucket(self, batch: np.ndarray) -> np.ndarray:
        return self.offset + self.scale * batch.reshape(len(batch), -1).mean(axis=1) / 255.0


def crops_of(value: int, count: int = 1, size: int = SIZE) -> np.ndarray:
    return np.full((count, size, size, 3), value, dtype=np.uint8)


wait_until = partial(wait_for, timeout=5.0, what="the batcher in the awaited state", period=0.002)


class Caller(threading.Thread):
    """A stream worker: one classify call in a thread, keeping its result or error."""

    def __init__(self, batcher: ClassifierBatcher, crops: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.batcher = batcher
        self.crops = crops
        self.result: np.ndarray | None = None
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.batcher.classify(self.crops)
        except Exception as exc:  # noqa: BLE001 - the test asserts on whatever it raised
            self.error = exc


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., ClassifierBatcher]]:
    batchers: list[ClassifierBatcher] = []

    def make(classifier: Classifier, **options: Any) -> ClassifierBatcher:
        batcher = ClassifierBatcher(ModelHolder(classifier), **options)
        batcher.start()
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        batcher.stop(timeout=5)


def hold_batcher(classifier: MeanClassifier, batcher: ClassifierBatcher) -> Caller:
    """Occupy the batcher thread with a full batch of ones held at the classifier's gate."""
    classifier.gate.clear()
    classifier.entered.clear()
    holder = Caller(batcher, crops_of(1, count=batcher.max_batch))
    assert classifier.entered.wait(5)
    return holder


def queued(batcher: ClassifierBatcher) -> int:
    return batcher._queue.qsize()


def test_concurrent_callers_get_their_own_probabilities_in_shared_batches(
    make_batcher: Callable[..., ClassifierBatcher],
) -> None:
    classifier = MeanClassifier(delay=0.003)
    sizes: list[int] = []
    batcher = make_batcher(
        classifier, max_batch=16, max_wait=0.01, on_batch=lambda size, seconds: sizes.append(size)
    )
    threads, per_thread = 8, 15
    start = threading.Barrier(threads)
    results: dict[int, np.ndarray] = {}

    def stream(index: int) -> None:
        start.wait()
        for i in range(per_thread):
            value = 1 + index * per_thread + i  # unique per request
            results[value] = batcher.classify(crops_of(value, count=1 + value % 3))

    workers = [threading.Thread(target=stream, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert len(results) == threads * per_thread
    for value, probabilities in results.items():
        np.testing.assert_allclose(probabilities, np.full(1 + value % 3, value / 255.0), rtol=1e-6)
    total = sum(1 + v % 3 for v in results)
    stats = batcher.stats
    assert (stats.crops, sum(sizes), len(sizes), stats.failed_batches) == (total, total, stats.batches, 0)
    assert stats.max_batch_seen > 1 and stats.batches < len(results)
    assert max(len(call) for call in classifier.calls) <= 16


def test_full_batches_split_and_an_oversized_request_runs_alone(
    make_batcher: Callable[..., ClassifierBatcher],
) -> None:
    classifier = MeanClassifier()
    batcher = make_batcher(classifier, max_batch=4, max_wait=0.5)
    first = hold_batcher(classifier, batcher)
    callers = [Caller(batcher, crops_of(v, count=2)) for v in (10, 20, 30)]
    wait_until(lambda: queued(batcher) == 3)
    callers.append(Caller(batcher, crops_of(40, count=9)))
    wait_until(lambda: queued(batcher) == 4)
    started = time.monotonic()
    classifier.gate.set()
    for caller in [first, *callers]:
        caller.join(5)

    assert time.monotonic() - started < 0.4  # full batches do not wait for max_wait
    assert [len(call) for call in classifier.calls] == [4, 4, 2, 9]
    for caller in callers:
        assert caller.result is not None
        np.testing.assert_allclose(caller.result, caller.crops.mean(axis=(1, 2, 3)) / 255.0, rtol=1e-6)


def test_a_single_caller_waits_about_max_wait(make_batcher: Callable[..., ClassifierBatcher]) -> None:
    batcher = make_batcher(MeanClassifier(), max_batch=8, max_wait=0.03)
    elapsed = []
    for _ in range(5):
        started = time.monotonic()
        batcher.classify(crops_of(7))
        elapsed.append(time.monotonic() - started)
    assert min(elapsed) >= 0.025
    assert statistics.median(elapsed) < 0.03 + 0.05

    eager = make_batcher(MeanClassifier(), max_batch=1, max_wait=2.0)
    started = time.monotonic()
    eager.classify(crops_of(7))
    assert time.monotonic() - started < 0.5  # a full batch runs at once


def test_a_failing_batch_reaches_every_caller_and_the_batcher_survives(
    make_batcher: Callable[..., ClassifierBatcher],
) -> None:
    classifier = MeanClassifier()
    batcher = make_batcher(classifier, max_batch=16, max_wait=0.1)
    first = hold_batcher(classifier, batcher)
    classifier.poison = 13.0
    callers = [Caller(batcher, crops_of(v)) for v in (12, 13, 14)]
    wait_until(lambda: queued(batcher) == 3)
    classifier.gate.set()
    for caller in [first, *callers]:
        caller.join(5)

    assert first.result is not None
    for caller in callers:
        assert isinstance(caller.error, ClassificationError)
        assert isinstance(caller.error.__cause__, RuntimeError)
        assert "poisoned crop" in str(caller.error)
    assert batcher.stats.failed_batches == 1
    np.testing.assert_allclose(batcher.classify(crops_of(51, count=2)), [0.2, 0.2], rtol=1e-6)


def test_a_request_cut_for_another_model_fails_alone(make_batcher: Callable[..., ClassifierBatcher]) -> None:
    classifier = MeanClassifier(version="m16")
    batcher = make_batcher(classifier, max_batch=16, max_wait=0.1)
    first = hold_batcher(classifier, batcher)
    wrong = Caller(batcher, crops_of(9, size=SIZE + 8))
    right = Caller(batcher, crops_of(51))
    wait_until(lambda: queued(batcher) == 2)
    classifier.gate.set()
    for caller in (first, wrong, right):
        caller.join(5)

    assert isinstance(wrong.error, ClassificationError)
    assert "model m16 takes crops of shape (N, 16, 16, 3), got (1, 24, 24, 3)" in str(wrong.error)
    assert right.result is not None and right.result.tolist() == pytest.approx([0.2])
    assert classifier.calls[-1] == [51.0]


def test_stop_fails_waiting_callers_and_joins(make_batcher: Callable[..., ClassifierBatcher]) -> None:
    classifier = MeanClassifier()
    batcher = make_batcher(classifier, max_batch=1, max_wait=0.0)
    assert batcher.running
    first = hold_batcher(classifier, batcher)
    waiting = [Caller(batcher, crops_of(v)) for v in (20, 30)]
    wait_until(lambda: queued(batcher) == 2)
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()

    def refused() -> bool:
        try:
            batcher.classify(crops_of(1))
        except BatcherStoppedError:
            return True
        return False

    wait_until(refused)
    classifier.gate.set()
    stopper.join(5)
    for caller in [first, *waiting]:
        caller.join(5)

    assert not stopper.is_alive() and not batcher.running
    assert "classifier-batcher" not in [thread.name for thread in threading.enumerate()]  # joined
    assert first.result is not None  # the batch in flight finished
    for caller in waiting:
        assert isinstance(caller.error, BatcherStoppedError)
    assert len(classifier.calls) == 1
    with pytest.raises(BatcherStoppedError, match="not running"):
        batcher.classify(crops_of(1))
    batcher.stop()  # idempotent
    with pytest.raises(RuntimeError, match="only once"):
        batcher.start()


def test_a_batcher_that_never_started_refuses_requests() -> None:
    batcher = ClassifierBatcher(ModelHolder(MeanClassifier()))
    assert not batcher.running
    with pytest.raises(BatcherStoppedError, match="not running"):
        batcher.classify(crops_of(1))
    assert batcher.classify(crops_of(1, count=0)).shape == (0,)


def test_a_swap_lands_between_batches(make_batcher: Callable[..., ClassifierBatcher]) -> None:
    old, new = MeanClassifier("old"), MeanClassifier("new", offset=0.5, scale=0.5)
    batcher = make_batcher(old, max_batch=16, max_wait=0.0)
    first = hold_batcher(old, batcher)
    batcher.holder.swap(new)
    second = Caller(batcher, crops_of(51))
    wait_until(lambda: queued(batcher) == 1)
    old.gate.set()
    first.join(5)
    second.join(5)

    assert first.result is not None and first.result.tolist() == pytest.approx([1 / 255] * 16)
    assert second.result is not None and second.result.tolist() == pytest.approx([0.6])
    assert (old.calls, new.calls) == ([[1.0] * 16], [[51.0]])


def test_concurrent_swaps_never_mix_two_models_in_a_batch(
    make_batcher: Callable[..., ClassifierBatcher],
) -> None:
    model_a = MeanClassifier("a", offset=0.0, scale=0.5, delay=0.001)
    model_b = MeanClassifier("b", offset=0.5, scale=0.5, delay=0.001)
    batcher = make_batcher(model_a, max_batch=16, max_wait=0.005)
    threads, per_thread = 6, 20
    results: dict[int, np.ndarray] = {}
    done = threading.Event()

    def stream(index: int) -> None:
        for i in range(per_thread):
            value = 1 + index * per_thread + i  # unique per request, < 255
            results[value] = batcher.classify(crops_of(value, count=1 + value % 2))

    def swapper() -> None:
        models = [model_b, model_a]
        while not done.is_set():
            batcher.holder.swap(models[0])
            models.reverse()
            time.sleep(0.002)

    swapping = threading.Thread(target=swapper)
    swapping.start()
    workers = [threading.Thread(target=stream, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    done.set()
    swapping.join(5)

    served_by: dict[int, str] = {}
    for model in (model_a, model_b):
        for call in model.calls:
            for value in call:
                served_by[int(value)] = model.version
    assert len(results) == threads * per_thread
    for value, probabilities in results.items():
        offset = 0.5 if served_by[value] == "b" else 0.0
        np.testing.assert_allclose(probabilities, offset + 0.5 * value / 255.0, rtol=1e-6)
    assert model_a.calls and model_b.calls
    assert any(len(set(call)) > 1 for call in model_a.calls + model_b.calls)


def test_batches_on_a_real_tflite_classifier(
    make_batcher: Callable[..., ClassifierBatcher], tiny_package: Path
) -> None:
    classifier = TFLiteClassifier(ModelPackage.load(tiny_package))
    batcher = make_batcher(classifier, max_batch=8, max_wait=0.01)
    rng = np.random.default_rng(2)
    requests = [rng.integers(0, 256, (1 + i % 3, 32, 32, 3), dtype=np.uint8) for i in range(24)]
    expected = [classifier.predict(crops) for crops in requests]
    callers = [Caller(batcher, crops) for crops in requests]
    for caller in callers:
        caller.join(10)

    for caller, want in zip(callers, expected, strict=True):
        assert caller.error is None
        np.testing.assert_allclose(caller.result, want, atol=1e-5)  # type: ignore[arg-type]
    assert batcher.stats.crops == sum(len(r) for r in requests)
    assert 1 < batcher.stats.max_batch_seen <= 8
