"""The model in use and its hot reload from the model store.

`ModelHolder` holds the serving classifier; the batcher reads it at the start of each batch. `ModelWatcher`
follows an alias of a model store: when the alias moves it fetches the new version (checksums verified by the
store), verifies it (input size, a smoke inference on a reference face) and swaps it in. A bad version is
rejected and the old model keeps serving; while the store is unreachable the watcher backs off, still serving.

A model reference (`--model`) is either a package folder, loaded once, or `store://<store url>@<alias>`, which
follows `<alias>` of a store (`<store url>` is anything `models.store.open_store` accepts):

    models/default                                   a local package folder
    store:///srv/models@production                   alias `production` of a store in a local folder
    store://file:///srv/models@latest                the same with a file URL
    store://s3://bucket/team/models@production       alias `production` of an S3 store
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.classifier import Classifier, load_classifier
from models.devices import Device
from models.errors import CorruptVersionError, ModelPackageError, ModelStoreError
from models.geometry import Box
from models.package import ModelPackage
from models.preprocess import CropSpec, crop_face
from models.reference import reference_face
from models.store import AliasRecord, ModelStore, validate_alias
from models.tflite_runtime import tflite_interpreter

logger = logging.getLogger(__name__)

STORE_SCHEME = "store://"
DEFAULT_POLL_INTERVAL_S = 30.0
DEFAULT_MAX_INTERVAL_S = 300.0


@dataclass(frozen=True)
class StoreRef:
    """An alias of a model store to follow."""

    store_url: str
    alias: str

    def __str__(self) -> str:
        return f"{STORE_SCHEME}{self.store_url}@{self.alias}"


def parse_model_ref(ref: str) -> Path | StoreRef:
    """A package folder, or the store and alias of `store://<store url>@<alias>` (see the module doc)."""
    if not ref.startswith(STORE_SCHEME):
        if not ref:
            raise ModelPackageError(
                "empty model reference: give a package folder or store://<store url>@<alias>"
            )
        return Path(ref).expanduser()
    store_url, at, alias = ref[len(STORE_SCHEME) :].rpartition("@")
    if not at or not store_url:
        raise ModelStoreError(
            f"invalid model reference {ref!r}: expected store://<store url>@<alias>, "
            "e.g. store:///srv/models@production or store://s3://bucket/prefix@production"
        )
    return StoreRef(store_url, validate_alias(alias))


class ModelHolder:
    """The classifier in use. Readers take `current` once per unit of work; `swap` replaces it atomically."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier
        self._lock = threading.Lock()

    @property
    def current(self) -> Classifier:
        with self._lock:
            return self._classifier

    def swap(self, new: Classifier) -> Classifier:
        """Serve `new` from now on; returns the classifier it replaces."""
        with self._lock:
            old, self._classifier = self._classifier, new
        return old

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def backend(self) -> str:
        return self.current.backend

    @property
    def device(self) -> Device:
        return self.current.device

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the model in use (one consistent snapshot), for /readyz and the page."""
        classifier = self.current
        manifest = classifier.package.manifest
        return {
            "version": classifier.version,
            "backend": classifier.backend,
            "device": classifier.device,
            "architecture": manifest.architecture,
            "input_size": manifest.crop.size,
            "threshold": manifest.threshold,
            "calibration": manifest.calibration,
            "created_at": manifest.created_at,
        }


def verify_candidate(
    package: ModelPackage, device: str = "auto", backend: str = "auto", threads: int = 1
) -> Classifier:
    """Load a package's classifier and check it can serve; ModelPackageError with the reason otherwise.

    Checks that the model takes the input size its manifest declares and that a smoke inference on the
    reference face gives a finite probability in [0, 1].
    """
    name = f"model {package.manifest.version}"
    face = reference_face()
    size = package.manifest.crop.size
    try:
        classifier = load_classifier(package, device=device, backend=backend, num_threads=threads)
        model_shape = _model_input_shape(package, classifier.backend)
        if len(model_shape) != 4 or any(dim not in (-1, size) for dim in model_shape[1:3]):
            raise ModelPackageError(
                f"{name}: the manifest declares input size {size} but the {classifier.backend} model takes "
                f"input of shape {model_shape}"
            )
        crop = crop_face(face, Box(0, 0, face.shape[1], face.shape[0]), CropSpec(size=size, margin=0.0))
        probabilities = classifier.predict(crop[np.newaxis])
    except ModelPackageError:
        raise
    except Exception as exc:
        raise ModelPackageError(f"{name}: cannot load or run the model ({exc})") from exc
    if probabilities.shape != (1,) or not (np.isfinite(probabilities[0]) and 0.0 <= probabilities[0] <= 1.0):
        raise ModelPackageError(
            f"{name}: smoke inference on the reference face gave {probabilities}, not a probability in [0, 1]"
        )
    return classifier


def _model_input_shape(package: ModelPackage, backend: str) -> tuple[int, ...]:
    """The input shape stored in the model file the backend runs (-1 for a free dimension)."""
    if backend == "tflite":
        interpreter = tflite_interpreter(model_path=str(package.tflite_path))
        return tuple(int(dim) for dim in interpreter.get_input_details()[0]["shape_signature"])
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((package.saved_model_path / "saved_model.pb").read_bytes())
    signature = saved.meta_graphs[0].signature_def["serving_default"]
    tensor = next(iter(signature.inputs.values()))
    return tuple(int(dim.size) for dim in tensor.tensor_shape.dim)


class PollOutcome(enum.Enum):
    UNCHANGED = "unchanged"
    SWAPPED = "swapped"
    REJECTED = "rejected"
    STORE_ERROR = "store_error"


@dataclass(frozen=True)
class WatcherStats:
    """Counts since start: polls, models swapped in, versions rejected, polls the store failed."""

    polls: int = 0
    swaps: int = 0
    rejections: int = 0
    store_failures: int = 0


class ModelWatcher:
    """Follows an alias of a model store and hot-swaps verified new versions into a ModelHolder.

    `load_initial()` creates the holder; `start()` then polls the alias every `interval` seconds in a thread
    (doubling the delay up to `max_interval` while the store fails). A version whose crop spec differs from
    the serving model's is rejected too: streams crop for the serving model, so changing it needs a restart.
    """

    def __init__(
        self,
        store: ModelStore,
        alias: str,
        cache_dir: Path,
        device: str = "auto",
        backend: str = "auto",
        threads: int = 1,
        interval: float = DEFAULT_POLL_INTERVAL_S,
        max_interval: float = DEFAULT_MAX_INTERVAL_S,
        on_swap: Callable[[str], None] | None = None,
        on_reject: Callable[[str, str], None] | None = None,
    ) -> None:
        if not 0 < interval <= max_interval:
            raise ValueError(f"need 0 < interval <= max_interval, got {interval} and {max_interval}")
        self.store = store
        self.alias = validate_alias(alias)
        self.cache_dir = cache_dir
        self.device = device
        self.backend = backend
        self.threads = threads
        self.interval = interval
        self.max_interval = max_interval
        self.on_swap = on_swap
        self.on_reject = on_reject
        self._holder: ModelHolder | None = None
        self._serving: tuple[str, str] | None = None
        self._rejected: tuple[str, str] | None = None
        self._failures = 0
        self._stats = WatcherStats()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> str:
        return f"{self.store.url}@{self.alias}"

    @property
    def holder(self) -> ModelHolder:
        if self._holder is None:
            raise RuntimeError("ModelWatcher.load_initial() has not been called")
        return self._holder

    @property
    def stats(self) -> WatcherStats:
        return self._stats

    def load_initial(self) -> ModelHolder:
        """Fetch and verify the alias's version and return a holder serving it.

        Raises ModelStoreError (store unreachable, alias or version missing or corrupt) or ModelPackageError
        (the version fails verification): the service cannot start without a model.
        """
        record = self.store.read_alias(self.alias)
        package = self.store.fetch(record.version, self.cache_dir)
        classifier = verify_candidate(package, self.device, self.backend, self.threads)
        self._serving = _key(record)
        self._holder = ModelHolder(classifier)
        logger.info(
            "serving model %s from %s (%s on %s)",
            record.version,
            self.source,
            classifier.backend,
            classifier.device,
        )
        return self._holder

    def poll(self) -> PollOutcome:
        """Check the alias once and swap in its version if it moved and verifies."""
        with self._poll_lock:
            holder = self.holder
            self._stats = replace(self._stats, polls=self._stats.polls + 1)
            try:
                record = self.store.read_alias(self.alias)
            except ModelStoreError as exc:
                return self._store_failed(exc)
            key = _key(record)
            if key in (self._serving, self._rejected):
                self._store_ok()
                return PollOutcome.UNCHANGED
            try:
                package = self.store.fetch(record.version, self.cache_dir)
            except CorruptVersionError as exc:  # the version's bytes in the store fail their checksums
                self._store_ok()
                return self._reject(key, str(exc))
            except ModelStoreError as exc:
                return self._store_failed(exc)
            except ModelPackageError as exc:  # the manifest stored for this version is invalid
                self._store_ok()
                return self._reject(key, str(exc))
            self._store_ok()
            try:
                candidate = verify_candidate(package, self.device, self.backend, self.threads)
            except ModelPackageError as exc:
                return self._reject(key, str(exc))
            serving_crop = holder.current.package.manifest.crop
            if package.manifest.crop != serving_crop:
                return self._reject(
                    key,
                    f"model {record.version}: crop {package.manifest.crop} differs from the serving model's "
                    f"{serving_crop}; the streams crop for the serving model, so restart to change it",
                )
            old = holder.swap(candidate)
            self._serving = key
            self._stats = replace(self._stats, swaps=self._stats.swaps + 1)
            logger.info("swapped model %s -> %s from %s", old.version, record.version, self.source)
            if self.on_swap is not None:
                self.on_swap(record.version)
            return PollOutcome.SWAPPED

    def start(self) -> None:
        """Poll in a background thread until `stop()`."""
        if self._holder is None:
            raise RuntimeError("call ModelWatcher.load_initial() before start()")
        if self._thread is not None:
            raise RuntimeError("a ModelWatcher can be started only once")
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling (a poll in progress finishes first) and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._next_delay()):
            try:
                self.poll()
            except Exception:  # a bug or a failing hook must not end hot reload
                logger.exception("model watcher poll of %s failed", self.source)

    def _next_delay(self) -> float:
        return min(self.interval * 2 ** min(self._failures, 32), self.max_interval)

    def _store_failed(self, exc: ModelStoreError) -> PollOutcome:
        self._failures += 1
        self._stats = replace(self._stats, store_failures=self._stats.store_failures + 1)
        if self._failures == 1:
            logger.warning(
                "cannot check model store %s (%s); still serving %s, retrying with backoff up to %gs",
                self.source,
                exc,
                self.holder.version,
                self.max_interval,
            )
        else:
            logger.debug("model store %s still failing (%s)", self.source, exc)
        return PollOutcome.STORE_ERROR

    def _store_ok(self) -> None:
        if self._failures:
            logger.info("model store %s reachable again after %d failed polls", self.source, self._failures)
            self._failures = 0

    def _reject(self, key: tuple[str, str], reason: str) -> PollOutcome:
        # One log line per rejection, even when TensorFlow's message has several.
        reason = " ".join(reason.split())
        self._rejected = key
        self._stats = replace(self._stats, rejections=self._stats.rejections + 1)
        logger.error(
            "rejected model %s from %s: %s; still serving %s",
            key[0],
            self.source,
            reason,
            self.holder.version,
        )
        if self.on_reject is not None:
            self.on_reject(key[0], reason)
        return PollOutcome.REJECTED


def _key(record: AliasRecord) -> tuple[str, str]:
    return record.version, record.manifest_sha256
