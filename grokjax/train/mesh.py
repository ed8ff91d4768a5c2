"""Lay members out across devices, and across processes: a ``"members"`` mesh,
``NamedSharding``, padding, and the host-side agreement of a multi-process run.

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

__all__ = [
    "agree",
    "group_shardings",
    "is_primary",
    "member_mesh",
    "pad_members",
    "padded_size",
    "place",
]

AXIS = "members"


def member_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, of every process) with axis
    ``"members"``."""
    devices = devices if devices is not None else jax.devices()
    # Auto axes: XLA propagates the member sharding through the step (gathers from the
    # replicated data table included); explicit axes would need out_sharding everywhere.
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices, axis_types=(AxisType.Auto,))


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
    n = mesh.devices.size
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
    or one would wait in a collective the others never join."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    got = multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32))
    return tuple(bool(x) for x in np.asarray(got))
