"""Where and how training runs: the device, the tf.distribute strategy, the precision and the batch shapes.

- HPU (Habana Gaudi): the Habana module is loaded only after `models.devices.hpu_available` saw an HPU in a child
  interpreter (a failed load aborts the process). Launched as one process per card with `mpirun -np N`
  (2 <= N <= 8 per host), each process joins an `HPUStrategy` cluster described by TF_CONFIG; one process alone
  trains on its card with the default strategy. Layers compute in bfloat16 under the `mixed_bfloat16`
  `tf.keras.mixed_precision` policy, set per layer (not globally, so export and evaluation stay float32), and the
  sigmoid output layer in float32. Graphs are compiled for fixed shapes, so batches are always full
  (`drop_remainder=True`).
- GPU: `MirroredStrategy` over the GPUs of the one process. CPU: the default strategy.

TF_CONFIG under mpirun: when the environment already has one (set by an orchestrator) it is used as is, after
checking it against the MPI rank and size. Otherwise it is built from a host list and a base port: ranks fill
the hosts in order (`per_host = size / len(hosts)`, the `mpirun --map-by ppr:N:node` layout), and rank r is worker
`hosts[r // per_host]:(base_port + r % per_host)`. The default, `localhost` and port 7850, is one DL1 instance:
`localhost:7850 ... localhost:7857` for 8 cards. Nothing here could run against a real Gaudi in this repository's
CI (no driver): see training/dl1/README.md for what was and was not verified.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from models.devices import Device, gpu_available, hpu_available, select_device
from models.errors import FakewebError

logger = logging.getLogger(__name__)

MAX_CARDS_PER_HOST = 8  # a dl1.24xlarge has 8 Gaudi cards
DEFAULT_BASE_PORT = 7850
TF_CONFIG_ENV = "TF_CONFIG"
RANK_ENV = "OMPI_COMM_WORLD_RANK"
SIZE_ENV = "OMPI_COMM_WORLD_SIZE"
LOCAL_RANK_ENV = "OMPI_COMM_WORLD_LOCAL_RANK"
BF16_POLICY = "mixed_bfloat16"
FLOAT32_POLICY = "float32"
OUTPUT_LAYER = "probability"  # training.architectures names the sigmoid output layer so

StrategyFactory = Callable[[tf.distribute.cluster_resolver.ClusterResolver], tf.distribute.Strategy]


class StrategyError(FakewebError):
    """A launch, cluster or batch configuration that cannot train as requested."""


@dataclass(frozen=True)
class Worker:
    """This process's place among the processes of one job (MPI rank and size; one process: 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise StrategyError(f"invalid MPI rank {self.rank} of {self.size}")

    @property
    def is_chief(self) -> bool:
        """Rank 0 writes checkpoints, logs and the package; the others only train."""
        return self.rank == 0

    @staticmethod
    def from_env(environ: Mapping[str, str] = os.environ) -> Worker:
        """Rank and size from Open MPI's OMPI_COMM_WORLD_* variables (set by `mpirun`); 0 of 1 without them."""
        try:
            rank = int(environ.get(RANK_ENV, "0"))
            size = int(environ.get(SIZE_ENV, "1"))
            local = environ.get(LOCAL_RANK_ENV)
            return Worker(rank, size, None if local is None else int(local))
        except ValueError as exc:
            raise StrategyError(f"malformed {RANK_ENV}/{SIZE_ENV}/{LOCAL_RANK_ENV}: {exc}") from exc


def tf_config(
    worker: Worker, hosts: Sequence[str] = ("localhost",), base_port: int = DEFAULT_BASE_PORT
) -> dict[str, Any]:
    """The TF_CONFIG of `worker` in a cluster of `worker.size` processes filling `hosts` in order."""
    if not hosts or worker.size % len(hosts):
        raise StrategyError(f"{worker.size} processes do not divide evenly over the hosts {list(hosts)}")
    per_host = worker.size // len(hosts)
    if per_host > MAX_CARDS_PER_HOST:
        raise StrategyError(
            f"{per_host} processes per host, but a host has at most {MAX_CARDS_PER_HOST} cards"
        )
    if worker.local_rank is not None and worker.local_rank != worker.rank % per_host:
        raise StrategyError(
            f"rank {worker.rank} has local rank {worker.local_rank}, expected {worker.rank % per_host}: "
            f"launch with `mpirun --map-by ppr:{per_host}:node` so ranks fill hosts in order"
        )
    if not 0 < base_port <= 65535 - per_host:
        raise StrategyError(f"invalid base port {base_port}")
    workers = [f"{hosts[r // per_host]}:{base_port + r % per_host}" for r in range(worker.size)]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": worker.rank}}


def cluster_resolver(
    worker: Worker,
    environ: Mapping[str, str] = os.environ,
    hosts: Sequence[str] = ("localhost",),
    base_port: int = DEFAULT_BASE_PORT,
) -> tf.distribute.cluster_resolver.SimpleClusterResolver:
    """The cluster of a multi-process job: TF_CONFIG from the environment if set (and consistent), else built."""
    text = environ.get(TF_CONFIG_ENV)
    try:
        config = json.loads(text) if text else tf_config(worker, hosts, base_port)
        workers = list(config["cluster"]["worker"])
        task_type, index = str(config["task"]["type"]), int(config["task"]["index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StrategyError(
            f"{TF_CONFIG_ENV} is not JSON with a cluster.worker list and a task: {exc!r}"
        ) from exc
    if len(workers) != worker.size or (task_type, index) != ("worker", worker.rank):
        raise StrategyError(
            f"{TF_CONFIG_ENV} describes {task_type} {index} of {len(workers)} workers, "
            f"but MPI says rank {worker.rank} of {worker.size}"
        )
    logger.info("worker %d of %d; cluster %s", worker.rank, worker.size, workers)
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": workers}), task_type="worker", task_id=worker.rank
    )


@dataclass(frozen=True)
class Placement:
    """The resolved device, strategy, precision and worker of a training job."""

    device: Device
    strategy: tf.distribute.Strategy
    worker: Worker
    precision: str = FLOAT32_POLICY

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def global_batch_size(self, per_replica: int) -> int:
        """Examples per step over all replicas: per-replica batch x replicas."""
        if per_replica < 1:
            raise StrategyError(f"the per-replica batch size must be >= 1, got {per_replica}")
        return per_replica * self.replicas

    def steps_per_epoch(self, examples: int, per_replica: int) -> int:
        """Full global batches in `examples` (the last partial batch is dropped: shapes stay static)."""
        steps = examples // self.global_batch_size(per_replica)
        if steps < 1:
            raise StrategyError(
                f"{examples} training examples do not fill one global batch of "
                f"{self.global_batch_size(per_replica)} ({per_replica} x {self.replicas} replicas)"
            )
        return steps

    def prepare_model(self, model: tf.keras.Model) -> tf.keras.Model:
        """`model` as it should train here: under bf16 a copy computing in bfloat16 with a float32 output layer.

        Call inside `strategy.scope()`. Variables stay float32 under `mixed_bfloat16`, so weights carry over.
        """
        if self.precision == FLOAT32_POLICY:
            return model
        return with_policy(model, self.precision, float32_layers=(OUTPUT_LAYER,))


def make_strategy(
    requested: str = "auto",
    *,
    environ: Mapping[str, str] = os.environ,
    hosts: Sequence[str] = ("localhost",),
    base_port: int = DEFAULT_BASE_PORT,
    probe_hpu: Callable[[], bool] = hpu_available,
    probe_gpu: Callable[[], bool] = gpu_available,
    load_habana: Callable[[], None] | None = None,
    hpu_strategy: StrategyFactory | None = None,
) -> Placement:
    """Resolve `requested` (auto|hpu|gpu|cpu) and build its strategy; call before any other TensorFlow work.

    `load_habana` and `hpu_strategy` default to the real Habana module; tests replace them (and `probe_hpu`)
    because no Gaudi is present. An absent requested device is a DeviceError; an mpirun launch on anything but
    HPU is a StrategyError (GPUs train from one process with MirroredStrategy).
    """
    worker = Worker.from_env(environ)
    device = select_device(requested, probe_hpu=probe_hpu, probe_gpu=probe_gpu)
    if device != "hpu":
        if worker.size > 1:
            raise StrategyError(
                f"launched as {worker.size} MPI processes, but only HPU training runs one process per card; "
                f"run a single process on {device}"
            )
        strategy = tf.distribute.MirroredStrategy() if device == "gpu" else tf.distribute.get_strategy()
        return Placement(device, strategy, worker)
    (load_habana or _load_habana_module)()
    if worker.size == 1:
        strategy = tf.distribute.get_strategy()
    else:
        resolver = cluster_resolver(worker, environ, hosts, base_port)
        strategy = (hpu_strategy or _habana_strategy)(resolver)
    return Placement(device, strategy, worker, BF16_POLICY)


def check_static_batches(dataset: tf.data.Dataset, global_batch: int) -> None:
    """Raise StrategyError unless every element of `dataset` has the same fully known shape, batch first.

    A dataset batched with `drop_remainder=True` and fixed-size images passes; HPU graphs need that, and the
    other devices are held to it too so the schedule (steps per epoch) is the same everywhere.
    """
    for spec in tf.nest.flatten(dataset.element_spec):
        shape = spec.shape
        if not shape.is_fully_defined() or shape.rank == 0 or shape[0] != global_batch:
            raise StrategyError(
                f"batches must have a static shape with batch size {global_batch}, got {shape}: "
                "use fixed-size images and .batch(global_batch, drop_remainder=True)"
            )


def with_policy(model: tf.keras.Model, policy: str, float32_layers: Sequence[str] = ()) -> tf.keras.Model:
    """A copy of a functional `model` whose layers use dtype `policy` (`float32_layers` float32), same weights."""

    def clone(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = FLOAT32_POLICY if layer.name in float32_layers else policy
        return layer.__class__.from_config(config)

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def float32_copy(model: tf.keras.Model) -> tf.keras.Model:
    """`model` computing in float32 throughout, for export (TFLite and serving run float32)."""
    return with_policy(model, FLOAT32_POLICY)


def _load_habana_module() -> None:
    """Idempotent: reached only after `select_device` returned "hpu", i.e. after the child-process probe saw
    an HPU and `hpu_available` loaded the module here."""
    import habana_frameworks.tensorflow as htf  # type: ignore[import-not-found]

    htf.load_habana_module()


def _habana_strategy(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> tf.distribute.Strategy:
    from habana_frameworks.tensorflow.distribute import HPUStrategy  # type: ignore[import-not-found]

    return HPUStrategy(cluster_resolver=resolver)
