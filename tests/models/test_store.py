"""Model store on both backends: a local folder and a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import s3_server
from s3_server import free_port, new_bucket, s3_client

from models.errors import ModelPackageError, ModelStoreError
from models.manifest import MANIFEST_NAME, Manifest, hash_tree
from models.preprocess import CropSpec
from models.store import ModelStore, open_store, validate_alias, validate_version

s3_endpoint = s3_server.s3_endpoint  # fixtures
aws_env = s3_server.aws_env


def make_package(folder: Path, version: str, payload: bytes = b"tflite-bytes") -> Path:
    """A tiny package: model.tflite, saved_model/saved_model.pb and a manifest with their checksums."""
    package = folder / f"package-{uuid.uuid4().hex[:8]}"
    (package / "saved_model" / "variables").mkdir(parents=True)
    (package / "model.tflite").write_bytes(payload)
    (package / "saved_model" / "saved_model.pb").write_bytes(b"graph:" + payload)
    (package / "saved_model" / "variables" / "variables.index").write_bytes(b"index")
    manifest = Manifest(
        version=version,
        created_at="2026-01-01T00:00:00+00:00",
        architecture="tiny",
        crop=CropSpec(),
        threshold=0.5,
        files=hash_tree(package),
    )
    (package / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return package


@dataclass
class Case:
    """A store plus raw write access to its objects, bypassing the store (to damage it on purpose)."""

    store: ModelStore
    put_raw: Callable[[str, bytes], None]


@pytest.fixture(params=["local", "s3"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    if request.param == "local":
        root = tmp_path / "store"

        def put_local(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        return Case(open_store(str(root)), put_local)
    endpoint: str = request.getfixturevalue("s3_endpoint")
    request.getfixturevalue("aws_env")
    bucket = new_bucket(endpoint)
    client = s3_client(endpoint)

    def put_s3(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"team/models/{key}", Body=data)

    return Case(open_store(f"s3://{bucket}/team/models", endpoint_url=endpoint), put_s3)


def test_publish_list_resolve_fetch_round_trip(case: Case, tmp_path: Path) -> None:
    package = make_package(tmp_path, "v1")
    assert case.store.publish(package) == "v1"
    assert case.store.list_versions() == ["v1"]
    assert case.store.resolve("latest") == "v1"

    cache = tmp_path / "cache"
    fetched = case.store.fetch("latest", cache)
    assert fetched.path == cache / "v1"
    assert fetched.manifest.version == "v1"
    assert fetched.tflite_path.read_bytes() == (package / "model.tflite").read_bytes()
    assert (fetched.saved_model_path / "variables" / "variables.index").read_bytes() == b"index"
    assert case.store.fetch("v1", cache).path == cache / "v1"
    assert [p.name for p in cache.iterdir()] == ["v1"]


def test_aliases_move_and_record_the_manifest(case: Case, tmp_path: Path) -> None:
    case.store.publish(make_package(tmp_path, "v1"), aliases=("latest", "production"))
    v2 = make_package(tmp_path, "v2", b"second model")
    case.store.publish(v2)
    assert case.store.list_versions() == ["v1", "v2"]
    assert (case.store.resolve("latest"), case.store.resolve("production")) == ("v2", "v1")

    case.store.set_alias("production", "v2")
    record = case.store.read_alias("production")
    assert record.version == "v2"
    assert record.manifest_sha256 == hashlib.sha256((v2 / MANIFEST_NAME).read_bytes()).hexdigest()
    assert datetime.fromisoformat(record.updated_at).tzinfo is not None
    assert sorted(case.store.list_aliases()) == ["latest", "production"]
    assert case.store.fetch("production", tmp_path / "cache").manifest.version == "v2"


def test_cached_copy_is_reused_and_a_damaged_one_replaced(case: Case, tmp_path: Path) -> None:
    package = make_package(tmp_path, "v1")
    case.store.publish(package)
    cache = tmp_path / "cache"
    case.store.fetch("v1", cache)
    case.put_raw("versions/v1/model.tflite", b"damaged in the store later")
    assert case.store.fetch("v1", cache).tflite_path.read_bytes() == b"tflite-bytes"  # no download

    case.put_raw("versions/v1/model.tflite", b"tflite-bytes")
    (cache / "v1" / "model.tflite").write_bytes(b"damaged in the cache")
    assert case.store.fetch("latest", cache).tflite_path.read_bytes() == b"tflite-bytes"


def test_corrupt_object_is_rejected_and_leaves_no_partial_folder(case: Case, tmp_path: Path) -> None:
    case.store.publish(make_package(tmp_path, "v1"))
    case.put_raw("versions/v1/saved_model/saved_model.pb", b"flipped bits")
    cache = tmp_path / "cache"
    with pytest.raises(ModelStoreError, match="corrupt.*checksum mismatch for saved_model/saved_model.pb"):
        case.store.fetch("latest", cache)
    assert list(cache.iterdir()) == []


def test_half_published_version_is_invisible_and_can_be_retried(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case.store.publish(make_package(tmp_path, "v1"))
    upload = case.store.backend.upload
    uploaded: list[str] = []

    def crash_before_manifest(key: str, source: Path, sha256: str) -> None:
        if key.endswith(MANIFEST_NAME):
            raise ConnectionError("training machine lost power")
        uploaded.append(key)
        upload(key, source, sha256)

    monkeypatch.setattr(case.store.backend, "upload", crash_before_manifest)
    v2 = make_package(tmp_path, "v2", b"second model")
    with pytest.raises(ConnectionError):
        case.store.publish(v2, aliases=("latest", "production"))
    assert len(uploaded) == 3  # every file but the manifest reached the store

    assert case.store.list_versions() == ["v1"]
    assert case.store.resolve("latest") == "v1"
    with pytest.raises(ModelStoreError, match="production"):
        case.store.resolve("production")
    with pytest.raises(ModelStoreError, match="not completely published"):
        case.store.fetch("v2", tmp_path / "cache")
    with pytest.raises(ModelStoreError, match="not completely published"):
        case.store.set_alias("latest", "v2")

    monkeypatch.setattr(case.store.backend, "upload", upload)
    assert case.store.publish(v2) == "v2"
    assert case.store.list_versions() == ["v1", "v2"]
    assert case.store.fetch("latest", tmp_path / "cache").manifest.version == "v2"


def test_same_version_with_different_content_is_refused(case: Case, tmp_path: Path) -> None:
    original = make_package(tmp_path, "v1")
    case.store.publish(original, aliases=())
    with pytest.raises(ModelStoreError, match="v1 already exists with different content"):
        case.store.publish(make_package(tmp_path, "v1", b"another model"))
    with pytest.raises(ModelStoreError, match="no alias 'latest'"):
        case.store.resolve("latest")

    assert case.store.publish(original, aliases="production") == "v1"  # same content: aliases only
    assert case.store.fetch("production", tmp_path / "cache").tflite_path.read_bytes() == b"tflite-bytes"


def test_publish_verifies_the_local_package_first(case: Case, tmp_path: Path) -> None:
    package = make_package(tmp_path, "v1")
    (package / "model.tflite").write_bytes(b"edited after export")
    with pytest.raises(ModelPackageError, match="checksum mismatch for model.tflite"):
        case.store.publish(package)
    with pytest.raises(ModelStoreError, match="invalid alias"):
        case.store.publish(make_package(tmp_path, "v2"), aliases=("Production",))
    assert case.store.backend.list("") == []


@pytest.mark.parametrize("name", ["", "Latest", "a/b", "../x", "a.b", "x" * 65])
def test_invalid_alias_names(name: str, tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    with pytest.raises(ModelStoreError, match="invalid alias"):
        validate_alias(name)
    with pytest.raises(ModelStoreError, match="invalid alias"):
        store.set_alias(name, "v1")
    with pytest.raises(ModelStoreError, match="invalid alias"):
        store.resolve(name)


@pytest.mark.parametrize("name", ["", "..", "a/b", "../x", "v1/../v2", ".hidden", "a..b", "v 1"])
def test_invalid_version_names(name: str, tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    with pytest.raises(ModelStoreError, match="invalid version"):
        validate_version(name)
    with pytest.raises(ModelStoreError, match="invalid version"):
        store.set_alias("latest", name)
    with pytest.raises(ModelStoreError, match="invalid version"):
        store.fetch(name, tmp_path / "cache")
    if name:  # an empty version is already refused by the manifest
        with pytest.raises(ModelStoreError, match="invalid version"):
            store.publish(make_package(tmp_path, name))


@pytest.mark.parametrize("name", ["v1", "2026.01.05-resnet+sbi", "A_b-3"])
def test_valid_version_names(name: str) -> None:
    assert validate_version(name) == name


def test_manifest_listing_a_path_outside_the_version_is_refused(case: Case, tmp_path: Path) -> None:
    package = make_package(tmp_path, "v1")
    case.store.publish(package)
    manifest = json.loads((package / MANIFEST_NAME).read_text())
    manifest["files"]["../../aliases/latest.json"] = "0" * 64
    case.put_raw(f"versions/v1/{MANIFEST_NAME}", json.dumps(manifest).encode())
    with pytest.raises(ModelStoreError, match="unsafe file name"):
        case.store.fetch("v1", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_unknown_alias_or_version(case: Case, tmp_path: Path) -> None:
    case.store.publish(make_package(tmp_path, "v1"))
    with pytest.raises(ModelStoreError, match="no alias 'staging'"):
        case.store.resolve("staging")
    with pytest.raises(ModelStoreError, match="no version v9"):
        case.store.fetch("v9", tmp_path / "cache")


@pytest.mark.usefixtures("aws_env")
def test_unreachable_endpoint_fails_quickly(tmp_path: Path) -> None:
    store = open_store("s3://models/team", endpoint_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(ModelStoreError, match="Could not connect to the endpoint URL") as info:
        store.list_versions()
    with pytest.raises(ModelStoreError, match="s3://models/team: cannot"):
        store.publish(make_package(tmp_path, "v1"))
    assert time.monotonic() - started < 5.0
    assert "\n" not in str(info.value)


@pytest.mark.usefixtures("aws_env")
def test_missing_bucket(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket-here/models", endpoint_url=s3_endpoint)
    with pytest.raises(ModelStoreError, match="bucket 'no-such-bucket-here' does not exist"):
        store.list_versions()
    with pytest.raises(ModelStoreError, match="bucket 'no-such-bucket-here' does not exist"):
        store.resolve("latest")


def test_missing_credentials(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("FAKEWEB_S3_ENDPOINT_URL", s3_endpoint)
    with pytest.raises(ModelStoreError, match="no AWS credentials"):
        open_store("s3://models/team").list_versions()


def test_missing_local_folder_is_an_empty_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "new"))
    assert store.list_versions() == []
    with pytest.raises(ModelStoreError, match="new: no alias 'latest'"):
        store.resolve("latest")
    assert store.publish(make_package(tmp_path, "v1")) == "v1"
    assert store.list_versions() == ["v1"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/srv/models", "/srv/models"),
        ("file:///srv/my%20models", "/srv/my models"),
        ("s3://bucket", "s3://bucket"),
        ("s3://bucket/team/models/", "s3://bucket/team/models"),
    ],
)
def test_open_store_urls(url: str, expected: str) -> None:
    assert open_store(url, endpoint_url="http://127.0.0.1:9").url == expected


@pytest.mark.parametrize("url", ["ftp://host/models", "s3:///models", "file://otherhost/models"])
def test_open_store_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(ModelStoreError, match="store URL"):
        open_store(url)
