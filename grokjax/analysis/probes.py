"""Probes: measurements taken inside the compiled training program at every evaluation.

A probe is a pure function ``probe(ctx, **kwargs) -> dict[str, Array]`` of one
member's :class:`ProbeContext`. Its scalars become columns of ``metrics.jsonl`` (named
as returned); its arrays are saved per evaluation in the run's
``analysis/step_<step>.npz`` as ``<method>/<name>`` with a leading member axis. It runs
under ``jit`` and the trainer's member axis, so it must be traceable and must return
the same names and shapes at every evaluation. An
experiment lists its probes by dotted name, with keyword arguments::

    probes = [
      { probe = "grokjax.analysis.activation_shapes" },
      { probe = "grokjax.analysis.numerical_stability" },
      { probe = "grokjax.analysis.confusion_matrix" },
      { probe = "my_package.my_probe", k = 5 },
    ]

Adding a probe needs no change to the trainer: write the function, name it in a config.

Besides the member's state and the evaluation splits, a probe may read aggregates of
the interval's training steps; it declares which with :func:`reads`, so the trainer
keeps only what some probe asks for:

- ``ctx.step_means``: interval means of the steps' statistics: ``train_loss`` and
  ``train_acc`` always, and with ``track_entropy`` the :data:`ENTROPY_MEANS`;
- ``ctx.last_grads`` and ``ctx.last_updates`` (``reads("last_step")``): the gradient
  and the optimizer's update of the interval's last step;
- ``ctx.init_params`` (``reads("init_params")``): the member's initial parameters,
  which the run then carries in its state (and checkpoints).

References:
  Prieto et al. 2025, "Grokking at the Edge of Numerical Stability" (the
  numerical-stability diagnostics).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from grokjax.errors import ConfigError

__all__ = [
    "ENTROPY_MEANS",
    "ProbeContext",
    "activation_shapes",
    "last_step_geometry",
    "leaf_names",
    "numerical_stability",
    "probe_reads",
    "reads",
    "resolve_probe",
    "run_probes",
    "surge_collapse_events",
    "training_entropy",
]

# Step means with ``track_entropy`` (an MLP): the activation entropy of the last hidden
# layer in nats and normalised by ln(width), and the label entropy in bits, averaged
# over the interval's batches.
ENTROPY_MEANS = ("act_entropy", "act_entropy_norm", "target_entropy")


@dataclasses.dataclass(frozen=True)
class ProbeContext:
    """What a probe sees of one member at an evaluation.

    Attributes:
      params: the member's parameters (a pytree).
      opt_state: the member's optimizer state.
      logits_fn: ``logits_fn(params, x) -> logits`` (the model, evaluation mode).
      loss_fn: ``loss_fn(logits, labels) -> per-example losses``, with the method's
        normalizer, computed in its loss dtype.
      normalizer: ``"softmax"`` or ``"stablemax"``: what ``loss_fn`` normalises with.
      loss_dtype: the dtype ``loss_fn`` computes in (``"float32"``, …).
      train: ``(inputs, labels)`` of the member's whole training split.
      val: ``(inputs, labels)`` of its validation split.
      step_means: interval means of the training steps' statistics, by name.
      last_grads: the last training step's gradient (a probe that :func:`reads`
        ``"last_step"``; else ``None``).
      last_updates: that step's update, as added to the parameters (likewise).
      task: the :class:`~grokjax.data.task.Task`: the whole table (``task.inputs_N``,
        ``task.labels_N``, on the device), ``task.num_classes`` and ``task.facts``
        (what the data kind says of its rows, e.g. a modular table's ``op`` and ``p``).
      train_idx: the member's training rows of the table; ``val_idx``: its validation
        rows.
      intermediates_fn: ``(params, x) -> (logits, sites)``, the model's forward pass
        over whole sequences with its internal activations by site name (see
        :mod:`grokjax.nn.kinds`); ``None`` for a model kind without one.
      init_params: the member's parameters at step 0 (a probe that :func:`reads`
        ``"init_params"``; else ``None``).
      step: the global step of the evaluation (a scalar int32 array).
    """

    params: Any
    opt_state: Any
    logits_fn: Callable[[Any, jax.Array], jax.Array]
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array]
    normalizer: str
    loss_dtype: str
    train: tuple[jax.Array, jax.Array]
    val: tuple[jax.Array, jax.Array]
    step_means: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)
    last_grads: Any = None
    last_updates: Any = None
    task: Any = None
    train_idx: jax.Array | None = None
    val_idx: jax.Array | None = None
    intermediates_fn: Callable[[Any, jax.Array], tuple[jax.Array, dict]] | None = None
    init_params: Any = None
    step: jax.Array | None = None


def reads(*aggregates: str) -> Callable[[Callable], Callable]:
    """Declare what a probe reads beyond the member's state: ``"last_step"`` (gradient
    and update of the interval's last step), ``"init_params"`` (the initial
    parameters) and/or names of ``ctx.step_means``.

    >>> @reads("last_step")
    ... def grad_norm(ctx):
    ...     return {"grad_sq": sum(jnp.sum(g**2) for g in jax.tree.leaves(ctx.last_grads))}
    >>> sorted(probe_reads(grad_norm))
    ['last_step']
    """

    def mark(probe: Callable) -> Callable:
        probe.reads = frozenset(aggregates)
        return probe

    return mark


def probe_reads(probe: Callable) -> frozenset[str]:
    """What :func:`reads` declared for ``probe`` (a function or a bound partial)."""
    return getattr(getattr(probe, "func", probe), "reads", frozenset())


def uses_last_step(probes: Any) -> bool:
    """Whether any of ``probes`` reads the last step's gradients and updates."""
    return any("last_step" in probe_reads(p) for p in probes)


def uses_init_params(probes: Any) -> bool:
    """Whether any of ``probes`` reads the initial parameters."""
    return any("init_params" in probe_reads(p) for p in probes)


def leaf_names(params: Any) -> list[str]:
    """``"layers/0/kernel"``-style names of the parameter leaves, in tree order.

    >>> leaf_names({"layers": [{"kernel": 1, "bias": 2}], "head": 3})
    ['head', 'layers/0/bias', 'layers/0/kernel']
    """

    def name(key) -> str | None:
        if isinstance(key, jax.tree_util.GetAttrKey):  # an nnx.Variable's ``.value``
            return None if key.name == "value" else key.name
        return str(getattr(key, "key", getattr(key, "idx", key)))

    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return ["/".join(n for k in path if (n := name(k)) is not None) for path, _ in paths]


def _mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)))


def numerical_stability(ctx: ProbeContext) -> dict[str, jax.Array]:
    """Prieto et al.'s diagnostics on the member's whole training split.

    ``sc_fraction``: Softmax Collapse fraction with the loss's normalizer, in the loss's
    precision; ``zero_loss_fraction``: per-example losses exactly 0; ``logit_norm``:
    mean L2 norm of the logits; ``weight_norm``: global L2 norm of the parameters;
    ``nlm_cos/<leaf>``: cos(w, −∇L) per leaf, ∇L the full training-split gradient, and
    ``nlm_cos_mean`` their mean.
    """
    import grokjax as gj

    x, y = ctx.train

    def train_loss(params):
        logits = ctx.logits_fn(params, x)
        losses = ctx.loss_fn(logits, y)
        return _mean(losses), (logits, losses)

    grads, (logits, losses) = jax.grad(train_loss, has_aux=True)(ctx.params)
    cosines = jax.tree.leaves(gj.nlm_cosine(ctx.params, grads))
    wide = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    out = {
        "sc_fraction": gj.softmax_collapse_fraction(
            logits, dtype=ctx.loss_dtype, normalizer=ctx.normalizer
        ),
        "zero_loss_fraction": gj.zero_loss_fraction(losses),
        "logit_norm": jnp.mean(jnp.linalg.norm(wide, axis=-1)),
        "weight_norm": gj.global_weight_norm(ctx.params),
        "nlm_cos_mean": jnp.mean(jnp.stack(cosines)),
    }
    names = leaf_names(ctx.params)
    out.update({f"nlm_cos/{n}": c for n, c in zip(names, cosines, strict=True)})
    return out


def activation_shapes(ctx: ProbeContext) -> dict[str, jax.Array]:
    """``k/<site>``: ``k = exp(log_k)`` of every learnable activation shape
    (:class:`grokjax.nn.SWELU`, :class:`grokjax.nn.SwishK`); nothing for models
    without one."""
    leaves = jax.tree.leaves(ctx.params)
    return {
        f"k/{name.removesuffix('/log_k')}": jnp.exp(leaf).astype(jnp.float32)
        for name, leaf in zip(leaf_names(ctx.params), leaves, strict=True)
        if name.endswith("log_k")
    }


@reads(*ENTROPY_MEANS)
def training_entropy(ctx: ProbeContext) -> dict[str, jax.Array]:
    """The :data:`ENTROPY_MEANS` of the interval's training batches (they need
    ``track_entropy = true``): ``act_entropy``, ``act_entropy_norm``,
    ``target_entropy``."""
    return {k: ctx.step_means[k] for k in ENTROPY_MEANS}


@reads("last_step")
def last_step_geometry(ctx: ProbeContext) -> dict[str, jax.Array]:
    """How the optimizer turned the last step's gradient ``g`` into its update ``u``:
    ``last_grad_norm`` ‖g‖, ``last_update_norm`` ‖u‖ (global L2 norms) and
    ``last_update_cos`` cos(u, −g) (1 for SGD; Grokfast's amplified slow component and
    Adam's rescaling turn it away from −g)."""
    g = [x.astype(jnp.float32).ravel() for x in jax.tree.leaves(ctx.last_grads)]
    u = [x.astype(jnp.float32).ravel() for x in jax.tree.leaves(ctx.last_updates)]
    g, u = jnp.concatenate(g), jnp.concatenate(u)
    g_norm, u_norm = jnp.linalg.norm(g), jnp.linalg.norm(u)
    cos = -jnp.dot(g, u) / jnp.maximum(g_norm * u_norm, jnp.finfo(jnp.float32).tiny)
    return {"last_grad_norm": g_norm, "last_update_norm": u_norm, "last_update_cos": cos}


def surge_collapse_events(ctx: ProbeContext) -> dict[str, jax.Array]:
    """``zero_fraction`` of the parameters and Surge-Collapse's cumulative ``collapses``,
    ``surges`` and ``pumps`` (0 for an optimizer without it)."""
    import grokjax as gj

    events = gj.surge_collapse_events(ctx.opt_state)
    out = {"zero_fraction": gj.zero_fraction(ctx.params)}
    out.update({k: events[k].astype(jnp.float32) for k in ("collapses", "surges", "pumps")})
    return out


def run_probes(
    probes: Sequence[Callable], ctx: ProbeContext, taken: Collection[str] = ()
) -> dict[str, jax.Array]:
    """Every probe's outputs on ``ctx``, merged; a name that another probe or ``taken``
    already holds is a :class:`~grokjax.errors.ConfigError` naming the probe."""
    out: dict[str, jax.Array] = {}
    for probe in probes:
        measured = probe(ctx)
        clash = sorted(measured.keys() & (out.keys() | set(taken)))
        if clash:
            name = getattr(getattr(probe, "func", probe), "__name__", repr(probe))
            raise ConfigError(
                f"probe {name} returns {clash}, which another metric or a metrics.jsonl "
                "column already names: rename its outputs (e.g. with a prefix)."
            )
        out.update(measured)
    return out


def resolve_probe(spec: Mapping[str, Any]) -> Callable[[ProbeContext], dict[str, jax.Array]]:
    """The probe a config spec ``{ probe = "module.name", **kwargs }`` names, with its
    keyword arguments bound. Raises ``ValueError`` naming what is wrong."""
    name = spec.get("probe")
    if not isinstance(name, str) or "." not in name:
        raise ValueError(f"probe = {name!r}: give a dotted name, e.g. 'grokjax.analysis.X'.")
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"probe = {name!r}: cannot import {module_name!r} ({err}).") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"probe = {name!r}: {module_name} has no function {attr!r}.")
    kwargs = {k: v for k, v in spec.items() if k != "probe"}
    for key, value in kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} = {value!r}: probe {name} needs a finite number.")
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        params[0].POSITIONAL_ONLY,
        params[0].POSITIONAL_OR_KEYWORD,
    ):
        raise ValueError(f"probe = {name!r}: a probe takes the ProbeContext as its first argument.")
    accepted = [p.name for p in params[1:] if p.kind is not p.VAR_KEYWORD]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
        raise ValueError(
            f"{unknown[0]}: probe {name} has no keyword {unknown[0]!r}; its keywords are "
            f"{accepted}."
        )
    missing = [
        p.name
        for p in params[1:]
        if p.default is p.empty
        and p.name not in kwargs
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if missing:
        raise ValueError(f"{missing[0]}: probe {name} needs the keyword {missing[0]!r}.")
    return functools.partial(fn, **kwargs)
