"""The Grokfast decoder (Lee et al. 2024, ``ironjr/grokfast`` ``main.py``) in Flax NNX.

A GPT-style decoder-only transformer that reproduces the reference PyTorch model layer
for layer, including its initialisation (PyTorch's defaults) and one quirk: each block
adds the attention output onto the *normalised* input, ``x ← LN₁(x) + Attn(LN₁(x))``,
so the raw block input never reaches the output directly.

Layout is batch-first: tokens ``(B, T)`` → logits ``(B, T, V)``. Inside, projections and
the MLP act on operands flattened to ``(B·T, D)``: under XLA on the CPU, dots that keep
extra batch dimensions are slower in the backward pass.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from grokjax.nn.mlp import get_activation, sow_if_capturing, uniform_init
from grokjax.nn.rope import RopeScaling, apply_rope, apply_rope_2d, rope_attention_scale

__all__ = ["Block", "Decoder"]

POSITIONS = ("learned", "rope", "rope2d")
# ``rope_scaling`` argument of a call that keeps the scaling the module was built with
OWN = "own"
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm default


def _layer_norm(
    width: int, dtype: DTypeLike | None, param_dtype: DTypeLike, rngs: nnx.Rngs
) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        width,
        epsilon=LAYER_NORM_EPS,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def _torch_linear(
    n_in: int,
    n_out: int,
    *,
    use_bias: bool = True,
    zero_bias: bool = False,
    dtype: DTypeLike | None,
    param_dtype: DTypeLike,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """``nn.Linear(n_in, n_out)`` with PyTorch's default init: W, b ~ U(±1/√n_in)."""
    bound = 1.0 / math.sqrt(n_in)
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=uniform_init(bound),
        bias_init=nnx.initializers.zeros_init() if zero_bias else uniform_init(bound),
        rngs=rngs,
    )


def _dense_cols(layer: nnx.Linear, x_ND: jax.Array, start: int, stop: int) -> jax.Array:
    """Output columns ``start:stop`` of ``layer(x_ND)``, computing only those."""
    kernel = layer.kernel[...][:, start:stop]
    bias = layer.bias[...][start:stop]
    x_ND, kernel, bias = layer.promote_dtype((x_ND, kernel, bias), dtype=layer.dtype)
    return x_ND @ kernel + bias[None]


def _check_config(
    width: int,
    heads: int,
    activation: str,
    positions: str,
    dropout: float = 0.0,
    rope_scaling: RopeScaling | None = None,
) -> None:
    if heads <= 0 or width % heads:
        raise ValueError(f"width ({width}) must be divisible by heads ({heads}).")
    if positions == "rope2d" and (width // heads) % 4:
        raise ValueError(
            f"positions='rope2d' needs a head dimension divisible by 4 (half rotates by row, "
            f"half by column); width {width} / heads {heads} = {width // heads}."
        )
    if rope_scaling is not None and positions != "rope":
        raise ValueError(
            f"rope_scaling applies to 1-D RoPE (positions='rope'), not positions={positions!r}: "
            "2-D coordinates stay within a grid and are not scaled."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout = {dropout} must be in [0, 1).")
    get_activation(activation)
    if positions not in POSITIONS:
        raise ValueError(f"Unknown positions {positions!r}; allowed: {', '.join(POSITIONS)}.")


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout: each entry zeroed with probability ``rate``, survivors scaled by
    ``1/(1 − rate)`` (as ``torch.nn.Dropout`` in training mode); the identity when
    ``key`` is ``None`` or ``rate`` is 0.

    >>> x = jnp.ones((1000,))
    >>> y = dropout(x, 0.25, jax.random.key(0))
    >>> float(jnp.unique(y)[-1]), 0.2 < float(jnp.mean(y == 0)) < 0.3
    (1.3333333730697632, True)
    """
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _attention(
    q_BQHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHK: jax.Array,
    *,
    causal: bool,
    drop: tuple[float, jax.Array | None] = (0.0, None),
) -> tuple[jax.Array, jax.Array]:
    """Scaled dot-product attention: probabilities ``(B, H, Q, T)`` and heads ``(B, Q, H, K)``.

    With ``causal``, query ``i`` sees keys ``0 … i`` (requires ``Q == T``); without it,
    every query sees every key (used for the last position alone). Scores and softmax
    are computed in float32 (float64 for float64 inputs). ``drop = (rate, key)``
    drops attention probabilities before they weight the values (the returned
    probabilities are the undropped ones).
    """
    scale = 1.0 / math.sqrt(q_BQHK.shape[-1])
    score_dtype = jnp.promote_types(q_BQHK.dtype, jnp.float32)  # float64 stays float64
    scores_BHQT = (
        jnp.einsum("bqhk,bthk->bhqt", q_BQHK, k_BTHK, preferred_element_type=score_dtype) * scale
    )
    if causal:
        T = k_BTHK.shape[1]
        scores_BHQT = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores_BHQT, -jnp.inf)
    probs_BHQT = jax.nn.softmax(scores_BHQT, axis=-1)
    weights_BHQT = dropout(probs_BHQT, *drop)
    heads_BQHK = jnp.einsum("bhqt,bthk->bqhk", weights_BHQT.astype(v_BTHK.dtype), v_BTHK)
    return probs_BHQT, heads_BQHK


class Block(nnx.Module):
    """One pre-LN decoder block of the Grokfast reference, with its residual quirk.

    With ``LN`` LayerNorm (ε = 1e-5), ``Attn`` causal multi-head self-attention and
    ``σ`` the activation, the block maps ``x ∈ ℝ^{T×D}`` to

        h = LN₁(x)
        u = h + Attn(h)                     # residual onto the normalised x
        y = u + σ(LN₂(u) W₁ + b₁) W₂ + b₂

    ``Attn(h) = concat_j softmax(Q_j K_jᵀ/√d_h + M) V_j · W_o + b_o`` with per-head
    ``Q_j, K_j, V_j`` from one fused projection ``h W_qkv + b_qkv`` (columns
    ``[q | k | v]``, heads contiguous within each, as PyTorch's ``in_proj_weight``ᵀ),
    ``d_h = D/H`` and ``M`` the causal mask (−∞ above the diagonal). Scores and softmax
    are computed in float32. With ``positions="rope"``, ``Q_j`` and ``K_j`` are rotated
    by :func:`~grokjax.nn.rope.apply_rope` first (frequencies scaled by ``rope_scaling``,
    then both multiplied by :func:`~grokjax.nn.rope.rope_attention_scale`, YaRN's
    temperature); with ``positions="rope2d"``, by
    :func:`~grokjax.nn.rope.apply_rope_2d` at each token's (row, column).

    ``dropout`` (rate ``p``) applies where ``torch.nn.TransformerEncoderLayer`` does: to
    the attention probabilities, to ``Attn(h)``, to the MLP's hidden activation and to
    its output; only in calls given a ``dropout_key`` (training), never in evaluation.

    Initialisation (PyTorch defaults): ``W_qkv ~ U(±√(6/(D + 3D)))`` (Xavier-uniform as
    one ``(D, 3D)`` matrix), ``b_qkv = 0``; ``W_o ~ U(±1/√D)``, ``b_o = 0``; ``W₁, b₁ ~
    U(±1/√D)``, ``W₂, b₂ ~ U(±1/√(rD))``; LayerNorm scale 1, bias 0.

    Sown under :func:`nnx.capture` (as ``nnx.Intermediate``): ``"block_input"`` (x),
    ``"attention"`` (probabilities, ``(B, H, T, T)``), ``"attention_output"``
    (``Attn(h)``), ``"mlp_hidden"`` (``σ(…)``, ``(B, T, rD)``) and ``"block_output"`` (y).
    With ``last_only`` the query-side ones have ``T = 1``.

    >>> block = Block(32, heads=4, rngs=nnx.Rngs(0))
    >>> block(jnp.ones((2, 6, 32))).shape
    (2, 6, 32)
    """

    def __init__(
        self,
        width: int,
        *,
        heads: int = 4,
        mlp_ratio: int = 4,
        activation: str = "gelu",
        positions: str = "learned",
        rope_base: float = 10000.0,
        rope_scaling: RopeScaling | None = None,
        dropout: float = 0.0,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        _check_config(width, heads, activation, positions, dropout, rope_scaling)
        self.width = width
        self.dropout = float(dropout)
        self.heads = heads
        self.activation = activation
        self.positions = positions
        self.rope_base = float(rope_base)
        self.rope_scaling = rope_scaling
        linear = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_1 = _layer_norm(width, **linear)
        self.ln_2 = _layer_norm(width, **linear)
        self.qkv = nnx.Linear(
            width,
            3 * width,
            kernel_init=nnx.initializers.xavier_uniform(),
            bias_init=nnx.initializers.zeros_init(),
            **linear,
        )
        self.out = _torch_linear(width, width, zero_bias=True, **linear)
        self.mlp_in = _torch_linear(width, mlp_ratio * width, **linear)
        self.mlp_out = _torch_linear(mlp_ratio * width, width, **linear)

    def __call__(
        self,
        x_BTD: jax.Array,
        *,
        coords: tuple[jax.Array, jax.Array] | None = None,
        rope_scaling: RopeScaling | str | None = OWN,
        last_only: bool = False,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """Apply the block: ``(B, T, D) → (B, T, D)``, or ``(B, 1, D)`` if ``last_only``.

        With ``last_only`` only the last position's output is computed: its query,
        attention output and MLP (keys and values still come from every position).
        ``coords = (rows_BT, cols_BT)``: each token's grid coordinates, which
        ``positions="rope2d"`` rotates by. ``rope_scaling`` replaces the block's own
        (e.g. another context extension at evaluation). ``dropout_key`` turns dropout
        on (see the class docstring).
        """
        keys = [None] * 4 if dropout_key is None else list(jax.random.split(dropout_key, 4))
        B, T, D = x_BTD.shape
        H = self.heads
        K = D // H
        Q = 1 if last_only else T
        sow_if_capturing(self, "block_input", x_BTD)

        h_ND = self.ln_1(x_BTD.reshape(B * T, D))
        if last_only:
            h_QD = h_ND.reshape(B, T, D)[:, -1]  # (B·1, D)
            q_QD = _dense_cols(self.qkv, h_QD, 0, D)
            kv_N2D = _dense_cols(self.qkv, h_ND, D, 3 * D)
            k_ND, v_ND = kv_N2D[:, :D], kv_N2D[:, D:]
        else:
            h_QD = h_ND
            qkv_N3D = self.qkv(h_ND)
            q_QD, k_ND, v_ND = qkv_N3D[:, :D], qkv_N3D[:, D : 2 * D], qkv_N3D[:, 2 * D :]
        q_BQHK = q_QD.reshape(B, Q, H, K)
        k_BTHK = k_ND.reshape(B, T, H, K)
        v_BTHK = v_ND.reshape(B, T, H, K)
        if self.positions == "rope":
            scaling = self.rope_scaling if rope_scaling == OWN else rope_scaling
            rope = dict(base=self.rope_base, scaling=scaling, seq_len=T)
            q_BQHK = apply_rope(q_BQHK, jnp.arange(T - Q, T), **rope)
            k_BTHK = apply_rope(k_BTHK, jnp.arange(T), **rope)
            temperature = rope_attention_scale(scaling)
            if temperature != 1.0:
                q_BQHK, k_BTHK = q_BQHK * temperature, k_BTHK * temperature
        elif self.positions == "rope2d":
            if coords is None:
                raise ValueError("positions='rope2d' needs each token's (row, column): coords.")
            rows_BT, cols_BT = coords
            q_BQHK = apply_rope_2d(q_BQHK, rows_BT[:, T - Q :], cols_BT[:, T - Q :], self.rope_base)
            k_BTHK = apply_rope_2d(k_BTHK, rows_BT, cols_BT, self.rope_base)

        probs_BHQT, heads_BQHK = _attention(
            q_BQHK, k_BTHK, v_BTHK, causal=not last_only, drop=(self.dropout, keys[0])
        )
        sow_if_capturing(self, "attention", probs_BHQT)
        attn_QD = dropout(self.out(heads_BQHK.reshape(B * Q, D)), self.dropout, keys[1])
        sow_if_capturing(self, "attention_output", attn_QD.reshape(B, Q, D))

        u_QD = h_QD + attn_QD  # the reference's residual onto LN₁(x)
        hidden_QF = get_activation(self.activation)(self.mlp_in(self.ln_2(u_QD)))
        hidden_QF = dropout(hidden_QF, self.dropout, keys[2])
        sow_if_capturing(self, "mlp_hidden", hidden_QF.reshape(B, Q, -1))
        y_BQD = (u_QD + dropout(self.mlp_out(hidden_QF), self.dropout, keys[3])).reshape(B, Q, D)
        sow_if_capturing(self, "block_output", y_BQD)
        return y_BQD


class Decoder(nnx.Module):
    """The Grokfast decoder-only transformer: tokens ``(B, T)`` → logits ``(B, T, V)``.

    With token embedding ``E ∈ ℝ^{V×D}``, position embedding ``P ∈ ℝ^{S×D}`` (S =
    ``seq_len``), blocks ``f_1 … f_L`` (:class:`Block`) and head ``W ∈ ℝ^{D×V}``:

        h_0[t] = E[tokens[t]] + P[t] (+ G[segments[t]])   (no P with RoPE)
        h_l    = f_l(h_{l−1})
        logits = LN_f(h_L) W               (no bias)

    ``G ∈ ℝ^{num_segments×D}`` is a learned segment embedding (only with
    ``num_segments > 0``): which grid of an ARC sequence a token belongs to, since 2-D
    RoPE's coordinates restart in every grid.

    Initialisation as PyTorch's defaults: ``E, P, G ~ N(0, 1)``, ``W ~ U(±1/√D)``, blocks
    as in :class:`Block`. The reference configuration (Lee et al.'s modular arithmetic)
    is ``Decoder(p + 2, seq_len=5)`` (width 128, depth 2, 4 heads) — 422,784 parameters
    for ``p = 97``.

    Args:
        vocab_size: number of tokens ``V``.
        seq_len: number of rows ``S`` of the learned position table (longest input).
        depth: number of blocks ``L``.
        width: model width ``D``.
        heads: attention heads ``H`` (must divide ``width``).
        mlp_ratio: MLP hidden width as a multiple of ``D``.
        activation: MLP activation, ``"gelu"`` (exact erf, as ``torch.nn.GELU``),
            ``"relu"`` or ``"silu"``.
        positions: ``"learned"`` (table ``P``), ``"rope"`` (rotary embedding of the
            queries and keys in every block by sequence index, base ``rope_base``; no
            table) or ``"rope2d"`` (rotary by each token's grid row and column, given
            with the call).
        rope_base: RoPE frequency base.
        rope_scaling: context extension of 1-D RoPE (a
            :class:`~grokjax.nn.rope.RopeScaling`), or ``None``; a call may replace it.
        num_segments: rows of the segment embedding ``G`` (0: none).
        dropout: dropout rate of every block (see :class:`Block`), active only in
            calls given a ``dropout_key``.
        dtype: computation dtype.
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    ``model(tokens_BT)`` gives the logits; ARC sequences also pass ``rows_BT``,
    ``cols_BT`` (for ``"rope2d"``) and ``segments_BT``. Analysis values are sown as
    ``nnx.Intermediate`` (per block as in :class:`Block`, plus ``"embedding"`` = ``h_0``
    and ``"final_hidden"`` = ``LN_f(h_L)``, the head's input) and are read with
    :func:`nnx.capture`; plain calls record nothing:

    >>> model = Decoder(13, seq_len=6, width=32, rngs=nnx.Rngs(0))
    >>> tokens = jnp.zeros((2, 6), jnp.int32)
    >>> model(tokens).shape
    (2, 6, 13)
    >>> logits, inter = nnx.capture(model, nnx.Intermediate)(tokens)
    >>> inter["blocks"][1]["attention"][0].shape  # (B, H, T, T), one entry per call
    (2, 4, 6, 6)
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        seq_len: int,
        depth: int = 2,
        width: int = 128,
        heads: int = 4,
        mlp_ratio: int = 4,
        activation: str = "gelu",
        positions: str = "learned",
        rope_base: float = 10000.0,
        rope_scaling: RopeScaling | None = None,
        num_segments: int = 0,
        dropout: float = 0.0,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        _check_config(width, heads, activation, positions, dropout, rope_scaling)
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.positions = positions
        embed = dict(
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nnx.initializers.normal(stddev=1.0),
            rngs=rngs,
        )
        self.token_embedding = nnx.Embed(vocab_size, width, **embed)
        self.position_embedding = (
            nnx.Embed(seq_len, width, **embed) if positions == "learned" else None
        )
        self.segment_embedding = (
            nnx.Embed(num_segments, width, **embed) if num_segments > 0 else None
        )
        self.blocks = nnx.List(
            [
                Block(
                    width,
                    heads=heads,
                    mlp_ratio=mlp_ratio,
                    activation=activation,
                    positions=positions,
                    rope_base=rope_base,
                    rope_scaling=rope_scaling,
                    dropout=dropout,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.ln_f = _layer_norm(width, dtype, param_dtype, rngs)
        self.head = _torch_linear(
            width, vocab_size, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(
        self,
        tokens_BT: jax.Array,
        *,
        rows_BT: jax.Array | None = None,
        cols_BT: jax.Array | None = None,
        segments_BT: jax.Array | None = None,
        rope_scaling: RopeScaling | str | None = OWN,
        last_only: bool = False,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """Logits ``(B, T, V)`` for integer tokens ``(B, T)``; ``(B, V)`` if ``last_only``.

        ``rows_BT``/``cols_BT``: each token's grid coordinates (``"rope2d"``);
        ``segments_BT``: its segment (needs ``num_segments > 0``); ``rope_scaling``
        replaces the model's 1-D RoPE scaling for this call (``None``: plain RoPE).

        ``last_only=True`` returns ``model(tokens)[:, -1]``, computing the last block's
        query side, ``LN_f`` and the head for the last position only (about 25% fewer
        FLOPs for the reference model, whose loss reads only the last position).
        ``dropout_key`` (training) turns on the blocks' dropout, one key per block.
        """
        B, T = tokens_BT.shape
        x_BTD = self.token_embedding(tokens_BT)
        if self.position_embedding is not None:
            if self.seq_len < T:
                raise ValueError(f"got {T} tokens per sequence, but seq_len is {self.seq_len}.")
            pos_TD = self.position_embedding.embedding[...][:T].astype(x_BTD.dtype)
            x_BTD = x_BTD + pos_TD[None]
        if segments_BT is not None:
            if self.segment_embedding is None:
                raise ValueError("segments_BT given, but the model has no segment embedding.")
            x_BTD = x_BTD + self.segment_embedding(segments_BT)
        sow_if_capturing(self, "embedding", x_BTD)
        coords = None if rows_BT is None else (rows_BT, cols_BT)
        for i, block in enumerate(self.blocks):
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            last = last_only and i == len(self.blocks) - 1
            x_BTD = block(
                x_BTD, coords=coords, rope_scaling=rope_scaling, last_only=last, dropout_key=key
            )
        if last_only and not len(self.blocks):
            x_BTD = x_BTD[:, -1:]
        Q, D = x_BTD.shape[1:]
        final_QD = self.ln_f(x_BTD.reshape(B * Q, D))
        sow_if_capturing(self, "final_hidden", final_QD.reshape(B, Q, D))
        logits_QV = self.head(final_QD)
        if last_only:
            return logits_QV
        return logits_QV.reshape(B, T, -1)
