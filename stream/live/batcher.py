"""The cross-stream batcher: one thread owns the classifier, stream worker threads hand it crops and wait.

Requests from every stream are collected until `max_batch` crops are waiting or `max_wait` seconds have passed
since the oldest one was submitted, then run as one `predict` call whose result is split back to the callers.
The classifier is read from the ModelHolder at the start of each batch, so a hot swap lands between batches.

Callers block until their batch has run, so at most one request per stream waits: the queue needs no bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from stream.live.reload import ModelHolder
from stream.runtime.affinity import RolePinning

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_S = 0.004


class ClassificationError(RuntimeError):
    """The crops of a request were not classified; `__cause__` holds the error raised by the model, if any."""


class BatcherStoppedError(ClassificationError):
    """The batcher is not running (not started, or stopped before the request ran)."""


@dataclass(frozen=True)
class BatcherStats:
    """Counts since start: batches run, crops classified, the largest batch, batches whose predict failed."""

    batches: int = 0
    crops: int = 0
    max_batch_seen: int = 0
    failed_batches: int = 0


class _Request:
    """One caller's crops and, once its batch has run, its probabilities or the error."""

    __slots__ = ("crops", "submitted", "done", "result", "error")

    def __init__(self, crops: np.ndarray) -> None:
        self.crops = crops
        self.submitted = time.monotonic()
        self.done = threading.Event()
        self.result: np.ndarray | None = None
        self.error: ClassificationError | None = None

    def finish(self, result: np.ndarray) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: ClassificationError) -> None:
        self.error = error
        self.done.set()


class ClassifierBatcher:
    """Batches `classify` calls from many threads into single `predict` calls on the holder's classifier.

    `on_batch(size, seconds)` is called from the batcher thread after each successful predict (for metrics).
    The batcher thread runs in the "model" role of `pinning` (unpinned without one).
    """

    def __init__(
        self,
        holder: ModelHolder,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT_S,
        on_batch: Callable[[int, float], None] | None = None,
        pinning: RolePinning | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self.holder = holder
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch
        self._pinning = pinning or RolePinning()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._accepting = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = BatcherStats()

    @property
    def stats(self) -> BatcherStats:
        return self._stats

    @property
    def running(self) -> bool:
        """True from `start()` until `stop()`, while the batcher thread is alive."""
        return self._accepting and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the batcher thread; a batcher runs once (it cannot be restarted after `stop`)."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise RuntimeError("a ClassifierBatcher can be started only once")
            self._thread = threading.Thread(
                target=self._pinning.runs_as("model", self._run), name="classifier-batcher", daemon=True
            )
            self._accepting = True
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, let the batch in flight finish, fail the waiting ones, join the thread."""
        with self._lock:
            self._closed = True
            if self._accepting:
                self._accepting = False
                self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) crops -> (N,) probabilities; blocks until the batch holding them has run.

        Raises ClassificationError when the model failed on the batch, BatcherStoppedError when not running.
        """
        if len(crops) == 0:
            return np.zeros((0,), dtype=np.float32)
        request = _Request(crops)
        with self._lock:
            if not self._accepting:
                raise BatcherStoppedError("the classifier batcher is not running")
            self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _run(self) -> None:
        carry: _Request | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None or not self._accepting:
                pending = [first]
                break
            batch, carry = self._collect(first)
            if not self._accepting:
                pending = [*batch, carry]
                break
            self._run_batch(batch)
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for request in pending:
            if request is not None:
                request.fail(BatcherStoppedError("the classifier batcher stopped before this request ran"))

    def _collect(self, first: _Request) -> tuple[list[_Request], _Request | None]:
        """`first` plus the requests that arrive before its deadline and fit in max_batch; and the one that
        did not fit (it starts the next batch)."""
        batch = [first]
        count = len(first.crops)
        deadline = first.submitted + self.max_wait
        while count < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # stop() was called; _run sees _accepting is False
                break
            if count + len(item.crops) > self.max_batch:
                return batch, item
            batch.append(item)
            count += len(item.crops)
        return batch, None

    def _run_batch(self, batch: list[_Request]) -> None:
        classifier = self.holder.current
        shape = (classifier.input_size, classifier.input_size, 3)
        valid: list[_Request] = []
        for request in batch:  # a request cut for another model must not fail the others
            if request.crops.ndim == 4 and request.crops.shape[1:] == shape:
                valid.append(request)
            else:
                request.fail(
                    ClassificationError(
                        f"model {classifier.version} takes crops of shape (N, {shape[0]}, {shape[1]}, 3), "
                        f"got {request.crops.shape}"
                    )
                )
        if not valid:
            return
        crops = valid[0].crops if len(valid) == 1 else np.concatenate([r.crops for r in valid])
        started = time.perf_counter()
        try:
            probabilities = classifier.predict(crops)
            if probabilities.shape != (len(crops),):
                raise ValueError(f"predict returned shape {probabilities.shape} for {len(crops)} crops")
        except Exception as exc:  # noqa: BLE001 - a broken model fails its batch, never the batcher
            self._stats = replace(self._stats, failed_batches=self._stats.failed_batches + 1)
            for request in valid:
                error = ClassificationError(f"model {classifier.version} failed on a batch: {exc!r}")
                error.__cause__ = exc
                request.fail(error)
            return
        seconds = time.perf_counter() - started
        stats = self._stats  # replaced whole, so readers in other threads see a consistent snapshot
        self._stats = replace(
            stats,
            batches=stats.batches + 1,
            crops=stats.crops + len(crops),
            max_batch_seen=max(stats.max_batch_seen, len(crops)),
        )
        offset = 0
        for request in valid:
            request.finish(probabilities[offset : offset + len(request.crops)])
            offset += len(request.crops)
        if self.on_batch is not None:
            try:
                self.on_batch(len(crops), seconds)
            except Exception:
                logger.exception("on_batch hook failed")
