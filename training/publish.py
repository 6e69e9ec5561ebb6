"""Publish an exported model package to a model store, verify it by fetching it back, retry transient failures.

A training job reports success only after `publish_package` returned: the package is then in the store, every
file's checksum checked on a fresh download, and the aliases point at it. When the store cannot be reached the
error says where the local package (and the checkpoints) are, so nothing is lost and publishing can be retried:

    python -m training.publish PACKAGE --store s3://bucket/models --alias latest
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from models.errors import FakewebError, ModelPackageError, ModelStoreError
from models.manifest import MANIFEST_NAME
from models.package import ModelPackage
from models.store import ModelStore, open_store

logger = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_DELAY_S = 2.0
MAX_DELAY_S = 60.0
TRANSIENT_S3_CODES = {
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "500",
    "502",
    "503",
    "504",
}


class PublishError(FakewebError):
    """The package could not be published and verified; the message says where the local copies are."""


@dataclass(frozen=True)
class Published:
    """A verified publication: `version` is in the store at `url` and `aliases` point at it."""

    url: str
    version: str
    aliases: tuple[str, ...]


def is_transient(exc: ModelStoreError) -> bool:
    """Whether a store failure may go away on retry: connection and timeout errors, throttling, 5xx."""
    cause = exc.__cause__
    if isinstance(cause, (NoCredentialsError, ParamValidationError)):
        return False
    if isinstance(cause, BotoCoreError):
        return True
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", "")) in TRANSIENT_S3_CODES
    return False


def publish_package(
    package_dir: Path,
    store_url: str,
    aliases: Sequence[str] = ("latest",),
    *,
    endpoint_url: str | None = None,
    attempts: int = ATTEMPTS,
    first_delay_s: float = FIRST_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
    keep_note: str = "",
) -> Published:
    """Publish `package_dir` to `store_url` and verify it, retrying transient failures with exponential backoff.

    Raises PublishError naming the local package (and `keep_note`, e.g. where the checkpoints are) when the
    store refuses the package, stays unreachable after `attempts` tries, or returns something else than was sent.
    """
    try:
        package = ModelPackage.load(package_dir)
    except ModelPackageError as exc:
        raise PublishError(f"not publishing: {exc}") from exc
    delay, attempt = first_delay_s, 1
    while True:
        try:
            store = open_store(store_url, endpoint_url)
            version = store.publish(package.path, aliases)
            _verify(store, package, version, aliases)
            logger.info(
                "published and verified %s in %s (aliases %s)", version, store.url, ", ".join(aliases)
            )
            return Published(store.url, version, tuple(aliases))
        except ModelStoreError as exc:
            if attempt >= attempts or not is_transient(exc):
                tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                reason = f"{exc}{tries}"
                raise PublishError(_failure(package, store_url, aliases, reason, keep_note)) from exc
            logger.warning(
                "publishing failed (attempt %d of %d, retrying in %.0f s): %s", attempt, attempts, delay, exc
            )
        except PublishError as exc:
            raise PublishError(_failure(package, store_url, aliases, str(exc), keep_note)) from exc
        sleep(delay)
        delay, attempt = min(delay * 2, MAX_DELAY_S), attempt + 1


def _verify(store: ModelStore, package: ModelPackage, version: str, aliases: Sequence[str]) -> None:
    """Fetch `version` into a scratch folder (ModelStore.fetch checks every sha256) and compare manifests."""
    with tempfile.TemporaryDirectory(prefix="fakeweb-publish-check-") as scratch:
        fetched = store.fetch(version, Path(scratch))
        if (fetched.path / MANIFEST_NAME).read_bytes() != (package.path / MANIFEST_NAME).read_bytes():
            raise PublishError(f"{store.url}: version {version} holds another manifest than {package.path}")
    resolved = {alias: store.resolve(alias) for alias in aliases}
    wrong = {alias: target for alias, target in resolved.items() if target != version}
    if wrong:
        raise PublishError(f"{store.url}: aliases do not point at {version}: {wrong}")


def _failure(
    package: ModelPackage, store_url: str, aliases: Sequence[str], reason: str, keep_note: str
) -> str:
    kept = f"the package is kept at {package.path}" + (f"; {keep_note}" if keep_note else "")
    retry = f"python -m training.publish {package.path} --store {store_url}"
    retry += "".join(f" --alias {alias}" for alias in aliases)
    return (
        f"could not publish to {store_url}: {reason}. Nothing is lost: {kept}. Publish it later with: {retry}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training.publish PACKAGE --store URL [--alias A ...]`; exit status 0 only when verified."""
    parser = argparse.ArgumentParser(prog="python -m training.publish", description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="exported model package folder")
    parser.add_argument(
        "--store", required=True, help="model store: folder, file:///path or s3://bucket/prefix"
    )
    parser.add_argument(
        "--alias", action="append", default=None, help="alias to point at it (default: latest)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        published = publish_package(args.package, args.store, tuple(args.alias or ("latest",)))
    except FakewebError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"published {published.version} to {published.url} ({', '.join(published.aliases)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
