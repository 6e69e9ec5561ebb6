"""Hot reload through a real `fakeweb serve` process following an alias of a local-folder model store.

The packages are real exports of two differently seeded tiny models; the corrupt one has garbage TFLite bytes
under a manifest whose checksums match them, so only the service's verification can catch it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_helpers import metric, served_version, wait_for
from server_process import ServerProcess
from tiny_model import export_tiny_package

from models.manifest import MANIFEST_NAME, TFLITE_NAME, hash_tree
from models.package import ModelPackage
from models.store import ModelStore, open_store


def corrupt_copy(package: Path, folder: Path, version: str) -> Path:
    """`package` as `version` with garbage model.tflite bytes, its manifest checksums updated to match."""
    copy = folder / version
    shutil.copytree(package, copy)
    (copy / TFLITE_NAME).write_bytes(b"not a flatbuffer " * 64)
    manifest = dataclasses.replace(
        ModelPackage.load(package).manifest, version=version, files=hash_tree(copy)
    )
    (copy / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("packages")
    return export_tiny_package(folder / "seed0", seed=0), export_tiny_package(folder / "seed1", seed=1)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return open_store(str(tmp_path / "store"))


@pytest.fixture
def server(tmp_path: Path, store: ModelStore, packages: tuple[Path, Path]) -> Iterator[ServerProcess]:
    """A server following `latest` of `store`, where the seed-0 package is published first."""
    store.publish(packages[0], aliases=("latest",))
    flags = ("--model", f"store://{store.url}@latest", "--model-poll-seconds", "0.5")
    with ServerProcess(tmp_path / "data", *flags) as process:
        yield process


def test_hot_reload_swaps_good_versions_and_rejects_a_corrupt_one(
    server: ServerProcess, store: ModelStore, packages: tuple[Path, Path], tmp_path: Path
) -> None:
    v1 = ModelPackage.load(packages[0]).manifest.version
    assert served_version(server) == v1
    assert metric(server, "fakeweb_model_info", version=v1, backend="tflite", device="cpu") == 1

    v2 = store.publish(packages[1], aliases=("latest",))
    assert v2 != v1
    wait_for(lambda: served_version(server) == v2, 15, f"serving {v2}")
    assert metric(server, "fakeweb_model_reloads_total", result="swapped") == 1
    assert metric(server, "fakeweb_model_info", version=v2, backend="tflite", device="cpu") == 1
    assert metric(server, "fakeweb_model_info", version=v1, backend="tflite", device="cpu") == 0

    v3 = store.publish(corrupt_copy(packages[1], tmp_path, "v3-corrupt"), aliases=("latest",))
    wait_for(
        lambda: metric(server, "fakeweb_model_reloads_total", result="rejected") == 1, 15, f"{v3} rejected"
    )
    time.sleep(4 * 0.5)  # four more polls see the rejected version: it is not fetched or verified again
    assert metric(server, "fakeweb_model_reloads_total", result="rejected") == 1
    assert metric(server, "fakeweb_model_reloads_total", result="swapped") == 1
    assert served_version(server) == v2
    log = server.log()
    rejections = [line for line in log.splitlines() if "rejected model" in line]
    assert len(rejections) == 1, rejections
    assert v3 in rejections[0] and "cannot load TFLite model" in rejections[0], rejections[0]
    assert f"still serving {v2}" in rejections[0]
    assert "Traceback" not in log
