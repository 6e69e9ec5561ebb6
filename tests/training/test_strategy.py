"""Device, strategy, precision and batch-shape resolution for training, with no Gaudi present.

Only the Habana device itself is mocked: an HPU probe that says yes, a Habana-module loader that records its call,
and, for multi-card runs, a stand-in for HPUStrategy (MultiWorkerMirroredStrategy, the same
CollectiveAllReduceStrategy base, on the CPU). Everything else is real TensorFlow; the two-worker test runs two
real processes joined by the TF_CONFIG cluster built here. The real habana-tensorflow package (no driver) is
exercised in .venv-hpu, as in tests/models/test_devices_habana.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import resumable_job
import tensorflow as tf
from hpu_venv import needs_hpu_venv, run_probe

from models.errors import DeviceError
from training.architectures import build_model
from training.backbones.weights import BackboneWeightsError
from training.strategy import (
    BF16_POLICY,
    OUTPUT_LAYER,
    Placement,
    StrategyError,
    Worker,
    check_static_batches,
    cluster_resolver,
    float32_copy,
    make_strategy,
    tf_config,
)


def mpi_env(rank: int, size: int) -> dict[str, str]:
    return {
        "OMPI_COMM_WORLD_RANK": str(rank),
        "OMPI_COMM_WORLD_SIZE": str(size),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(rank % 8),
    }


class FakeHabana:
    """The Gaudi stand-in: records the module load and the cluster each strategy was built for."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.resolvers: list[tf.distribute.cluster_resolver.ClusterResolver] = []

    def probe(self) -> bool:
        self.calls.append("probe")
        return True

    def load(self) -> None:
        self.calls.append("load")

    def strategy(self, resolver: tf.distribute.cluster_resolver.ClusterResolver) -> tf.distribute.Strategy:
        self.calls.append("strategy")
        self.resolvers.append(resolver)
        return tf.distribute.get_strategy()

    def make(self, requested: str = "hpu", environ: dict[str, str] | None = None) -> Placement:
        return make_strategy(
            requested,
            environ=environ or {},
            probe_hpu=self.probe,
            probe_gpu=lambda: False,
            load_habana=self.load,
            hpu_strategy=self.strategy,
        )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Worker(0, 1, None)),
        (mpi_env(3, 8), Worker(3, 8, 3)),
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, Worker(1, 2, None)),
    ],
)
def test_worker_from_open_mpi_environment(environ: dict[str, str], expected: Worker) -> None:
    assert Worker.from_env(environ) == expected
    assert expected.is_chief == (expected.rank == 0)


@pytest.mark.parametrize(
    "environ",
    [
        {"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"},
        mpi_env(2, 2),
        {"OMPI_COMM_WORLD_SIZE": "0"},
    ],
)
def test_malformed_mpi_environment_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(StrategyError):
        Worker.from_env(environ)


def test_tf_config_of_one_dl1_instance() -> None:
    config = tf_config(Worker(5, 8, 5))
    assert config == {
        "cluster": {"worker": [f"localhost:{7850 + i}" for i in range(8)]},
        "task": {"type": "worker", "index": 5},
    }


def test_tf_config_over_two_hosts_fills_them_in_order() -> None:
    config = tf_config(Worker(9, 16, 1), hosts=("10.0.0.1", "10.0.0.2"), base_port=9000)
    workers = config["cluster"]["worker"]
    assert workers[:2] == ["10.0.0.1:9000", "10.0.0.1:9001"] and workers[8:10] == [
        "10.0.0.2:9000",
        "10.0.0.2:9001",
    ]
    assert config["task"]["index"] == 9


@pytest.mark.parametrize(
    ("worker", "hosts", "message"),
    [
        (Worker(0, 3), ("a", "b"), "do not divide evenly"),
        (Worker(0, 16), ("localhost",), "at most 8 cards"),
        (Worker(9, 16, 9), ("a", "b"), "ppr:8:node"),
    ],
)
def test_impossible_clusters_are_refused(worker: Worker, hosts: tuple[str, ...], message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        tf_config(worker, hosts)


def test_preset_tf_config_is_used_when_it_matches_mpi() -> None:
    preset = {"cluster": {"worker": ["h1:1", "h2:2"]}, "task": {"type": "worker", "index": 1}}
    resolver = cluster_resolver(Worker(1, 2), environ={"TF_CONFIG": json.dumps(preset)})
    assert resolver.cluster_spec().as_dict() == {"worker": ["h1:1", "h2:2"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    with pytest.raises(StrategyError, match="MPI says rank 0 of 2"):
        cluster_resolver(Worker(0, 2), environ={"TF_CONFIG": json.dumps(preset)})
    with pytest.raises(StrategyError, match="not JSON with a cluster.worker list"):
        cluster_resolver(Worker(0, 2), environ={"TF_CONFIG": "{cluster"})


def test_cpu_uses_the_default_strategy_in_float32() -> None:
    placement = make_strategy("cpu", environ={})
    assert placement.device == "cpu" and placement.precision == "float32"
    assert placement.strategy is tf.distribute.get_strategy()
    assert placement.replicas == 1 and placement.global_batch_size(32) == 32


def test_gpu_uses_mirrored_strategy() -> None:
    placement = make_strategy("gpu", environ={}, probe_hpu=lambda: False, probe_gpu=lambda: True)
    assert isinstance(placement.strategy, tf.distribute.MirroredStrategy)


def test_hpu_without_a_gaudi_is_a_clear_error_and_nothing_is_loaded() -> None:
    loads: list[str] = []
    with pytest.raises(DeviceError, match="device 'hpu' requested but no Habana Gaudi device is usable"):
        make_strategy("hpu", environ={}, probe_hpu=lambda: False, load_habana=lambda: loads.append("load"))
    assert make_strategy("auto", environ={}, probe_hpu=lambda: False, probe_gpu=lambda: False).device == "cpu"
    assert loads == []


def test_single_card_hpu_loads_habana_after_the_probe_and_trains_in_bf16() -> None:
    habana = FakeHabana()
    placement = habana.make("auto")
    assert habana.calls == ["probe", "load"]
    assert placement.device == "hpu" and placement.precision == BF16_POLICY
    assert placement.strategy is tf.distribute.get_strategy() and placement.replicas == 1


def test_eight_cards_under_mpirun_build_an_hpu_strategy_cluster() -> None:
    habana = FakeHabana()
    placement = habana.make("hpu", environ=mpi_env(2, 8))
    assert habana.calls == ["probe", "load", "strategy"]
    resolver = habana.resolvers[0]
    assert resolver.cluster_spec().as_dict()["worker"] == [f"localhost:{7850 + i}" for i in range(8)]
    assert (resolver.task_type, resolver.task_id) == ("worker", 2)
    assert placement.worker == Worker(2, 8, 2) and not placement.worker.is_chief


def test_mpirun_launch_on_cpu_is_refused() -> None:
    with pytest.raises(StrategyError, match="only HPU training runs one process per card"):
        make_strategy("cpu", environ=mpi_env(0, 2))


def test_global_batch_and_steps_per_epoch_drop_the_partial_batch() -> None:
    placement = Placement("cpu", tf.distribute.get_strategy(), Worker())
    assert placement.steps_per_epoch(100, 32) == 3
    with pytest.raises(StrategyError, match="do not fill one global batch"):
        placement.steps_per_epoch(31, 32)
    with pytest.raises(StrategyError, match=">= 1"):
        placement.global_batch_size(0)


def test_static_batches_are_required() -> None:
    images = tf.data.Dataset.from_tensor_slices(
        (np.zeros((10, 8, 8, 3), np.float32), np.zeros(10, np.float32))
    )
    check_static_batches(images.batch(4, drop_remainder=True), 4)
    with pytest.raises(StrategyError, match="drop_remainder=True"):
        check_static_batches(images.batch(4), 4)
    with pytest.raises(StrategyError, match="batch size 8"):
        check_static_batches(images.batch(4, drop_remainder=True), 8)
    ragged = tf.data.Dataset.from_generator(
        lambda: iter(()), output_signature=tf.TensorSpec((4, None, None, 3), tf.float32)
    )
    with pytest.raises(StrategyError, match="fixed-size images"):
        check_static_batches(ragged, 4)


def test_bf16_model_keeps_a_float32_output_and_exports_in_float32() -> None:
    tf.keras.utils.set_random_seed(0)
    model = resumable_job.build_model()
    placement = FakeHabana().make("hpu")
    with placement.strategy.scope():
        mixed = placement.prepare_model(model)
    compute = {layer.name: layer.compute_dtype for layer in mixed.layers[1:]}
    assert compute.pop(OUTPUT_LAYER) == "float32" and set(compute.values()) == {"bfloat16"}
    assert mixed.output.dtype == tf.float32
    assert all(w.dtype == tf.float32 for w in mixed.weights)
    batch = np.random.default_rng(0).uniform(0, 255, (4, resumable_job.SIZE, resumable_job.SIZE, 3))
    exported = float32_copy(mixed)
    assert {layer.compute_dtype for layer in exported.layers} == {"float32"}
    np.testing.assert_array_equal(exported(batch).numpy(), model(batch).numpy())
    np.testing.assert_allclose(mixed(batch).numpy(), model(batch).numpy(), atol=0.02)
    assert make_strategy("cpu", environ={}).prepare_model(model) is model


@pytest.mark.parametrize("name", ["mobilenet_v2_imagenet", "efficientnet_lite0_imagenet"])
def test_pretrained_backbones_train_in_bf16_and_export_in_float32(name: str) -> None:
    try:
        model = build_model(name, 64)
    except BackboneWeightsError as exc:
        pytest.skip(f"pretrained weights not installed: {exc}")
    placement = FakeHabana().make("hpu")
    with placement.strategy.scope():
        mixed = placement.prepare_model(model)
    batch = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    assert mixed.output.dtype == tf.float32
    np.testing.assert_allclose(mixed(batch).numpy(), model(batch).numpy(), atol=0.05)
    np.testing.assert_array_equal(float32_copy(mixed)(batch).numpy(), model(batch).numpy())


def free_port_pair() -> int:
    """A port p with p + 1 also free (the two workers' servers)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.slow
def test_two_workers_train_in_sync_through_the_built_cluster(tmp_path: Path) -> None:
    port = free_port_pair()
    command = [sys.executable, str(resumable_job.__file__), str(tmp_path), "--fake-hpu", "--epochs", "1"]
    command += ["--every", "2", "--base-port", str(port)]
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [
        subprocess.Popen(
            command,
            env={**env, **mpi_env(rank, 2)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=180) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
        assert "START step=0 replicas=2 global_batch=8 precision=mixed_bfloat16 output=float32" in stdout
        assert [line for line in stdout.splitlines() if line.startswith("STEP ")][-1] == "STEP 5"
    with np.load(tmp_path / "final-0.npz") as chief, np.load(tmp_path / "final-1.npz") as other:
        assert all(np.array_equal(chief[name], other[name]) for name in chief.files)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(path.name for path in checkpoints.glob("*.index")) == ["ckpt-4.index", "ckpt-5.index"]
    assert not [path for path in checkpoints.iterdir() if path.name.startswith(".worker-")]


HPU_PROBE = """
import json
from habana_frameworks.tensorflow.distribute import HPUStrategy
from tensorflow.python.distribute.collective_all_reduce_strategy import CollectiveAllReduceStrategy
from models.errors import DeviceError
from training.strategy import make_strategy
placement = make_strategy("auto", environ={})
result = {"auto": placement.device, "precision": placement.precision,
          "hpu_strategy_base": issubclass(HPUStrategy, CollectiveAllReduceStrategy)}
try:
    make_strategy("hpu", environ={})
    result["hpu"] = "no error"
except DeviceError as exc:
    result["hpu"] = "DeviceError: " + str(exc)
print("RESULT " + json.dumps(result))
"""


@needs_hpu_venv
def test_real_habana_package_without_driver_trains_on_cpu_and_refuses_hpu() -> None:
    result = run_probe(HPU_PROBE)
    hpu = result.pop("hpu")
    assert result == {"auto": "cpu", "precision": "float32", "hpu_strategy_base": True}
    assert hpu.startswith("DeviceError: device 'hpu' requested but no Habana Gaudi device")
