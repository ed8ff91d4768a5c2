"""Fourier analysis of modular-arithmetic networks (Nanda et al. 2023).

A network that groks ``(a + b) mod p`` represents each residue by a handful of "key
frequencies" ``w``: its embedding is sparse in the Fourier basis over ``Z_p``, and its
logits are (up to a per-output constant) built from ``cos(2πw(a+b)/p)`` and
``sin(2πw(a+b)/p)``. These functions measure both:

- :func:`fourier_basis`: the orthonormal real Fourier basis of ``R^p``;
- :func:`fourier_norms`, :func:`key_frequencies`, :func:`fourier_fraction`: how a
  weight matrix's norm spreads over the frequencies, the largest ones, and the share
  of the norm they hold;
- :func:`restricted_logits`, :func:`excluded_logits`: the logit table projected onto
  (restricted) or away from (excluded) the key frequencies, the inputs of Nanda's
  "restricted loss" and "excluded loss" progress measures;
- :func:`gini`: the Gini coefficient, a sparsity measure of (e.g.) the Fourier norms.

All are pure JAX; sizes (``p``, ``k``) are Python ints, array arguments may be traced
(``jax.jit``, ``jax.vmap``). They compute in float32 or wider (float64 in, float64 out).

References:
  Nanda, Chan, Lieberum, Smith, Steinhardt 2023, "Progress measures for grokking via
  mechanistic interpretability" (ICLR), Sections 4–5 and Appendix.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "excluded_logits",
    "fourier_basis",
    "fourier_fraction",
    "fourier_norms",
    "gini",
    "key_frequencies",
    "restricted_logits",
]

_HIGHEST = jax.lax.Precision.HIGHEST


def _float(x: ArrayLike) -> jax.Array:
    """``x`` as a JAX array of at least float32."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_p(p: int) -> int:
    if not isinstance(p, int | np.integer) or isinstance(p, bool):
        raise TypeError(f"p must be a Python int (a static size), got {type(p).__name__}.")
    p = int(p)
    if p < 3 or p % 2 == 0:
        raise ValueError(f"p={p}: the Fourier basis here needs an odd modulus p >= 3.")
    return p


def fourier_basis(p: int, dtype: Any = jnp.float32) -> jax.Array:
    r"""The orthonormal real Fourier basis of ``R^p``, one basis vector per row, ``(p, p)``.

    With ``K = (p − 1)/2`` and ``x = 0 … p−1`` the column index, the rows are, in order
    ``[const, cos 1, sin 1, cos 2, sin 2, …, cos K, sin K]``:

    .. math::

        F_{0,x} = 1/\sqrt{p},\qquad
        F_{2k-1,x} = \sqrt{2/p}\,\cos(2πkx/p),\qquad
        F_{2k,x} = \sqrt{2/p}\,\sin(2πkx/p),\qquad k = 1 … K,

    so ``F Fᵀ = I``. ``p`` must be odd and ``>= 3`` (a ValueError otherwise). Built in
    float64 (with ``kx`` reduced mod ``p`` exactly) and cast to ``dtype``.

    >>> print(fourier_basis(3))
    [[ 0.57735026  0.57735026  0.57735026]
     [ 0.8164966  -0.4082483  -0.4082483 ]
     [ 0.          0.70710677 -0.70710677]]

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 4 (the Fourier basis over ``Z_p``).
    """
    p = _check_p(p)
    dtype = jnp.dtype(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"dtype={dtype} needs 64-bit JAX, which is off: wrap the call in "
            "`with jax.enable_x64(True):` (or set JAX_ENABLE_X64=1)."
        )
    x = np.arange(p)
    k = np.arange(1, (p - 1) // 2 + 1)
    angle_KP = 2 * np.pi * (np.outer(k, x) % p) / p
    basis = np.empty((p, p), np.float64)
    basis[0] = 1 / math.sqrt(p)
    basis[1::2] = np.cos(angle_KP) * math.sqrt(2 / p)
    basis[2::2] = np.sin(angle_KP) * math.sqrt(2 / p)
    return jnp.asarray(basis, dtype=dtype)


def fourier_norms(W_PD: ArrayLike, p: int) -> jax.Array:
    r"""Norm of a weight matrix at each frequency: ``(K + 1,)``, entry 0 the constant.

    ``W_PD`` is ``(n, d)`` with ``n >= p`` and row ``x`` belonging to residue ``x`` (an
    embedding, or an unembedding transposed); rows past ``p`` (e.g. the ``=`` token)
    are dropped. With ``F = fourier_basis(p) @ W[:p]`` (rows ``F_j``):

    .. math::

        N_0 = \lVert F_0 \rVert,\qquad
        N_k = \sqrt{\lVert F_{2k-1}\rVert^2 + \lVert F_{2k}\rVert^2},\quad k = 1 … K.

    The basis is orthonormal, so ``Σ_k N_k² = ‖W[:p]‖_F²`` (Parseval).

    >>> x = jnp.arange(5.0)
    >>> W = jnp.stack([jnp.cos(2 * jnp.pi * 2 * x / 5), jnp.ones(5)], axis=1)  # (5, 2)
    >>> print(fourier_norms(W, 5))   # frequency 2 and the constant column
    [2.236068 0.       1.581139]

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 4 and Figure 3 (norms of the embedding's Fourier
      components).
    """
    p = _check_p(p)
    W = _float(W_PD)
    if W.ndim != 2 or W.shape[0] < p:
        raise ValueError(f"W_PD must be (n, d) with n >= p={p}, got shape {W.shape}.")
    F_PD = jnp.matmul(fourier_basis(p, W.dtype), W[:p], precision=_HIGHEST)
    sq_P = jnp.sum(F_PD * F_PD, axis=1)
    return jnp.sqrt(jnp.concatenate([sq_P[:1], sq_P[1::2] + sq_P[2::2]]))


def key_frequencies(W_PD: ArrayLike, p: int, k: int) -> jax.Array:
    r"""The ``k`` frequencies in ``1 … K`` with the largest :func:`fourier_norms`, int32 ``(k,)``.

    Ordered by decreasing norm; equal norms keep the lower frequency first. The
    constant (frequency 0) is never chosen. ``1 <= k <= K = (p − 1)/2``.

    >>> x = jnp.arange(7.0)
    >>> W = jnp.stack([3 * jnp.sin(2 * jnp.pi * 3 * x / 7), jnp.cos(2 * jnp.pi * x / 7)], 1)
    >>> print(key_frequencies(W, 7, 2))
    [3 1]

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 4 (the key frequencies of the trained network).
    """
    p = _check_p(p)
    K = (p - 1) // 2
    if not isinstance(k, int) or not 1 <= k <= K:
        raise ValueError(f"k={k!r} must be an int in 1 … K={K} (p={p}).")
    _, index = jax.lax.top_k(fourier_norms(W_PD, p)[1:], k)
    return (index + 1).astype(jnp.int32)


def _logit_directions(freqs: ArrayLike, p: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Unit-norm ``cos/sin(2πw(a+b)/p)`` over the ``p × p`` grid, each ``(k, p, p)``."""
    freqs_K = jnp.asarray(freqs)
    if freqs_K.ndim != 1:
        raise ValueError(f"freqs must be a 1-D integer array, got shape {freqs_K.shape}.")
    # a float frequency would be truncated silently by the cast below (2.7 -> 2)
    chex.assert_type(freqs_K, int, custom_message="freqs must be integer frequencies")
    freqs_K = freqs_K.astype(jnp.int32)
    ab = np.arange(p)
    sum_PP = jnp.asarray(np.add.outer(ab, ab) % p, jnp.int32)
    phase_KPP = (freqs_K.reshape(-1, 1, 1) * sum_PP.reshape(1, p, p)) % p  # exact in int32
    angle_KPP = phase_KPP.astype(dtype) * (2 * math.pi / p)
    scale = math.sqrt(2) / p  # ‖cos‖² = ‖sin‖² = p²/2 over the grid
    return jnp.cos(angle_KPP) * scale, jnp.sin(angle_KPP) * scale


def _project(logits_PPC: ArrayLike, freqs: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(L, P(L))``: the logits in float32+ and their projection onto ``freqs``."""
    L = _float(logits_PPC)
    if L.ndim != 3 or L.shape[0] != L.shape[1]:
        raise ValueError(f"logits_PPC must be (p, p, C), got shape {L.shape}.")
    u_KPP, v_KPP = _logit_directions(freqs, L.shape[0], L.dtype)
    proj = jnp.zeros_like(L)
    for d_KPP in (u_KPP, v_KPP):
        coef_KC = jnp.einsum("kab,abc->kc", d_KPP, L, precision=_HIGHEST)
        proj = proj + jnp.einsum("kab,kc->abc", d_KPP, coef_KC, precision=_HIGHEST)
    return L, proj


def restricted_logits(logits_PPC: ArrayLike, freqs: ArrayLike) -> jax.Array:
    r"""The logit table restricted to the key frequencies ``freqs`` (plus its mean), ``(p, p, C)``.

    ``L[a, b, c]`` are the logits for inputs ``(a, b)``, ``a, b = 0 … p−1``, and output
    ``c`` (all ``C`` columns are kept). For each ``w`` in ``freqs`` (distinct ints in
    ``1 … (p−1)/2``, a 1-D integer array — a float one is a ``chex`` ``AssertionError``,
    not truncated; may be traced) let

    .. math::

        u_w(a,b) = \frac{\sqrt2}{p}\cos\frac{2πw(a+b)}{p},\qquad
        v_w(a,b) = \frac{\sqrt2}{p}\sin\frac{2πw(a+b)}{p},

    unit vectors over the ``p²`` grid, all orthonormal, and ``P`` the orthogonal
    projection ``P(L)_{·,·,c} = Σ_w ⟨u_w, L_c⟩ u_w + ⟨v_w, L_c⟩ v_w``. Then

    .. math::

        \text{restricted}(L) = P(L) + \operatorname{mean}_{a,b}\,(L − P(L)),

    the mean taken per output ``c`` and broadcast over ``(a, b)`` (Nanda's bias
    correction; it equals ``mean_{a,b} L`` because every ``u_w, v_w`` sums to zero).
    Cost ``O(k·p²·C)``.

    >>> a = jnp.arange(5.0).reshape(5, 1, 1)
    >>> b = jnp.arange(5.0).reshape(1, 5, 1)
    >>> L = jnp.cos(2 * jnp.pi * 2 * (a + b) / 5) + jnp.cos(2 * jnp.pi * (a + b) / 5) + 3
    >>> R = restricted_logits(L, jnp.array([2]))   # keeps frequency 2 and the mean, 3
    >>> print(jnp.round(R[0, :, 0], 4))   # cos(4πb/5) + 3
    [4.    2.191 3.309 3.309 2.191]

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 5.1 (restricted loss) and Appendix (the bias term).
    """
    L, proj = _project(logits_PPC, freqs)
    return proj + jnp.mean(L - proj, axis=(0, 1), keepdims=True)


def excluded_logits(logits_PPC: ArrayLike, freqs: ArrayLike) -> jax.Array:
    r"""The logit table with the key frequencies ``freqs`` removed: ``L − P(L)``, ``(p, p, C)``.

    ``P`` is the orthogonal projection onto the ``cos/sin(2πw(a+b)/p)`` directions of
    :func:`restricted_logits`, so the result is orthogonal to every ``u_w`` and ``v_w``
    and ``restricted + excluded − L = mean_{a,b}(L − P(L))``.

    >>> a = jnp.arange(5.0).reshape(5, 1, 1)
    >>> b = jnp.arange(5.0).reshape(1, 5, 1)
    >>> L = jnp.cos(2 * jnp.pi * 2 * (a + b) / 5) + 3
    >>> print(jnp.abs(excluded_logits(L, jnp.array([2])) - 3).max() < 1e-5)
    True

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 5.1 (excluded loss).
    """
    L, proj = _project(logits_PPC, freqs)
    return L - proj


def fourier_fraction(norms: ArrayLike, freqs: ArrayLike) -> jax.Array:
    r"""Share of the total squared Fourier norm held by the frequencies ``freqs``.

    ``norms`` is ``(..., K + 1)`` as from :func:`fourier_norms` (entry 0 the constant),
    ``freqs`` an int array of indices into its last axis (normally ``1 … K``):

    .. math::

        \frac{Σ_{w ∈ \text{freqs}} N_w^2}{Σ_{j=0}^{K} N_j^2},

    0 when every norm is 0. E.g. "the top 3–7 frequencies hold ≥ 90 % of the
    embedding's Fourier norm²".

    >>> print(fourier_fraction(jnp.array([0.0, 3.0, 0.0, 4.0]), jnp.array([3])))
    0.64

    Shapes and dtypes are checked when traced (``chex``; an ``AssertionError`` naming the
    argument): ``norms`` needs a last axis, ``freqs`` must be 1-D and integer (a 2-D
    ``freqs`` would otherwise add an axis to the result, a float one fail inside
    ``take``). Out-of-range indices cannot be checked on traced values: they give NaN.

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 4 (the embedding is sparse in the Fourier basis).
    """
    norms, freqs = jnp.asarray(norms), jnp.asarray(freqs)
    chex.assert_axis_dimension_gteq(
        norms, -1, 1, custom_message="norms must be (..., K + 1), as from fourier_norms"
    )
    chex.assert_rank(freqs, 1, custom_message="freqs must be a 1-D array of frequency indices")
    chex.assert_type(freqs, int, custom_message="freqs must be integer indices into norms")
    sq = jnp.square(_float(norms))
    held = jnp.sum(jnp.take(sq, freqs, axis=-1), axis=-1)
    total = jnp.sum(sq, axis=-1)
    return jnp.where(total > 0, held / jnp.where(total > 0, total, 1), 0)


def gini(x: ArrayLike) -> jax.Array:
    r"""Gini coefficient of non-negative values along the last axis.

    With ``x₍₁₎ ≤ … ≤ x₍ₙ₎`` the values sorted ascending,

    .. math::

        G = \frac{Σ_{i=1}^{n} (2i − n − 1)\,x_{(i)}}{n\,Σ_i x_i},

    0 for equal values, ``(n − 1)/n`` for a single non-zero value, and 0 (not NaN) for
    all zeros. Larger means sparser, e.g. for the Fourier norms of an embedding.

    >>> print(gini(jnp.array([1.0, 1.0, 1.0, 1.0])), gini(jnp.array([0.0, 0.0, 0.0, 2.0])))
    0.0 0.75

    References:
      Hurley & Rickard 2009, "Comparing Measures of Sparsity" (IEEE Trans. Inf.
      Theory); Nanda et al. 2023 (sparsity of the Fourier components).
    """
    x = _float(x)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"gini needs at least one value on the last axis, got shape {x.shape}.")
    n = x.shape[-1]
    weights_N = jnp.asarray(2 * np.arange(1, n + 1) - n - 1, x.dtype)
    num = jnp.einsum("...n,n->...", jnp.sort(x, axis=-1), weights_N, precision=_HIGHEST)
    den = n * jnp.sum(x, axis=-1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0)
