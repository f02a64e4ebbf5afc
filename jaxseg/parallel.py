"""Devices, meshes and global arrays: the same code on 1 CPU, 8 fake devices, a GPU or a pod."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize_distributed() -> None:
    """Joins a multi-process run when launched as one (``JAX_COORDINATOR_ADDRESS`` etc. set, or a
    cluster jax detects, e.g. a TPU pod or SLURM); a single process does nothing."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh ``('data',)`` over all (or the given) devices."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """``(replicated, batch-sharded)`` shardings on ``mesh``."""
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def check_batch_size(global_batch: int, mesh: Mesh, name: str = "batch_size") -> int:
    """The per-process share of ``global_batch``; a clear error when it does not split evenly."""
    devices = mesh.devices.size
    if global_batch < 1 or global_batch % devices:
        raise ValueError(
            f"{name}={global_batch} must be a positive multiple of the device count ({devices})"
        )
    return global_batch // jax.process_count()


def global_batch(batch: dict, sharding: NamedSharding) -> dict:
    """Assembles host-local NumPy batches into global arrays sharded along the batch axis."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
