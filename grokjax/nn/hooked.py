"""The TransformerLens-style transformer of Nanda et al. (2023) in Flax NNX.

"Progress measures for grokking via mechanistic interpretability" trains a one-layer
transformer built with TransformerLens::

    HookedTransformerConfig(n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512,
                            act_fn="relu", normalization_type=None,
                            d_vocab=p + 1, d_vocab_out=p, n_ctx=3)

with every bias frozen at zero. :class:`HookedTransformer` is that architecture, in
TransformerLens's parameter layout and names: a leaf path here is the TransformerLens
``state_dict`` key with ``.`` written ``/`` (``blocks.0.attn.W_Q`` ↔
``blocks/0/attn/W_Q``). Unlike :class:`grokjax.nn.Decoder` it has a plain residual
stream (no normalisation by default), per-head ``(H, D, d_h)`` projections, separate
input and output vocabularies and GPT-2-style normal initialisation.

Layout is batch-first: tokens ``(B, T)`` → logits ``(B, T, C)``. Projections act on
operands flattened to ``(B·T, D)`` (faster backward passes under XLA on the CPU), with
the per-head weights reshaped to ``(D, H·d_h)`` and ``(H·d_h, D)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from grokjax.nn.mlp import get_activation, sow_if_capturing
from grokjax.nn.transformer import LAYER_NORM_EPS, _attention

__all__ = ["HookedBlock", "HookedTransformer"]


def _check_config(
    width: int, heads: int, mlp_width: int, depth: int, activation: str, init_std: float | None
) -> None:
    if heads <= 0 or width <= 0 or width % heads:
        raise ValueError(f"width ({width}) must be a positive multiple of heads ({heads}).")
    if mlp_width <= 0:
        raise ValueError(f"mlp_width = {mlp_width} must be positive.")
    if depth < 0:
        raise ValueError(f"depth = {depth} must be >= 0.")
    if init_std is not None and not init_std > 0:
        raise ValueError(f"init_std = {init_std} must be > 0.")
    get_activation(activation)


class _Init:
    """Parameter factory: weights ~ N(0, std²), biases zero, in ``param_dtype``."""

    def __init__(self, std: float, param_dtype: DTypeLike, rngs: nnx.Rngs) -> None:
        self.std, self.param_dtype, self.rngs = std, param_dtype, rngs

    def weight(self, *shape: int) -> nnx.Param:
        init = nnx.initializers.normal(stddev=self.std)
        return nnx.Param(init(self.rngs.params(), shape, self.param_dtype))

    def zeros(self, *shape: int) -> nnx.Param:
        return nnx.Param(jnp.zeros(shape, self.param_dtype))

    def ones(self, *shape: int) -> nnx.Param:
        return nnx.Param(jnp.ones(shape, self.param_dtype))


def _value(param: nnx.Param | None, dtype: DTypeLike | None) -> jax.Array | None:
    """The parameter's array in the computation dtype (its own dtype if ``None``)."""
    if param is None:
        return None
    value = param[...]
    return value if dtype is None else value.astype(dtype)


def _add_bias(x_ND: jax.Array, b_D: jax.Array | None) -> jax.Array:
    return x_ND if b_D is None else x_ND + b_D[None]


class _Embed(nnx.Module):
    """Token embedding ``W_E`` ``(V, D)``: ``x[b, t] = W_E[tokens[b, t]]``."""

    def __init__(self, vocab_size: int, width: int, init: _Init) -> None:
        self.W_E = init.weight(vocab_size, width)


class _PosEmbed(nnx.Module):
    """Learned position embedding ``W_pos`` ``(S, D)``."""

    def __init__(self, seq_len: int, width: int, init: _Init) -> None:
        self.W_pos = init.weight(seq_len, width)


class _Unembed(nnx.Module):
    """Unembedding ``W_U`` ``(D, C)`` and, with biases, ``b_U`` ``(C,)``."""

    def __init__(self, width: int, num_outputs: int, biases: bool, init: _Init) -> None:
        self.W_U = init.weight(width, num_outputs)
        self.b_U = init.zeros(num_outputs) if biases else None


class _LayerNorm(nnx.Module):
    """TransformerLens's ``LayerNorm`` (``normalization_type="LN"``): scale ``w``, shift
    ``b`` (initialised 1 and 0), ``y = (x − μ)/√(σ² + ε) · w + b`` with ``ε = 1e-5``
    and the biased variance; statistics in at least float32."""

    def __init__(self, width: int, init: _Init) -> None:
        self.w = init.ones(width)
        self.b = init.zeros(width)

    def __call__(self, x_ND: jax.Array, dtype: DTypeLike | None) -> jax.Array:
        x = x_ND.astype(jnp.promote_types(x_ND.dtype, jnp.float32))
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        y = ((x - mu) * jax.lax.rsqrt(var + LAYER_NORM_EPS)).astype(x_ND.dtype)
        return y * _value(self.w, dtype)[None] + _value(self.b, dtype)[None]


class _Attention(nnx.Module):
    """Per-head projections ``W_Q, W_K, W_V`` ``(H, D, d_h)``, ``W_O`` ``(H, d_h, D)``
    and, with biases, ``b_Q, b_K, b_V`` ``(H, d_h)`` and ``b_O`` ``(D,)``."""

    def __init__(self, width: int, heads: int, biases: bool, init: _Init) -> None:
        d_head = width // heads
        self.W_Q = init.weight(heads, width, d_head)
        self.W_K = init.weight(heads, width, d_head)
        self.W_V = init.weight(heads, width, d_head)
        self.W_O = init.weight(heads, d_head, width)
        self.b_Q = init.zeros(heads, d_head) if biases else None
        self.b_K = init.zeros(heads, d_head) if biases else None
        self.b_V = init.zeros(heads, d_head) if biases else None
        self.b_O = init.zeros(width) if biases else None

    def project(self, names: str, x_ND: jax.Array, dtype: DTypeLike | None) -> jax.Array:
        """``x W_n + b_n`` for the projections ``n`` in ``names`` (e.g. ``"KV"``), heads
        side by side: ``(N, len(names)·H·d_h)``, one matmul."""
        kernels, biases = [], []
        for n in names:
            W_HDK = _value(getattr(self, f"W_{n}"), dtype)
            H, D, K = W_HDK.shape
            kernels.append(W_HDK.transpose(1, 0, 2).reshape(D, H * K))
            b_HK = _value(getattr(self, f"b_{n}"), dtype)
            biases.append(None if b_HK is None else b_HK.reshape(H * K))
        y = x_ND @ jnp.concatenate(kernels, axis=1)
        return y if biases[0] is None else y + jnp.concatenate(biases)[None]

    def output(self, z_NHK: jax.Array, dtype: DTypeLike | None) -> jax.Array:
        """``Σ_h z_h W_O[h] + b_O``: ``(N, H, d_h) → (N, D)``."""
        W_HKD = _value(self.W_O, dtype)
        H, K, D = W_HKD.shape
        out_ND = z_NHK.reshape(-1, H * K) @ W_HKD.reshape(H * K, D)
        return _add_bias(out_ND, _value(self.b_O, dtype))


class _MLP(nnx.Module):
    """``W_in`` ``(D, F)``, ``W_out`` ``(F, D)`` and, with biases, ``b_in``, ``b_out``."""

    def __init__(self, width: int, mlp_width: int, biases: bool, init: _Init) -> None:
        self.W_in = init.weight(width, mlp_width)
        self.W_out = init.weight(mlp_width, width)
        self.b_in = init.zeros(mlp_width) if biases else None
        self.b_out = init.zeros(width) if biases else None


class HookedBlock(nnx.Module):
    """One TransformerLens block: attention then MLP, each added to the residual stream.

    With ``LN₁, LN₂`` the identity unless ``layer_norm`` (then :class:`_LayerNorm`),
    ``σ`` the activation and ``d_h = D/H``, the block maps ``x ∈ ℝ^{T×D}`` to

        q_h, k_h, v_h = LN₁(x) W_{Q,K,V}[h] + b_{Q,K,V}[h]       (T, d_h) per head
        A_h   = softmax(q_h k_hᵀ/√d_h + M)                       (T, T), M causal
        attn  = Σ_h (A_h v_h) W_O[h] + b_O
        x_mid = x + attn
        hid   = σ(LN₂(x_mid) W_in + b_in)                        (T, F)
        y     = x_mid + hid W_out + b_out

    ``M`` is −∞ above the diagonal; scores and softmax are computed in float32
    (float64 for float64 inputs). Without ``biases`` every ``b`` is absent (zero).

    Sown under :func:`nnx.capture` (as ``nnx.Intermediate``), with the names of
    :class:`grokjax.nn.transformer.Block`: ``"block_input"`` (x), ``"attention"``
    (``A``, ``(B, H, Q, T)``), ``"attention_output"`` (``attn``, ``(B, Q, D)``),
    ``"mlp_hidden"`` (``hid``, ``(B, Q, F)``) and ``"block_output"`` (y, ``(B, Q, D)``);
    ``Q = T``, or 1 with ``last_only``.

    >>> block = HookedBlock(32, heads=4, mlp_width=64, rngs=nnx.Rngs(0))
    >>> block(jnp.ones((2, 3, 32))).shape
    (2, 3, 32)
    """

    def __init__(
        self,
        width: int,
        *,
        heads: int = 4,
        mlp_width: int = 512,
        activation: str = "relu",
        layer_norm: bool = False,
        biases: bool = False,
        init_std: float | None = None,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        _check_config(width, heads, mlp_width, 1, activation, init_std)
        init = _Init(0.8 / math.sqrt(width) if init_std is None else init_std, param_dtype, rngs)
        self.heads = heads
        self.activation = activation
        self.dtype = dtype
        self.ln1 = _LayerNorm(width, init) if layer_norm else None
        self.attn = _Attention(width, heads, biases, init)
        self.ln2 = _LayerNorm(width, init) if layer_norm else None
        self.mlp = _MLP(width, mlp_width, biases, init)

    def __call__(self, x_BTD: jax.Array, *, last_only: bool = False) -> jax.Array:
        """Apply the block: ``(B, T, D) → (B, T, D)``, or ``(B, 1, D)`` if ``last_only``.

        With ``last_only`` only the last position's query, attention output and MLP are
        computed (keys and values still come from every position).
        """
        dtype = self.dtype
        B, T, D = x_BTD.shape
        H = self.heads
        K = D // H
        Q = 1 if last_only else T
        sow_if_capturing(self, "block_input", x_BTD)

        x_ND = x_BTD.reshape(B * T, D)
        h_ND = x_ND if self.ln1 is None else self.ln1(x_ND, dtype)
        if last_only:
            x_QD = x_BTD[:, -1]  # (B·1, D)
            q_QD = self.attn.project("Q", h_ND.reshape(B, T, D)[:, -1], dtype)
            kv_N2D = self.attn.project("KV", h_ND, dtype)
            k_ND, v_ND = kv_N2D[:, : H * K], kv_N2D[:, H * K :]
        else:
            x_QD = x_ND
            qkv_N3D = self.attn.project("QKV", h_ND, dtype)
            q_QD, k_ND, v_ND = jnp.split(qkv_N3D, 3, axis=1)
        probs_BHQT, z_BQHK = _attention(
            q_QD.reshape(B, Q, H, K),
            k_ND.reshape(B, T, H, K),
            v_ND.reshape(B, T, H, K),
            causal=not last_only,
        )
        sow_if_capturing(self, "attention", probs_BHQT)
        attn_QD = self.attn.output(z_BQHK.reshape(B * Q, H, K), dtype)
        sow_if_capturing(self, "attention_output", attn_QD.reshape(B, Q, D))

        mid_QD = x_QD + attn_QD
        m_QD = mid_QD if self.ln2 is None else self.ln2(mid_QD, dtype)
        pre_QF = _add_bias(m_QD @ _value(self.mlp.W_in, dtype), _value(self.mlp.b_in, dtype))
        hidden_QF = get_activation(self.activation)(pre_QF)
        sow_if_capturing(self, "mlp_hidden", hidden_QF.reshape(B, Q, -1))
        out_QD = _add_bias(hidden_QF @ _value(self.mlp.W_out, dtype), _value(self.mlp.b_out, dtype))
        y_BQD = (mid_QD + out_QD).reshape(B, Q, D)
        sow_if_capturing(self, "block_output", y_BQD)
        return y_BQD


class HookedTransformer(nnx.Module):
    """Nanda et al.'s TransformerLens transformer: tokens ``(B, T)`` → logits ``(B, T, C)``.

    With token embedding ``W_E ∈ ℝ^{V×D}``, position embedding ``W_pos ∈ ℝ^{S×D}``,
    blocks ``f_1 … f_L`` (:class:`HookedBlock`) and unembedding ``W_U ∈ ℝ^{D×C}``:

        resid_0[t] = W_E[tokens[t]] + W_pos[t]
        resid_l    = f_l(resid_{l−1})
        logits     = LN_f(resid_L) W_U + b_U        (LN_f the identity by default)

    Nanda et al.'s model for modular addition mod ``p`` is
    ``HookedTransformer(p + 1, p, seq_len=3)`` (tokens ``x, y, =``; 1 block of width
    128, 4 heads of 32, ReLU MLP of 512, no LayerNorm, no biases): 226,048 parameters
    for ``p = 113``. Seed 003's is the same with ``width=64, mlp_width=256``.

    **Parameters** (TransformerLens layout and names; leaf paths as
    :func:`grokjax.analysis.probes.leaf_names` writes them): ``embed/W_E`` ``(V, D)``
    (row ``i`` = input token ``i``, :attr:`EMBEDDING`), ``pos_embed/W_pos`` ``(S, D)``
    (:attr:`POS_EMBEDDING`), per block ``blocks/{l}/attn/W_Q``, ``…/W_K``, ``…/W_V``
    ``(H, D, d_h)``, ``blocks/{l}/attn/W_O`` ``(H, d_h, D)``, ``blocks/{l}/mlp/W_in``
    ``(D, F)``, ``blocks/{l}/mlp/W_out`` ``(F, D)``, and ``unembed/W_U`` ``(D, C)``
    (column ``c`` = output class ``c``, :attr:`UNEMBEDDING`). With ``biases``:
    ``blocks/{l}/attn/b_Q``, ``b_K``, ``b_V`` ``(H, d_h)``, ``b_O`` ``(D,)``,
    ``blocks/{l}/mlp/b_in`` ``(F,)``, ``b_out`` ``(D,)`` and ``unembed/b_U`` ``(C,)``.
    With ``layer_norm``: ``blocks/{l}/ln1/w``, ``…/b``, ``blocks/{l}/ln2/…`` and
    ``ln_final/…`` ``(D,)``.

    **Initialisation** (TransformerLens's GPT-2 init): every weight matrix ``W_*`` ~
    N(0, σ²) with ``σ = init_std``, default ``0.8/√D`` (TransformerLens's
    ``initializer_range``); biases 0; LayerNorm scales 1, shifts 0. ``biases=False``
    creates no bias parameters at all: the same function, gradients and updates as
    TransformerLens's zero biases frozen with ``requires_grad=False`` (Nanda et al.),
    which never leave zero.

    Args:
        vocab_size: number of input tokens ``V`` (``p + 1`` for Nanda et al.).
        num_outputs: number of output classes ``C`` (``p``).
        seq_len: rows ``S`` of the position table (longest input; 3).
        depth: number of blocks ``L``.
        width: residual width ``D``.
        heads: attention heads ``H`` (must divide ``width``; ``d_h = D/H``).
        mlp_width: MLP hidden width ``F``.
        activation: MLP activation, ``"relu"``, ``"gelu"`` (exact erf) or ``"silu"``.
        layer_norm: pre-LN LayerNorm (ε = 1e-5) before each attention, each MLP and the
            unembedding (TransformerLens ``normalization_type="LN"``).
        biases: trainable biases, initialised to zero.
        init_std: standard deviation of the weight init (default ``0.8/√width``).
        dtype: computation dtype (``None``: the parameters' dtype).
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    Analysis values are sown as ``nnx.Intermediate`` and read with :func:`nnx.capture`
    (plain calls record nothing): ``"embedding"`` (``resid_0``, ``(B, T, D)``),
    ``"final_hidden"`` (the unembedding's input ``LN_f(resid_L)``, ``(B, Q, D)``) and
    per block those of :class:`HookedBlock`.

    >>> model = HookedTransformer(114, 113, seq_len=3, rngs=nnx.Rngs(0))
    >>> tokens = jnp.array([[5, 7, 113]])
    >>> model(tokens).shape, model(tokens, last_only=True).shape
    ((1, 3, 113), (1, 113))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    226048
    >>> logits, inter = nnx.capture(model, nnx.Intermediate)(tokens)
    >>> inter["blocks"][0]["attention"][0].shape  # (B, H, T, T), one entry per call
    (1, 4, 3, 3)
    """

    #: Leaf path of the embedding matrix ``W_E`` ``(V, D)``, rows = input tokens.
    EMBEDDING = "embed/W_E"
    #: Leaf path of the position embedding ``W_pos`` ``(S, D)``.
    POS_EMBEDDING = "pos_embed/W_pos"
    #: Leaf path of the unembedding matrix ``W_U`` ``(D, C)``, columns = output classes.
    UNEMBEDDING = "unembed/W_U"

    def __init__(
        self,
        vocab_size: int,
        num_outputs: int,
        *,
        seq_len: int,
        depth: int = 1,
        width: int = 128,
        heads: int = 4,
        mlp_width: int = 512,
        activation: str = "relu",
        layer_norm: bool = False,
        biases: bool = False,
        init_std: float | None = None,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        _check_config(width, heads, mlp_width, depth, activation, init_std)
        std = 0.8 / math.sqrt(width) if init_std is None else float(init_std)
        init = _Init(std, param_dtype, rngs)
        self.vocab_size = vocab_size
        self.num_outputs = num_outputs
        self.seq_len = seq_len
        self.dtype = dtype
        self.embed = _Embed(vocab_size, width, init)
        self.pos_embed = _PosEmbed(seq_len, width, init)
        self.blocks = nnx.List(
            [
                HookedBlock(
                    width,
                    heads=heads,
                    mlp_width=mlp_width,
                    activation=activation,
                    layer_norm=layer_norm,
                    biases=biases,
                    init_std=std,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.ln_final = _LayerNorm(width, init) if layer_norm else None
        self.unembed = _Unembed(width, num_outputs, biases, init)

    def __call__(self, tokens_BT: jax.Array, *, last_only: bool = False) -> jax.Array:
        """Logits ``(B, T, C)`` for integer tokens ``(B, T)``; ``(B, C)`` if ``last_only``.

        ``last_only=True`` returns ``model(tokens)[:, -1]``, computing the last block's
        query side, ``LN_f`` and the unembedding for the last position only (the
        training loss reads only the answer position).
        """
        B, T = tokens_BT.shape
        if self.seq_len < T:
            raise ValueError(f"got {T} tokens per sequence, but seq_len is {self.seq_len}.")
        W_E = _value(self.embed.W_E, self.dtype)
        W_pos = _value(self.pos_embed.W_pos, self.dtype)
        x_BTD = jnp.take(W_E, tokens_BT, axis=0) + W_pos[:T][None]
        sow_if_capturing(self, "embedding", x_BTD)
        for i, block in enumerate(self.blocks):
            x_BTD = block(x_BTD, last_only=last_only and i == len(self.blocks) - 1)
        if last_only and not len(self.blocks):
            x_BTD = x_BTD[:, -1:]
        Q, D = x_BTD.shape[1:]
        final_QD = x_BTD.reshape(B * Q, D)
        if self.ln_final is not None:
            final_QD = self.ln_final(final_QD, self.dtype)
        sow_if_capturing(self, "final_hidden", final_QD.reshape(B, Q, D))
        W_U = _value(self.unembed.W_U, self.dtype)
        logits_QC = _add_bias(final_QD @ W_U, _value(self.unembed.b_U, self.dtype))
        if last_only:
            return logits_QC
        return logits_QC.reshape(B, T, -1)
