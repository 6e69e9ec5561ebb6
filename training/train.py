"""Train a face classifier from labelled images or videos and export it as a model package (`fakeweb train`).

Faces are cropped once with the serving detector and crop definition (and cached, with FaceMesh landmarks of the
real crops), and split by group into train, validation and test. Training uses light augmentation and, with
`--self-blend P`, a share P of every batch made of self-blended fakes of the training reals (each with the real
it was made from), so real faces alone can train a detector. It keeps the epoch with the best validation AUC; the threshold is chosen on validation,
and the model is evaluated once on the held-out test split before export.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from models.detector import DetectorConfig
from models.devices import DEVICE_CHOICES
from models.errors import FakewebError
from models.preprocess import CropSpec
from training.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, build_model
from training.checkpoints import (
    Checkpointer,
    CheckpointMirror,
    WeightsSnapshot,
    checkpoint_mirror_url,
    fit_from_step,
)
from training.crop_cache import cached_crops, default_cache_dir
from training.data import (
    DIFFICULTIES,
    FAKE,
    FRAMES_PER_VIDEO,
    LABEL_NAMES,
    REAL,
    CropSet,
    Sample,
    read_ciplab,
    read_dfdc,
    read_ffpp,
    read_real_fake_folders,
    split_by_group,
    subsample,
)
from training.export import export_package
from training.metrics import choose_threshold, roc_auc, summarize
from training.pipeline import (
    AUGMENTATION,
    MAX_BLEND_FRACTION,
    BlendPool,
    TrainingBatches,
    blend_pool,
    eval_dataset,
    training_batches,
)
from training.publish import publish_package
from training.strategy import Placement, check_static_batches, float32_copy, make_strategy

FORMATS = ("ciplab", "dfdc", "ffpp", "folders")
VIDEO_FORMATS = frozenset({"dfdc", "ffpp"})
CHECK_BATCH_SIZE = 16
SELF_BLENDED_TAG = "self-blended"
# Fixed self-blended fakes of validation and test reals come from these seeds (plus --seed).
VAL_BLEND_SEED, TEST_BLEND_SEED = 1_000_003, 2_000_003


class TrainingError(FakewebError):
    """Training options or data that cannot produce a model."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options, shared by `fakeweb train` and `python -m training.train`."""
    parser.add_argument("--data", type=Path, required=True, help="data-set root (see --format)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="folders",
        help="data-set layout: folders (real/ and fake/ images; fake/ optional with --self-blend), ciplab, "
        "dfdc (videos with metadata.json), ffpp (FaceForensics++ c23 videos)",
    )
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
        "--self-blend",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of every training batch made of self-blended fakes of training reals, each with the "
        "real it was made from (so 2P of the batch), in [0, 0.5)",
    )
    parser.add_argument(
        "--frames-per-video", type=int, default=FRAMES_PER_VIDEO, help="frames sampled per video (dfdc, ffpp)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"face crop cache (default {default_cache_dir()})"
    )
    parser.add_argument(
        "--log", type=Path, default=None, help="JSON-lines epoch log (default <out>/../train_log.jsonl)"
    )
    parser.add_argument(
        "--tensorboard", type=Path, default=None, help="TensorBoard log folder (default <out>.tensorboard)"
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="hpu: one process per Gaudi card (mpirun)"
    )
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default <out>.checkpoints")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="global steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint, if any")
    parser.add_argument(
        "--store", default=None, help="publish here (folder, file:// or s3://); checkpoints mirrored under it"
    )
    parser.add_argument("--alias", action="append", default=None, help="alias of the published version")
    parser.add_argument(
        "--run-name", default=None, help="names the checkpoint mirror (default: --out's name)"
    )


def _tag_order(tag: str) -> tuple[int, str]:
    return (DIFFICULTIES.index(tag), "") if tag in DIFFICULTIES else (len(DIFFICULTIES), tag)


def evaluate(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, difficulties: list[str | None]
) -> dict[str, Any]:
    """`training.metrics.summarize` at `threshold`, plus AUC and detection rate per tag of the fakes (CIPLAB
    difficulty, FF++ method, "self-blended") against all reals."""
    result = summarize(labels, probabilities, threshold)
    fake = np.asarray(labels).astype(bool)
    tags = np.array([d or "" for d in difficulties])
    per_difficulty = {}
    for tag in sorted(set(tags[fake]) - {""}, key=_tag_order):
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


class BestEpoch(tf.keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation AUC; appends each epoch to a JSON-lines log."""

    def __init__(
        self, log_path: Path | None, run_info: dict[str, Any], train_images: int, best: WeightsSnapshot
    ) -> None:
        """`train_images` is the number of images in one epoch (for images per second)."""
        super().__init__()
        self.log_path = log_path
        self.run_info = run_info
        self.train_images = train_images
        self.best = best
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
        if self.log_path is not None:
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
        val_auc = values.get("val_auc", float("nan"))
        if val_auc > float(self.best.score.numpy()):
            self.best.take(self.model, val_auc, epoch + 1)


def _label_counts(labels: np.ndarray | list[int]) -> dict[str, int]:
    counts = Counter(LABEL_NAMES[int(label)] for label in labels)
    return {name: counts.get(name, 0) for name in LABEL_NAMES}


@dataclass(frozen=True)
class Part:
    """One split's crops (with any fixed self-blended fakes appended) and each crop's difficulty tag."""

    crops: CropSet
    tags: list[str | None]


@dataclass(frozen=True)
class PreparedData:
    """Everything training needs from the data: the three parts and the pool of reals to self-blend."""

    parts: dict[str, Part]
    pool: BlendPool
    has_fakes: bool
    no_face: dict[str, int]


def read_samples(args: argparse.Namespace) -> list[Sample]:
    """The samples of `--data` in `--format` (fake/ optional for folders with --self-blend)."""
    if args.format in VIDEO_FORMATS:
        reader = read_dfdc if args.format == "dfdc" else read_ffpp
        return reader(args.data, frames_per_video=args.frames_per_video)
    if args.format == "folders":
        return read_real_fake_folders(args.data, require_fakes=args.self_blend == 0)
    return read_ciplab(args.data)


def _with_fixed_fakes(crops: CropSet, tags: list[str | None], seed: int) -> Part:
    """Append one self-blended fake (seeded by `seed`) of each real crop with landmarks."""
    fakes = blend_pool(crops).blend_fixed(seed)
    combined = CropSet(
        np.concatenate([crops.images, fakes]),
        np.concatenate([crops.labels, np.full(len(fakes), FAKE, dtype=np.int32)]),
        np.concatenate([crops.faces, np.ones(len(fakes), dtype=bool)]),
    )
    return Part(combined, tags + [SELF_BLENDED_TAG] * len(fakes))


def prepare_data(args: argparse.Namespace, spec: CropSpec, detector: DetectorConfig) -> PreparedData:
    """Read, subsample and split the samples, crop them (through the cache) and check every part can be scored.

    Without fakes in the data, validation and test get one fixed self-blended fake per real.
    """
    try:
        samples = read_samples(args)
        if args.max_images is not None:
            samples = subsample(samples, args.max_images, args.seed)
        split = split_by_group(samples, args.val_fraction, args.test_fraction, args.seed)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    has_fakes = any(s.label == FAKE for s in samples)
    if not has_fakes and args.self_blend == 0:
        raise TrainingError("the data holds no fake images; add some or train with --self-blend")
    ordered = split.train + split.val + split.test
    cache_dir = args.cache_dir or default_cache_dir()
    crops = cached_crops(ordered, args.data, spec, detector, cache_dir, progress=True)
    parts: dict[str, Part] = {}
    start = 0
    for name, part_samples in (("train", split.train), ("val", split.val), ("test", split.test)):
        part_crops = crops.select(range(start, start + len(part_samples)))
        start += len(part_samples)
        part = Part(part_crops, [s.difficulty for s in part_samples])
        if not has_fakes and name != "train":
            part = _with_fixed_fakes(
                part.crops, part.tags, args.seed + (VAL_BLEND_SEED if name == "val" else TEST_BLEND_SEED)
            )
        counts = _label_counts(part.crops.labels)
        if counts["real"] == 0 or (counts["fake"] == 0 and (name != "train" or args.self_blend == 0)):
            raise TrainingError(
                f"the {name} split has {counts}; it needs both real and fake images (use more data)"
            )
        parts[name] = part
    pool = blend_pool(parts["train"].crops)
    if args.self_blend > 0 and not len(pool.images):
        raise TrainingError("--self-blend needs training reals whose face mesh was found; none was")
    no_face = {name: part.crops.no_face for name, part in parts.items()}
    return PreparedData(parts, pool, has_fakes, no_face)


def compiled_model(args: argparse.Namespace, steps_per_epoch: int, placement: Placement) -> tf.keras.Model:
    """The classifier, compiled with AdamW (1-epoch warm-up, cosine decay), binary cross-entropy and AUC."""
    model = placement.prepare_model(build_model(args.architecture, args.input_size))
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
    return model


def _predict(model: tf.keras.Model, crops: CropSet) -> np.ndarray:
    return np.asarray(model.predict(eval_dataset(crops), verbose=0), dtype=np.float64).reshape(-1)


def assess(model: tf.keras.Model, data: PreparedData, seed: int) -> tuple[float, dict[str, Any]]:
    """The threshold chosen on validation, and validation and test metrics at it.

    With fakes in the data and self-blending on, `test_self_blended` scores the test reals against one fixed
    self-blended fake of each: how well the model learnt the blend itself.
    """
    val, test = data.parts["val"], data.parts["test"]
    val_probabilities = _predict(model, val.crops)
    threshold = choose_threshold(val.crops.labels, val_probabilities)
    metrics: dict[str, Any] = {
        "test": evaluate(test.crops.labels, _predict(model, test.crops), threshold, test.tags),
        "val": evaluate(val.crops.labels, val_probabilities, threshold, val.tags),
    }
    if data.has_fakes and len(data.pool.images):
        reals = test.crops.select(np.flatnonzero(test.crops.labels == REAL))
        blended = _with_fixed_fakes(reals, [None] * len(reals.labels), seed + TEST_BLEND_SEED).crops
        metrics["test_self_blended"] = summarize(blended.labels, _predict(model, blended), threshold)
    return threshold, metrics


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """Train, evaluate and export as described by parsed `args`; `command` is recorded in the provenance."""
    if args.epochs < 1 or args.batch_size < 1 or args.input_size < 32 or args.frames_per_video < 1:
        raise TrainingError(
            "--epochs, --batch-size and --frames-per-video must be >= 1 and --input-size >= 32"
        )
    if not 0.0 <= args.self_blend < MAX_BLEND_FRACTION:
        raise TrainingError(f"--self-blend must be in [0, {MAX_BLEND_FRACTION}), got {args.self_blend}")
    placement = make_strategy(args.device)  # before any other TensorFlow work (multi-worker HPU)
    tf.keras.utils.set_random_seed(args.seed)
    try:
        spec = CropSpec(size=args.input_size, margin=args.margin)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    detector_config = DetectorConfig()
    data = prepare_data(args, spec, detector_config)
    print(
        "split: "
        + ", ".join(
            f"{name} {_label_counts(part.crops.labels)} (no face: {data.no_face[name]})"
            for name, part in data.parts.items()
        )
        + f"; {len(data.pool.images)} training reals can be self-blended"
    )
    global_batch = placement.global_batch_size(args.batch_size)
    chief = placement.worker.is_chief

    def epoch_data(epoch: int) -> tf.data.Dataset:
        seed = args.seed + 7919 * epoch  # every epoch its own order, the same in every run
        batches = training_batches(data.parts["train"].crops, global_batch, seed, args.self_blend, data.pool)
        return batches.dataset.unbatch().batch(global_batch, drop_remainder=True)

    batches = training_batches(data.parts["train"].crops, global_batch, args.seed, args.self_blend, data.pool)
    steps_per_epoch = placement.steps_per_epoch(batches.images, args.batch_size)
    check_static_batches(epoch_data(0), global_batch)
    checkpoint_dir = args.checkpoint_dir or args.out.with_name(args.out.name + ".checkpoints")
    mirror = None
    if args.store:
        mirror = CheckpointMirror(checkpoint_mirror_url(args.store, args.run_name or args.out.name))
    with placement.strategy.scope():
        model = compiled_model(args, steps_per_epoch, placement)
        snapshot = WeightsSnapshot(model)
        checkpointer = Checkpointer(
            checkpoint_dir,
            model,
            steps_per_epoch=steps_per_epoch,
            global_batch=global_batch,
            mirror=mirror,
            worker=placement.worker,
            extra={"best": snapshot},
        )
    start = checkpointer.start(args.resume)
    log_path = args.log or args.out.resolve().parent / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run_info = {"run": datetime.now(timezone.utc).isoformat(timespec="seconds"), "out": str(args.out)}
    best = BestEpoch(log_path if chief else None, run_info, batches.images, snapshot)
    callbacks: list[tf.keras.callbacks.Callback] = [checkpointer.callback(args.checkpoint_every), best]
    if chief:
        tensorboard_dir = args.tensorboard or args.out.with_name(args.out.name + ".tensorboard")
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), update_freq="epoch"))
    fit_from_step(
        model,
        epoch_data,
        start_step=start,
        steps_per_epoch=steps_per_epoch,
        epochs=args.epochs,
        validation_data=eval_dataset(data.parts["val"].crops),
        callbacks=callbacks,
        verbose=1 if chief else 0,
    )
    if not chief:
        return 0
    model = float32_copy(model)
    model.set_weights(snapshot.weights())

    threshold, metrics = assess(model, data, args.seed)
    trained_steps = args.epochs * steps_per_epoch - start
    images_per_second = trained_steps * global_batch / max(best.train_seconds, 1e-9)
    metrics |= {
        "threshold_rule": "max Youden J (balanced accuracy) on the validation split",
        "best_epoch": int(snapshot.epoch.numpy()),
        "epochs": args.epochs,
    }
    provenance = {
        "command": command or shlex.join(sys.argv),
        "arguments": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "data": _data_provenance(args, data, batches),
        "detector": {"range": detector_config.range, "min_confidence": detector_config.min_confidence},
        "training": {
            "optimizer": "AdamW",
            "augmentation": AUGMENTATION,
            "self_blend": _self_blend_provenance(args, data, batches),
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
        data.parts["test"].crops.images[:CHECK_BATCH_SIZE],
        overwrite=args.overwrite or args.resume,
    )
    _print_summary(
        package.path, package.manifest.version, metrics, threshold, best.train_seconds, images_per_second
    )
    if args.store:
        kept = f"checkpoints are in {checkpoint_dir}" + (f" and {mirror.url}" if mirror else "")
        published = publish_package(
            package.path, args.store, tuple(args.alias or ("latest",)), keep_note=kept
        )
        print(f"published {published.version} to {published.url}")
    return 0


def _data_provenance(
    args: argparse.Namespace, data: PreparedData, batches: TrainingBatches
) -> dict[str, Any]:
    result = {
        "root": str(args.data),
        "format": args.format,
        "splits": {name: _label_counts(part.crops.labels) for name, part in data.parts.items()},
        "no_face": data.no_face,
        "split_rule": "whole groups, stratified by labels and difficulty, seeded",
        "images_per_epoch": batches.images,
    }
    if args.format in VIDEO_FORMATS:
        result["frames_per_video"] = args.frames_per_video
    if not data.has_fakes:
        result["eval_fakes"] = "one fixed self-blended fake per validation and test real with a face mesh"
    return result


def _self_blend_provenance(
    args: argparse.Namespace, data: PreparedData, batches: TrainingBatches
) -> dict[str, Any] | None:
    if args.self_blend == 0:
        return None
    return {
        "fraction": args.self_blend,
        "per_batch": batches.blended_per_batch,
        "training_reals_with_mesh": len(data.pool.images),
        "training_reals": int(np.count_nonzero(data.parts["train"].crops.labels == REAL)),
        "recipe": "Shiohara & Yamasaki 2022, see training/sbi.py",
    }


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
    if "test_self_blended" in metrics:
        blended = metrics["test_self_blended"]
        lines.append(
            f"test reals vs their self-blended fakes: AUC {blended['auc']:.3f}, "
            f"detected {blended['true_positive_rate']:.3f}"
        )
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
