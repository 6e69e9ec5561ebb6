"""Publishing the exported package: verified by fetching it back, transient failures retried, others reported.

Stores are real: a local folder and an S3-compatible server (moto) on loopback, which a test starts only after
the first attempt so that attempt meets a refused connection, as after a network blip.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import s3_server
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from moto.server import ThreadedMotoServer
from s3_server import free_port, new_bucket

from models.errors import ModelStoreError
from models.store import open_store
from training.publish import PublishError, is_transient, main, publish_package

s3_endpoint = s3_server.s3_endpoint  # fixtures
aws_env = s3_server.aws_env


class Sleeps:
    """Records the back-off delays instead of sleeping; may run an action at the first one."""

    def __init__(self, action: Callable[[], None] | None = None) -> None:
        self.delays: list[float] = []
        self.action = action

    def __call__(self, seconds: float) -> None:
        if not self.delays and self.action is not None:
            self.action()
        self.delays.append(seconds)


def test_publish_to_s3_is_verified_and_moves_the_aliases(
    tiny_package: Path, s3_endpoint: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    url = f"s3://{new_bucket(s3_endpoint)}/models"
    published = publish_package(tiny_package, url, ("latest", "candidate"), endpoint_url=s3_endpoint)
    store = open_store(url, endpoint_url=s3_endpoint)
    assert published.url == url and published.aliases == ("latest", "candidate")
    assert store.resolve("latest") == store.resolve("candidate") == published.version
    assert store.fetch("latest", tmp_path).manifest.version == published.version


def test_transient_failure_is_retried_with_backoff(tiny_package: Path, aws_env: dict[str, str]) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def network_back() -> None:
        server.start()
        new_bucket(endpoint, "will-exist")

    sleeps = Sleeps(network_back)
    try:
        published = publish_package(
            tiny_package, "s3://will-exist/models", endpoint_url=endpoint, sleep=sleeps, first_delay_s=0.5
        )
    finally:
        server.stop()
    assert sleeps.delays == [0.5]
    assert published.url == "s3://will-exist/models"


def test_unreachable_store_fails_clearly_after_the_attempts_and_keeps_everything(
    tiny_package: Path, aws_env: dict[str, str]
) -> None:
    sleeps = Sleeps()
    url = "s3://models/team"
    with pytest.raises(PublishError) as info:
        publish_package(
            tiny_package,
            url,
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            attempts=3,
            sleep=sleeps,
            keep_note="checkpoints are in /data/run1/checkpoints",
        )
    assert sleeps.delays == [2.0, 4.0]
    message = str(info.value)
    assert f"could not publish to {url}" in message and "(after 3 attempts)" in message
    assert f"the package is kept at {tiny_package}" in message
    assert "checkpoints are in /data/run1/checkpoints" in message
    assert f"python -m training.publish {tiny_package} --store {url} --alias latest" in message
    assert tiny_package.is_dir()


def test_missing_bucket_is_not_retried(tiny_package: Path, s3_endpoint: str, aws_env: dict[str, str]) -> None:
    sleeps = Sleeps()
    with pytest.raises(PublishError, match="does not exist"):
        publish_package(tiny_package, "s3://no-such-bucket/models", endpoint_url=s3_endpoint, sleep=sleeps)
    assert sleeps.delays == []


def test_a_damaged_copy_already_in_the_store_fails_verification(tiny_package: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    version = publish_package(tiny_package, str(root)).version
    (root / "versions" / version / "model.tflite").write_bytes(b"bit rot")
    with pytest.raises(PublishError, match="corrupt in the store"):
        publish_package(tiny_package, str(root))


def test_an_invalid_package_is_not_published(tiny_package: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_package, broken)
    (broken / "model.tflite").write_bytes(b"changed after export")
    with pytest.raises(PublishError, match="not publishing"):
        publish_package(broken, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")


@pytest.mark.parametrize(
    ("cause", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (client_error("SlowDown"), True),
        (client_error("503"), True),
        (client_error("AccessDenied"), False),
        (client_error("NoSuchBucket"), False),
        (NoCredentialsError(), False),
        (None, False),
    ],
)
def test_transient_failures(cause: BaseException | None, transient: bool) -> None:
    error = ModelStoreError("store failed")
    error.__cause__ = cause
    assert is_transient(error) is transient


def test_command_exit_status_reflects_the_outcome(
    tiny_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert main([str(tiny_package), "--store", str(store), "--alias", "production"]) == 0
    assert open_store(str(store)).resolve("production")
    assert main([str(tmp_path / "missing"), "--store", str(store)]) == 1
    assert "error: not publishing" in capsys.readouterr().err
