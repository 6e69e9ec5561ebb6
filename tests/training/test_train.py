"""Training: evaluation per tag, augmentation, batches with synthetic fakes, and tiny end-to-end runs
of `main` (labelled real and fake images; real images only, with synthetic fakes)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from face_photos import write_rgb
from skimage import data as skdata

from models.classifier import load_classifier
from models.landmarks import NUM_LANDMARKS
from models.package import ModelPackage
from training import assess, pipeline, train
from training.data import CropSet


def test_evaluate_reports_per_tag() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.5, 0.9, 0.3, 0.6])
    metrics = assess.evaluate(labels, probabilities, 0.55, ["real", "real", "easy", "hard", "hard"])
    assert metrics["n_real"] == 2 and metrics["n_fake"] == 3
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1.0) / 2)
    per_tag = metrics["per_tag"]
    assert set(per_tag) == {"real", "easy", "hard"}, "one entry per tag present; none for mid"
    easy = per_tag["easy"]
    assert (easy["versus"], easy["n_fake"], easy["n_real"]) == ("all real", 1, 2)
    assert easy["auc"] == 1.0 and easy["true_positive_rate"] == 1.0
    assert per_tag["hard"]["auc"] == pytest.approx(0.75)
    assert per_tag["real"]["versus"] == "all fake" and per_tag["real"]["n"] == 5


def test_augment_is_seeded_and_in_range() -> None:
    image = tf.constant(skdata.astronaut()[:64, :64])
    seed = tf.constant([3, 4], dtype=tf.int64)
    first, label = pipeline.augment(image, tf.constant(1.0), seed)
    second, _ = pipeline.augment(image, tf.constant(1.0), seed)
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert first.dtype == tf.float32 and first.shape == (64, 64, 3) and float(label) == 1.0
    assert 0.0 <= float(tf.reduce_min(first)) and float(tf.reduce_max(first)) <= 255.0


def write_layout(root: Path, people: int) -> None:
    """real/pN/ holds astronaut face photos; fake/pN/ the same photos with a recoloured, blurred mouth."""
    base = skdata.astronaut()
    for person in range(people):
        photo = cv2.resize(base[10 + 4 * person : 270 + 4 * person, 100:360], (96, 96))
        fake = photo.copy()
        fake[55:75, 30:66] = cv2.GaussianBlur(255 - fake[55:75, 30:66], (5, 5), 0)
        for label, image in (("real", photo), ("fake", fake)):
            write_rgb(root / label / f"p{person}" / "0.jpg", image)


@pytest.mark.slow
def test_main_trains_and_exports_a_loadable_package(tmp_path: Path) -> None:
    write_layout(tmp_path / "data", people=8)
    out, log = tmp_path / "models" / "pkg", tmp_path / "models" / "train_log.jsonl"
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--input-size", "32", "--epochs", "2"]
    argv += ["--batch-size", "8", "--val-fraction", "0.25", "--test-fraction", "0.25", "--seed", "1"]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    assert train.main(argv) == 0

    package = ModelPackage.load(out)
    manifest = package.manifest
    assert manifest.crop.size == 32 and manifest.architecture == "mobilenet_v3_small"
    assert manifest.metrics["test"]["n_real"] == 2 and manifest.metrics["test"]["n_fake"] == 2
    assert manifest.provenance["data"]["splits"]["train"] == {"real": 4, "fake": 4}
    assert manifest.provenance["command"].startswith("python -m training.train --data")
    assert "train_log.jsonl" not in manifest.files
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["epoch"] for e in entries] == [1, 2] and "val_auc" in entries[0]
    assert list((tmp_path / "models" / "pkg.tensorboard").rglob("events.out.tfevents.*")), "TensorBoard logs"
    crops = np.zeros((3, 32, 32, 3), np.uint8)
    assert load_classifier(package, device="cpu").predict(crops).shape == (3,)

    assert train.main(argv) == 1  # the package exists and --overwrite was not given


def test_batches_pair_synthetic_fakes_with_their_reals() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    crops = CropSet(images, np.zeros(10, np.int32), np.ones(10, bool))
    points = rng.uniform(8, 24, (NUM_LANDMARKS, 2)).astype(np.float32)
    pool = pipeline.RealPool(images[:3], np.stack([points] * 3), np.arange(3))
    batches = pipeline.training_batches(
        crops, batch_size=8, seed=0, synthetic_fraction=0.25, pool=pool, degrade_probability=0.5
    )
    # 4 labelled crops and 2 (real, fake) pairs per full batch; 10 labelled crops make 2 full batches + 2
    assert (batches.images, batches.steps, batches.synthetic_per_batch) == (18, 3, 2)
    for _ in range(2):  # every epoch the same shape, different fakes
        labels = [batch[1].numpy().tolist() for batch in batches.dataset]
        assert [sum(batch) for batch in labels] == [2.0, 2.0, 0.0] and sum(map(len, labels)) == 18
    plain = pipeline.training_batches(crops, batch_size=4, seed=0)
    assert (plain.images, plain.steps, plain.synthetic_per_batch) == (10, 3, 0)
    with pytest.raises(ValueError, match="0.5"):
        pipeline.training_batches(crops, batch_size=4, seed=0, synthetic_fraction=0.5, pool=pool)
    with pytest.raises(ValueError, match="degradation"):
        pipeline.training_batches(crops, batch_size=4, seed=0, degrade_probability=1.5)


def write_reals(root: Path, people: int) -> None:
    """real/pN/0.jpg: the astronaut's face, shifted, scaled and brightened a little per person; no fake/."""
    base = skdata.astronaut()
    for person in range(people):
        top, side = 10 + 3 * person, 250 + 4 * person
        photo = cv2.resize(base[top : top + side, 100 : 100 + side], (112, 112))
        photo = np.clip(photo.astype(np.int16) + 6 * person - 20, 0, 255).astype(np.uint8)
        write_rgb(root / "real" / f"p{person}" / "0.jpg", photo)


@pytest.mark.slow
def test_main_trains_on_real_faces_only_with_synthetic_fakes(tmp_path: Path) -> None:
    write_reals(tmp_path / "data", people=8)
    out = tmp_path / "models" / "pkg"
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--input-size", "32", "--epochs", "1"]
    argv += ["--batch-size", "8", "--val-fraction", "0.25", "--test-fraction", "0.25", "--seed", "1"]
    argv += ["--synthetic", "0.25", "--synthetic-kinds", "self_blend", "--cache-dir", str(tmp_path / "cache")]
    assert train.main(argv) == 0

    manifest = ModelPackage.load(out).manifest
    assert manifest.provenance["data"]["splits"] == {
        "train": {"real": 4, "fake": 0},
        "val": {"real": 2, "fake": 2},
        "test": {"real": 2, "fake": 2},
    }
    blend = manifest.provenance["training"]["synthetic"]
    assert blend["per_batch"] == 2 and blend["training_reals_with_mesh"] == 4
    assert manifest.provenance["data"]["images_per_epoch"] == 8
    assert manifest.metrics["test"]["n_fake"] == 2 and manifest.calibration is not None
    crops = np.zeros((2, 32, 32, 3), np.uint8)
    assert load_classifier(ModelPackage.load(out), device="cpu").predict(crops).shape == (2,)
    image_tags = set()
    for events in (tmp_path / "models" / "pkg.tensorboard" / "images").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            image_tags |= {value.tag for value in event.summary.value}
    assert image_tags == {"synthetic/self_blend", "validation_scores"}

    argv[argv.index("0.25")] = "0"  # without synthetic fakes, real faces alone cannot train
    assert train.main([*argv, "--overwrite"]) == 1


def test_bad_arguments_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_layout(tmp_path / "data", people=2)
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pkg"), "--margin", "5"]
    assert train.main(argv) == 1
    assert "margin" in capsys.readouterr().err
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pkg"), "--val-fraction", "0.1"]
    assert train.main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 1
    assert "split" in capsys.readouterr().err
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pkg"), "--synthetic", "0.5"]
    assert train.main(argv) == 1
    assert "--synthetic" in capsys.readouterr().err
