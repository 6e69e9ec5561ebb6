"""Checkpoints: saving and restoring the full training state, the remote mirror, and a job killed with SIGKILL.

The kill tests run tests/resumable_job.py (built from training.strategy and training.checkpoints as train.py uses
them) as real processes; the S3 mirror runs against a real S3-compatible server (moto) on loopback.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import resumable_job
import s3_server
import tensorflow as tf
from s3_server import free_port, new_bucket

from training.checkpoints import (
    INDEX_KEY,
    Checkpointer,
    CheckpointError,
    CheckpointMirror,
    WeightsSnapshot,
    checkpoint_mirror_url,
    fit_from_step,
)

s3_endpoint = s3_server.s3_endpoint  # fixtures
aws_env = s3_server.aws_env
JOB = Path(resumable_job.__file__)
EVERY = 4
KILL_AT = 15  # mid-epoch: 10 steps per epoch, last checkpoint at step 12
JOB_ENV = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}


def job_command(workdir: Path, *extra: str) -> list[str]:
    """The one command used for the first launch and every restart (it always says --resume)."""
    return [sys.executable, str(JOB), str(workdir), "--resume", "--every", str(EVERY), *extra]


def run_to_end(command: list[str], env: dict[str, str]) -> list[str]:
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines()[-1] == "DONE"
    return completed.stdout.splitlines()


def run_and_kill(command: list[str], env: dict[str, str], at_step: int) -> int:
    """Start the job and SIGKILL it once it reports step `at_step` (where it stops); the last step it did."""
    paused = {**env, resumable_job.PAUSE_ENV: str(at_step)}
    process = subprocess.Popen(
        command, env=paused, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    last = 0
    try:
        for line in process.stdout:
            if line.startswith("STEP "):
                last = int(line.split()[1])
                if last >= at_step:
                    process.send_signal(signal.SIGKILL)
                    break
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, f"the job ended by itself at step {last}"
    return last


def start_line(lines: list[str]) -> dict[str, str]:
    line = next(line for line in lines if line.startswith("START "))
    return dict(field.split("=") for field in line.split()[1:])


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]


class Uninterrupted:
    """The job run once from start to end, in the background while a test kills and restarts its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process = subprocess.Popen(
            job_command(workdir), env=JOB_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._weights: list[np.ndarray] | None = None

    def weights(self) -> list[np.ndarray]:
        if self._weights is None:
            stdout, stderr = self.process.communicate(timeout=120)
            assert self.process.returncode == 0 and stdout.splitlines()[-1] == "DONE", stderr[-3000:]
            self._weights = weights(self.workdir / "final-0.npz")
        return self._weights


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uninterrupted]:
    run = Uninterrupted(tmp_path_factory.mktemp("uninterrupted"))
    yield run
    run.process.kill()
    run.process.communicate()


def assert_same_weights(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert [(w.shape, w.dtype) for w in actual] == [(w.shape, w.dtype) for w in expected]
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def check_resume(lines: list[str], killed_at: int) -> int:
    """The restarted job started at the last checkpoint before the kill, losing fewer than EVERY steps."""
    start = int(start_line(lines)["step"])
    assert start == EVERY * (killed_at // EVERY)
    assert 0 <= killed_at - start < EVERY
    steps = [int(line.split()[1]) for line in lines if line.startswith("STEP ")]
    assert steps[0] == start + 1 and steps[-1] == 30 and steps == list(range(start + 1, 31))
    return start


@pytest.mark.slow
def test_killed_job_restarted_with_the_same_command_resumes_and_ends_like_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: Uninterrupted
) -> None:
    command = job_command(tmp_path)
    killed_at = run_and_kill(command, JOB_ENV, KILL_AT)
    check_resume(run_to_end(command, JOB_ENV), killed_at)
    assert_same_weights(weights(tmp_path / "final-0.npz"), uninterrupted.weights())


@pytest.mark.slow
def test_job_restarted_on_a_new_machine_resumes_from_the_s3_mirror(
    tmp_path: Path, uninterrupted: Uninterrupted, s3_endpoint: str, aws_env: dict[str, str]
) -> None:
    bucket = new_bucket(s3_endpoint)
    env = {**JOB_ENV, **aws_env, "FAKEWEB_S3_ENDPOINT_URL": s3_endpoint}
    command = job_command(tmp_path, "--mirror", f"s3://{bucket}/runs/r1/checkpoints")
    killed_at = run_and_kill(command, env, KILL_AT)
    shutil.rmtree(tmp_path / "checkpoints")  # the machine is gone; only S3 has the checkpoints
    lines = run_to_end(command, env)
    start = check_resume(lines, killed_at)
    assert (tmp_path / "checkpoints" / "pulled" / f"ckpt-{start}" / f"ckpt-{start}.index").is_file()
    assert_same_weights(weights(tmp_path / "final-0.npz"), uninterrupted.weights())
    mirror = CheckpointMirror(f"s3://{bucket}/runs/r1/checkpoints", endpoint_url=s3_endpoint)
    latest = mirror.latest()
    assert latest is not None and (latest.name, latest.step) == ("ckpt-30", 30)
    keys = mirror.backend.list("")
    assert INDEX_KEY in keys and {key.split("/")[0] for key in keys} == {INDEX_KEY, "slot-0", "slot-1"}


# In-process unit tests on a tiny compiled model.


def compiled_model(seed: int = 0) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    model = resumable_job.build_model()
    model.compile(optimizer=tf.keras.optimizers.AdamW(0.01), loss="binary_crossentropy")
    return model


def train(model: tf.keras.Model, steps: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(steps):
        images = rng.uniform(0, 255, (4, resumable_job.SIZE, resumable_job.SIZE, 3)).astype(np.float32)
        model.train_on_batch(images, (images[:, 0, 0, 0] > 127).astype(np.float32))


def state(model: tf.keras.Model) -> list[np.ndarray]:
    return [np.asarray(v) for v in model.variables + model.optimizer.variables]


def checkpointer(directory: Path, model: tf.keras.Model, **kwargs: Any) -> Checkpointer:
    return Checkpointer(directory, model, steps_per_epoch=10, global_batch=4, **kwargs)


def test_restore_brings_back_weights_and_optimizer_state(tmp_path: Path) -> None:
    model = compiled_model()
    train(model, 3)
    checkpointer(tmp_path, model).save(3)
    fresh = compiled_model(seed=1)
    assert checkpointer(tmp_path, fresh).start(resume=True) == 3
    for restored, saved in zip(state(fresh), state(model), strict=True):
        np.testing.assert_array_equal(restored, saved)
    assert int(fresh.optimizer.iterations.numpy()) == 3


def test_resume_without_checkpoints_starts_at_zero_and_a_new_run_refuses_old_checkpoints(
    tmp_path: Path,
) -> None:
    model = compiled_model()
    assert checkpointer(tmp_path, model).start(resume=True) == 0
    checkpointer(tmp_path, model).save(2)
    with pytest.raises(CheckpointError, match="pass --resume"):
        checkpointer(tmp_path, compiled_model()).start(resume=False)


def test_resume_with_another_schedule_is_refused(tmp_path: Path) -> None:
    model = compiled_model()
    checkpointer(tmp_path, model).save(2)
    other = Checkpointer(tmp_path, compiled_model(), steps_per_epoch=10, global_batch=8)
    with pytest.raises(CheckpointError, match="same data, batch size and number of replicas"):
        other.start(resume=True)


def test_callback_saves_every_n_steps_and_at_the_end(tmp_path: Path) -> None:
    model = compiled_model()
    saver = checkpointer(tmp_path, model, keep=10)
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((40, resumable_job.SIZE, resumable_job.SIZE, 3), np.float32), np.zeros(40, np.float32))
    ).batch(4)
    model.fit(data, epochs=1, steps_per_epoch=10, callbacks=[saver.callback(3)], verbose=0)
    names = sorted(path.name for path in tmp_path.glob("ckpt-*.index"))
    assert names == ["ckpt-10.index", "ckpt-3.index", "ckpt-6.index", "ckpt-9.index"]


def test_mirror_rotates_slots_and_names_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    model = compiled_model()
    mirror = CheckpointMirror(str(tmp_path / "remote"), keep=2)
    saver = checkpointer(tmp_path / "local", model, mirror=mirror)
    slots = []
    for step in (4, 8, 12):
        train(model, 4)
        saver.save(step)
        latest = mirror.latest()
        assert latest is not None and latest.step == step
        slots.append(latest.slot)
    assert slots == [0, 1, 0]
    assert sorted(path.name for path in (tmp_path / "remote").iterdir()) == [INDEX_KEY, "slot-0", "slot-1"]
    record = json.loads((tmp_path / "remote" / INDEX_KEY).read_text())
    assert record["schema"] == "fakeweb-checkpoint/1" and record["name"] == "ckpt-12"

    fresh = compiled_model(seed=1)
    assert checkpointer(tmp_path / "elsewhere", fresh, mirror=mirror).start(resume=True) == 12
    for restored, saved in zip(state(fresh), state(model), strict=True):
        np.testing.assert_array_equal(restored, saved)


def test_interrupted_upload_keeps_the_previous_checkpoint_latest(tmp_path: Path) -> None:
    model = compiled_model()
    remote = tmp_path / "remote"
    mirror = CheckpointMirror(str(remote), keep=2)
    saver = checkpointer(tmp_path / "local", model, mirror=mirror)
    saver.save(4)
    intact = mirror.latest()
    assert intact is not None and intact.slot == 0
    blocker = remote / "slot-1" / "ckpt.index"  # a folder where the next checkpoint's index file must go:
    (blocker / "x").mkdir(parents=True)  # its data file uploads, then the index upload fails
    train(model, 4)
    saver.save(8)  # training goes on: the checkpoint is local only, with a warning
    assert saver.mirror_failures == 1
    assert (remote / "slot-1" / "ckpt.data-00000-of-00001").is_file()
    assert mirror.latest() == intact
    assert (tmp_path / "local" / "ckpt-8.index").is_file()
    fresh = compiled_model(seed=1)
    assert checkpointer(tmp_path / "elsewhere", fresh, mirror=mirror).start(resume=True) == 4

    shutil.rmtree(blocker)
    saver.save(8)  # the next save goes to the free slot again, never over the latest one
    latest = mirror.latest()
    assert latest is not None and (latest.step, latest.slot) == (8, 1)


def test_damaged_remote_checkpoint_is_refused(tmp_path: Path) -> None:
    model = compiled_model()
    mirror = CheckpointMirror(str(tmp_path / "remote"), keep=2)
    checkpointer(tmp_path / "local", model, mirror=mirror).save(4)
    (tmp_path / "remote" / "slot-0" / "ckpt.index").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        checkpointer(tmp_path / "elsewhere", compiled_model(), mirror=mirror).start(resume=True)
    assert not list((tmp_path / "elsewhere" / "pulled").iterdir())  # no partial download is left


def test_unreachable_mirror_fails_before_training(tmp_path: Path, aws_env: dict[str, str]) -> None:
    mirror = CheckpointMirror("s3://bucket/run/checkpoints", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint mirror"):
        checkpointer(tmp_path, compiled_model(), mirror=mirror).start(resume=True)


def test_fresh_run_refuses_a_mirror_holding_checkpoints(tmp_path: Path) -> None:
    mirror = CheckpointMirror(str(tmp_path / "remote"), keep=2)
    checkpointer(tmp_path / "a", compiled_model(), mirror=mirror).save(4)
    with pytest.raises(CheckpointError, match=str(tmp_path / "remote")):
        checkpointer(tmp_path / "b", compiled_model(), mirror=mirror).start(resume=False)


def test_mirror_url_of_a_run() -> None:
    assert checkpoint_mirror_url("s3://bucket/models/", "run-1") == "s3://bucket/models/checkpoints/run-1"
    with pytest.raises(CheckpointError, match="invalid run name"):
        checkpoint_mirror_url("s3://bucket/models", "../other")


class EpochRecorder(tf.keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, int] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps[epoch] = int(self.model.optimizer.iterations.numpy())


def epoch_batches(epoch: int, count: int = 5) -> tf.data.Dataset:
    images = np.full((count * 4, resumable_job.SIZE, resumable_job.SIZE, 3), epoch, np.float32)
    return tf.data.Dataset.from_tensor_slices((images, np.zeros(count * 4, np.float32))).batch(4)


def test_fit_from_step_finishes_the_interrupted_epoch_then_keeps_the_epoch_boundaries() -> None:
    model = compiled_model()
    recorder = EpochRecorder()
    fit_from_step(
        model, epoch_batches, start_step=7, steps_per_epoch=5, epochs=3, callbacks=[recorder], verbose=0
    )
    assert recorder.steps == {1: 3, 2: 8}  # epoch 1 from its batch 2 (3 steps), then epoch 2 whole
    fit_from_step(
        model, epoch_batches, start_step=15, steps_per_epoch=5, epochs=3, callbacks=[recorder], verbose=0
    )
    assert int(model.optimizer.iterations.numpy()) == 8  # nothing left to train
    with pytest.raises(CheckpointError, match="epoch 0 has 4 batches, fewer than 5"):
        fit_from_step(model, lambda e: epoch_batches(e, 4), start_step=0, steps_per_epoch=5, epochs=1)


def test_weights_snapshot_survives_a_resume(tmp_path: Path) -> None:
    model = compiled_model()
    train(model, 2)
    best = WeightsSnapshot(model)
    best.take(model, 0.75, 3)
    kept = model.get_weights()
    train(model, 2)
    checkpointer(tmp_path, model, extra={"best": best}).save(4)

    fresh = compiled_model(seed=1)
    restored = WeightsSnapshot(fresh)
    assert checkpointer(tmp_path, fresh, extra={"best": restored}).start(resume=True) == 4
    assert (float(restored.score.numpy()), int(restored.epoch.numpy())) == (0.75, 3)
    for got, want in zip(restored.weights(), kept, strict=True):
        np.testing.assert_array_equal(got, want)
