"""Learnable-shape activations of seed 004: SWELU and swish_k as Flax NNX modules.

The maths, :func:`swelu` and :func:`swish_k`, is in :mod:`grokjax.ops.activations`
(below ``nn``, for the selective scan's gate) and re-exported here.

``swelu(z; k, λ) = λ·sign(z)·(1 − exp(−|z|^k))`` is bounded (|·| < λ) and odd, with a
learnable shape ``k > 0``: small ``k`` makes it a soft sign, ``k = 1`` is
``λ·sign(z)·(1 − e^{−|z|})`` (slope λ at 0), large ``k`` flattens it near 0.
``swish_k(z; k) = z·σ(k z)`` is SiLU at ``k = 1`` (a separate named activation, not
a SWELU variant).

The seed reports learned ``k`` of 0.39–0.99 in Mamba blocks, 1.56–1.90 in dense
layers and "30–40% faster convergence than SiLU": claims to test, not to assume.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grokjax.ops.activations import swelu, swish_k

__all__ = ["SWELU", "ActivationShape", "SwishK", "swelu", "swish_k"]


class ActivationShape(nnx.Param):
    """A learnable activation-shape scalar (SWELU's or swish_k's ``k``, SWELU's ``λ``).

    Its own Variable type, so an optimizer can leave it out of weight decay, e.g.
    ``optax.add_decayed_weights(wd, mask=lambda p: jax.tree.map(lambda v: not
    isinstance(v, ActivationShape), p, is_leaf=…))``, or select it with
    ``nnx.state(model, ActivationShape)`` to log its trajectory.
    """


class SWELU(nnx.Module):
    """SWELU with a learnable ``k`` (init 1.0) and optionally a learnable ``λ`` (init 1.0).

    ``k`` is kept positive by its parametrisation, ``k = exp(log_k)``; :attr:`k` reads
    the value. ``log_k`` and ``lam`` are :class:`ActivationShape` variables.

    >>> act = SWELU()
    >>> float(act.k), act(jnp.zeros(3)).shape
    (1.0, (3,))
    """

    def __init__(self, k: float = 1.0, *, learn_lam: bool = False, lam: float = 1.0) -> None:
        if k <= 0:
            raise ValueError(f"SWELU needs k > 0, got k={k}.")
        self.log_k = ActivationShape(jnp.log(jnp.float32(k)))
        self.lam = ActivationShape(jnp.float32(lam)) if learn_lam else None
        self.lam_value = float(lam)

    @property
    def k(self) -> jax.Array:
        return jnp.exp(self.log_k[...])

    def __call__(self, z: jax.Array) -> jax.Array:
        lam = self.lam[...] if self.lam is not None else self.lam_value
        return swelu(z, self.k, lam)


class SwishK(nnx.Module):
    """``z·σ(k z)`` with a learnable ``k`` (init 1.0: SiLU), kept positive as ``exp(log_k)``.

    >>> float(SwishK().k)
    1.0
    """

    def __init__(self, k: float = 1.0) -> None:
        if k <= 0:
            raise ValueError(f"swish_k needs k > 0, got k={k}.")
        self.log_k = ActivationShape(jnp.log(jnp.float32(k)))

    @property
    def k(self) -> jax.Array:
        return jnp.exp(self.log_k[...])

    def __call__(self, z: jax.Array) -> jax.Array:
        return swish_k(z, self.k.astype(jnp.result_type(z)))
