"""Operators' reviews back into training: events reviewed in a real event store, exported with
`fakeweb events export` to a folder data set, mixed into a tiny `fakeweb train` run with a weight; the manifest
records how many reviewed crops went in and the held-out part of them is reported on its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import s3_server
from s3_server import new_bucket, s3_client
from skimage import data as skdata
from test_train import write_layout

from models.package import ModelPackage
from stream.cli import main as fakeweb
from stream.outputs.event_store import Event, EventStore
from training import train
from training.data import read_reviewed

s3_endpoint = s3_server.s3_endpoint  # fixtures
aws_env = s3_server.aws_env


def face(person: int, manipulated: bool) -> np.ndarray:
    photo = cv2.resize(skdata.astronaut()[12 + 3 * person : 272 + 3 * person, 100:360], (96, 96))
    if manipulated:
        photo[55:75, 30:66] = cv2.GaussianBlur(255 - photo[55:75, 30:66], (5, 5), 0)
    return photo


def reviewed_store(folder: Path) -> None:
    """12 events, one crop each: 6 false alarms (reviewed real), 6 confirmed (reviewed correct), 1 unreviewed."""
    store = EventStore(folder)
    store.start()
    now = time.time()
    for n in range(13):
        manipulated = n % 2 == 1
        event = Event(
            f"ev{n:02d}", "cam-1", n, "manipulated", now + n, "v1", status="closed", ended_at=now + n + 1
        )
        store.submit(
            Event.from_json({**event.to_json(), "crops": ["crop-0.jpg"]}), crops=[face(n, manipulated)]
        )
    store.close()
    reviews = EventStore(folder)
    reviews.start()
    for n in range(12):
        reviews.review(f"ev{n:02d}", "correct" if n % 2 == 1 else "real", note="checked")
    reviews.close()


@pytest.mark.slow
def test_reviewed_events_are_exported_and_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reviewed_store(tmp_path / "service" / "events")
    export = tmp_path / "reviewed"
    assert fakeweb(["events", "export", "--data-dir", str(tmp_path / "service"), "--out", str(export)]) == 0
    assert "6 real and 6 fake crops from 12 reviewed events" in capsys.readouterr().out
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["counts"] == {"real": 6, "fake": 6} and len(manifest["samples"]) == 12
    assert {s["event"] for s in manifest["samples"]} == {f"ev{n:02d}" for n in range(12)}  # ev12: unreviewed
    samples = read_reviewed(export)
    assert len({sample.group for sample in samples}) == 12 and {sample.difficulty for sample in samples} == {
        "reviewed"
    }

    write_layout(tmp_path / "data", people=8)
    out = tmp_path / "models" / "pkg"
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--input-size", "32", "--epochs", "1"]
    argv += ["--batch-size", "8", "--val-fraction", "0.25", "--test-fraction", "0.25", "--seed", "1"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--reviewed", str(export), "--reviewed-weight", "3"]
    assert train.main(argv) == 0
    provenance = ModelPackage.load(out).manifest.provenance["data"]
    assert sum(provenance["reviewed_samples"].values()) == 12 and provenance["reviewed_weight"] == 3
    assert provenance["reviewed_samples"]["test"] >= 1
    test_metrics = json.dumps(ModelPackage.load(out).manifest.metrics["test"])
    assert "reviewed" in test_metrics  # its held-out part is reported on its own


def test_the_export_goes_to_an_s3_prefix_too(
    tmp_path: Path, s3_endpoint: str, aws_env: dict[str, str]
) -> None:
    reviewed_store(tmp_path / "service" / "events")
    bucket = new_bucket(s3_endpoint)
    argv = ["events", "export", "--data-dir", str(tmp_path / "service"), "--out", f"s3://{bucket}/reviewed"]
    assert fakeweb([*argv, "--s3-endpoint-url", s3_endpoint]) == 0
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="reviewed/")
    keys = {item["Key"] for item in listed["Contents"]}
    assert "reviewed/manifest.json" in keys and len([k for k in keys if k.endswith(".jpg")]) == 12
    assert {key.split("/")[1] for key in keys if key.endswith(".jpg")} == {"real", "fake"}
