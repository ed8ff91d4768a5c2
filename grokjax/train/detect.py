"""Grokking detection: when each member memorised, when it generalised, the delay.

Robust and simple: the first evaluated step at which the (running) training accuracy
reaches ``train_threshold`` (default 0.99), the first at which validation accuracy
reaches ``val_threshold`` (default 0.95, the Grokfast paper's number), and the delay
between them. ``None`` until it happens. A regression task watches its losses instead,
and a crossing is the first evaluation at or below the threshold (``below``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GrokDetector", "crossed"]


@dataclass
class GrokDetector:
    """Per-member first-crossing steps for each group, updated at every evaluation."""

    sizes: list[int]
    train_threshold: float = 0.99
    val_threshold: float = 0.95
    # the metrics compared with the thresholds (the task's ``watch``)
    metrics: tuple[str, str] = ("train_acc", "val_acc")
    below: bool = False  # the watched metrics are losses: cross at or below the thresholds
    memorised: list[np.ndarray] = field(init=False)
    generalised: list[np.ndarray] = field(init=False)
    # the step of the evaluation at which a member was found diverged (a run with
    # ``on_divergence = "continue"`` trains on without it)
    diverged: list[np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.memorised = [np.full(n, -1, np.int64) for n in self.sizes]
        self.generalised = [np.full(n, -1, np.int64) for n in self.sizes]
        self.diverged = [np.full(n, -1, np.int64) for n in self.sizes]

    def update(self, step: int, metrics: list[dict[str, np.ndarray]]) -> None:
        """Record ``step`` for members crossing a threshold for the first time."""
        for g, m in enumerate(metrics):
            first_train = (self.memorised[g] < 0) & self._crossed(
                m[self.metrics[0]], self.train_threshold
            )
            first_val = (self.generalised[g] < 0) & self._crossed(
                m[self.metrics[1]], self.val_threshold
            )
            self.memorised[g][first_train] = step
            self.generalised[g][first_val] = step

    def _crossed(self, values, threshold: float) -> np.ndarray:
        return crossed(np.asarray(values), threshold, self.below)

    def all_generalised(self) -> bool:
        return all(bool(np.all(g >= 0)) for g in self.generalised)

    def member(self, g: int, m: int) -> dict[str, int | None]:
        """``{"memorised": step, "generalised": step, "delay": steps}`` (None if not yet),
        and ``"diverged": step`` for a member that diverged."""
        mem, gen, div = (int(a[g][m]) for a in (self.memorised, self.generalised, self.diverged))
        mem_s = mem if mem >= 0 else None
        gen_s = gen if gen >= 0 else None
        delay = gen_s - mem_s if mem_s is not None and gen_s is not None else None
        row = {"memorised": mem_s, "generalised": gen_s, "delay": delay}
        # only when it happened: grokking.json of a healthy run keeps its old form
        return row | ({"diverged": div} if div >= 0 else {})

    def state_dict(self) -> dict[str, list[list[int]]]:
        return {
            "memorised": [a.tolist() for a in self.memorised],
            "generalised": [a.tolist() for a in self.generalised],
            "diverged": [a.tolist() for a in self.diverged],
        }

    def load_state_dict(self, state: dict[str, list[list[int]]]) -> None:
        self.memorised = [np.asarray(a, np.int64) for a in state["memorised"]]
        self.generalised = [np.asarray(a, np.int64) for a in state["generalised"]]
        # checkpoints written before divergence was recorded hold no "diverged"
        diverged = state.get("diverged") or [np.full(n, -1) for n in self.sizes]
        self.diverged = [np.asarray(a, np.int64) for a in diverged]


def crossed(values, threshold: float, below: bool = False):
    """``values >= threshold`` (``<=`` when ``below``), the threshold cast to the values'
    floating dtype: the device and the host (NumPy) then agree whatever type the
    threshold arrives in, e.g. on float32(0.95), which a float64 0.95 exceeds.

    >>> import numpy as np
    >>> bool(crossed(np.float32(0.95), np.float64(0.95)))
    True
    >>> bool(np.float32(0.95) >= np.float64(0.95))
    False
    """
    xp = jnp if isinstance(values, jax.Array) else np
    values = xp.asarray(values)
    dtype = values.dtype if xp.issubdtype(values.dtype, xp.floating) else xp.float32
    limit = xp.asarray(threshold, dtype)
    return values <= limit if below else values >= limit
