"""Orbax checkpoints of a run: every group's member state plus the host-side progress.

A checkpoint at step ``s`` holds the stacked states of all groups (parameters,
optimizer states with their injected hyperparameters, sampling keys, splits) and a
small JSON record (step, detector state). Batches depend only on (key, step), so
restoring and continuing reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from grokjax.errors import RunFolderError

__all__ = ["CheckpointError", "RunCheckpointer"]


class CheckpointError(RunFolderError):
    """A checkpoint is missing or cannot be read; the message names it."""


class RunCheckpointer:
    """Periodic and final checkpoints under ``directory`` (async saves, orbax-managed)."""

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int | None = 3):
        self.directory = pathlib.Path(directory).resolve()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def save(self, step: int, states: Any, meta: dict[str, Any]) -> None:
        """Start saving (asynchronously); the next save or ``close`` waits for it."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(states), meta=ocp.args.JsonSave(meta)
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore the states (shaped, typed and sharded like ``template``) and meta."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"no checkpoint under {self.directory}: the run saved none (set "
                "checkpoint_every, or let the run finish once)."
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as err:  # orbax raises several types for unreadable data
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be read ({type(err).__name__}: "
                f"{err}). It may be corrupt or from another config; remove that step folder to "
                "resume from an earlier checkpoint."
            ) from err
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
