"""The pure, compiled part of training: sampling, the train step, evaluation.

One compiled call runs one *evaluation interval* for every member of every group:
``lax.scan`` over the interval's steps, each step applied to every member of each
group (``vmap``, or ``lax.map`` on one CPU device: see :func:`resolve_member_axis`),
then an evaluation on the full validation split. The global step counter is a scalar
shared by all members (they advance in lockstep), so nothing branches per member.

Batches are drawn inside the step by the task (:meth:`Task.batch_rows
<grokjax.data.task.Task.batch_rows>`) from the member's key and the step alone, so
training is deterministic and resumes bit for bit. A streamed task
(:attr:`Task.streamed <grokjax.data.task.Task.streamed>`) instead gets the interval's
batches as one ``(interval, B, window + 1)`` array in ``data["batches_IBT"]``; the scan
hands step ``s`` its batch ``s − start_step``, the same for every member.

Vector inputs may get Gaussian input noise per member (``input_noise``, plus the
Surge-Collapse entropy pump's), drawn from the member's key and the step; a decoder
with ``model.dropout`` gets its dropout masks the same way (evaluation: none). With
entropy tracking (an MLP), each step measures the activation entropy of the last
hidden layer and the label entropy of its batch, and hands the normalised activation
entropy to the optimizer as the extra argument ``activation_entropy``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

import grokjax as gj
from grokjax.analysis.probes import ENTROPY_MEANS, ProbeContext, run_probes, uses_last_step
from grokjax.data.task import Task
from grokjax.optim import has_state
from grokjax.train.detect import crossed
from grokjax.train.state import Group, GroupState

__all__ = [
    "StopRule",
    "make_interval_fn",
    "member_probe_context",
    "metric_names",
    "task_data",
]

_NOISE_SALT = 0x6E6F6973  # separates the input-noise stream from batch sampling
_DROPOUT_SALT = 0x64726F70  # and the dropout stream from both


def _step_mean_names(group: Group) -> tuple[str, ...]:
    return ("train_loss", "train_acc", *(ENTROPY_MEANS if group.features_fn else ()))


def metric_names(
    group: Group, task: Task, probes: Sequence[Callable], state: GroupState
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(scalars, arrays)``: the names of what an interval reports per member of
    ``group``. Scalars: the training means first, then the evaluation's (validation
    loss and accuracy, ``finite`` and the probes' scalars, in ``eval_shape``'s sorted
    order); arrays: the probes' non-scalar outputs."""
    member = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state)
    means = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in _step_mean_names(group)}
    last = (member.params, member.params) if uses_last_step(probes) else None
    evaluated = jax.eval_shape(
        functools.partial(_member_eval, group, task, tuple(probes)),
        member,
        means,
        last,
        jax.ShapeDtypeStruct((), jnp.int32),
    )
    scalars = tuple(k for k, v in evaluated.items() if not v.shape)
    arrays = tuple(k for k, v in evaluated.items() if v.shape)
    return ("train_loss", "train_acc", *scalars), arrays


def _mean(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean accumulated in at least float32 (per-example values may be float16).

    ``weights`` weigh the leading (batch) axis; trailing axes (a sequence's positions)
    are averaged within each example. A batch with no weight (a curriculum that admits
    none of its rows) has mean 0, so its gradient is 0.
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if weights is None:
        return jnp.mean(x)
    x = jnp.mean(x.reshape((*x.shape[: weights.ndim], -1)), axis=-1)
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _member_grads(
    group: Group,
    task: Task,
    member: tuple,
    step: jax.Array,
    first_epoch: jax.Array | None = None,
    batch_sharding: Any = None,
    batch: jax.Array | None = None,
):
    """Gradient, ``[loss·count, correct, count(, H·count, H/ln W·count, H_target)]`` and
    the optimizer's extra arguments (see :func:`_member_update`) of one member's batch.

    ``member`` is ``(params, key, train_idx, perms, input_noise)`` (``perms`` may be
    ``None``). ``batch_sharding`` spreads the batch over the mesh's ``"data"`` axis.
    ``batch`` is a streamed task's ``(B, window + 1)`` batch of this step.
    """
    params, key, train_idx, perms, sigma = member
    if batch is not None:
        x, y, mask = task.stream_rows(batch)
        if batch_sharding is not None:
            x, y, mask = (lax.with_sharding_constraint(a, batch_sharding) for a in (x, y, mask))
    else:
        rows, mask = task.batch_rows(key, step, train_idx, perms, first_epoch, group.curriculum)
        if batch_sharding is not None:  # the rows decide where the gathered batch lives
            rows, mask = (lax.with_sharding_constraint(a, batch_sharding) for a in (rows, mask))
        x, y = task.rows(rows)
    if group.noisy:
        noise_key = jax.random.fold_in(jax.random.fold_in(key, _NOISE_SALT), step)
        x = task.dense(x)
        x = x + (sigma * jax.random.normal(noise_key, x.shape, jnp.float32)).astype(x.dtype)
    count = jnp.sum(mask)
    entropy = group.features_fn is not None
    drop = {}
    if group.dropout:  # a fresh mask per step, from the member's key and the step alone
        drop["dropout_key"] = jax.random.fold_in(jax.random.fold_in(key, _DROPOUT_SALT), step)

    def loss_fn(params):
        if entropy:
            logits, hidden = group.features_fn(params, x)
        else:
            logits, hidden = group.logits_fn(params, x, **drop), None
        return _mean(task.losses(logits, y, *group.loss), mask), (logits, hidden)

    (mean_loss, (logits, hidden)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    hits = task.hits(logits, y).reshape(y.shape[0], -1)  # (B, positions)
    correct = jnp.sum(jnp.mean(hits, axis=-1) * mask)
    stats = [mean_loss.astype(jnp.float32) * count, correct, count]
    extra = {"value": mean_loss.astype(jnp.float32)}
    if not entropy:
        return grads, jnp.stack(stats), extra
    h = gj.activation_entropy(hidden, where=mask > 0)
    h_norm = h / math.log(hidden.shape[-1])
    h_target = gj.target_entropy(y, task.num_classes, where=mask > 0)
    extra["activation_entropy"] = h_norm
    return grads, jnp.stack([*stats, h * count, h_norm * count, h_target]), extra


def _member_update(group: Group, grads, opt_state, params, extra):
    """One optimizer update: ``(params, opt_state, updates)`` after ``grads``.

    ``extra`` reaches the optimizer as optax extra arguments: ``value`` (the batch's
    mean training loss, e.g. for ``optax.contrib.reduce_on_plateau``) and, with
    entropy tracking, ``activation_entropy`` (the batch's normalised activation entropy,
    e.g. for Surge-Collapse's controller). Transforms that take neither ignore them.
    """
    updates, new_state = group.tx.update(grads, opt_state, params, **extra)
    # Half-precision moments meet float32 hyperparameters and widen: keep every state
    # leaf in the dtype it was initialised in (the parameters' dtype, as PyTorch does).
    new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, opt_state)
    return optax.apply_updates(params, updates), new_state, updates


def _member_step(
    group: Group,
    task: Task,
    state: GroupState,
    step: jax.Array,
    perms: jax.Array | None = None,
    first_epoch: jax.Array | None = None,
    batch_sharding: Any = None,
    batch: jax.Array | None = None,
):
    """One member's whole training step (the unbatched reference of a group step)."""
    sigma = state.input_noise + gj.surge_collapse_input_noise(state.opt_state)
    member = (state.params, state.key, state.train_idx, perms, sigma)
    grads, stats, extra = _member_grads(
        group, task, member, step, first_epoch, batch_sharding, batch
    )
    params, opt_state, updates = _member_update(group, grads, state.opt_state, state.params, extra)
    return state._replace(params=params, opt_state=opt_state), stats, (grads, updates)


def _group_step(
    group: Group,
    task: Task,
    member_axis: str,
    state: GroupState,
    perms: jax.Array | None,
    step: jax.Array,
    first_epoch: jax.Array,
    batch_sharding: Any = None,
    batch: jax.Array | None = None,
):
    """Every member's step (and its gradients and updates): :func:`_member_step` vmapped,
    or for ``lax.map`` the gradients mapped, then one vmapped optimizer update. With
    ``batch_sharding`` (a ``"data"`` axis) the vmap names the mesh's member axis, so the
    batch's sharding constraint keeps members split too.

    Only the gradient — the matmuls — runs under ``lax.map``: mapping the update too
    would slice each member's whole optimizer state out of the stacked state and write
    it back every step, which is slow for large states such as Grokfast-MA's
    100-gradient window (benchmarks/grokfast_ma_state.py); the update is elementwise, so
    vmapping it costs nothing.
    """
    if member_axis == "vmap" or batch_sharding is not None:

        def member_step(st, s, pm, fe, b):
            return _member_step(group, task, st, s, pm, fe, batch_sharding, b)

        axis = "members" if batch_sharding is not None else None
        return jax.vmap(member_step, in_axes=(0, None, 0, None, None), spmd_axis_name=axis)(
            state, step, perms, first_epoch, batch
        )
    # each member's input-noise σ: its own, plus what a Surge-Collapse pump asks for
    sigma = state.input_noise + gj.surge_collapse_input_noise(state.opt_state)
    members = (state.params, state.key, state.train_idx, perms, sigma)
    grads_fn = functools.partial(_member_grads, group, task)
    grads, stats, extra = lax.map(lambda m: grads_fn(m, step, first_epoch, None, batch), members)
    update = functools.partial(_member_update, group)
    args = (grads, state.opt_state, state.params, extra)
    if has_state(state.opt_state, gj.optim.BRANCHING_STATES):
        # a ``cond`` that skips costly work would become a ``select`` under vmap
        params, opt_state, updates = lax.map(lambda a: update(*a), args)
    else:
        params, opt_state, updates = jax.vmap(update)(*args)
    return state._replace(params=params, opt_state=opt_state), stats, (grads, updates)


def member_probe_context(
    group: Group,
    task: Task,
    state: GroupState,
    step_means: Mapping[str, jax.Array] | None = None,
    last_step: tuple[Any, Any] | None = None,
    step: jax.Array | None = None,
) -> ProbeContext:
    """One member's :class:`~grokjax.analysis.probes.ProbeContext` at an evaluation."""
    grads, updates = last_step if last_step is not None else (None, None)
    return ProbeContext(
        params=state.params,
        opt_state=state.opt_state,
        logits_fn=group.evaluate_fn,
        loss_fn=lambda logits, labels: task.losses(logits, labels, *group.loss),
        normalizer=group.loss[0],
        loss_dtype=group.loss[1],
        train=task.rows(state.train_idx),
        val=task.rows(state.val_idx),
        step_means=dict(step_means or {}),
        last_grads=grads,
        last_updates=updates,
        task=task,
        train_idx=state.train_idx,
        val_idx=state.val_idx,
        intermediates_fn=group.intermediates_fn,
        init_params=state.init_params,
        step=step,
    )


def _member_eval(
    group: Group,
    task: Task,
    probes: tuple[Callable, ...],
    state: GroupState,
    step_means: Mapping[str, jax.Array] | None = None,
    last_step: tuple[Any, Any] | None = None,
    step: jax.Array | None = None,
) -> dict[str, jax.Array]:
    ctx = member_probe_context(group, task, state, step_means, last_step, step)
    x, y = ctx.val
    logits = group.evaluate_fn(state.params, x)
    val_loss = _mean(task.losses(logits, y, *group.loss))
    finite = (
        jnp.isfinite(optax.tree.norm(state.params))
        & jnp.isfinite(val_loss)
        & jnp.isfinite(ctx.step_means.get("train_loss", 0.0))
    )
    # NaN logits still have an argmax: the accuracy of a diverged member is no number
    val_acc = jnp.where(finite, jnp.mean(task.hits(logits, y)), jnp.nan)
    out = {"val_loss": val_loss, "val_acc": val_acc, "finite": finite}
    taken = {"step", "method", "group", "member", "seed", "train_loss", "train_acc", *out}
    return {**out, **run_probes(probes, ctx, taken)}


def _over_members(fn, member_axis: str, batched: int = 1):
    """Apply ``fn(*member_args, *shared)`` to every member: batched (vmap) or one by one.

    The first ``batched`` arguments have a leading member axis; the rest are shared.
    ``"map"`` (``lax.map``) keeps every matmul unbatched. On the CPU that is faster:
    a vmapped member axis turns each projection into a batched dot, which XLA runs
    slower there (benchmarks/train_throughput.py). ``"vmap"`` suits accelerators and
    sharded members.
    """

    def over(*args):
        members, shared = args[:batched], args[batched:]
        if member_axis == "vmap":
            return jax.vmap(fn, in_axes=(0,) * batched + (None,) * len(shared))(*args)
        return lax.map(lambda m: fn(*m, *shared), members)

    return over


def resolve_member_axis(member_axis: str, num_devices: int) -> str:
    """``"auto"``: ``"map"`` on a single CPU device, else ``"vmap"``."""
    if member_axis != "auto":
        return member_axis
    return "map" if num_devices == 1 and jax.default_backend() == "cpu" else "vmap"


def task_data(task: Task) -> dict[str, jax.Array]:
    """The task's arrays that :func:`make_interval_fn`'s ``data`` argument replaces."""
    names = ("inputs_N", "labels_N", "difficulty_N")
    return {n: getattr(task, n) for n in names if getattr(task, n) is not None}


def make_interval_fn(
    groups: Sequence[Group],
    task: Task,
    interval: int,
    member_axis: str = "vmap",
    *,
    probes: Sequence[Callable] = (),
    unroll: int = 1,
    batch_sharding: Any = None,
    stop: StopRule | None = None,
):
    """``fn(states, start_step, data=None) -> (states, metrics)`` for one evaluation
    interval.

    ``metrics`` holds one dict per group of ``(M,)`` arrays named as in
    :func:`metric_names` (losses in at least float32, float64 for a float64 loss).
    Jit it once (donating ``states``); calls differ only in ``start_step``.
    ``member_axis`` is ``"vmap"`` or ``"map"`` (see :func:`resolve_member_axis`).
    Each group computes its per-example losses with its own ``group.loss`` (normalizer,
    dtype); means accumulate in at least float32. ``probes`` (bound probe functions,
    :mod:`grokjax.analysis.probes`) add their outputs. ``unroll`` steps run as
    straight-line code per iteration of the interval's loop (``unroll = interval``
    removes the loop; it costs compile time and memory and pays only where XLA compiles
    an op worse inside a loop). ``batch_sharding`` (:func:`grokjax.train.mesh.
    batch_sharding`) splits each member's batch over the mesh's ``"data"`` axis.

    ``data`` (:func:`task_data`), when given, replaces the task's arrays: passed as an
    argument of the jitted function they stay device buffers, where closed-over arrays
    would be embedded in the program as constants (slow to compile for a large table).
    A streamed task's ``data`` also holds ``batches_IBT``, the interval's ``(interval,
    B, window + 1)`` batches (the same shape on every call: no recompilation).

    With a ``stop`` rule the stop decision is taken on the device:
    ``fn(states, start_step, data, crossed) -> (states, metrics, crossed)``, where
    ``crossed`` holds one ``(M,)`` bool array per group, true for a member whose watched
    metric has reached the rule's threshold at some evaluation. Once every member of
    every group has, a call skips its interval (a ``lax.cond``: no training step, no
    evaluation; the states come back as they went in and the metrics are zeros). The
    intervals the host dispatched ahead of its next sync then cost nothing and the
    final state is the one evaluated when the last member crossed: the host stops at
    the first interval whose returned ``crossed`` is all true and drops the rest. With
    the rule's ``skip_diverged``, a member whose loss or parameters are not finite counts
    as crossed: it no longer holds the stop up.
    """
    keep_last = uses_last_step(probes)  # else the carry holds no gradients
    shuffle = task.sampling == "epoch"
    spans = task.epochs_spanned(interval) if shuffle else 0

    def interval_fn(states: list[GroupState], start_step: jax.Array, data=None, *, done=None):
        t = task if data is None else dataclasses.replace(task, **data)
        steps = [
            functools.partial(_group_step, g, t, member_axis, batch_sharding=batch_sharding)
            for g in groups
        ]
        evals = [
            _over_members(functools.partial(_member_eval, g, t, tuple(probes)), member_axis, 3)
            for g in groups
        ]
        permute = _over_members(
            lambda st, first: t.epoch_permutations(st.key, first, spans), member_axis
        )
        # The shuffles this interval needs, computed once per member (not once per step).
        first_epoch = start_step // task.steps_per_epoch
        perms = [permute(st, first_epoch) if shuffle else None for st in states]

        def body(carry, xs):
            states, sums, last = carry
            offset, batch = xs  # batch: the streamed task's batch of this step, or None
            out = [
                step_fn(st, pm, start_step + offset, first_epoch, batch=batch)
                for step_fn, st, pm in zip(steps, states, perms, strict=True)
            ]
            states = [s for s, _, _ in out]
            sums = [acc + stats for acc, (_, stats, _) in zip(sums, out, strict=True)]
            last = [grads_updates for _, _, grads_updates in out] if keep_last else last
            return (states, sums, last), None

        width = 3 if groups[0].features_fn is None else 6
        zeros = [jnp.zeros((st.key.shape[0], width), jnp.float32) for st in states]
        last = [(st.params, st.params) if keep_last else None for st in states]
        last = jax.tree.map(jnp.zeros_like, last)
        batches = t.batches_IBT if task.streamed else None
        if task.streamed and (batches is None or batches.shape[0] != interval):
            raise ValueError(
                f"a streamed task needs data['batches_IBT'] of {interval} batches (the "
                "interval's), from Task.open_feed."
            )

        def train(carry):
            carry, _ = lax.scan(
                body, carry, (jnp.arange(interval), batches), unroll=min(unroll, interval)
            )
            return carry

        carry = (list(states), zeros, last)
        (states, sums, last) = train(carry) if done is None else lax.cond(done, _same, train, carry)
        metrics = []
        for eval_fn, st, s, ls in zip(evals, states, sums, last, strict=True):
            means = {"train_loss": s[:, 0] / s[:, 2], "train_acc": s[:, 1] / s[:, 2]}
            if s.shape[1] == 6:
                means.update(
                    act_entropy=s[:, 3] / s[:, 2],
                    act_entropy_norm=s[:, 4] / s[:, 2],
                    target_entropy=s[:, 5] / interval,
                )
            args = (st, means, ls, start_step + interval)
            if done is None:
                ev = eval_fn(*args)
            else:  # the skipped branch needs the evaluation's shapes: traced abstractly
                shapes = jax.eval_shape(eval_fn, *args)
                ev = lax.cond(done, functools.partial(_zeros, shapes), eval_fn, *args)
            train_acc = jnp.where(ev["finite"], means["train_acc"], jnp.nan)  # as val_acc
            metrics.append({"train_loss": means["train_loss"], "train_acc": train_acc, **ev})
        return states, metrics

    if stop is None:
        return functools.partial(interval_fn, done=None)

    def stopping_fn(states, start_step, data, crossed_G):
        done = jnp.all(jnp.stack([jnp.all(c) for c in crossed_G]))
        states, metrics = interval_fn(states, start_step, data, done=done)
        crossed_G = [
            c | (~done & (stop.crossed(m[stop.metric]) | (stop.skip_diverged & ~m["finite"])))
            for c, m in zip(crossed_G, metrics, strict=True)
        ]
        return states, metrics, crossed_G

    return stopping_fn


def _same(x):
    return x


def _zeros(shapes, *_):
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


@dataclasses.dataclass(frozen=True)
class StopRule:
    """Stop once every member's ``metric`` has reached ``threshold`` (≥, or ≤ when
    ``below``) at some evaluation: the grokking detector's validation crossing."""

    metric: str = "val_acc"
    threshold: float = 0.95
    below: bool = False
    # a member whose loss or parameters are NaN/Inf is done too (on_divergence = "continue")
    skip_diverged: bool = False

    def crossed(self, values: jax.Array) -> jax.Array:
        """``values`` at or beyond the threshold, compared in their own dtype (as
        :class:`~grokjax.train.detect.GrokDetector` does on the host)."""
        return crossed(values, self.threshold, self.below)
