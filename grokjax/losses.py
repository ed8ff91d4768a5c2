"""StableMax losses and the numerical-stability diagnostics of Prieto et al. (2025).

StableMax replaces softmax's ``exp`` with a function that grows only linearly,

.. math::

    s(x) = \\begin{cases} x + 1 & x ≥ 0 \\\\ 1 / (1 - x) & x < 0 \\end{cases},
    \\qquad \\operatorname{stablemax}(x)_i = \\frac{s(x_i)}{\\sum_j s(x_j)},

so that large logits no longer make the normalizer absorb every other term
("Softmax Collapse", SC), the float-precision failure that stalls grokking.
Unlike softmax it is *not* shift-invariant.

The diagnostics measure how close a run is to that failure: the SC fraction, the
fraction of examples whose loss is exactly zero, and the cosine between each weight
leaf and its negative gradient (naïve loss minimisation, NLM, grows the weights
along themselves).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "cross_entropy_with_integer_labels",
    "global_weight_norm",
    "log_stablemax",
    "nlm_cosine",
    "softmax_collapse_fraction",
    "stablemax",
    "stablemax_cross_entropy_with_integer_labels",
    "weight_norms",
    "zero_loss_fraction",
]

Normalizer = Literal["softmax", "stablemax"]


def _s(x: jax.Array) -> jax.Array:
    """``s(x)``, each branch fed a clamped argument so neither can produce inf/NaN."""
    nonneg = x >= 0
    x_pos = jnp.where(nonneg, x, 0)
    x_neg = jnp.where(nonneg, 0, x)
    return jnp.where(nonneg, x_pos + 1, 1 / (1 - x_neg))


def _log_s(x: jax.Array) -> jax.Array:
    """``log s(x) = log1p(x)`` for ``x ≥ 0``, ``-log1p(-x)`` for ``x < 0``.

    The "double where" keeps both the value and the gradient NaN-free; the gradient at
    0 is 1 (the literal ``sign(x)·log1p|x|`` would give 0 there).
    """
    nonneg = x >= 0
    x_pos = jnp.where(nonneg, x, 0)
    x_neg = jnp.where(nonneg, 0, x)
    return jnp.where(nonneg, jnp.log1p(x_pos), -jnp.log1p(-x_neg))


def stablemax(x: jax.Array, axis: int = -1) -> jax.Array:
    """StableMax probabilities ``s(x_i) / Σ_j s(x_j)`` along ``axis``.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> print(gj.stablemax(jnp.array([1.0, 0.0, -1.0])))  # s = 2, 1, 1/2
        [0.5714286  0.2857143  0.14285715]
    """
    s = _s(x)
    return s / jnp.sum(s, axis=axis, keepdims=True)


def log_stablemax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Log of :func:`stablemax`, computed as ``log_softmax(log s(x))``.

    ``exp(log s(x)) = s(x)``, so this equals ``log(stablemax(x))``, but the
    log-sum-exp form cannot overflow and its gradient is finite everywhere. The
    reference code's ``where(x >= 0, x + 1, 1 / (1 - x))`` has a NaN gradient at
    ``x = 1`` exactly (its unselected branch divides by zero there), and writing
    ``log s`` literally as ``sign(x)·log1p|x|`` would give gradient 0 at ``x = 0``
    where the true one is 1.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> print(gj.log_stablemax(jnp.array([1.0, 0.0, -1.0])))
        [-0.5596158 -1.252763  -1.9459102]
    """
    return jax.nn.log_softmax(_log_s(x), axis=axis)


def _require_dtype(dtype: Any) -> jnp.dtype:
    """``dtype`` as a numpy dtype; a clear error if JAX would silently narrow it."""
    dtype = jnp.dtype(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"computing in {dtype} needs 64-bit JAX, which is off: call "
            "jax.config.update('jax_enable_x64', True) at start-up (or set "
            "JAX_ENABLE_X64=1, or wrap the call in `with jax.enable_x64(True):`)."
        )
    return dtype


def _check_normalizer(normalizer: str) -> None:
    if normalizer not in ("softmax", "stablemax"):
        raise ValueError(f"normalizer must be 'softmax' or 'stablemax', got {normalizer!r}.")


def cross_entropy_with_integer_labels(
    logits: jax.Array,
    labels: jax.Array,
    *,
    normalizer: Normalizer = "softmax",
    dtype: Any | None = None,
) -> jax.Array:
    """Per-example cross entropy ``-log p(labels)`` under softmax or StableMax.

    Args:
        logits: ``(..., num_classes)``.
        labels: integer class indices of shape ``logits.shape[:-1]``.
        normalizer: ``"softmax"`` or ``"stablemax"``.
        dtype: compute the loss in this dtype (e.g. ``jnp.float64``, which needs
            ``jax_enable_x64``; a clear error is raised otherwise). Default: the
            logits' dtype. The result has the computation dtype.

    Returns:
        Losses of shape ``logits.shape[:-1]``.
    """
    _check_normalizer(normalizer)
    if dtype is not None:
        logits = logits.astype(_require_dtype(dtype))
    if normalizer == "softmax":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    log_p = log_stablemax(logits, axis=-1)
    return -jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def stablemax_cross_entropy_with_integer_labels(
    logits: jax.Array, labels: jax.Array, *, dtype: Any | None = None
) -> jax.Array:
    """Per-example StableMax cross entropy ``-log stablemax(logits)[label]``.

    Like :func:`optax.softmax_cross_entropy_with_integer_labels`, it returns one loss
    per example; reduce it yourself. ``dtype=jnp.float64`` computes in float64 (as
    Prieto et al. do); it needs ``jax_enable_x64`` and says so clearly when that is off.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> logits = jnp.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        >>> print(gj.stablemax_cross_entropy_with_integer_labels(logits, jnp.array([0, 2])))
        [0.5596158 1.0986123]
    """
    return cross_entropy_with_integer_labels(logits, labels, normalizer="stablemax", dtype=dtype)


def softmax_collapse_fraction(
    logits: jax.Array,
    *,
    dtype: Any = jnp.float32,
    normalizer: Normalizer = "softmax",
) -> jax.Array:
    """Fraction of examples in Softmax Collapse: the normalizer equals its largest term.

    For softmax the terms are ``t_j = exp(z_j - max z)``, so collapse means
    ``Σ_j t_j == 1`` exactly in ``dtype``: every other class is absorbed by the
    largest in floating point, the loss's gradient for that example vanishes
    numerically, and learning from it stops. For StableMax the terms are ``t_j =
    s(z_j)`` and collapse means ``Σ_j t_j == max_j t_j``. Measure with the
    normalizer and precision the loss actually uses (the authors' code used softmax
    even for StableMax runs, which makes that number meaningless).

    Args:
        logits: ``(..., num_classes)``; every leading index is one example.
        dtype: the loss's precision (float16/32/64; float64 needs x64).
        normalizer: ``"softmax"`` or ``"stablemax"``.

    Returns:
        A float32 scalar in [0, 1].

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> logits = jnp.array([[0.0, 0.0], [30.0, 0.0]])  # exp(-30) < float32 ulp/2
        >>> print(gj.softmax_collapse_fraction(logits))
        0.5
    """
    _check_normalizer(normalizer)
    z = logits.astype(_require_dtype(dtype))
    if normalizer == "softmax":
        terms = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    else:
        terms = _s(z)
    collapsed = jnp.sum(terms, axis=-1) == jnp.max(terms, axis=-1)
    return jnp.mean(collapsed.astype(jnp.float32))


def zero_loss_fraction(losses: jax.Array) -> jax.Array:
    """Fraction of per-example losses that are exactly zero (float32 scalar).

    Compute the losses in the training precision: an exact zero means the example
    gives no gradient at all.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> print(gj.zero_loss_fraction(jnp.array([0.0, 1e-9, 0.0, 2.0])))
        0.5
    """
    return jnp.mean((losses == 0).astype(jnp.float32))


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    # max-normalised first: ‖a‖² would underflow in float32 below ‖a‖ ≈ 1e-19
    compute = jnp.promote_types(a.dtype, jnp.float32)
    a = a.astype(compute).ravel()
    b = b.astype(compute).ravel()
    a = a / jnp.where(jnp.max(jnp.abs(a)) > 0, jnp.max(jnp.abs(a)), 1)
    b = b / jnp.where(jnp.max(jnp.abs(b)) > 0, jnp.max(jnp.abs(b)), 1)
    denom = jnp.sqrt(jnp.vdot(a, a)) * jnp.sqrt(jnp.vdot(b, b))
    return jnp.where(denom > 0, jnp.vdot(a, b) / jnp.where(denom > 0, denom, 1), 0)


def nlm_cosine(params: optax.Params, grads: optax.Updates) -> optax.Updates:
    """Per-leaf cosine ``cos(w, -∇L)`` between the weights and the descent direction.

    Near 1 the gradient step mostly scales the weights up (naïve loss
    minimisation): predictions stay the same while the logits grow towards Softmax
    Collapse. 0 where either vector is zero.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> params = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([1.0, 1.0])}
        >>> grads = {"a": jnp.array([-2.0, 0.0]), "b": jnp.array([1.0, -1.0])}
        >>> print({k: float(v) for k, v in gj.nlm_cosine(params, grads).items()})
        {'a': 1.0, 'b': 0.0}
    """
    return jax.tree.map(lambda w, g: _cosine(w, -g), params, grads)


def weight_norms(params: optax.Params) -> optax.Updates:
    """Per-leaf L2 norm of the weights (a tree of float scalars).

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> print({k: float(v) for k, v in gj.weight_norms({"w": jnp.array([3.0, 4.0])}).items()})
        {'w': 5.0}
    """
    return jax.tree.map(
        lambda w: jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.promote_types(w.dtype, jnp.float32))))),
        params,
    )


def global_weight_norm(params: optax.Params) -> jax.Array:
    """L2 norm of all weights together, ``sqrt(Σ_leaves ‖w‖²)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> print(gj.global_weight_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
        5.0
    """
    squares = [jnp.square(n) for n in jax.tree.leaves(weight_norms(params))]
    return jnp.sqrt(sum(squares, start=jnp.zeros([], jnp.float32)))
