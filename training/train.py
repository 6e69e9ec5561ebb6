"""Train a face classifier from labelled images and export it as a model package (`fakeweb train`).

Faces are cropped once with the serving detector and crop definition and split by group into train,
validation and test. Training uses light augmentation and keeps the epoch with the best validation AUC; the
threshold is chosen on validation, and the model is evaluated once on the held-out test split before export.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from models.detector import DetectorConfig, FaceDetector
from models.errors import FakewebError
from models.preprocess import CropSpec
from training.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, build_model
from training.data import (
    DIFFICULTIES,
    LABEL_NAMES,
    CropSet,
    Sample,
    load_crops,
    read_ciplab,
    read_real_fake_folders,
    split_by_group,
    subsample,
)
from training.export import export_package
from training.metrics import choose_threshold, roc_auc, summarize

READERS = {"ciplab": read_ciplab, "folders": read_real_fake_folders}
CHECK_BATCH_SIZE = 16
EVAL_BATCH_SIZE = 64
SHIFT_FRACTION = 0.06
BRIGHTNESS_DELTA = 0.08 * 255.0
CONTRAST_RANGE = (0.85, 1.15)


class TrainingError(FakewebError):
    """Training options or data that cannot produce a model."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options, shared by `fakeweb train` and `python -m training.train`."""
    parser.add_argument("--data", type=Path, required=True, help="data-set root holding real/ and fake/")
    parser.add_argument("--format", choices=sorted(READERS), default="folders", help="data-set layout")
    parser.add_argument("--out", type=Path, required=True, help="model package folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--input-size", type=int, default=128, help="crop side in pixels")
    parser.add_argument(
        "--margin", type=float, default=0.25, help="crop margin as a fraction of the face box"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (1-epoch warm-up, cosine)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW decoupled weight decay")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-images", type=int, default=None, help="use at most this many images (quick runs)"
    )
    parser.add_argument(
        "--log", type=Path, default=None, help="JSON-lines epoch log (default <out>/../train_log.jsonl)"
    )


def evaluate(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, difficulties: list[str | None]
) -> dict[str, Any]:
    """`training.metrics.summarize` at `threshold`, plus AUC and detection rate per fake difficulty vs all reals."""
    result = summarize(labels, probabilities, threshold)
    fake = np.asarray(labels).astype(bool)
    tags = np.array([d or "" for d in difficulties])
    per_difficulty = {}
    for tag in DIFFICULTIES:
        tagged = fake & (tags == tag)
        if tagged.any():
            chosen = ~fake | tagged
            per_difficulty[tag] = {
                "n_fake": int(tagged.sum()),
                "auc": roc_auc(fake[chosen], probabilities[chosen]),
                "true_positive_rate": float(np.mean(probabilities[tagged] >= threshold)),
            }
    if per_difficulty:
        result["per_difficulty"] = per_difficulty
    return result


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Flip, shift up to 6% (detector jitter, black fill as in crop_face), small brightness/contrast change.

    Stateless, so a seed reproduces them.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    size = int(image.shape[0])
    pad = max(1, round(size * SHIFT_FRACTION))
    image = tf.cast(image, tf.float32)
    image = tf.image.pad_to_bounding_box(image, pad, pad, size + 2 * pad, size + 2 * pad)
    image = tf.image.stateless_random_crop(image, (size, size, 3), seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS_DELTA, seeds[2])
    image = tf.image.stateless_random_contrast(image, *CONTRAST_RANGE, seeds[3])
    return tf.clip_by_value(image, 0.0, 255.0), label


def training_dataset(crops: CropSet, batch_size: int, seed: int) -> tf.data.Dataset:
    images = tf.data.Dataset.from_tensor_slices((crops.images, crops.labels.astype(np.float32)))
    shuffled = images.shuffle(len(crops.images), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return (
        tf.data.Dataset.zip((shuffled, seeds))
        .map(lambda pair, s: augment(pair[0], pair[1], s), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(crops: CropSet) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices((crops.images, crops.labels.astype(np.float32)))
        .map(lambda image, label: (tf.cast(image, tf.float32), label))
        .batch(EVAL_BATCH_SIZE)
    )


class BestEpoch(tf.keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation AUC; appends each epoch to a JSON-lines log."""

    def __init__(self, log_path: Path, run_info: dict[str, Any], train_images: int) -> None:
        super().__init__()
        self.log_path = log_path
        self.run_info = run_info
        self.train_images = train_images
        self.best_auc = -1.0
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] = []
        self.train_seconds = 0.0
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._started
        self.train_seconds += seconds
        values = {key: float(value) for key, value in (logs or {}).items()}
        entry = {**self.run_info, "epoch": epoch + 1, "seconds": round(seconds, 2), **values}
        entry["images_per_second"] = round(self.train_images / seconds, 1)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        val_auc = values.get("val_auc", float("nan"))
        if val_auc > self.best_auc:
            self.best_auc, self.best_epoch = val_auc, epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]


def _label_counts(samples: list[Sample]) -> dict[str, int]:
    counts = Counter(LABEL_NAMES[s.label] for s in samples)
    return {name: counts.get(name, 0) for name in LABEL_NAMES}


def _predict(model: tf.keras.Model, crops: CropSet) -> np.ndarray:
    return np.asarray(model.predict(eval_dataset(crops), verbose=0), dtype=np.float64).reshape(-1)


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """Train, evaluate and export as described by parsed `args`; `command` is recorded in the provenance."""
    if args.epochs < 1 or args.batch_size < 1 or args.input_size < 32:
        raise TrainingError("--epochs and --batch-size must be >= 1 and --input-size >= 32")
    tf.keras.utils.set_random_seed(args.seed)
    try:
        spec = CropSpec(size=args.input_size, margin=args.margin)
        samples = READERS[args.format](args.data)
        if args.max_images is not None:
            samples = subsample(samples, args.max_images, args.seed)
        split = split_by_group(samples, args.val_fraction, args.test_fraction, args.seed)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    parts = {"train": split.train, "val": split.val, "test": split.test}
    for name, part in parts.items():
        counts = _label_counts(part)
        if min(counts.values()) == 0:
            raise TrainingError(
                f"the {name} split has {counts}; it needs both real and fake images (use more data)"
            )
    detector_config = DetectorConfig()
    with FaceDetector(detector_config) as detector:
        crops = {name: load_crops(part, spec, detector, progress=True) for name, part in parts.items()}
    print(
        "split: "
        + ", ".join(
            f"{name} {_label_counts(part)} (no face: {crops[name].no_face})" for name, part in parts.items()
        )
    )

    model = build_model(args.architecture, args.input_size)
    steps_per_epoch = -(-len(split.train) // args.batch_size)
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, (args.epochs - 1) * steps_per_epoch),
        warmup_target=args.lr,
        warmup_steps=steps_per_epoch,
    )
    model.compile(
        optimizer=tf.keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.AUC(name="auc")],
    )
    log_path = args.log or args.out.resolve().parent / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run_info = {"run": datetime.now(timezone.utc).isoformat(timespec="seconds"), "out": str(args.out)}
    best = BestEpoch(log_path, run_info, len(split.train))
    model.fit(
        training_dataset(crops["train"], args.batch_size, args.seed),
        validation_data=eval_dataset(crops["val"]),
        epochs=args.epochs,
        callbacks=[best],
        verbose=2,
    )
    model.set_weights(best.best_weights)

    val_probabilities = _predict(model, crops["val"])
    threshold = choose_threshold(crops["val"].labels, val_probabilities)
    val_metrics = evaluate(
        crops["val"].labels, val_probabilities, threshold, [s.difficulty for s in split.val]
    )
    test_probabilities = _predict(model, crops["test"])
    test_metrics = evaluate(
        crops["test"].labels, test_probabilities, threshold, [s.difficulty for s in split.test]
    )
    images_per_second = len(split.train) * args.epochs / best.train_seconds
    metrics = {
        "test": test_metrics,
        "val": val_metrics,
        "threshold_rule": "max Youden J (balanced accuracy) on the validation split",
        "best_epoch": best.best_epoch,
        "epochs": args.epochs,
    }
    provenance = {
        "command": command or shlex.join(sys.argv),
        "arguments": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "data": {
            "root": str(args.data),
            "format": args.format,
            "splits": {name: _label_counts(part) for name, part in parts.items()},
            "no_face": {name: crop_set.no_face for name, crop_set in crops.items()},
            "split_rule": "whole groups, stratified by labels and difficulty, seeded",
        },
        "detector": {"range": detector_config.range, "min_confidence": detector_config.min_confidence},
        "training": {
            "optimizer": "AdamW",
            "augmentation": "horizontal flip, shift up to 6%, brightness +-8%, contrast 0.85-1.15",
            "train_seconds": round(best.train_seconds, 1),
            "images_per_second": round(images_per_second, 1),
        },
    }
    package = export_package(
        model,
        args.out,
        spec,
        threshold,
        args.architecture,
        metrics,
        provenance,
        crops["test"].images[:CHECK_BATCH_SIZE],
        overwrite=args.overwrite,
    )
    _print_summary(
        package.path, package.manifest.version, metrics, threshold, best.train_seconds, images_per_second
    )
    return 0


def _print_summary(
    path: Path, version: str, metrics: dict[str, Any], threshold: float, seconds: float, rate: float
) -> None:
    test = metrics["test"]
    best_epoch, epochs = metrics["best_epoch"], metrics["epochs"]
    lines = [
        f"package {path} (version {version})",
        f"training {seconds:.0f} s, {rate:.0f} images/s, best epoch {best_epoch}/{epochs}, "
        f"val AUC {metrics['val']['auc']:.3f}, threshold {threshold:.3f}",
        f"test ({test['n_real']} real, {test['n_fake']} fake): AUC {test['auc']:.3f}, "
        f"accuracy {test['accuracy']:.3f}, balanced accuracy {test['balanced_accuracy']:.3f}, "
        f"log loss {test['log_loss']:.3f}",
    ]
    lines += [
        f"  {tag}: AUC {values['auc']:.3f} vs reals, "
        f"detected {values['true_positive_rate']:.3f} of {values['n_fake']} fakes"
        for tag, values in test.get("per_difficulty", {}).items()
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """`python -m training.train --data DIR --out DIR ...`; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="fakeweb train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "training.train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args, command)
    except (FakewebError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
