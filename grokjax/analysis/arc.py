"""Exact match on ARC tasks, per validation group: a probe.

An ARC task is solved when every one of its test outputs is produced exactly. With
teacher forcing, the output is produced exactly by greedy decoding exactly when every
output token is the argmax given the true prefix (the first wrong token would be the
first greedy mistake), so one forward pass grades greedy decoding.

For each validation group ``g`` of an ARC task (see
:func:`grokjax.data.arc_sets.build_arc_task`), with ``R_g`` its rows (one per test
output), ``K_g`` its tasks (including those with a test sequence too long for the
model, which count as unsolved) and ``S_r`` row ``r``'s output positions:

- ``arc/<g>/exact`` = mean over ``r ∈ R_g`` of ``∏_{t∈S_r} [argmax = label]``;
- ``arc/<g>/task_exact`` = (1/|K_g|) Σ_k ∏_{r of k} exact_r;
- ``arc/<g>/token_acc`` = the fraction of output tokens that are the argmax;
- ``arc/<g>/loss`` = the mean over rows of the row's mean output-token cross entropy;
- ``arc/<g>/tasks`` and ``arc/<g>/tasks_fit``: ``|K_g|`` and how many of its tasks fit.

References:
  Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547 (the exact-match
  metric of ARC).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grokjax.analysis.probes import ProbeContext
from grokjax.errors import ConfigError

__all__ = ["arc_exact_match"]


def arc_exact_match(ctx: ProbeContext) -> dict[str, jax.Array]:
    """Exact match (per test output and per task), token accuracy and loss of each
    validation group of an ARC task (see the module docstring)."""
    facts = getattr(ctx.task, "facts", {}) or {}
    if "val_groups" not in facts:
        raise ConfigError(
            "probe grokjax.analysis.arc_exact_match reads an ARC task's validation groups: "
            "use it with data.kind = 'arc'."
        )
    x, y = ctx.val
    logits = ctx.logits_fn(ctx.params, x)  # (N, T, V)
    inside = y >= 0  # labels outside the output are IGNORE (-1)
    right = (jnp.argmax(logits, -1) == y) & inside
    exact_N = jnp.all(right | ~inside, -1)
    loss_N = ctx.loss_fn(logits, y)
    row = ctx.val_idx - ctx.task.num_train  # index into the validation facts
    task_N = facts["val_task_of_row"][row]
    group_K = facts["val_task_group"]
    num_tasks = group_K.shape[0]
    rows_K = jax.ops.segment_sum(jnp.ones_like(task_N), task_N, num_tasks)
    exact_rows_K = jax.ops.segment_sum(exact_N.astype(jnp.int32), task_N, num_tasks)
    solved_K = (exact_rows_K == rows_K) & (rows_K > 0) & facts["val_task_complete"]
    group_N = group_K[task_N]
    out = {}
    for g, name in enumerate(facts["val_groups"]):
        in_N = (group_N == g).astype(jnp.float32)
        in_K = (group_K == g).astype(jnp.float32)
        rows = jnp.maximum(jnp.sum(in_N), 1.0)
        tokens = jnp.maximum(jnp.sum(inside * in_N[:, None]), 1.0)
        out[f"arc/{name}/exact"] = jnp.sum(exact_N * in_N) / rows
        out[f"arc/{name}/task_exact"] = jnp.sum(solved_K * in_K) / jnp.maximum(jnp.sum(in_K), 1)
        out[f"arc/{name}/token_acc"] = jnp.sum(right * in_N[:, None]) / tokens
        out[f"arc/{name}/loss"] = jnp.sum(loss_N * in_N) / rows
        # the group's size, for reports: its tasks, and those whose every sequence fits
        out[f"arc/{name}/tasks"] = jnp.sum(in_K)
        out[f"arc/{name}/tasks_fit"] = jnp.sum(in_K * facts["val_task_complete"])
    return out
