"""Lay members out across devices: a 1-D ``"members"`` mesh and ``NamedSharding``.

Each group's leading member axis is split over the mesh when its size is a multiple
of the device count; otherwise that group is replicated (every device computes all of
its members, which is correct but does not spread the work). The compiled interval
function is jitted with these shardings in and out, so the layout never changes
between calls and nothing recompiles. On one device this is a no-op.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["group_shardings", "member_mesh", "place"]

AXIS = "members"


def member_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) with axis ``"members"``."""
    devices = devices if devices is not None else jax.devices()
    # Auto axes: XLA propagates the member sharding through the step (gathers from the
    # replicated data table included); explicit axes would need out_sharding everywhere.
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices, axis_types=(AxisType.Auto,))


def _spec(leaf: Any, size: int, mesh: Mesh) -> NamedSharding:
    n = mesh.devices.size
    split = n > 1 and size % n == 0 and getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == size
    return NamedSharding(mesh, PartitionSpec(AXIS) if split else PartitionSpec())


def group_shardings(tree: Any, size: int, mesh: Mesh) -> Any:
    """A sharding per leaf of a group's tree whose leading axis has ``size`` members."""
    return jax.tree.map(lambda leaf: _spec(leaf, size, mesh), tree)


def place(tree: Any, shardings: Any) -> Any:
    """Put ``tree`` on the devices with ``shardings``."""
    return jax.device_put(tree, shardings)
