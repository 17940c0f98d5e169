"""Distributed training through ``tf.distribute``: which strategy a training config asks for, how
the input pipeline is split among its replicas, and where each worker writes.

``--distribute auto`` (the default) mirrors the model over every GPU of a machine that has
several, and trains on the one device otherwise; ``mirrored`` asks for MirroredStrategy
explicitly; ``multi-worker`` trains across machines with MultiWorkerMirroredStrategy, each worker
told its cluster and its own task by the ``TF_CONFIG`` environment variable.

The batch size of a training config is the GLOBAL batch (Keras' convention under a strategy):
each step, every replica gets ``batch_size / replicas`` images and the gradients are summed
over all of them. The learning rate is not scaled with the replica count.

Example:
    >>> placement = resolve_placement("auto")  # doctest: +SKIP
    >>> with placement.scope():  # doctest: +SKIP
    ...     model = build_compiled_model(config, steps_per_epoch)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edge_fm.compat import GPUS, tf
from edge_fm.errors import EdgeFMError, unknown_choice
from edge_fm.train.config import DISTRIBUTE as STRATEGIES

TF_CONFIG = "TF_CONFIG"
# Where a worker that is not the chief writes its copy of a run: removed when training ends.
_WORKER_DIR_PREFIX = "edge-fm-worker-"

# In-memory (from_tensor_slices) datasets have no files, so AUTO's FILE sharding would fail and
# fall back to DATA with a warning on every worker. DATA, set explicitly: every worker runs the
# whole pipeline with the same seeded shuffle and keeps only its share of each global batch, so
# the workers see disjoint images, as one device would. OFF would hand every worker the same
# images, repeating each one once per worker per step.
_SHARD_POLICY = tf.data.experimental.AutoShardPolicy.DATA


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where training runs: a strategy (None: TensorFlow's default, one device), its replicas,
    and whether this process is the chief, the one that writes the run directory."""

    kind: str  # none, mirrored or multi-worker: what the requested strategy resolved to
    strategy: Any = None  # the tf.distribute.Strategy, or None for one device
    replicas: int = 1  # model copies trained in step, over all workers
    workers: int = 1  # processes (machines) taking part
    is_chief: bool = True  # writes the run directory, checkpoints and metrics
    devices: tuple[str, ...] = ()  # this worker's devices holding a replica

    @property
    def distributed(self) -> bool:
        """True when a strategy is in force (even one with a single replica)."""
        return self.strategy is not None

    def scope(self) -> contextlib.AbstractContextManager:
        """The strategy's scope (models and optimizers built inside are mirrored), else a no-op."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def record(self, global_batch: int) -> dict[str, Any]:
        """What metrics.json records: the strategy, replicas and the batch each replica gets."""
        return {
            "strategy": self.kind,
            "replicas": self.replicas,
            "workers": self.workers,
            "devices": list(self.devices),
            "global_batch_size": global_batch,
            "per_replica_batch_size": global_batch // self.replicas,
        }


ONE_DEVICE = Placement("none")


def resolve_placement(requested: str) -> Placement:
    """Creates the strategy that ``requested`` (one of :data:`STRATEGIES`) names on this machine.

    ``multi-worker`` must be resolved before TensorFlow runs its first operation in the process
    (TensorFlow configures its collective ops once, at start-up); the training stage does so.

    Raises:
        EdgeFMError: An unknown name, a missing or malformed ``TF_CONFIG`` for ``multi-worker``,
            or a process in which TensorFlow has already started.
    """
    if requested not in STRATEGIES:
        raise unknown_choice("distribution strategy", requested, STRATEGIES)
    if requested == "none" or (requested == "auto" and len(GPUS) < 2):
        return ONE_DEVICE  # one device: today's behaviour, exactly
    if requested == "multi-worker":
        return _multi_worker()
    return _mirrored()


def _mirrored() -> Placement:
    # Every GPU of the machine; without one, every logical CPU device (normally just one).
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")
    ]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    return Placement("mirrored", strategy, strategy.num_replicas_in_sync, 1, True, tuple(devices))


def _multi_worker() -> Placement:
    cluster, task = read_tf_config()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        raise EdgeFMError(
            f"--distribute multi-worker could not start ({str(exc).splitlines()[0]}): it must be the first "
            "TensorFlow work of a fresh process; run `edge-fm train` once per worker."
        ) from None
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    devices = tuple(strategy.extended.worker_devices)
    return Placement(
        "multi-worker",
        strategy,
        strategy.num_replicas_in_sync,
        workers,
        bool(strategy.extended.should_checkpoint),
        devices,
    )


def read_tf_config() -> tuple[dict, dict]:
    """The cluster and this process's task from ``TF_CONFIG``, checked.

    Example of one worker's value (the other has ``"index": 1``)::

        {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}

    Raises:
        EdgeFMError: ``TF_CONFIG`` is unset, not JSON, or names a task its cluster lacks.
    """
    raw = os.environ.get(TF_CONFIG, "").strip()
    example = '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    if not raw:
        raise EdgeFMError(
            f"--distribute multi-worker needs the {TF_CONFIG} environment variable on every worker, e.g. {example}"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EdgeFMError(
            f"{TF_CONFIG} is not valid JSON ({exc.msg} at character {exc.pos}); write it as e.g. {example}"
        ) from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise EdgeFMError(f'{TF_CONFIG} needs a "cluster" object and a "task" object, e.g. {example}')
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(_is_address(a) for a in addresses):
            raise EdgeFMError(
                f'{TF_CONFIG} cluster "{kind}" must be a list of "host:port" addresses, got {addresses!r}.'
            )
    if not cluster.get("worker") and not cluster.get("chief"):
        raise EdgeFMError(f'{TF_CONFIG} cluster has no "worker" list; e.g. {example}')
    kind, index = task.get("type"), task.get("index")
    if (
        kind not in cluster
        or not isinstance(index, int)
        or isinstance(index, bool)
        or not 0 <= index < len(cluster[kind])
    ):
        raise EdgeFMError(
            f"{TF_CONFIG} task {task!r} is not in its cluster (types {sorted(cluster)}, "
            f"each indexed from 0); give this worker its own type and index."
        )
    return cluster, task


def _is_address(address: Any) -> bool:
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    return bool(host) and port.isdigit()


def distribute_pipeline(dataset: tf.data.Dataset, placement: Placement) -> tf.data.Dataset:
    """``dataset`` with the sharding policy the strategy should split it by (see ``_SHARD_POLICY``).

    Keras' ``fit`` distributes the dataset itself; this only states how. Unchanged without a strategy.
    """
    if not placement.distributed:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = _SHARD_POLICY
    return dataset.with_options(options)


def check_global_batch(batch_size: int, placement: Placement) -> None:
    """Checks that the global batch divides evenly among the replicas.

    Raises:
        EdgeFMError: It does not (with the nearest batch sizes that do).
    """
    replicas = placement.replicas
    if batch_size % replicas:
        lower, upper = (
            max(replicas, batch_size - batch_size % replicas),
            batch_size + replicas - batch_size % replicas,
        )
        raise EdgeFMError(
            f"batch_size {batch_size} is the global batch and must split evenly over {replicas} replicas; "
            f"use {lower} or {upper}."
        )


@contextlib.contextmanager
def writable_run_dir(run_dir: Path | None, placement: Placement) -> Iterator[Path]:
    """The directory this process writes the run into: ``run_dir`` for the chief, else a temporary copy.

    A worker that is not the chief still saves everything the chief saves (reading the batch-norm
    statistics of a multi-worker model takes every worker), into a temporary copy of the run that
    starts from the chief's files, so a resumed run goes on from the chief's checkpoint and
    history everywhere; the copy is removed when training ends.
    """
    if placement.is_chief:
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix=_WORKER_DIR_PREFIX))
    try:
        if run_dir is not None and run_dir.is_dir():  # resuming: start from the chief's files
            shutil.copytree(run_dir, scratch, dirs_exist_ok=True)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = [
    "ONE_DEVICE",
    "STRATEGIES",
    "Placement",
    "check_global_batch",
    "distribute_pipeline",
    "read_tf_config",
    "resolve_placement",
    "writable_run_dir",
]
