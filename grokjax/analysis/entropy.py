"""Entropy of activations and of labels (Surge-Collapse, seed 001).

Both functions are pure and jit/vmap-able; ``where`` masks padded batch rows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["activation_entropy", "target_entropy"]

_METHODS = ("softmax", "histogram")


def _masked_mean(x_B: jax.Array, where: jax.Array | None) -> jax.Array:
    if where is None:
        return jnp.mean(x_B)
    w = where.astype(x_B.dtype)
    return jnp.sum(x_B * w) / jnp.maximum(jnp.sum(w), 1)


def _xlogx(p: jax.Array) -> jax.Array:
    """``p·ln p`` with the limit 0 at p = 0 (and a finite gradient there)."""
    safe = jnp.where(p > 0, p, 1)
    return jnp.where(p > 0, p * jnp.log(safe), 0)


def activation_entropy(
    h: jax.Array,
    *,
    method: str = "softmax",
    normalize: bool = False,
    bins: int = 32,
    where: jax.Array | None = None,
) -> jax.Array:
    r"""Mean per-sample entropy (nats) of the activations ``h`` (``(..., width)``).

    ``method="softmax"``: each sample's activations become a distribution over the
    ``W`` units, ``p = softmax(h)``, and its entropy is ``H = −Σ_j p_j ln p_j`` (in
    ``[0, ln W]``: ``ln W`` for equal activations, → 0 as one unit dominates).
    ``method="histogram"``: each sample's ``W`` values are counted in ``bins``
    equal-width bins spanning that sample's ``[min, max]`` and ``H`` is the entropy
    of the bin frequencies (in ``[0, ln bins]``; 0 when all values are equal).

    Returns the mean of ``H`` over the leading (batch) axes, in float32 (or wider);
    ``normalize=True`` divides by the maximum, ``ln W`` (softmax) or ``ln bins``
    (histogram), giving a number in ``[0, 1]``. ``where`` (the batch shape, bool)
    averages over the selected samples only.

    >>> activation_entropy(jnp.zeros((4, 256)), normalize=True)   # uniform softmax
    Array(1., dtype=float32)
    >>> float(activation_entropy(jnp.array([[0.0, 0.0, 1000.0]])))  # one unit dominates
    0.0
    """
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not an entropy method; choose one of {_METHODS}.")
    if h.ndim < 1 or h.shape[-1] < 2:
        raise ValueError(f"activations need a unit axis of width >= 2, got shape {h.shape}.")
    h = h.astype(jnp.promote_types(h.dtype, jnp.float32))
    width = h.shape[-1]
    if method == "softmax":
        logp = jax.nn.log_softmax(h, axis=-1)
        per_sample = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
        top = math.log(width)
    else:
        if bins < 2:
            raise ValueError(f"bins={bins}: a histogram needs at least 2 bins.")
        lo = jnp.min(h, axis=-1, keepdims=True)
        span = jnp.max(h, axis=-1, keepdims=True) - lo
        # (h − lo)·bins / span, multiplied first so values on a bin edge land in it exactly
        scaled = jnp.where(span > 0, (h - lo) * bins / jnp.where(span > 0, span, 1), 0)
        index = jnp.clip(jnp.floor(scaled).astype(jnp.int32), 0, bins - 1)
        counts = jnp.sum(jax.nn.one_hot(index, bins, dtype=h.dtype), axis=-2)
        per_sample = -jnp.sum(_xlogx(counts / width), axis=-1)
        top = math.log(bins)
    per_sample = per_sample.reshape(-1)
    mask = None if where is None else jnp.broadcast_to(where, h.shape[:-1]).reshape(-1)
    mean = _masked_mean(per_sample, mask)
    return mean / top if normalize else mean


def target_entropy(
    labels: jax.Array, num_classes: int, *, where: jax.Array | None = None
) -> jax.Array:
    r"""Shannon entropy in **bits** of the label distribution of a batch.

    With ``c_k`` the count of class ``k`` among the (selected) labels and
    ``q_k = c_k / Σ c``, ``H = −Σ_k q_k log₂ q_k``: ``log₂ K`` when all ``K``
    classes are equally frequent, 0 for a single class.

    >>> target_entropy(jnp.arange(8), 8)
    Array(3., dtype=float32)
    >>> float(target_entropy(jnp.zeros(5, jnp.int32), 8))
    0.0
    """
    w = jnp.ones(labels.shape, jnp.float32) if where is None else where.astype(jnp.float32)
    counts = jnp.zeros((num_classes,), jnp.float32).at[labels.reshape(-1)].add(w.reshape(-1))
    q = counts / jnp.maximum(jnp.sum(counts), 1)
    return -jnp.sum(_xlogx(q)) / math.log(2)
