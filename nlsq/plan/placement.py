"""Placement of a chunked fit's data on devices: a one-axis mesh, several processes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: Mesh axis name of the data.
DATA_AXIS = "data"


def data_mesh(devices: Any = None) -> Mesh | None:
    """A one-axis mesh (axis ``'data'``) over ``devices``; None for a single device.

    ``devices``: None (all devices, ``jax.devices()``), a :class:`Mesh` with one axis,
    an int (the first that many devices), or a sequence of devices.
    """
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1:
            raise ValueError("The mesh for data sharding must have exactly one axis.")
        return devices if devices.size > 1 else None
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int):
        devices = jax.devices()[:devices]
    devices = list(devices)
    return Mesh(np.array(devices), (DATA_AXIS,)) if len(devices) > 1 else None


def place(host_arrays: Any, mesh: Mesh | None) -> Any:
    """Device arrays with the leading (block) axis sharded over ``mesh``.

    With several processes (``jax.distributed.initialize``), each process passes its
    own blocks and they are assembled into one global array.
    """
    if mesh is None:
        return jax.device_put(host_arrays)
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    if jax.process_count() > 1:
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(sharding, a), host_arrays
        )
    return jax.device_put(host_arrays, sharding)


def global_points(local_m: int) -> tuple[int, int]:
    """``(total points, most points of any process)`` over all processes."""
    if jax.process_count() == 1:
        return local_m, local_m
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.asarray(local_m, np.int64)))
    return int(sizes.sum()), int(sizes.max())
