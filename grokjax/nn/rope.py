"""Rotary position embedding (RoPE, Su et al. 2021), interleaved-pair convention.

Each head vector ``x ∈ ℝ^d`` (``d`` even) is split into the ``d/2`` adjacent pairs
``(x_{2i}, x_{2i+1})``, and pair ``i`` at position ``m`` is rotated by the angle
``m·θ_i`` with ``θ_i = base^(−2i/d)``:

    (x_{2i}, x_{2i+1}) ↦ (x_{2i} cos mθ_i − x_{2i+1} sin mθ_i,
                          x_{2i} sin mθ_i + x_{2i+1} cos mθ_i).

This is the convention of the RoFormer paper (and of GPT-J / Mesh-TF); the GPT-NeoX /
Llama "half-split" convention pairs ``x_i`` with ``x_{i+d/2}`` instead, a fixed
permutation of the same features. Rotations preserve norms, and since
``R(mθ)ᵀR(nθ) = R((n−m)θ)``, ``⟨rope(q, m), rope(k, n)⟩`` depends on ``m − n`` only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["apply_rope", "rope_frequencies"]


def rope_frequencies(head_dim: int, base: float = 10000.0) -> jax.Array:
    """Rotation frequencies ``θ_i = base^(−2i/head_dim)``, ``i = 0 … head_dim/2 − 1``.

    Returns a float32 array of shape ``(head_dim // 2,)``, decreasing from ``θ_0 = 1``.

    >>> rope_frequencies(8, base=10000.0)
    Array([1.   , 0.1  , 0.01 , 0.001], dtype=float32)
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, got {head_dim}.")
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return jnp.asarray(base, jnp.float32) ** -exponents


def apply_rope(x_BTHD: jax.Array, positions_T: ArrayLike, base: float = 10000.0) -> jax.Array:
    """Rotate the adjacent feature pairs of ``x_BTHD`` by their positions' angles.

    Args:
        x_BTHD: queries or keys, ``(..., T, H, D)`` with ``D`` even (any leading dims).
        positions_T: integer (or real) positions, shape ``(T,)`` or broadcastable to
            ``x_BTHD.shape[:-2]`` (e.g. ``(B, T)`` for per-example positions).
        base: the frequency base of :func:`rope_frequencies`.

    Returns:
        The rotated array, same shape and dtype as ``x_BTHD``. Angles, sines and cosines
        are computed in float32.

    >>> x = jnp.ones((1, 2, 1, 2))  # position 0 is left alone, position 1 turns by 1 rad
    >>> apply_rope(x, jnp.arange(2))[0, :, 0]
    Array([[ 1.   ,  1.   ],
           [-0.301...,  1.381...]], dtype=float32)
    """
    head_dim = x_BTHD.shape[-1]
    freqs_F = rope_frequencies(head_dim, base)
    positions = jnp.asarray(positions_T, jnp.float32)
    angles_TF = positions[..., None] * jax.lax.broadcast_to_rank(freqs_F, positions.ndim + 1)
    pairs = x_BTHD.reshape(*x_BTHD.shape[:-1], head_dim // 2, 2).astype(jnp.float32)
    even, odd = pairs[..., 0], pairs[..., 1]
    # (..., T, 1, D/2): broadcast over heads, and over leading dims that positions lack
    cos_T1F = jax.lax.broadcast_to_rank(jnp.cos(angles_TF)[..., None, :], even.ndim)
    sin_T1F = jax.lax.broadcast_to_rank(jnp.sin(angles_TF)[..., None, :], even.ndim)
    rotated = jnp.stack([even * cos_T1F - odd * sin_T1F, even * sin_T1F + odd * cos_T1F], -1)
    return rotated.reshape(x_BTHD.shape).astype(x_BTHD.dtype)
