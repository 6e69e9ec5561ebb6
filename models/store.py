"""The model store: published model packages and the aliases serving follows, in a local folder or on S3.

Layout under the store root:

    versions/<version>/manifest.json, model.tflite, saved_model/...   one immutable package per version
    aliases/<alias>.json   {"version": ..., "manifest_sha256": ..., "updated_at": ...}

Publishing uploads the package files first, `manifest.json` last, then moves the aliases, so a half-uploaded
version is neither listed (no manifest) nor reachable through an alias. Every object is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlsplit

from models.errors import CorruptVersionError, ModelPackageError, ModelStoreError
from models.manifest import MANIFEST_NAME, Manifest
from models.package import ModelPackage
from models.store_local import LocalBackend

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "FAKEWEB_S3_ENDPOINT_URL"
ALIAS_RE = re.compile(r"[a-z0-9_-]{1,64}")
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def validate_alias(name: str) -> str:
    """`name` if it is a valid alias (lowercase letters, digits, `_`, `-`), else ModelStoreError."""
    if not ALIAS_RE.fullmatch(name):
        raise ModelStoreError(f"invalid alias {name!r}: use lowercase letters, digits, '_' and '-'")
    return name


def validate_version(name: str) -> str:
    """`name` if it is a valid version id (one path segment, no '..'), else ModelStoreError."""
    if not VERSION_RE.fullmatch(name) or ".." in name:
        raise ModelStoreError(
            f"invalid version {name!r}: use letters, digits, '.', '_', '+', '-' (no '/', '..' or leading '.')"
        )
    return name


@dataclass(frozen=True)
class AliasRecord:
    """What an alias points at; `manifest_sha256` lets a hot reloader notice a change cheaply."""

    version: str
    manifest_sha256: str
    updated_at: str

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @staticmethod
    def from_json(data: bytes, source: str) -> AliasRecord:
        try:
            fields = json.loads(data)
            return AliasRecord(
                version=validate_version(str(fields["version"])),
                manifest_sha256=str(fields["manifest_sha256"]),
                updated_at=str(fields["updated_at"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelStoreError(f"{source}: not a valid alias record ({exc!r})") from exc


class StoreBackend(Protocol):
    """Object storage primitives; keys are '/'-separated and relative to the store root."""

    @property
    def url(self) -> str: ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    def write(self, key: str, data: bytes) -> None:
        """Create or replace an object atomically."""

    def upload(self, key: str, source: Path, sha256: str) -> None:
        """Copy a local file into an object atomically; fail if the stored bytes do not match `sha256`."""

    def download(self, key: str, dest: Path) -> None:
        """Copy an object into a local file; ModelStoreError when it does not exist."""

    def list(self, prefix: str) -> list[str]:
        """Keys of every object whose key starts with `prefix`."""


class ModelStore:
    """Publish, list, alias and fetch model packages in a store backend."""

    def __init__(self, backend: StoreBackend) -> None:
        self.backend = backend

    @property
    def url(self) -> str:
        return self.backend.url

    def publish(self, package_dir: Path, aliases: Sequence[str] = ("latest",)) -> str:
        """Upload a verified package as `versions/<manifest version>/`, then point `aliases` at it.

        Publishing the same content again only moves the aliases; different content under an existing version
        is refused. Returns the version.
        """
        names = [validate_alias(a) for a in ((aliases,) if isinstance(aliases, str) else aliases)]
        package = ModelPackage.load(package_dir)
        version = validate_version(package.manifest.version)
        manifest_bytes = (package.path / MANIFEST_NAME).read_bytes()
        existing = self.backend.read(_version_key(version, MANIFEST_NAME))
        if existing is None:
            for relative, sha256 in sorted(package.manifest.files.items()):
                self.backend.upload(_version_key(version, relative), package.path / relative, sha256)
            self.backend.upload(
                _version_key(version, MANIFEST_NAME), package.path / MANIFEST_NAME, _sha256(manifest_bytes)
            )
            logger.info("published %s to %s", version, self.url)
        elif existing != manifest_bytes:
            raise ModelStoreError(
                f"{self.url}: version {version} already exists with different content; publish a new version"
            )
        else:
            logger.info("%s is already in %s; moving aliases only", version, self.url)
        for alias in names:
            self._write_alias(alias, version, manifest_bytes)
        return version

    def list_versions(self) -> list[str]:
        """Complete versions (those whose manifest.json is present), sorted by name."""
        versions = set()
        for key in self.backend.list("versions/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_NAME and VERSION_RE.fullmatch(parts[1]):
                versions.add(parts[1])
        return sorted(versions)

    def read_alias(self, alias: str) -> AliasRecord:
        """The record behind an alias; ModelStoreError when the alias does not exist."""
        key = f"aliases/{validate_alias(alias)}.json"
        data = self.backend.read(key)
        if data is None:
            raise ModelStoreError(f"{self.url}: no alias {alias!r}")
        return AliasRecord.from_json(data, f"{self.url}/{key}")

    def list_aliases(self) -> dict[str, AliasRecord]:
        """Every alias and its record, by alias name."""
        keys = self.backend.list("aliases/")
        names = [key.removeprefix("aliases/").removesuffix(".json") for key in keys if key.endswith(".json")]
        return {name: self.read_alias(name) for name in sorted(names) if ALIAS_RE.fullmatch(name)}

    def resolve(self, alias: str) -> str:
        """The version an alias points at."""
        return self.read_alias(alias).version

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at a complete version of this store."""
        validate_alias(alias)
        self._write_alias(alias, version, self._read_manifest(version))

    def fetch(self, version_or_alias: str, cache_dir: Path) -> ModelPackage:
        """A verified local copy of a version (or of an alias's version) at `cache_dir/<version>`.

        A name that is an existing alias means that alias, otherwise a version. A complete cached copy is
        reused; a download is verified in a temporary folder, then renamed into place; no partial copy stays.
        """
        version = self._version_for(version_or_alias)
        target = cache_dir / version
        if target.exists():
            try:
                return ModelPackage.load(target)
            except ModelPackageError as exc:
                logger.warning("discarding damaged cached copy: %s", exc)
                shutil.rmtree(target)
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".part", dir=cache_dir))
        try:
            manifest = self._download(version, staging)
            try:
                staging.rename(target)
            except OSError:  # another process installed it first; use that copy if it is complete
                return ModelPackage.load(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("fetched %s from %s into %s", version, self.url, target)
        return ModelPackage(target, manifest)

    def _download(self, version: str, folder: Path) -> Manifest:
        """Download a version's files into `folder` and verify every checksum."""
        source = f"{self.url}/versions/{version}"
        manifest_bytes = self._read_manifest(version)
        manifest = Manifest.from_json(manifest_bytes.decode(errors="replace"), f"{source}/{MANIFEST_NAME}")
        if manifest.version != version:
            raise ModelStoreError(f"{source}: holds the manifest of version {manifest.version}")
        for relative in manifest.files:
            dest = folder / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.backend.download(_version_key(version, relative), dest)
        (folder / MANIFEST_NAME).write_bytes(manifest_bytes)
        try:
            return ModelPackage.load(folder).manifest
        except ModelPackageError as exc:
            raise CorruptVersionError(f"{source} is corrupt in the store ({exc})") from exc

    def _version_for(self, name: str) -> str:
        if ALIAS_RE.fullmatch(name):
            data = self.backend.read(f"aliases/{name}.json")
            if data is not None:
                return AliasRecord.from_json(data, f"{self.url}/aliases/{name}.json").version
        return validate_version(name)

    def _read_manifest(self, version: str) -> bytes:
        data = self.backend.read(_version_key(validate_version(version), MANIFEST_NAME))
        if data is None:
            raise ModelStoreError(f"{self.url}: no version {version} (missing or not completely published)")
        return data

    def _write_alias(self, alias: str, version: str, manifest_bytes: bytes) -> None:
        updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = AliasRecord(version=version, manifest_sha256=_sha256(manifest_bytes), updated_at=updated_at)
        self.backend.write(f"aliases/{alias}.json", record.to_json())
        logger.info("alias %s -> %s in %s", alias, version, self.url)


def open_store(url: str, endpoint_url: str | None = None) -> ModelStore:
    """Open a store from `/path`, `file:///path` or `s3://bucket/prefix`.

    For S3, `endpoint_url` (default: env FAKEWEB_S3_ENDPOINT_URL) selects an S3-compatible server.
    """
    return ModelStore(open_backend(url, endpoint_url))


def open_backend(url: str, endpoint_url: str | None = None) -> StoreBackend:
    """The files under `/path`, `file:///path` or `s3://bucket/prefix` (also used for exported data sets)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ModelStoreError(f"invalid store URL {url!r}: no bucket (expected s3://bucket/prefix)")
        from models.store_s3 import S3Backend, make_s3_client  # boto3 is imported only for S3 stores

        client = make_s3_client(endpoint_url or os.environ.get(ENDPOINT_ENV) or None)
        return S3Backend(parts.netloc, parts.path.strip("/"), client)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return LocalBackend(Path(unquote(parts.path)))
    if parts.scheme == "":
        return LocalBackend(Path(url).expanduser())
    raise ModelStoreError(f"unsupported store URL {url!r}: use a folder, file:///path or s3://bucket/prefix")


def _version_key(version: str, relative: str) -> str:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not relative:
        raise ModelStoreError(f"unsafe file name {relative!r} in version {version}")
    return f"versions/{version}/{path}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
