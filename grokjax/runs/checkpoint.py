"""Orbax checkpoints of a run: every group's member state plus the host-side progress.

A checkpoint at step ``s`` holds the stacked states of all groups (parameters,
optimizer states with their injected hyperparameters, sampling keys, splits) and a
small JSON record (step, detector state). Batches depend only on (key, step), so
restoring and continuing reproduces an uninterrupted run bit for bit.

Kept: the latest three steps (a run's ``keep_checkpoints``), and the first step of
every octave ``[2^k, 2^(k+1))`` (log-spaced, for analyses that look back over the run);
or, with ``keep_checkpoints = 0``, every step. ``sha256.json`` beside the
steps holds a SHA-256 of every saved array's bytes per step; a restore recomputes and
compares them, so a damaged file is caught, not silently restored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from grokjax.errors import RunFolderError

__all__ = ["CheckpointError", "RunCheckpointer", "array_hashes", "checkpoint_due"]


class CheckpointError(RunFolderError):
    """A checkpoint is missing or cannot be read; the message names it."""


@dataclasses.dataclass
class _FirstPerOctave(policies.PreservationPolicy):
    """Preserves the first checkpoint of every octave of steps ``[2^k, 2^(k+1))``."""

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> Sequence[bool]:
        seen: set[int] = set()
        keep = []
        for info in sorted(checkpoints, key=lambda c: c.step):
            octave = int(info.step).bit_length()
            keep.append(octave not in seen)
            seen.add(octave)
        order = {id(c): i for i, c in enumerate(sorted(checkpoints, key=lambda c: c.step))}
        return [keep[order[id(c)]] for c in checkpoints]


def checkpoint_due(every: int, total_steps: int, steps_since: int, seconds_since: float) -> bool:
    """Whether to checkpoint now: ``every`` steps passed or, with ``every = 0``, a minute
    of training and 10% of the run's ``total_steps`` have (an interrupt or crash then
    loses at most the larger of the two).

    >>> checkpoint_due(0, 1000, 100, 60.0), checkpoint_due(0, 1000, 99, 600.0)
    (True, False)
    """
    if every:
        return steps_since >= every
    return seconds_since >= 60 and steps_since >= 0.1 * total_steps


def _host(tree: Any) -> Any:
    """``tree`` on the host; arrays spread over several processes are gathered first
    (every process must call this)."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def array_hashes(tree: Any) -> dict[str, str]:
    """SHA-256 of the bytes of every array leaf, keyed by its path in ``tree``."""
    leaves = jax.tree_util.tree_flatten_with_path(_host(tree))[0]
    return {
        jax.tree_util.keystr(path): hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
        for path, x in leaves
    }


class RunCheckpointer:
    """Periodic and final checkpoints under ``directory`` (async saves, orbax-managed)."""

    def __init__(self, directory: str | pathlib.Path, *, latest: int = 3):
        """Keep the ``latest`` steps and the first of every octave; ``latest = 0`` keeps
        every step."""
        self.directory = pathlib.Path(directory).resolve()
        keep = (
            policies.AnyPreservationPolicy([policies.LatestN(latest), _FirstPerOctave()])
            if latest
            else policies.PreserveAll()
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(preservation_policy=keep, create=True),
        )
        self._hash_path = self.directory / "sha256.json"

    def _hashes(self) -> dict[str, dict[str, str]]:
        if not self._hash_path.exists():
            return {}
        try:
            return json.loads(self._hash_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{self._hash_path} is damaged ({err}).") from None

    def save(self, step: int, states: Any, meta: dict[str, Any]) -> None:
        """Start saving (asynchronously; the next save or ``close`` waits for it) and
        record the arrays' hashes."""
        hashes = self._hashes()
        hashes[str(step)] = array_hashes(states)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(states), meta=ocp.args.JsonSave(meta)
            ),
        )
        if jax.process_index() != 0:  # process 0 writes the hashes of a multi-process run
            return
        kept = {str(s) for s in self._manager.all_steps()} | {str(step)}
        tmp = self._hash_path.with_name(".sha256.json.tmp")
        tmp.write_text(json.dumps({s: h for s, h in hashes.items() if s in kept}) + "\n")
        os.replace(tmp, self._hash_path)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def delete_after(self, step: int) -> None:
        """Delete the checkpoints after ``step`` (a resume from an earlier step
        abandons them)."""
        later = [s for s in self.all_steps() if s > step]
        for s in reversed(later):  # newest first: an interruption leaves a prefix
            self._manager.delete(s)
        if later and jax.process_index() == 0:
            hashes = {s: h for s, h in self._hashes().items() if int(s) <= step}
            tmp = self._hash_path.with_name(".sha256.json.tmp")
            tmp.write_text(json.dumps(hashes) + "\n")
            os.replace(tmp, self._hash_path)

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore the states (shaped, typed and sharded like ``template``) and meta of
        ``step`` (default: the latest), checked against the saved hashes."""
        steps = self.all_steps()
        step = self._manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"no checkpoint under {self.directory}: the run saved none (set "
                "checkpoint_every, or let the run finish once)."
            )
        earlier = [s for s in steps if s < step]
        offer = (
            f" If its files are damaged, resume from an earlier step with `grokjax run "
            f"--resume RUN_DIR --from-step {earlier[-1]}` (saved: {earlier}; the later "
            "checkpoints and metrics are then dropped)."
            if earlier
            else " No earlier checkpoint is left: start the experiment again."
        )
        if step not in steps:
            raise CheckpointError(f"no checkpoint at step {step} under {self.directory}.{offer}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as err:  # orbax raises several types for unreadable data
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be read ({reason}).{offer}"
            ) from err
        hashes = self._hashes()
        saved = hashes.get(str(step))
        if saved is None and hashes:
            print(
                f"grokjax: checkpoint {self.directory / str(step)} has no recorded hashes "
                "(its save was interrupted?): restored without the check",
                file=sys.stderr,
            )
        if saved is not None:
            got = array_hashes(restored["state"])
            bad = sorted(k for k in saved if got.get(k) != saved[k])
            if bad:
                raise CheckpointError(
                    f"checkpoint {self.directory / str(step)} is damaged: {len(bad)} array(s) "
                    f"differ from their saved SHA-256, e.g. {bad[0]}.{offer}"
                )
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
