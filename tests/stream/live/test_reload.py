"""Model holder, candidate verification and hot reload from real stores: a local folder and S3 (moto).

Packages are real: conftest's `tiny_package` (a tiny Keras model exported by `training.export`), cloned under new
versions (and damaged on purpose) with manifests whose checksums are valid, so only verification can catch the
damage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import s3_server
import tensorflow as tf
from package_copies import clone
from polling import wait_for
from s3_server import free_port, new_bucket, start_moto

from models.errors import ModelPackageError, ModelStoreError
from models.package import ModelPackage
from models.preprocess import CropSpec
from models.reference import reference_face
from models.store import ModelStore, open_store
from stream.live.reload import (
    ModelHolder,
    ModelWatcher,
    PollOutcome,
    StoreRef,
    WatcherStats,
    parse_model_ref,
    verify_candidate,
)
from training.export import export_package

SIZE = 32
s3_endpoint = s3_server.s3_endpoint  # fixtures
aws_env = s3_server.aws_env


def s3_store(endpoint: str) -> ModelStore:
    return open_store(f"s3://{new_bucket(endpoint)}/team/models", endpoint_url=endpoint)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    request.getfixturevalue("aws_env")
    return s3_store(request.getfixturevalue("s3_endpoint"))


class Events:
    """Records the watcher's hooks."""

    def __init__(self) -> None:
        self.swaps: list[str] = []
        self.rejects: list[tuple[str, str]] = []

    def on_swap(self, version: str) -> None:
        self.swaps.append(version)

    def on_reject(self, version: str, reason: str) -> None:
        self.rejects.append((version, reason))


@pytest.fixture
def make_watcher(tmp_path: Path) -> Iterator[Callable[..., tuple[ModelWatcher, Events]]]:
    watchers: list[ModelWatcher] = []

    def make(
        store: ModelStore, interval: float = 0.05, max_interval: float = 0.4
    ) -> tuple[ModelWatcher, Events]:
        events = Events()
        watcher = ModelWatcher(
            store,
            "production",
            tmp_path / "cache",
            device="cpu",
            interval=interval,
            max_interval=max_interval,
            on_swap=events.on_swap,
            on_reject=events.on_reject,
        )
        watchers.append(watcher)
        return watcher, events

    yield make
    for watcher in watchers:
        watcher.stop(timeout=10)


wait_until = partial(wait_for, timeout=10.0, what="the awaited state", period=0.01)


def face_batch() -> np.ndarray:
    return cv2.resize(reference_face(), (SIZE, SIZE))[np.newaxis]


def at_least(count: Callable[[], int], target: int) -> Callable[[], bool]:
    return lambda: count() >= target


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("models/default", Path("models/default")),
        ("/srv/packages/v3", Path("/srv/packages/v3")),
        ("store:///srv/models@production", StoreRef("/srv/models", "production")),
        ("store://file:///srv/my%20models@latest", StoreRef("file:///srv/my%20models", "latest")),
        ("store://s3://bucket/team/models@production", StoreRef("s3://bucket/team/models", "production")),
        ("store://s3://bucket/a@b/models@canary-2", StoreRef("s3://bucket/a@b/models", "canary-2")),
        ("store://relative/store@staging", StoreRef("relative/store", "staging")),
    ],
)
def test_parse_model_ref(ref: str, expected: Path | StoreRef) -> None:
    parsed = parse_model_ref(ref)
    assert parsed == expected
    if isinstance(parsed, StoreRef):
        assert str(parsed) == ref


@pytest.mark.parametrize(
    ("ref", "error", "match"),
    [
        ("", ModelPackageError, "empty model reference"),
        ("store:///srv/models", ModelStoreError, r"expected store://<store url>@<alias>"),
        ("store://@production", ModelStoreError, r"expected store://<store url>@<alias>"),
        ("store:///srv/models@", ModelStoreError, "invalid alias ''"),
        ("store:///srv/models@Production", ModelStoreError, "invalid alias 'Production'"),
    ],
)
def test_parse_model_ref_rejects(ref: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_model_ref(ref)


def test_reference_face_is_an_rgb_face_crop() -> None:
    face = reference_face()
    assert (face.shape, face.dtype) == ((160, 160, 3), np.uint8)
    skin = face[70:110, 50:110].reshape(-1, 3).mean(axis=0)  # cheeks and nose
    assert skin[0] > skin[2] + 30  # red above blue: channels are RGB, not BGR


@pytest.mark.parametrize("backend", ["tflite", "savedmodel"])
def test_verify_candidate_accepts_a_good_package(tiny_package: Path, backend: str) -> None:
    classifier = verify_candidate(ModelPackage.load(tiny_package), device="cpu", backend=backend)
    assert classifier.backend == backend
    probability = classifier.predict(face_batch())
    assert probability.shape == (1,) and 0.0 <= probability[0] <= 1.0


@pytest.mark.parametrize("backend", ["tflite", "savedmodel"])
def test_verify_candidate_rejects_a_manifest_input_size_the_model_does_not_take(
    tiny_package: Path, tmp_path: Path, backend: str
) -> None:
    package = ModelPackage.load(clone(tiny_package, tmp_path, "v9", crop=CropSpec(size=48)))
    with pytest.raises(
        ModelPackageError, match=rf"declares input size 48 but the {backend} model takes .*32, 32"
    ):
        verify_candidate(package, device="cpu", backend=backend)


def test_verify_candidate_rejects_unloadable_bytes(tiny_package: Path, tmp_path: Path) -> None:
    package = ModelPackage.load(clone(tiny_package, tmp_path, "v9", tflite=b"not a flatbuffer " * 64))
    with pytest.raises(ModelPackageError, match="cannot load TFLite model"):
        verify_candidate(package, device="cpu", backend="tflite")


def test_verify_candidate_rejects_an_output_that_is_not_a_probability(tmp_path: Path) -> None:
    inputs = tf.keras.Input((SIZE, SIZE, 3), name="crops")
    pooled = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, kernel_initializer="ones")(pooled))  # no sigmoid
    check = np.full((1, SIZE, SIZE, 3), 100, dtype=np.float32)
    package = export_package(model, tmp_path / "linear", CropSpec(size=SIZE), 0.5, "linear", {}, {}, check)
    with pytest.raises(ModelPackageError, match=r"smoke inference on the reference face gave \[\d+\.\d*\]"):
        verify_candidate(package, device="cpu")


def test_model_holder_swaps_atomically(tiny_package: Path) -> None:
    first = verify_candidate(ModelPackage.load(tiny_package), device="cpu")
    holder = ModelHolder(first)
    assert (holder.current, holder.backend, holder.device) == (first, "tflite", "cpu")
    assert holder.describe() == {
        "version": first.version,
        "backend": "tflite",
        "device": "cpu",
        "architecture": "tiny-conv",
        "input_size": SIZE,
        "threshold": 0.5,
        "calibration": None,
        "created_at": first.package.manifest.created_at,
    }
    second = verify_candidate(ModelPackage.load(tiny_package), device="cpu")
    assert holder.swap(second) is first
    assert holder.current is second and holder.version == second.version


def test_hot_reload_follows_the_alias_and_rejects_bad_versions(
    store: ModelStore,
    tiny_package: Path,
    tmp_path: Path,
    make_watcher: Callable[..., tuple[ModelWatcher, Events]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.publish(clone(tiny_package, tmp_path, "v1"), aliases=("production",))
    watcher, events = make_watcher(store)
    holder = watcher.load_initial()
    assert holder.version == "v1"
    watcher.start()

    store.publish(clone(tiny_package, tmp_path, "v2"), aliases=("production",))
    wait_until(lambda: holder.version == "v2")
    assert events.swaps == ["v2"]
    assert holder.current.predict(face_batch()).shape == (1,)

    bad = {
        "v3": clone(tiny_package, tmp_path, "v3", tflite=b"not a flatbuffer " * 64),
        "v4": clone(tiny_package, tmp_path, "v4", crop=CropSpec(size=48)),
        "v5": clone(tiny_package, tmp_path, "v5", crop=CropSpec(size=SIZE, margin=0.4)),
    }
    for index, package in enumerate(bad.values()):
        store.publish(package, aliases=("production",))
        wait_until(at_least(lambda: len(events.rejects), index + 1))
        wait_until(
            at_least(lambda: watcher.stats.polls, watcher.stats.polls + 3)
        )  # not retried on these polls
        assert holder.version == "v2"
    reasons = dict(events.rejects)
    assert (
        list(reasons) == ["v3", "v4", "v5"] and len(events.rejects) == 3
    )  # each rejected once, not per poll
    assert "cannot load TFLite model" in reasons["v3"]
    assert "declares input size 48 but the tflite model takes" in reasons["v4"]
    assert "crop CropSpec(size=32, margin=0.4) differs" in reasons["v5"]
    rejected_logs = [
        r for r in caplog.records if r.levelno == logging.ERROR and "rejected model" in r.message
    ]
    assert len(rejected_logs) == 3
    assert holder.current.predict(face_batch()).shape == (1,)

    store.publish(clone(tiny_package, tmp_path, "v6"), aliases=("production",))
    wait_until(lambda: holder.version == "v6")
    assert events.swaps == ["v2", "v6"]
    assert (watcher.stats.swaps, watcher.stats.rejections, watcher.stats.store_failures) == (2, 3, 0)

    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1.0


def test_each_poll_reports_what_it_did(tiny_package: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_store(str(root))
    store.publish(clone(tiny_package, tmp_path, "v1"), aliases=("production",))
    watcher = ModelWatcher(store, "production", tmp_path / "cache", device="cpu")
    holder = watcher.load_initial()
    assert watcher.poll() is PollOutcome.UNCHANGED
    store.publish(clone(tiny_package, tmp_path, "v2"), aliases=("production",))
    assert (watcher.poll(), holder.version) == (PollOutcome.SWAPPED, "v2")
    store.publish(
        clone(tiny_package, tmp_path, "v3", tflite=b"not a flatbuffer " * 64), aliases=("production",)
    )
    assert (watcher.poll(), watcher.poll(), holder.version) == (
        PollOutcome.REJECTED,
        PollOutcome.UNCHANGED,
        "v2",
    )
    store.set_alias("production", "v1")  # a rollback is a move like any other
    assert (watcher.poll(), holder.version) == (PollOutcome.SWAPPED, "v1")
    root.rename(tmp_path / "elsewhere")
    assert (watcher.poll(), holder.version) == (PollOutcome.STORE_ERROR, "v1")
    assert watcher.stats == WatcherStats(polls=6, swaps=2, rejections=1, store_failures=1)


def test_load_initial_needs_a_good_model(tiny_package: Path, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    watcher = ModelWatcher(store, "production", tmp_path / "cache", device="cpu")
    with pytest.raises(ModelStoreError, match="no alias 'production'"):
        watcher.load_initial()
    with pytest.raises(RuntimeError, match="load_initial"):
        watcher.start()
    store.publish(
        clone(tiny_package, tmp_path, "v1", tflite=b"not a flatbuffer " * 64), aliases=("production",)
    )
    with pytest.raises(ModelPackageError, match="cannot load TFLite model"):
        watcher.load_initial()


def test_store_outage_keeps_serving_backs_off_and_warns_once(
    tiny_package: Path,
    tmp_path: Path,
    make_watcher: Callable[..., tuple[ModelWatcher, Events]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "store"
    store = open_store(str(root))
    store.publish(clone(tiny_package, tmp_path, "v1"), aliases=("production",))
    watcher, events = make_watcher(store, interval=0.02, max_interval=0.16)
    holder = watcher.load_initial()
    watcher.start()
    wait_until(lambda: watcher.stats.polls >= 3)

    caplog.set_level(logging.INFO, logger="stream.live.reload")
    root.rename(tmp_path / "store-away")  # the alias disappears: every poll fails
    time.sleep(1.0)
    failed = watcher.stats.store_failures
    assert 3 <= failed <= 12, failed  # without backoff: about 50 polls in 1 s at a 0.02 s interval
    assert holder.version == "v1" and holder.current.predict(face_batch()).shape == (1,)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "still serving v1" in warnings[0].message

    (tmp_path / "store-away").rename(root)
    store.publish(clone(tiny_package, tmp_path, "v2"), aliases=("production",))
    wait_until(lambda: holder.version == "v2", timeout=5)
    assert any("reachable again" in r.message for r in caplog.records)
    polls = watcher.stats.polls
    time.sleep(0.3)
    assert watcher.stats.polls - polls >= 5  # back to the normal interval
    assert events.rejects == []


@pytest.mark.usefixtures("aws_env")
def test_s3_outage_keeps_serving_and_recovers(
    tiny_package: Path,
    tmp_path: Path,
    make_watcher: Callable[..., tuple[ModelWatcher, Events]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_moto(port)
    try:
        store = s3_store(endpoint)
        store.publish(clone(tiny_package, tmp_path, "v1"), aliases=("production",))
        watcher, events = make_watcher(store, interval=0.05, max_interval=0.2)
        holder = watcher.load_initial()
        watcher.start()
        caplog.set_level(logging.INFO, logger="stream.live.reload")

        server.stop()  # connections are refused from now on
        wait_until(lambda: watcher.stats.store_failures >= 3)
        assert holder.version == "v1" and holder.current.predict(face_batch()).shape == (1,)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Could not connect to the endpoint URL" in warnings[0].message

        server = start_moto(port)  # moto keeps its buckets in the process: the store comes back as it was
        open_store(store.url, endpoint_url=endpoint).publish(
            clone(tiny_package, tmp_path, "v2"), aliases=("production",)
        )
        wait_until(lambda: holder.version == "v2")
        assert events.swaps == ["v2"] and events.rejects == []
        assert any("reachable again" in r.message for r in caplog.records)
    finally:
        server.stop()
