"""A tiny training job assembled from training.strategy and training.checkpoints the way train.py uses them.

Driven as a subprocess by tests/training/test_checkpoints.py (kill and resume, S3 mirror) and tests/training/test_strategy.py (two
workers). Generated data, a few hundred weights, deterministic ops: an interrupted-and-resumed run must end with the
same weights as an uninterrupted one.

    python tests/resumable_job.py WORKDIR [--resume] [--mirror URL] [--every N] [--epochs E] [--fake-hpu]

Prints `START step=S replicas=R ...`, then `STEP n` after each step (flushed), then `DONE`;
with RESUMABLE_JOB_PAUSE_AT=n in the environment it stops after step n until killed;
writes WORKDIR/final-<rank>.npz (the weights, in order). Checkpoints go to WORKDIR/checkpoints.

--fake-hpu stands in for a Gaudi, and that is the only mock: the HPU probe says yes, loading the Habana module does
nothing, and tf.distribute.MultiWorkerMirroredStrategy (HPUStrategy's base class, CollectiveAllReduceStrategy) runs
on the CPU in place of HPUStrategy, with the rank and size taken from OMPI_COMM_WORLD_* as under mpirun.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from training.checkpoints import Checkpointer, CheckpointMirror, fit_from_step  # noqa: E402
from training.strategy import Placement, check_static_batches, make_strategy  # noqa: E402

EXAMPLES = 40
SIZE = 8
PER_REPLICA_BATCH = 4
SEED = 7
PAUSE_ENV = "RESUMABLE_JOB_PAUSE_AT"  # set only for the run a test kills; the command stays the same


class StepPrinter(tf.keras.callbacks.Callback):
    """Prints the global step after each batch; stops for good after step `pause_at` (a test then kills it)."""

    def __init__(self, pause_at: int | None) -> None:
        super().__init__()
        self.pause_at = pause_at

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        print(f"STEP {step}", flush=True)
        if step == self.pause_at:
            time.sleep(600)


def build_model() -> tf.keras.Model:
    inputs = tf.keras.Input((SIZE, SIZE, 3), name="crops")
    features = tf.keras.layers.Rescaling(1.0 / 255.0)(inputs)
    features = tf.keras.layers.Conv2D(4, 3, activation="relu")(features)
    features = tf.keras.layers.GlobalAveragePooling2D()(features)
    return tf.keras.Model(
        inputs, tf.keras.layers.Dense(1, activation="sigmoid", name="probability")(features)
    )


def fake_hpu_placement(base_port: int) -> Placement:
    def stand_in(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> tf.distribute.Strategy:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)

    return make_strategy(
        "hpu", base_port=base_port, probe_hpu=lambda: True, load_habana=lambda: None, hpu_strategy=stand_in
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--mirror", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--fake-hpu", action="store_true")
    parser.add_argument("--base-port", type=int, default=7850, help="first worker port (with --fake-hpu)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    placement = fake_hpu_placement(args.base_port) if args.fake_hpu else make_strategy("cpu")
    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()

    rng = np.random.default_rng(SEED)
    images = rng.uniform(0, 255, (EXAMPLES, SIZE, SIZE, 3)).astype(np.float32)
    labels = (images[:, :, :, 0].mean(axis=(1, 2)) > 127).astype(np.float32)
    global_batch = placement.global_batch_size(PER_REPLICA_BATCH)
    steps_per_epoch = placement.steps_per_epoch(EXAMPLES, PER_REPLICA_BATCH)

    def epoch_data(epoch: int) -> tf.data.Dataset:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return (
            tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(EXAMPLES, seed=SEED * 1000 + epoch)
            .batch(global_batch, drop_remainder=True)
            .with_options(options)
        )

    check_static_batches(epoch_data(0), global_batch)
    with placement.strategy.scope():
        model = placement.prepare_model(build_model())
        schedule = tf.keras.optimizers.schedules.CosineDecay(0.05, decay_steps=args.epochs * steps_per_epoch)
        model.compile(optimizer=tf.keras.optimizers.AdamW(schedule), loss="binary_crossentropy")
        mirror = CheckpointMirror(args.mirror) if args.mirror else None
        checkpointer = Checkpointer(
            args.workdir / "checkpoints",
            model,
            steps_per_epoch=steps_per_epoch,
            global_batch=global_batch,
            keep=2,
            mirror=mirror,
            worker=placement.worker,
        )
    start = checkpointer.start(args.resume)
    print(
        f"START step={start} replicas={placement.replicas} global_batch={global_batch} "
        f"precision={placement.precision} output={model.output.dtype.name}",
        flush=True,
    )
    fit_from_step(
        model,
        epoch_data,
        start_step=start,
        steps_per_epoch=steps_per_epoch,
        epochs=args.epochs,
        callbacks=[
            checkpointer.callback(args.every),
            StepPrinter(int(os.environ[PAUSE_ENV]) if PAUSE_ENV in os.environ else None),
        ],
        verbose=0,
    )
    np.savez(args.workdir / f"final-{placement.worker.rank}.npz", *model.get_weights())
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
