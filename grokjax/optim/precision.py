"""Run an optax transformation, and keep its state, in a wider float dtype.

Adam's second moment ``v = β2·v + (1 − β2)·g²`` underflows in float32 long before the
gradient does: ``g²`` is below the smallest normal float32 (≈ 1.2e-38) once
``|g| < 1.1e-19``, and XLA flushes such subnormal results to zero on the CPU. The first
moment ``m = (1 − β1)·g`` stays normal, so the step ``lr·m/(√v + eps)`` becomes
``lr·m/eps``: with Prieto et al.'s ``eps = 1e-25`` a jump of up to ~1e6·lr. Their
StableMax runs drive the gradients of a float32 model into exactly that range (the
training loss near 1e-13), and blow up there.

:func:`with_state_dtype` keeps the parameters in their dtype but computes the inner
transformation in ``dtype``: gradients and parameters are cast up on the way in, the
state lives in ``dtype``, and the updates are cast back to each gradient leaf's dtype::

    u, s' = inner.update(cast(g), s, cast(w));   return cast_back(u), s'

The state has exactly the inner transformation's structure (nothing is added), so code
that reads it (e.g. Surge-Collapse's moment reset) sees the same tree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["with_state_dtype"]


def _cast(tree: Any, dtype: Any) -> Any:
    """Floating leaves of ``tree`` cast to ``dtype``; other leaves unchanged (optax
    treats integer leaves as constants, and so does the inner transformation)."""

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def _cast_back(update: jax.Array, grad: Any) -> jax.Array:
    """A float update in its gradient's dtype; a non-float gradient's update as computed."""
    grad_dtype = jnp.asarray(grad).dtype
    return update.astype(grad_dtype) if jnp.issubdtype(grad_dtype, jnp.floating) else update


def with_state_dtype(
    inner: optax.GradientTransformation, dtype: Any
) -> optax.GradientTransformation:
    """``inner`` computed and stored in ``dtype``; updates returned in the gradients' dtypes.

    Args:
      inner: any gradient transformation (typically a chain ending in ``scale_by_adam``).
      dtype: the float dtype of the computation and the state, e.g. ``jnp.float64``
        (which needs ``jax_enable_x64``; without it JAX would silently compute in
        float32, so that is an error). It must be at least as wide as every float
        leaf: narrowing (float64 parameters with float32 state) is an error, since it
        would bring back the underflow this wrapper exists to avoid.

    Returns:
      A transformation with ``inner``'s state structure, in ``dtype``. It accepts extra
      keyword arguments (:class:`optax.GradientTransformationExtraArgs`) and passes
      them to ``inner`` when it takes them.

    Example: a float32 gradient of 1e-20 under Adam with ``eps = 1e-25``. In float32,
    ``v`` underflows to 0 and the step is ~1e6 times the learning rate; with float64
    state it is the learning rate, as in exact arithmetic (``m̂/√v̂ = g/|g| = 1``).

    >>> import jax, jax.numpy as jnp, optax
    >>> from grokjax.optim import with_state_dtype
    >>> g, w = jnp.full(2, 1e-20, jnp.float32), jnp.zeros(2, jnp.float32)
    >>> step = lambda tx: jax.jit(tx.update)(g, tx.init(w), w)[0]
    >>> float(step(optax.adam(0.01, eps=1e-25))[0])  # 0.01 · 1e-20 / 1e-25
    -1000.0
    >>> with jax.enable_x64(True):
    ...     u = step(with_state_dtype(optax.adam(0.01, eps=1e-25), jnp.float64))
    >>> u.dtype, round(float(u[0]), 6)
    (dtype('float32'), -0.01)
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"with_state_dtype: dtype must be a float dtype, got {dtype}.")
    inner = optax.with_extra_args_support(inner)

    def check(tree, what):
        if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
            raise ValueError(
                f"with_state_dtype({dtype}) needs 64-bit JAX: wrap the code in "
                "`with jax.enable_x64(True):` (the trainer does this when a method's "
                "optimizer.state_dtype is 'float64')."
            )
        for leaf in jax.tree.leaves(tree):
            leaf_dtype = jnp.asarray(leaf).dtype
            if jnp.issubdtype(leaf_dtype, jnp.floating) and leaf_dtype.itemsize > dtype.itemsize:
                raise ValueError(
                    f"with_state_dtype({dtype}) would narrow {what} of dtype {leaf_dtype}: "
                    "it is meant to widen the optimizer's precision; pass a dtype at "
                    f"least as wide as {leaf_dtype}."
                )

    def init_fn(params):
        check(params, "parameters")
        return inner.init(_cast(params, dtype))

    def update_fn(updates, state, params=None, **extra_args):
        check(updates, "updates")
        wide_params = None if params is None else _cast(params, dtype)
        wide, state = inner.update(_cast(updates, dtype), state, wide_params, **extra_args)
        out = jax.tree.map(_cast_back, wide, updates)
        return out, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
