"""The device mesh of data-parallel training, and global batches built from host data.

One code path from one CPU to a multi-host TPU pod: a 1-D ``jax.sharding.Mesh`` whose
single axis ``"batch"`` spans ``jax.devices()`` (every device of every process).
Batches are sharded along it, parameters and optimiser state are replicated, and
``jax.jit`` (GSPMD) inserts the gradient all-reduce itself. Each process loads only
its own ``global_batch / process_count`` rows; :func:`global_batch` assembles them into
one global ``jax.Array`` with ``jax.make_array_from_process_local_data``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["BATCH_AXIS", "make_mesh", "batch_sharding", "replicated", "global_batch",
           "check_batch_size"]

BATCH_AXIS = "batch"


def make_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A mesh with one ``"batch"`` axis over ``devices`` (default: all devices, all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the ``"batch"`` mesh axis, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state)."""
    return NamedSharding(mesh, P())


def check_batch_size(name: str, global_batch_size: int, mesh: Mesh):
    """ValueError unless ``global_batch_size`` splits evenly over the mesh's devices."""
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(f"{name}={global_batch_size} is not divisible by the number of "
                         f"devices ({n}); use a multiple of {n}.")


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
    """This process's rows ``[global_batch / process_count, ...]`` -> global sharded array."""
    local = np.asarray(local)
    global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local, global_shape)
