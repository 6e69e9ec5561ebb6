"""Train a face classifier from labelled images or videos and export it as a model package (`fakeweb train`).

Faces are cropped once with the serving detector and crop definition (and cached, with FaceMesh landmarks of the
real crops), and split by group (source photo, video or identity) into train, validation and test; folders of
extra real faces (`--extra-reals`) are split the same way. With `--synthetic P`, a share P of every batch is
fakes synthesised from the training reals (self-blended, region-swapped, face-swapped, mixed by
`--synthetic-kinds`), each with the real it was made from, so real faces alone can train a detector. Reals and
fakes alike are degraded (compression, scaling, blur, noise, colour casts) with `--degrade`, then augmented.
Validation and test get fixed synthetic fakes of their own reals (swap donors from the same split). The epoch
with the best validation AUC is kept, calibrated (Platt scaling on validation, folded into the model), its
threshold set for `--false-alarm-rate` on validation reals, and it is evaluated once on the held-out test split
before export. With `--mirror-average`, all of that is done on the model that averages each crop's score with
its mirror image's (`training.mirror`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
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
from training.assess import CALIBRATION_SET, assess, calibrate
from training.checkpoints import (
    Checkpointer,
    CheckpointMirror,
    WeightsSnapshot,
    checkpoint_mirror_url,
    fit_from_step,
)
from training.crop_cache import default_cache_dir
from training.data import FRAMES_PER_VIDEO, REAL, REVIEWED
from training.export import export_package
from training.mirror import mirror_averaged
from training.monitor import SyntheticExamples
from training.pipeline import (
    AUGMENTATION,
    DEFAULT_RECIPE,
    MAX_SYNTHETIC_FRACTION,
    SYNTHETIC_KINDS,
    TrainingBatches,
    eval_dataset,
    parse_recipe,
    training_batches,
)
from training.prepare import (
    FORMATS,
    VIDEO_FORMATS,
    PreparedData,
    TrainingError,
    fixed_kinds,
    label_counts,
    prepare_data,
)
from training.publish import publish_package
from training.strategy import Placement, check_static_batches, float32_copy, make_strategy

CHECK_BATCH_SIZE = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options, shared by `fakeweb train` and `python -m training.train`."""
    parser.add_argument("--data", type=Path, required=True, help="data-set root (see --format)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="folders",
        help="data-set layout: folders (real/ and fake/ images; fake/ optional with --synthetic), ciplab, "
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
        "--extra-reals",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of real face photos to add (repeatable); grouped by the words of their file names",
    )
    parser.add_argument(
        "--reviewed",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a `fakeweb events export` folder of operators' reviewed events to add (repeatable); held-out "
        "metrics report it separately (origin `reviewed`)",
    )
    parser.add_argument(
        "--reviewed-weight",
        type=int,
        default=1,
        metavar="N",
        help="each reviewed training crop counts N times (default 1)",
    )
    parser.add_argument(
        "--synthetic",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of every training batch made of fakes synthesised from training reals, each with the "
        "real it was made from (so 2P of the batch), in [0, 0.5)",
    )
    parser.add_argument(
        "--synthetic-kinds",
        default=DEFAULT_RECIPE,
        metavar="KIND=W,...",
        help=f"kinds of synthetic fakes and their shares, from {', '.join(SYNTHETIC_KINDS)}",
    )
    parser.add_argument(
        "--degrade",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a crop (real or fake) is degraded: compression, scaling, blur, noise, colour",
    )
    parser.add_argument(
        "--mirror-average",
        action="store_true",
        help="export a model that averages each crop's score with its mirror image's (two backbone passes "
        "per crop); calibration, threshold and test metrics are measured on it",
    )
    parser.add_argument(
        "--false-alarm-rate",
        type=float,
        default=0.01,
        help="share of validation reals the threshold may flag (after calibration)",
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


def _check_arguments(args: argparse.Namespace) -> dict[str, float]:
    """Refuse options that cannot train; return the synthetic recipe."""
    if args.epochs < 1 or args.batch_size < 1 or args.input_size < 32 or args.frames_per_video < 1:
        raise TrainingError(
            "--epochs, --batch-size and --frames-per-video must be >= 1 and --input-size >= 32"
        )
    if not 0.0 <= args.synthetic < MAX_SYNTHETIC_FRACTION:
        raise TrainingError(f"--synthetic must be in [0, {MAX_SYNTHETIC_FRACTION}), got {args.synthetic}")
    if not 0.0 <= args.degrade <= 1.0:
        raise TrainingError(f"--degrade must be in [0, 1], got {args.degrade}")
    if not 0.0 < args.false_alarm_rate < 0.5:
        raise TrainingError(f"--false-alarm-rate must be in (0, 0.5), got {args.false_alarm_rate}")
    try:
        return parse_recipe(args.synthetic_kinds)
    except ValueError as exc:
        raise TrainingError(f"--synthetic-kinds: {exc}") from exc


def run(args: argparse.Namespace, command: str | None = None) -> int:
    """Train, evaluate and export as described by parsed `args`; `command` is recorded in the provenance."""
    recipe = _check_arguments(args)
    placement = make_strategy(args.device)  # before any other TensorFlow work (multi-worker HPU)
    tf.keras.utils.set_random_seed(args.seed)
    try:
        spec = CropSpec(size=args.input_size, margin=args.margin)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    detector_config = DetectorConfig()
    data = prepare_data(args, spec, detector_config, fixed_kinds(recipe))
    print(
        "split: "
        + ", ".join(
            f"{name} {label_counts(part.crops.labels)} (no face: {data.no_face[name]})"
            for name, part in data.parts.items()
        )
        + f"; {len(data.pool.images)} training reals can be synthesised from"
    )
    global_batch = placement.global_batch_size(args.batch_size)
    chief = placement.worker.is_chief

    def batches_of(seed: int) -> TrainingBatches:
        train = data.parts["train"].crops
        return training_batches(train, global_batch, seed, args.synthetic, data.pool, recipe, args.degrade)

    def epoch_data(epoch: int) -> tf.data.Dataset:
        batches = batches_of(args.seed + 7919 * epoch)  # every epoch its own order, the same in every run
        return batches.dataset.unbatch().batch(global_batch, drop_remainder=True)

    batches = batches_of(args.seed)
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
        shown = recipe if args.synthetic > 0 else {}
        callbacks.append(SyntheticExamples(tensorboard_dir, data, shown, args.seed))
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
    if args.mirror_average:
        model = mirror_averaged(model)

    platt, threshold = calibrate(model, data, args.false_alarm_rate)
    metrics = assess(model, data, threshold, args.degrade, args.seed)
    trained_steps = args.epochs * steps_per_epoch - start
    images_per_second = trained_steps * global_batch / max(best.train_seconds, 1e-9)
    calibration = platt.describe(args.false_alarm_rate, CALIBRATION_SET)
    metrics |= {
        "threshold_rule": f"flags at most {args.false_alarm_rate:.1%} of calibrated validation reals",
        "calibration": calibration,
        "best_epoch": int(snapshot.epoch.numpy()),
        "epochs": args.epochs,
    }
    provenance = {
        "command": command or shlex.join(sys.argv),
        "arguments": {key: _jsonable(value) for key, value in vars(args).items()},
        "data": _data_provenance(args, data, batches),
        "detector": {"range": detector_config.range, "min_confidence": detector_config.min_confidence},
        "training": {
            "optimizer": "AdamW",
            "augmentation": AUGMENTATION,
            "degrade": args.degrade,
            "synthetic": _synthetic_provenance(args, data, batches, recipe),
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
        calibration=calibration,
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


def _jsonable(value: Any) -> Any:
    """An argument's value as JSON can hold it: paths (also in lists) as strings."""
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def _data_provenance(
    args: argparse.Namespace, data: PreparedData, batches: TrainingBatches
) -> dict[str, Any]:
    result = {
        "root": str(args.data),
        "format": args.format,
        "extra_reals": [str(folder) for folder in args.extra_reals],
        "reviewed": [str(folder) for folder in args.reviewed],
        "reviewed_samples": {  # distinct crops (training's repeats of --reviewed-weight not counted)
            name: sum(1 for origin in part.origins if origin == REVIEWED)
            // (args.reviewed_weight if name == "train" else 1)
            for name, part in data.parts.items()
        },
        "reviewed_weight": args.reviewed_weight,
        "splits": {name: label_counts(part.crops.labels) for name, part in data.parts.items()},
        "no_face": data.no_face,
        "split_rule": "whole groups (a source photo, video or identity; extra reals: the words of the file "
        "name), stratified by labels and tag, seeded; swap donors come from the same split",
        "images_per_epoch": batches.images,
    }
    if args.format in VIDEO_FORMATS:
        result["frames_per_video"] = args.frames_per_video
    if args.synthetic > 0:
        result["eval_fakes"] = (
            "one fixed synthetic fake of each kind per validation and test real with a mesh"
        )
    return result


def _synthetic_provenance(
    args: argparse.Namespace, data: PreparedData, batches: TrainingBatches, recipe: dict[str, float]
) -> dict[str, Any] | None:
    if args.synthetic == 0:
        return None
    return {
        "fraction": args.synthetic,
        "kinds": recipe,
        "per_batch": batches.synthetic_per_batch,
        "training_reals_with_mesh": len(data.pool.images),
        "training_reals": int(np.count_nonzero(data.parts["train"].crops.labels == REAL)),
        "recipes": "training/sbi.py (Shiohara & Yamasaki 2022) and training/synth/",
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
    for prefix, key in (("test", "test_sets"), ("test degraded", "test_degraded_sets")):
        for name, values in metrics.get(key, {}).items():
            if "auc" in values:
                lines.append(
                    f"  {prefix} {name}: AUC {values['auc']:.3f}, log loss {values['log_loss']:.3f}, "
                    f"detected {values['true_positive_rate']:.3f} of {values['n_fake']} fakes"
                )
            else:
                lines.append(
                    f"  {prefix} {name}: {values['false_alarm_rate']:.3f} of {values['n_real']} flagged"
                )
    print("\n".join(lines))


def command(argv: Sequence[str]) -> int:
    """`fakeweb train ...`: parse `argv`, train and export; expected failures raise FakewebError or OSError."""
    parser = argparse.ArgumentParser(prog="fakeweb train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, shlex.join(["python", "-m", "training.train", *argv]))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training.train --data DIR --out DIR ...`: `command`, an expected failure printed as
    `error: ...` with exit status 1 (the DL1 kit's contract; `fakeweb train` reports as every `fakeweb` command)."""
    try:
        return command(sys.argv[1:] if argv is None else argv)
    except (FakewebError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
