"""Model store backend on S3 or an S3-compatible server (boto3); botocore failures become ModelStoreError."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from models.errors import ModelStoreError

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 2
CHUNK = 1 << 20
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def make_s3_client(endpoint_url: str | None = None) -> Any:
    """An S3 client with short timeouts and few retries, so an unreachable store fails in seconds.

    Credentials and region come from the usual AWS sources (env, profile, instance role); with an
    `endpoint_url` (an S3-compatible server) path-style addressing is used.
    """
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    except (BotoCoreError, ValueError) as exc:
        raise ModelStoreError(f"cannot create an S3 client for endpoint {endpoint_url}: {exc}") from exc


class S3Backend:
    """Objects are `s3://bucket/prefix/<key>`; each PUT is atomic and carries the content's sha256."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def read(self, key: str) -> bytes | None:
        with self._errors(f"read {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _code(exc) in MISSING_CODES:
                    return None
                raise
            return bytes(response["Body"].read())

    def write(self, key: str, data: bytes) -> None:
        with self._errors(f"write {key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumSHA256=_b64_sha256(data)
            )

    def upload(self, key: str, source: Path, sha256: str) -> None:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        with self._errors(f"upload {key}"), source.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, ChecksumSHA256=checksum)

    def download(self, key: str, dest: Path) -> None:
        with self._errors(f"download {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _code(exc) in MISSING_CODES:
                    raise ModelStoreError(f"{self.url}: missing object {key}") from exc
                raise
            with dest.open("wb") as handle:
                for chunk in response["Body"].iter_chunks(CHUNK):
                    handle.write(chunk)

    def list(self, prefix: str) -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        with self._errors(f"list {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix
            ):
                keys.extend(item["Key"][len(root) :] for item in page.get("Contents", []))
        return sorted(keys)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn botocore failures into a one-line ModelStoreError naming the store and the action."""
        try:
            yield
        except NoCredentialsError as exc:
            raise ModelStoreError(
                f"{self.url}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            ) from exc
        except BotoCoreError as exc:
            raise ModelStoreError(f"{self.url}: cannot {action}: {exc}") from exc
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                raise ModelStoreError(f"{self.url}: bucket {self.bucket!r} does not exist") from exc
            message = exc.response.get("Error", {}).get("Message", "")
            raise ModelStoreError(f"{self.url}: cannot {action}: {_code(exc)} {message}".rstrip()) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
