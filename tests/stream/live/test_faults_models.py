"""Model faults through a real `fakeweb serve` process following a store alias: a version published with the
wrong input size, a version whose stored bytes no longer match their checksums, and an S3 store (a real moto
server behind a proxy the test can cut) that becomes unreachable while the service polls it.

A version with garbage TFLite bytes under valid checksums is covered by test_service_reload.py; the watcher's
rules (each poll's outcome, warning once per outage, backoff) by test_reload.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3_server
from clips import ClipTruth
from fault_helpers import TcpProxy, log_lines
from live_helpers import metric, save_file_camera, served_version, stream, wait_for
from package_copies import clone
from s3_server import new_bucket
from server_process import ServerProcess

from models.manifest import TFLITE_NAME
from models.preprocess import CropSpec
from models.store import ModelStore, open_store

POLL_SECONDS = 0.5
s3_endpoint = s3_server.s3_endpoint  # fixtures
aws_env = s3_server.aws_env


def rejected(server: ServerProcess) -> float:
    return metric(server, "fakeweb_model_reloads_total", result="rejected")


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory, tiny_package: Path) -> ModelStore:
    folder = tmp_path_factory.mktemp("local_store")
    store = open_store(str(folder / "store"))
    store.publish(clone(tiny_package, folder, "v1"), aliases=("latest",))
    return store


@pytest.fixture(scope="module")
def local_server(
    tmp_path_factory: pytest.TempPathFactory, local_store: ModelStore
) -> Iterator[ServerProcess]:
    flags = ("--model", f"store://{local_store.url}@latest", "--model-poll-seconds", str(POLL_SECONDS))
    with ServerProcess(tmp_path_factory.mktemp("models_local"), *flags) as process:
        yield process


def test_a_version_with_the_wrong_input_size_is_rejected_and_the_old_one_serves(
    local_server: ServerProcess, local_store: ModelStore, tiny_package: Path, tmp_path: Path
) -> None:
    """The manifest says 48x48 crops; the model takes 32x32. Checksums match: only verification catches it."""
    assert served_version(local_server) == "v1"
    local_store.publish(
        clone(tiny_package, tmp_path, "v2-wrong-size", crop=CropSpec(size=48)), aliases=("latest",)
    )
    wait_for(lambda: rejected(local_server) == 1, 15, "v2-wrong-size rejected")
    time.sleep(4 * POLL_SECONDS)  # later polls see the same rejected version: not fetched or counted again
    assert rejected(local_server) == 1
    assert served_version(local_server) == "v1"
    assert metric(local_server, "fakeweb_model_loaded") == 1
    (line,) = log_lines(local_server, "rejected model v2-wrong-size")
    assert "ERROR" in line and "input size 48" in line and "still serving v1" in line, line


def test_a_version_whose_stored_bytes_fail_their_checksum_is_rejected(
    local_server: ServerProcess, local_store: ModelStore, tiny_package: Path, tmp_path: Path
) -> None:
    before = rejected(local_server)
    version = local_store.publish(clone(tiny_package, tmp_path, "v3-bad-checksum"))
    stored = Path(local_store.url) / "versions" / version / TFLITE_NAME
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a damaged object in the store
    stored.write_bytes(bytes(data))
    local_store.set_alias("latest", version)
    try:
        wait_for(lambda: rejected(local_server) == before + 1, 6, f"{version} rejected")
        assert served_version(local_server) == "v1"
        (line,) = log_lines(local_server, f"rejected model {version}")
        assert "checksum" in line or "sha256" in line, line
    finally:
        local_store.set_alias("latest", "v1")


# S3 through a proxy that can be cut.


def test_an_unreachable_s3_store_is_retried_with_backoff_while_serving_continues(
    s3_endpoint: str,
    aws_env: dict[str, str],
    tiny_package: Path,
    moving_face_video: tuple[Path, ClipTruth],
    tmp_path: Path,
) -> None:
    bucket = new_bucket(s3_endpoint)
    store = open_store(f"s3://{bucket}/fakeweb", endpoint_url=s3_endpoint)  # the test publishes directly
    store.publish(clone(tiny_package, tmp_path, "v1"), aliases=("latest",))
    proxy = TcpProxy(int(s3_endpoint.rsplit(":", 1)[1]))  # the service reaches the store through the proxy
    env = {**aws_env, "FAKEWEB_S3_ENDPOINT_URL": proxy.url, "FAKEWEB_CLASSIFY_EVERY": "1"}
    flags = ("--model", f"store://{store.url}@latest", "--model-poll-seconds", str(POLL_SECONDS))
    camera = save_file_camera(tmp_path / "data", "recorded", moving_face_video[0])
    server = ServerProcess(tmp_path / "data", *flags, env=env).start()
    try:
        wait_for(lambda: stream(server, camera)["frames_processed"] > 10, 20, "the camera processed")

        def classified() -> int:
            described = stream(server, camera)
            scored = [face for face in described["faces"] if face["probability"] is not None]
            return int(described["frames_processed"]) if scored else 0

        def outage(seconds: float, serving: str) -> list[float]:
            """Cut the store off for `seconds`: `serving` serves and the camera is classified meanwhile.
            Returns the times of the polls that were tried."""
            proxy.attempts_while_cut.clear()
            processed = classified()
            proxy.cut()
            time.sleep(seconds)
            assert served_version(server) == serving and metric(server, "fakeweb_model_loaded") == 1
            wait_for(lambda: classified() > processed + 20, 10, "faces classified during the outage")
            proxy.restore()
            # Each failed poll is two connection attempts (botocore retries once, 0-1 s later, with jitter).
            return proxy.attempts_while_cut[0::2]

        polls = outage(4.0, serving="v1")
        gaps = [later - earlier for earlier, later in zip(polls, polls[1:], strict=False)]
        # Every 0.5 s (plus the retry) there would be 4-8 polls in 4 s, 0.5-1.5 s apart. With the backoff the
        # wait doubles after each failure (1, 2, 4 s): the k-th gap is that wait plus the 0-1 s retry.
        assert 2 <= len(polls) <= 3, polls
        assert all(gap >= 0.95 * 2**k for k, gap in enumerate(gaps)), gaps
        warnings = log_lines(server, "WARNING", "cannot check model store")
        assert len(warnings) == 1, warnings
        assert "still serving v1" in warnings[0] and "retrying with backoff" in warnings[0]

        store.publish(clone(tiny_package, tmp_path, "v2"), aliases=("latest",))
        wait_for(lambda: served_version(server) == "v2", 20, "v2 served once the store is back")
        assert log_lines(server, "reachable again")
        assert metric(server, "fakeweb_model_reloads_total", result="swapped") == 1

        outage(1.5, serving="v2")  # a second outage: warned once more
        assert len(log_lines(server, "WARNING", "cannot check model store")) == 2
        assert served_version(server) == "v2"
        assert "Traceback" not in server.log()
    finally:
        server.stop()
        proxy.close()
