"""Rotary position embedding (RoPE, Su et al. 2021), interleaved-pair convention,
with context-length scaling (linear, NTK-aware, dynamic NTK, YaRN) and 2-D RoPE.

Each head vector ``x ∈ ℝ^d`` (``d`` even) is split into the ``d/2`` adjacent pairs
``(x_{2i}, x_{2i+1})``, and pair ``i`` at position ``m`` is rotated by the angle
``m·θ_i`` with ``θ_i = base^(−2i/d)``:

    (x_{2i}, x_{2i+1}) ↦ (x_{2i} cos mθ_i − x_{2i+1} sin mθ_i,
                          x_{2i} sin mθ_i + x_{2i+1} cos mθ_i).

This is the convention of the RoFormer paper (and of GPT-J / Mesh-TF); the GPT-NeoX /
Llama "half-split" convention pairs ``x_i`` with ``x_{i+d/2}`` instead, a fixed
permutation of the same features. Rotations preserve norms, and since
``R(mθ)ᵀR(nθ) = R((n−m)θ)``, ``⟨rope(q, m), rope(k, n)⟩`` depends on ``m − n`` only.

Scaling (:class:`RopeScaling`, factor ``s ≥ 1``, original training length ``L₀``)
changes only the frequencies ``θ_i``, so that a model trained on ``L₀`` positions can
run on about ``s·L₀``:

- ``"linear"`` (position interpolation): ``θ_i/s``, i.e. positions are squeezed by ``s``.
- ``"ntk"`` (NTK-aware): base ``b' = b·s^(d/(d−2))``, ``θ_i = b'^(−2i/d)``; the fastest
  pair (``i = 0``) is untouched and the slowest is slowed by exactly ``s``.
- ``"dynamic"`` (dynamic NTK): NTK with the factor grown with the actual length ``L``,
  ``s_L = max(1, s·L/L₀ − (s − 1))``; plain RoPE for ``L ≤ L₀``.
- ``"yarn"``: pairs that turn many times within ``L₀`` keep ``θ_i``, pairs that turn less
  than once get ``θ_i/s``, with a linear ramp between, and the attention logits are
  sharpened by :func:`rope_attention_scale`.

2-D RoPE (:func:`apply_rope_2d`) rotates the first half of the features by a row
coordinate and the second half by a column coordinate, for tokens laid out on a grid.

All frequencies are functions of static Python values (head dim, base, scaling,
sequence length), so they are computed in float64 numpy and cast to float32 once.

References:
    Su, Lu, Pan, Murtadha, Wen, Liu 2021, "RoFormer: Enhanced Transformer with Rotary
    Position Embedding", arXiv:2104.09864.

    Chen, Wong, Chen, Tian 2023, "Extending Context Window of Large Language Models via
    Positional Interpolation", arXiv:2306.15595.

    bloc97 2023, "NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context
    size without any fine-tuning and minimal perplexity degradation", r/LocalLLaMA; the
    dynamic variant as Hugging Face transformers computes it,
    ``modeling_rope_utils._compute_dynamic_ntk_parameters``.

    Peng, Quesnelle, Fan, Shippole 2023, "YaRN: Efficient Context Window Extension of
    Large Language Models", arXiv:2309.00071; formulas as in Hugging Face transformers,
    ``modeling_rope_utils._compute_yarn_parameters``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "RopeScaling",
    "apply_rope",
    "apply_rope_2d",
    "rope_attention_scale",
    "rope_frequencies",
    "rope_scaling_from_config",
]

SCALING_KINDS = ("linear", "ntk", "dynamic", "yarn")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """How RoPE frequencies are rescaled for contexts longer than the training length.

    Attributes:
        kind: ``"linear"``, ``"ntk"``, ``"dynamic"`` or ``"yarn"`` (see the module
            docstring and :func:`rope_frequencies` for the formulas).
        factor: context extension factor ``s ≥ 1``. ``1`` leaves RoPE unchanged, except
            under ``"dynamic"``, whose factor ``s_L = L/L₀`` still grows beyond ``L₀``.
        original_max_position: ``L₀``, the sequence length the model was trained on.
        beta_fast, beta_slow: YaRN's ramp bounds, in rotations over ``L₀``: pairs turning
            more than ``beta_fast`` times keep their frequency, pairs turning fewer than
            ``beta_slow`` times are interpolated. ``beta_fast > beta_slow > 0``.

    Hashable, so it can be a static argument of :func:`jax.jit`.

    >>> RopeScaling("yarn", 4.0, 512)
    RopeScaling(kind='yarn', factor=4.0, original_max_position=512, beta_fast=32.0, beta_slow=1.0)
    >>> RopeScaling("cubic", 2.0, 512)
    Traceback (most recent call last):
    ...
    ValueError: RopeScaling.kind must be one of ('linear', 'ntk', 'dynamic', 'yarn'), got 'cubic'.
    """

    kind: str
    factor: float
    original_max_position: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCALING_KINDS:
            raise ValueError(f"RopeScaling.kind must be one of {SCALING_KINDS}, got {self.kind!r}.")
        for name in ("factor", "beta_fast", "beta_slow"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"RopeScaling.{name} must be a real number, got {value!r}.")
            # Normalised to float so that equal configurations hash equal under jit.
            object.__setattr__(self, name, float(value))
        if not self.factor >= 1.0:  # also rejects NaN
            raise ValueError(f"RopeScaling.factor must be ≥ 1, got {self.factor}.")
        l0 = self.original_max_position
        if isinstance(l0, bool) or not isinstance(l0, numbers.Integral) or l0 <= 0:
            raise ValueError(
                f"RopeScaling.original_max_position must be a positive int, got {l0!r}."
            )
        object.__setattr__(self, "original_max_position", int(l0))
        if not self.beta_fast > self.beta_slow > 0.0:
            raise ValueError(
                "RopeScaling.beta_fast and beta_slow must satisfy beta_fast > beta_slow > 0, "
                f"got beta_fast={self.beta_fast}, beta_slow={self.beta_slow}."
            )


def rope_scaling_from_config(config: Mapping[str, Any] | None) -> RopeScaling | None:
    """A :class:`RopeScaling` from a config mapping; ``None`` or ``{}`` means no scaling.

    Keys are the field names of :class:`RopeScaling`; ``kind``, ``factor`` and
    ``original_max_position`` are required, unknown keys are an error.

    >>> rope_scaling_from_config({"kind": "linear", "factor": 2, "original_max_position": 64})
    RopeScaling(kind='linear', factor=2.0, original_max_position=64, beta_fast=32.0, beta_slow=1.0)
    >>> rope_scaling_from_config({}) is None
    True
    """
    if not config:
        return None
    fields = [f.name for f in dataclasses.fields(RopeScaling)]
    unknown = sorted(set(config) - set(fields), key=str)
    if unknown:
        raise ValueError(f"Unknown RoPE scaling keys {unknown}; allowed: {fields}.")
    missing = [f for f in ("kind", "factor", "original_max_position") if f not in config]
    if missing:
        raise ValueError(f"RoPE scaling config lacks the required keys {missing}.")
    return RopeScaling(**config)


def rope_attention_scale(scaling: RopeScaling | None) -> float:
    """YaRN's attention temperature ``0.1·ln s + 1`` (``1.0`` for other kinds or ``s ≤ 1``).

    The model multiplies both the rotated queries and the rotated keys by this value,
    so the attention logits ``q·k`` are multiplied by its square (YaRN's ``1/t`` with
    ``√(1/t) = 0.1·ln s + 1``). :func:`apply_rope` does not apply it.

    >>> rope_attention_scale(RopeScaling("yarn", 4.0, 512))
    1.138...
    >>> rope_attention_scale(RopeScaling("linear", 4.0, 512)), rope_attention_scale(None)
    (1.0, 1.0)
    """
    if scaling is None or scaling.kind != "yarn" or scaling.factor <= 1.0:
        return 1.0
    return 0.1 * math.log(scaling.factor) + 1.0


def _ntk_base(base: float, factor: float, head_dim: int) -> float:
    """``b·s^(d/(d−2))``; for ``d = 2`` the only frequency is ``θ_0 = 1`` whatever the base."""
    if head_dim == 2:
        return base
    return base * factor ** (head_dim / (head_dim - 2))


def _plain_frequencies(head_dim: int, base: float) -> np.ndarray:
    return base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def rope_frequencies(
    head_dim: int,
    base: float = 10000.0,
    scaling: RopeScaling | None = None,
    seq_len: int | None = None,
) -> jax.Array:
    """Rotation frequencies ``θ_i``, ``i = 0 … head_dim/2 − 1``, possibly scaled.

    With ``d = head_dim``, base ``b``, factor ``s`` and original length ``L₀``:

    - no scaling: ``θ_i = b^(−2i/d)``;
    - ``"linear"``: ``θ_i/s``;
    - ``"ntk"``: ``b'^(−2i/d)`` with ``b' = b·s^(d/(d−2))``;
    - ``"dynamic"``: NTK with ``s_L = max(1, s·L/L₀ − (s − 1))`` for ``L = seq_len``;
      plain RoPE for ``L ≤ L₀``, and NTK with factor ``s`` at ``L = L₀·(2s − 1)/s``;
    - ``"yarn"``: with ``c(n) = d·ln(L₀/(2πn)) / (2·ln b)`` (the pair index that turns
      ``n`` times over ``L₀``), ``low = max(⌊c(β_fast)⌋, 0)``,
      ``high = min(⌈c(β_slow)⌉, d − 1)`` (``high += 0.001`` if equal) and the ramp
      ``r_i = clip((i − low)/(high − low), 0, 1)``: ``θ_i' = (θ_i/s)·r_i + θ_i·(1 − r_i)``.

    With ``s = 1``, linear, NTK and YaRN are plain RoPE; dynamic is plain up to ``L₀``.

    Args:
        head_dim: ``d``, positive and even.
        base: ``b``.
        scaling: ``None`` for plain RoPE.
        seq_len: the sequence length ``L``, a static int; required by ``"dynamic"`` only.

    Returns:
        A float32 array of shape ``(head_dim // 2,)``, computed in float64 and rounded once.

    >>> rope_frequencies(8, base=10000.0)
    Array([1.   , 0.1  , 0.01 , 0.001], dtype=float32)
    >>> rope_frequencies(8, base=10000.0, scaling=RopeScaling("linear", 2.0, 64))
    Array([0.5   , 0.05  , 0.005 , 0.0005], dtype=float32)
    >>> rope_frequencies(8, 10000.0, RopeScaling("dynamic", 2.0, 64), seq_len=64)
    Array([1.   , 0.1  , 0.01 , 0.001], dtype=float32)
    """
    if isinstance(head_dim, bool) or not isinstance(head_dim, numbers.Integral):
        raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}.")
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, got {head_dim}.")
    base = float(base)
    if scaling is None:
        theta = _plain_frequencies(head_dim, base)
    elif scaling.kind == "linear":
        theta = _plain_frequencies(head_dim, base) / scaling.factor
    elif scaling.kind == "ntk":
        theta = _plain_frequencies(head_dim, _ntk_base(base, scaling.factor, head_dim))
    elif scaling.kind == "dynamic":
        if seq_len is None:
            raise ValueError(
                "RoPE scaling kind 'dynamic' needs seq_len, the (static) sequence length."
            )
        if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len <= 0:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}.")
        s, l0 = scaling.factor, scaling.original_max_position
        s_len = max(1.0, s * int(seq_len) / l0 - (s - 1.0))
        theta = _plain_frequencies(head_dim, _ntk_base(base, s_len, head_dim))
    else:  # yarn
        theta = _yarn_frequencies(head_dim, base, scaling)
    return jnp.asarray(theta.astype(np.float32))


def _yarn_frequencies(head_dim: int, base: float, scaling: RopeScaling) -> np.ndarray:
    d, s, l0 = head_dim, scaling.factor, scaling.original_max_position

    def pair_turning(n_rotations: float) -> float:
        # Solve L₀·θ_i = 2π·n for i: the pair that completes n rotations over L₀.
        return d * math.log(l0 / (2.0 * math.pi * n_rotations)) / (2.0 * math.log(base))

    low = max(math.floor(pair_turning(scaling.beta_fast)), 0)
    high = min(math.ceil(pair_turning(scaling.beta_slow)), d - 1)
    if low == high:
        high += 0.001  # avoids 0/0 in the ramp
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    theta = _plain_frequencies(d, base)
    return (theta / s) * ramp + theta * (1.0 - ramp)


def _rotate_pairs(x: jax.Array, positions: ArrayLike, freqs_F: jax.Array) -> jax.Array:
    """Rotate the adjacent feature pairs of ``x`` (``(..., T, H, 2F)``) by ``position·θ``."""
    positions = jnp.asarray(positions, jnp.float32)
    angles_TF = positions[..., None] * jax.lax.broadcast_to_rank(freqs_F, positions.ndim + 1)
    pairs = x.reshape(*x.shape[:-1], freqs_F.shape[0], 2).astype(jnp.float32)
    even, odd = pairs[..., 0], pairs[..., 1]
    # (..., T, 1, F): broadcast over heads, and over leading dims that positions lack
    cos_T1F = jax.lax.broadcast_to_rank(jnp.cos(angles_TF)[..., None, :], even.ndim)
    sin_T1F = jax.lax.broadcast_to_rank(jnp.sin(angles_TF)[..., None, :], even.ndim)
    rotated = jnp.stack([even * cos_T1F - odd * sin_T1F, even * sin_T1F + odd * cos_T1F], -1)
    return rotated.reshape(x.shape).astype(x.dtype)


def apply_rope(
    x_BTHD: jax.Array,
    positions_T: ArrayLike,
    base: float = 10000.0,
    scaling: RopeScaling | None = None,
    seq_len: int | None = None,
) -> jax.Array:
    """Rotate the adjacent feature pairs of ``x_BTHD`` by their positions' angles.

    Pair ``i`` at position ``m`` turns by ``m·θ_i`` with ``θ`` from
    :func:`rope_frequencies` (``head_dim, base, scaling, seq_len``). The YaRN attention
    scale is not applied here (see :func:`rope_attention_scale`).

    Args:
        x_BTHD: queries or keys, ``(..., T, H, D)`` with ``D`` even (any leading dims).
        positions_T: integer (or real) positions, shape ``(T,)`` or broadcastable to
            ``x_BTHD.shape[:-2]`` (e.g. ``(B, T)`` for per-example positions).
        base: the frequency base of :func:`rope_frequencies`.
        scaling: context scaling of the frequencies, static; ``None`` for plain RoPE.
        seq_len: the sequence length for ``"dynamic"`` scaling, a static int; defaults to
            ``x_BTHD.shape[-3]``. Pass it when queries cover only part of the sequence
            (a decoder's last ``Q`` positions), so queries and keys share frequencies.

    Returns:
        The rotated array, same shape and dtype as ``x_BTHD``. Angles, sines and cosines
        are computed in float32.

    >>> x = jnp.ones((1, 2, 1, 2))  # position 0 is left alone, position 1 turns by 1 rad
    >>> apply_rope(x, jnp.arange(2))[0, :, 0]
    Array([[ 1.   ,  1.   ],
           [-0.301...,  1.381...]], dtype=float32)
    >>> apply_rope(x, jnp.arange(2), scaling=RopeScaling("linear", 2.0, 64))[0, 1, 0]
    Array([0.398..., 1.357...], dtype=float32)
    """
    if scaling is not None and scaling.kind == "dynamic" and seq_len is None:
        seq_len = x_BTHD.shape[-3]
    freqs_F = rope_frequencies(x_BTHD.shape[-1], base, scaling, seq_len)
    return _rotate_pairs(x_BTHD, positions_T, freqs_F)


def apply_rope_2d(
    x_BTHD: jax.Array, rows_T: ArrayLike, cols_T: ArrayLike, base: float = 10000.0
) -> jax.Array:
    """2-D RoPE: the first half of the features turn by the row, the second by the column.

    With ``D`` divisible by 4 and ``θ = rope_frequencies(D/2, base)``, features
    ``0 … D/2 − 1`` are rotated as :func:`apply_rope` would rotate a ``D/2``-dimensional
    head at position ``row``, and features ``D/2 … D − 1`` likewise at position ``col``.
    Both halves are relative: ``⟨rope2d(q, r, c), rope2d(k, r', c')⟩`` depends only on
    ``r − r'`` and ``c − c'``. Grid coordinates are small (ARC grids are at most
    30 × 30), so no context scaling applies.

    Args:
        x_BTHD: queries or keys, ``(..., T, H, D)`` with ``D % 4 == 0``.
        rows_T, cols_T: each token's row and column, shape ``(T,)`` or broadcastable to
            ``x_BTHD.shape[:-2]`` (e.g. ``(B, T)`` for per-example grids).
        base: the frequency base.

    Returns:
        The rotated array, same shape and dtype as ``x_BTHD``.

    >>> x = jnp.ones((1, 1, 1, 4))  # row 1 turns the first pair by 1 rad, column 0 nothing
    >>> apply_rope_2d(x, jnp.array([1]), jnp.array([0]))[0, 0, 0]
    Array([-0.301...,  1.381...,  1.   ,  1.   ], dtype=float32)
    """
    head_dim = x_BTHD.shape[-1]
    if head_dim % 4:
        raise ValueError(f"apply_rope_2d needs a head dim divisible by 4, got {head_dim}.")
    half = head_dim // 2
    freqs_F = rope_frequencies(half, base)
    return jnp.concatenate(
        [
            _rotate_pairs(x_BTHD[..., :half], rows_T, freqs_F),
            _rotate_pairs(x_BTHD[..., half:], cols_T, freqs_F),
        ],
        axis=-1,
    )
