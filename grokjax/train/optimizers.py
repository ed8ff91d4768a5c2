"""Build a method's optax chain from its :class:`~grokjax.train.config.OptimizerConfig`.

The chain is, in order (each part only when configured)::

    Grokfast filter (ema | ma) → ⊥Grad → coupled L2 (wd·w added to the gradient)
      → Adam | SGD-momentum → decoupled decay (AdamW) → × min(k / warmup, 1) → × −lr

computed in ``optimizer.state_dtype`` when that is set (:func:`grokjax.with_state_dtype`);
and, with ``surge_collapse.schedule`` other than ``"none"``, the whole chain wrapped in
:func:`grokjax.surge_collapse` (collapse / surge after the update). This
reproduces PyTorch's ``Adam(weight_decay=wd)`` after a Grokfast filter (the
Grokfast paper's runs) with ``decay="coupled"`` and ``AdamW`` with ``"decoupled"``.
Every float hyperparameter is injected with :func:`optax.inject_hyperparams`, so it
lives in the optimizer state and members of a vmapped sweep each carry their own.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

import grokjax as gj
from grokjax.train.config import SWEEPABLE, OptimizerConfig

__all__ = ["hyperparam_dtype", "initial_hyperparams", "optimizer_factory"]


def _warmup(steps: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The learning-rate factor ``min(k / steps, 1)`` for update ``k = 0, 1, …``."""
    if steps == 0:
        return lambda count: jnp.ones([], jnp.float32)
    return lambda count: jnp.minimum(count / steps, 1.0).astype(jnp.float32)


def optimizer_factory(cfg: OptimizerConfig) -> Callable[..., optax.GradientTransformation]:
    """An ``inject_hyperparams`` factory taking the sweepable floats as keywords.

    Call it as ``factory(**initial_hyperparams(cfg, overrides))``; structural fields
    (filter kind, window size, decay placement, warm-up length) are fixed by ``cfg``.
    """

    def chain(learning_rate, b1, b2, eps, weight_decay, alpha, lamb, momentum):
        parts = []
        if cfg.filter == "ema":
            parts.append(gj.grokfast_ema(alpha=alpha, lamb=lamb))
        elif cfg.filter == "ma":
            parts.append(
                gj.grokfast_ma(
                    cfg.window_size,
                    lamb=lamb,
                    filter_type=cfg.filter_type,
                    warmup=cfg.filter_warmup,
                )
            )
        if cfg.orthograd:
            parts.append(gj.orthograd())
        if cfg.decay == "coupled":
            parts.append(optax.add_decayed_weights(weight_decay))
        if cfg.name == "adam":
            parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
        else:
            parts.append(optax.trace(decay=momentum))
        if cfg.decay == "decoupled":
            parts.append(optax.add_decayed_weights(weight_decay))
        parts.append(optax.scale_by_schedule(_warmup(cfg.warmup_steps)))
        parts.append(optax.scale(-1.0 * learning_rate))
        inner = optax.chain(*parts)
        if cfg.state_dtype:
            inner = gj.with_state_dtype(inner, cfg.state_dtype)
        return _surge_collapse(cfg, inner)

    return optax.inject_hyperparams(chain, hyperparam_dtype=hyperparam_dtype(cfg))


def hyperparam_dtype(cfg: OptimizerConfig) -> jnp.dtype:
    """The dtype of a method's injected hyperparameters: float32, or float64 with float64
    optimizer state (then Adam's bias corrections 1 − β^t are float64 too; a float32 β2
    is off by ~1e-8)."""
    return jnp.dtype(jnp.float64 if cfg.state_dtype == "float64" else jnp.float32)


def _surge_collapse(cfg: OptimizerConfig, inner: optax.GradientTransformation):
    sc = cfg.surge_collapse
    if sc.schedule == "none":
        return inner
    fields = gj.EntropyControllerConfig._fields  # the config's controller fields
    controller = gj.EntropyControllerConfig(**{f: getattr(sc, f) for f in fields})
    return gj.surge_collapse(
        inner,
        schedule=sc.schedule,
        sparsity=sc.sparsity,
        recovery=sc.recovery,
        collapse_every=sc.collapse_every,
        surge_every=sc.surge_every,
        moments=sc.moments,
        surge_only_pruned=sc.surge_only_pruned,
        controller=controller,
    )


def initial_hyperparams(cfg: OptimizerConfig, overrides: dict[str, float] | None = None):
    """The injected hyperparameters of one member: ``cfg``'s values, then ``overrides``."""
    values = {name: float(getattr(cfg, name)) for name in SWEEPABLE}
    values.update({k: v for k, v in (overrides or {}).items() if k in SWEEPABLE})
    return values
