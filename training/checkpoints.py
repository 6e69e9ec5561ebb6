"""Checkpoints every N steps on local disk, mirrored to a model-store URL, and resuming from the newest one.

A checkpoint holds the model's weights, the optimizer's state (its step counter drives the learning-rate
schedule), the global step, the schedule it belongs to (steps per epoch, global batch size) and any `extra`
trackables (e.g. a tf.random.Generator the job draws from). The global step is the data position: step s is batch
`s % steps_per_epoch` of epoch `s // steps_per_epoch`, and `fit_from_step` replays the data from there; with the
data's shuffling and augmentation seeded by (seed, epoch), a resumed run continues the same schedule. Keras 2
keeps dropout's random state out of checkpoints, so dropout masks after a resume differ from an uninterrupted
run; without dropout the resumed run ends with the same weights (tested).

Local layout (tf.train.CheckpointManager, the last `keep`): `<dir>/ckpt-<n>.index`, `ckpt-<n>.data-*`,
`<dir>/checkpoint`. Remote layout under a folder, file:// or s3:// URL (models.store backends, atomic objects):

    slot-<i>/ckpt.index, slot-<i>/ckpt.data-*   `keep` rotating slots of files
    latest.json   {"schema", "name", "slot", "step", "files": {stored name: sha256}, "saved_at"}

latest.json is written after every file of its checkpoint, and a new checkpoint goes into a slot latest.json does
not name, so a killed upload leaves the previous checkpoint whole: a checkpoint is "latest" once fully uploaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from models.errors import FakewebError, ModelStoreError
from models.manifest import sha256_file
from models.store import VERSION_RE, open_store
from training.strategy import Worker

logger = logging.getLogger(__name__)

SCHEMA = "fakeweb-checkpoint/1"
INDEX_KEY = "latest.json"
STEM = "ckpt"
STORED_NAME_RE = re.compile(r"ckpt(\.index|\.data-\d{5}-of-\d{5})")
CHECKPOINT_NAME_RE = re.compile(r"ckpt-\d+")
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
SCHEDULE_KEYS = {
    "steps_per_epoch": "steps_per_epoch/.ATTRIBUTES/VARIABLE_VALUE",
    "global_batch": "global_batch/.ATTRIBUTES/VARIABLE_VALUE",
}


class CheckpointError(FakewebError):
    """Checkpoints that cannot be written, read, trusted or resumed from."""


@dataclass(frozen=True)
class RemoteCheckpoint:
    """What latest.json says: checkpoint `name` (ckpt-<n>) at global `step`, its files in `slot` with sha256."""

    name: str
    slot: int
    step: int
    files: dict[str, str]
    saved_at: str

    def __post_init__(self) -> None:
        if not CHECKPOINT_NAME_RE.fullmatch(self.name) or self.slot < 0 or self.step < 0:
            raise CheckpointError(f"invalid remote checkpoint record {self!r}")
        if not self.files or not all(STORED_NAME_RE.fullmatch(name) for name in self.files):
            raise CheckpointError(
                f"invalid file names in remote checkpoint {self.name}: {sorted(self.files)}"
            )


def checkpoint_mirror_url(store_url: str, run_name: str) -> str:
    """Where a run's checkpoints are mirrored in a model store: `<store>/checkpoints/<run_name>`."""
    if not VERSION_RE.fullmatch(run_name) or ".." in run_name:
        raise CheckpointError(f"invalid run name {run_name!r}: use letters, digits, '.', '_', '+', '-'")
    return f"{store_url.rstrip('/')}/checkpoints/{run_name}"


class CheckpointMirror:
    """Copies of the newest checkpoints under a store URL (a folder, file:///path or s3://bucket/prefix)."""

    def __init__(self, url: str, keep: int = 2, endpoint_url: str | None = None) -> None:
        if keep < 2:
            raise CheckpointError("a checkpoint mirror needs at least 2 slots")
        self.backend = open_store(url, endpoint_url).backend
        self.url = self.backend.url
        self.keep = keep
        self._latest_slot: int | None = None  # None: unknown, read latest.json before writing

    def latest(self) -> RemoteCheckpoint | None:
        """The newest complete remote checkpoint; CheckpointError when the store cannot be read."""
        try:
            data = self.backend.read(INDEX_KEY)
        except ModelStoreError as exc:
            raise CheckpointError(f"cannot read the checkpoint mirror: {exc}") from exc
        if data is None:
            return None
        try:
            fields = json.loads(data)
            if fields.pop("schema") != SCHEMA:
                raise ValueError("unknown schema")
            return RemoteCheckpoint(**fields)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{self.url}/{INDEX_KEY} is not a checkpoint index ({exc!r})") from exc

    def push(self, prefix: Path, step: int) -> RemoteCheckpoint:
        """Upload local checkpoint `prefix` (…/ckpt-<n>) into a free slot, then make it the latest."""
        try:
            if self._latest_slot is None:
                current = self.latest()
                self._latest_slot = -1 if current is None else current.slot
            slot = (self._latest_slot + 1) % self.keep
            files = {}
            for path in sorted(prefix.parent.glob(f"{prefix.name}.*")):
                stored = STEM + path.name[len(prefix.name) :]
                files[stored] = sha256_file(path)
                self.backend.upload(f"slot-{slot}/{stored}", path, files[stored])
            saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            record = RemoteCheckpoint(prefix.name, slot, step, files, saved_at)
            self.backend.write(INDEX_KEY, json.dumps({"schema": SCHEMA, **asdict(record)}, indent=2).encode())
        except (ModelStoreError, CheckpointError, OSError):
            self._latest_slot = None  # the index may or may not have been written: read it again next time
            raise
        self._latest_slot = slot
        logger.info("checkpoint %s (step %d) mirrored to %s/slot-%d", prefix.name, step, self.url, slot)
        return record

    def pull(self, remote: RemoteCheckpoint, folder: Path) -> Path:
        """Download `remote` into `folder/<name>/`, verify every checksum, and return its checkpoint prefix."""
        target = folder / remote.name
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{remote.name}.", suffix=".part", dir=folder))
            try:
                for stored, sha256 in sorted(remote.files.items()):
                    dest = staging / (remote.name + stored[len(STEM) :])
                    self.backend.download(f"slot-{remote.slot}/{stored}", dest)
                    if sha256_file(dest) != sha256:
                        raise CheckpointError(
                            f"{self.url}/slot-{remote.slot}/{stored} does not match its checksum "
                            f"(overwritten by another job?)"
                        )
                os.rename(staging, target)
            except ModelStoreError as exc:
                raise CheckpointError(f"cannot download checkpoint {remote.name}: {exc}") from exc
            except OSError:
                if not target.exists():  # else another worker of this job installed it first
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("pulled checkpoint %s (step %d) from %s", remote.name, remote.step, self.url)
        return target / remote.name


class Checkpointer:
    """Saves and restores one compiled model's training state; see the module docstring for what and where.

    Every worker of a multi-process job saves (saving may need collectives); only the chief keeps its files and
    mirrors them, the others write to a temporary folder that is removed.
    """

    def __init__(
        self,
        directory: Path,
        model: tf.keras.Model,
        *,
        steps_per_epoch: int,
        global_batch: int,
        keep: int = 3,
        mirror: CheckpointMirror | None = None,
        worker: Worker | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if model.optimizer is None:
            raise CheckpointError("compile the model before creating its Checkpointer")
        if steps_per_epoch < 1 or global_batch < 1 or keep < 1:
            raise CheckpointError("steps_per_epoch, global_batch and keep must be >= 1")
        self.directory = Path(directory)
        self.model = model
        self.mirror = mirror
        self.worker = worker or Worker()
        self.steps_per_epoch = steps_per_epoch
        self.schedule = {"steps_per_epoch": steps_per_epoch, "global_batch": global_batch}
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=model.optimizer,
            step=self.step,
            **{
                name: tf.Variable(value, dtype=tf.int64, trainable=False)
                for name, value in self.schedule.items()
            },
            **(extra or {}),
        )
        write_dir = self.directory if self.worker.is_chief else self.directory / f".worker-{self.worker.rank}"
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, str(write_dir), max_to_keep=keep, checkpoint_name=STEM
        )
        self.mirror_failures = 0

    def start(self, resume: bool) -> int:
        """The global step to train from: the newest checkpoint's with `resume`, else 0.

        Without `resume`, existing checkpoints (local or mirrored) are an error rather than silently mixed with a
        new run. An unreadable mirror is an error either way, before any training time is spent.
        """
        local = tf.train.latest_checkpoint(str(self.directory))
        remote = self.mirror.latest() if self.mirror else None
        if not resume:
            found = [str(self.directory)] if local else []
            if remote is not None and self.mirror is not None:
                found.append(self.mirror.url)
            if found:
                raise CheckpointError(
                    f"checkpoints of an earlier run exist in {' and '.join(found)}: "
                    "pass --resume to continue it, or use another checkpoint location"
                )
            return 0
        local_step = _read_int(local, STEP_KEY) if local else -1
        if self.mirror is not None and remote is not None and remote.step > local_step:
            path = str(self.mirror.pull(remote, self.directory / "pulled"))
        elif local:
            path = local
        else:
            logger.info("no checkpoint to resume from in %s; starting at step 0", self.directory)
            return 0
        self._restore(path)
        step = int(self.step.numpy())
        epoch, batch = divmod(step, self.steps_per_epoch)
        logger.info("resuming from %s: step %d (epoch %d, batch %d)", path, step, epoch + 1, batch)
        return step

    def save(self, step: int) -> Path | None:
        """Write a checkpoint at global `step`; the chief then mirrors it. Returns the chief's local prefix."""
        self._build_optimizer()
        self.step.assign(step)
        prefix = Path(self._manager.save(checkpoint_number=step))
        if not self.worker.is_chief:
            shutil.rmtree(prefix.parent, ignore_errors=True)
            return None
        logger.info("checkpoint %s at step %d", prefix, step)
        if self.mirror is not None:
            try:
                self.mirror.push(prefix, step)
            except (FakewebError, OSError) as exc:
                self.mirror_failures += 1
                logger.warning("checkpoint at step %d is only local, mirroring failed: %s", step, exc)
        return prefix

    def callback(self, every_steps: int) -> CheckpointCallback:
        """A Keras callback saving every `every_steps` global steps and when training ends."""
        return CheckpointCallback(self, every_steps)

    def _restore(self, path: str) -> None:
        stored = {name: _read_int(path, key) for name, key in SCHEDULE_KEYS.items()}
        if stored != self.schedule:
            raise CheckpointError(
                f"{path} was written for {stored}, this run has {self.schedule}: "
                "resume with the same data, batch size and number of replicas"
            )
        self._build_optimizer()
        self._checkpoint.restore(path).assert_existing_objects_matched()

    def _build_optimizer(self) -> None:
        """Create the optimizer's slot variables now (a no-op once built), so every checkpoint holds them and a
        restore fills them at once rather than deferred."""
        with self.model.distribute_strategy.scope():
            self.model.optimizer.build(self.model.trainable_variables)


class WeightsSnapshot(tf.Module):
    """A copy of a model's weights with a score and an epoch, in variables, so that it is checkpointed with the
    training state (pass it in `Checkpointer(extra=...)`): e.g. the best epoch's weights survive a resume.

    Create it inside the strategy's scope, from the model it will copy.
    """

    def __init__(self, model: tf.keras.Model) -> None:
        super().__init__(name="weights_snapshot")
        self.values = [tf.Variable(w, trainable=False) for w in model.get_weights()]
        self.score = tf.Variable(float("-inf"), dtype=tf.float64, trainable=False)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def take(self, model: tf.keras.Model, score: float, epoch: int) -> None:
        """Copy `model`'s current weights, recording `score` and `epoch`."""
        for variable, value in zip(self.values, model.get_weights(), strict=True):
            variable.assign(value)
        self.score.assign(score)
        self.epoch.assign(epoch)

    def weights(self) -> list[np.ndarray]:
        """The copied weights, for `model.set_weights`."""
        return [np.asarray(variable.numpy()) for variable in self.values]


class CheckpointCallback(tf.keras.callbacks.Callback):
    """Saves through a Checkpointer whenever the optimizer's step passes a multiple of `every_steps`, and at the
    end of training, so a killed run loses fewer than `every_steps` steps."""

    def __init__(self, checkpointer: Checkpointer, every_steps: int) -> None:
        super().__init__()
        if every_steps < 1:
            raise CheckpointError(f"checkpoint interval must be >= 1 step, got {every_steps}")
        self.checkpointer = checkpointer
        self.every_steps = every_steps
        self._saved_step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._saved_step = self._step()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._step()
        if step // self.every_steps > self._saved_step // self.every_steps:
            self._save(step)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        step = self._step()
        if step != self._saved_step:
            self._save(step)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _save(self, step: int) -> None:
        self.checkpointer.save(step)
        self._saved_step = step


def fit_from_step(
    model: tf.keras.Model,
    epoch_data: Callable[[int], tf.data.Dataset],
    *,
    start_step: int,
    steps_per_epoch: int,
    epochs: int,
    **fit_kwargs: Any,
) -> None:
    """`model.fit` for `epochs` epochs starting at global step `start_step` (0: from the beginning).

    `epoch_data(e)` must return a new dataset of the batches of epoch `e` (0-based), at least `steps_per_epoch`
    of them, and the same ones in every run: seed its shuffling and augmentation with (seed, epoch). Each dataset
    is iterated once, through one iterator (fit gets an endless stream, so Keras never re-creates its iterator
    and a reshuffling dataset cannot change order). An interrupted epoch is finished first, from its next batch
    (its training metrics then cover only those batches); the remaining epochs run in one `fit` whose epoch
    boundaries are those of an uninterrupted run. `fit_kwargs` go to both fits (callbacks, validation data, ...).
    """

    def batches(epoch: int) -> tf.data.Dataset:
        dataset = epoch_data(epoch)
        size = int(dataset.cardinality())
        if 0 <= size < steps_per_epoch:
            raise CheckpointError(
                f"epoch {epoch} has {size} batches, fewer than {steps_per_epoch} steps per epoch"
            )
        return dataset.take(steps_per_epoch)

    epoch, done = divmod(start_step, steps_per_epoch)
    if done and epoch < epochs:
        partial = batches(epoch).skip(done).repeat()
        model.fit(
            partial,
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps_per_epoch - done,
            **fit_kwargs,
        )
        epoch += 1
    if epoch < epochs:
        stream = batches(epoch)
        for later in range(epoch + 1, epochs):
            stream = stream.concatenate(batches(later))
        model.fit(
            stream.repeat(), initial_epoch=epoch, epochs=epochs, steps_per_epoch=steps_per_epoch, **fit_kwargs
        )


def _read_int(path: str, key: str) -> int:
    try:
        return int(tf.train.load_checkpoint(path).get_tensor(key))
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a checkpoint of this job ({key}: {exc})") from exc
