"""Lay members out across devices, and across processes: a ``("members", "data")``
mesh, ``NamedSharding``, padding, and the host-side agreement of a multi-process run.

The ``"members"`` axis splits a group's members; the ``"data"`` axis (``data_parallel``
devices, 1 by default) splits each member's batch, so one larger model trains
data-parallel: parameters are replicated along it, the batch is constrained to it
inside the step, and XLA reduces the gradients across it from the shardings alone.

Each group's leading member axis is split over the mesh. A group whose member count
``M`` does not divide the device count ``n`` is padded to the next multiple of ``n``
with copies of its last member (:func:`pad_members`): the copies train like it and are
dropped from every metric and checkpoint, so every member is really sharded instead
of replicated on all devices. Checkpoints hold the ``M`` real members (laid out by
:func:`group_shardings` for ``M``), so they restore onto another device or process
count.
The compiled interval function is jitted with these shardings in and out, so the
layout never changes between calls and nothing recompiles. On one device this is a
no-op.

With several processes (``jax.distributed``), ``jax.devices()`` are all processes'
devices and every process runs the same program on its own; what the host decides
from wall-clock time or signals must be the same everywhere (:func:`agree`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from grokjax.errors import ConfigError

__all__ = [
    "agree",
    "anyone",
    "batch_sharding",
    "group_shardings",
    "is_primary",
    "member_mesh",
    "pad_members",
    "padded_size",
    "place",
]

AXIS = "members"
DATA = "data"


def member_mesh(devices: list[Any] | None = None, data: int = 1) -> Mesh:
    """A ``("members", "data")`` mesh over ``devices`` (default: all, of every
    process): ``data`` devices share each member's batch, ``len(devices) / data``
    member slots split the members."""
    devices = devices if devices is not None else jax.devices()
    if len(devices) % data:
        raise ConfigError(
            f"data_parallel = {data} does not divide the {len(devices)} devices: give a "
            "divisor of the device count."
        )
    # Auto axes: XLA propagates the member sharding through the step (gathers from the
    # replicated data table included); explicit axes would need out_sharding everywhere.
    return jax.make_mesh(
        (len(devices) // data, data),
        (AXIS, DATA),
        devices=devices,
        axis_types=(AxisType.Auto, AxisType.Auto),
    )


def batch_sharding(mesh: Mesh) -> NamedSharding | None:
    """How a member's batch is laid out inside the vmapped step (``"data"`` over its
    leading axis; the member axis is added by ``vmap(spmd_axis_name="members")``), or
    ``None`` when each member's batch stays on one device."""
    return NamedSharding(mesh, PartitionSpec(DATA)) if mesh.shape[DATA] > 1 else None


def padded_size(size: int, devices: int) -> int:
    """``size`` rounded up to a multiple of ``devices``.

    >>> padded_size(3, 2), padded_size(4, 2), padded_size(3, 1)
    (4, 4, 3)
    """
    return math.ceil(size / devices) * devices


def pad_members(tree: Any, size: int, padded: int) -> Any:
    """``tree`` (leaves with a leading axis of ``size`` members) with ``padded − size``
    copies of the last member appended."""
    if padded == size:
        return tree
    return jax.tree.map(
        lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - size, axis=0)]), tree
    )


def _spec(leaf: Any, size: int, mesh: Mesh) -> NamedSharding:
    n = mesh.shape[AXIS]
    split = n > 1 and size % n == 0 and getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == size
    return NamedSharding(mesh, PartitionSpec(AXIS) if split else PartitionSpec())


def group_shardings(tree: Any, size: int, mesh: Mesh) -> Any:
    """A sharding per leaf of a group's tree whose leading axis has ``size`` members:
    split over the mesh when ``size`` is a multiple of its devices, else replicated."""
    return jax.tree.map(lambda leaf: _spec(leaf, size, mesh), tree)


def place(tree: Any, shardings: Any) -> Any:
    """Put ``tree`` on the devices with ``shardings`` (every process passes the same
    values: they are built from the same config and seeds)."""
    return jax.device_put(tree, shardings)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always, with one)."""
    return jax.process_index() == 0


def agree(*flags: bool) -> tuple[bool, ...]:
    """Process 0's ``flags``, on every process: host decisions that depend on wall-clock
    time or signals (save a checkpoint now, stop now) must not differ between processes,
    or one would wait in a collective the others never join.

    >>> agree(True, False)  # one process: its own
    (True, False)
    """
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    got = multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32))
    return tuple(bool(x) for x in np.asarray(got))


def anyone(flag: bool) -> bool:
    """Whether ``flag`` is set on any process (a stop signal that reached one of them).

    >>> anyone(False)
    False
    """
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))
