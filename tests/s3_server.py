"""A real S3-compatible server (moto) on loopback for tests of the training mirror and the model store.

Take the fixtures into a test module by assignment (an import would be shadowed by the test arguments):

    import s3_server
    s3_endpoint = s3_server.s3_endpoint  # fixtures
    aws_env = s3_server.aws_env
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from server_process import free_port

DUMMY_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def start_moto(port: int) -> ThreadedMotoServer:
    """A moto server on 127.0.0.1:`port`, started, its request log silenced. Buckets live in this process, so
    a server started again on the port finds them as they were."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto server running for the test module."""
    port = free_port()
    server = start_moto(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials in this process's environment; also returned for subprocesses."""
    for name, value in DUMMY_KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(DUMMY_KEYS)


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of `endpoint` with the dummy keys, whatever the environment (raw access for tests)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=DUMMY_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


def new_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a bucket (a fresh random name unless `name`) and return its name."""
    bucket = name or f"test-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket
