"""The maths of the learnable-shape activations of seed 004: SWELU and swish_k.

Pure JAX functions, below :mod:`grokjax.nn` so that the selective scan's gate can use
them; the Flax NNX modules with a learnable shape (:class:`grokjax.nn.SWELU`,
:class:`grokjax.nn.SwishK`) live in :mod:`grokjax.nn.activations`, which re-exports
these functions (``gj.nn.swelu``, ``gj.nn.swish_k``).

``swelu(z; k, λ) = λ·sign(z)·(1 − exp(−|z|^k))`` is bounded (|·| < λ) and odd, with a
learnable shape ``k > 0``: small ``k`` makes it a soft sign, ``k = 1`` is
``λ·sign(z)·(1 − e^{−|z|})`` (slope λ at 0), large ``k`` flattens it near 0.
``swish_k(z; k) = z·σ(k z)`` is SiLU at ``k = 1`` (a separate named activation, not
a SWELU variant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["swelu", "swish_k"]

# |z| below this counts as 0 in |z|^k = exp(k·log|z|) (per dtype: float32's smallest
# normal is 1.2e-38, so 1e-30 leaves room; float16/bfloat16 compute in float32).
_EPS = 1e-30


@jax.custom_jvp
def _swelu(z: jax.Array, k: jax.Array, lam: jax.Array) -> jax.Array:
    a = jnp.maximum(jnp.abs(z), _EPS)
    return lam * jnp.sign(z) * -jnp.expm1(-jnp.exp(k * jnp.log(a)))


@_swelu.defjvp
def _swelu_jvp(primals, tangents):
    z, k, lam = primals
    dz, dk, dlam = tangents
    a = jnp.maximum(jnp.abs(z), _EPS)
    log_a = jnp.log(a)
    power = jnp.exp(k * log_a)  # |z|^k
    decay = jnp.exp(-power)  # exp(−|z|^k)
    shape = -jnp.expm1(-power)  # 1 − exp(−|z|^k)
    out = lam * jnp.sign(z) * shape
    # d/dz = λ k |z|^{k−1} e^{−|z|^k} (even in z; λ at z = 0 for k = 1, finite for k < 1)
    d_z = lam * k * jnp.exp((k - 1) * log_a) * decay
    # d/dk = λ sign(z) e^{−|z|^k} |z|^k log|z|  (→ 0 as |z| → 0: guarded there)
    d_k = jnp.where(jnp.abs(z) < _EPS, 0.0, lam * jnp.sign(z) * decay * power * log_a)
    d_lam = jnp.sign(z) * shape
    return out, d_z * dz + d_k * dk + d_lam * dlam


def swelu(z: jax.Array, k: jax.Array | float = 1.0, lam: jax.Array | float = 1.0) -> jax.Array:
    r"""SWELU: ``λ·sign(z)·(1 − exp(−|z|^k))``, elementwise, for ``k > 0``.

    ``|z|^k`` is computed as ``exp(k·log(max(|z|, 1e-30)))`` in at least float32, and the
    gradients are explicit: ``∂/∂z = λ k |z|^{k−1} e^{−|z|^k}`` (λ at ``z = 0`` when
    ``k = 1``; large but finite when ``k < 1``), ``∂/∂k = λ sign(z) e^{−|z|^k} |z|^k
    ln|z|`` (0 at ``z = 0``), ``∂/∂λ = sign(z)(1 − e^{−|z|^k})``. Returns ``z``'s dtype.
    Also ``gj.nn.swelu``.

    >>> swelu(jnp.array([-2.0, 0.0, 1.0]), k=1.0)
    Array([-0.86466473,  0.        ,  0.63212055], dtype=float32)
    >>> float(jax.grad(swelu)(0.0, 1.0))   # slope λ at the origin for k = 1
    1.0
    """
    wide = jnp.promote_types(jnp.result_type(z), jnp.float32)
    z_w = jnp.asarray(z, wide)
    out = _swelu(z_w, jnp.asarray(k, wide), jnp.asarray(lam, wide))
    return out.astype(jnp.result_type(z))


def swish_k(z: jax.Array, k: jax.Array | float = 1.0) -> jax.Array:
    """``z·σ(k z)``; exactly ``jax.nn.silu`` at ``k = 1``. Also ``gj.nn.swish_k``.

    >>> z = jnp.linspace(-3, 3, 7)
    >>> bool(jnp.allclose(swish_k(z, 1.0), jax.nn.silu(z)))
    True
    """
    return z * jax.nn.sigmoid(k * z)
