"""The Grokfast decoder and RoPE against independent float64 numpy references."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TraceCounter
from flax import nnx
from scipy.special import erf

from grokjax.nn import Decoder, RopeScaling, apply_rope, rope_frequencies

# ---------------------------------------------------------------------------------------
# numpy float64 references


def np_rope(
    x_BTHD: np.ndarray, positions_T: np.ndarray, base: float = 10000.0, theta=None
) -> np.ndarray:
    """RoPE via complex numbers: pair (x[2i], x[2i+1]) is z_i, rotated by e^{i·m·θ_i}
    (``theta``: the frequencies, default base^(−2i/d)); positions (T,) or (B, T)."""
    x = np.asarray(x_BTHD, np.float64)
    d = x.shape[-1]
    if theta is None:
        theta = base ** (-np.arange(d // 2, dtype=np.float64) * 2.0 / d)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    angle = np.asarray(positions_T, np.float64)[..., None] * theta  # (…, T, d/2)
    z = z * np.exp(1j * angle)[..., None, :]  # broadcast over heads
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def np_layer_norm(x: np.ndarray, p: dict) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


NP_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def np_decoder(
    params: dict,
    tokens_BT: np.ndarray,
    *,
    heads: int,
    positions: str,
    act: str,
    keep: list | None = None,
    rate: float = 0.0,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    theta: np.ndarray | None = None,
    temperature: float = 1.0,
):
    """The reference PyTorch forward, written out in float64 numpy (batch-first).

    ``keep[i]``: block i's dropout keep-masks (attention probabilities, attention
    output, MLP hidden, MLP output), survivors scaled by 1/(1 − rate). ``coords``:
    (rows, cols, segments) ``(B, T)`` each (2-D RoPE halves, segment embedding);
    ``theta``/``temperature``: 1-D RoPE's frequencies and YaRN's q, k factor."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    B, T = tokens_BT.shape
    x = p["token_embedding"]["embedding"][tokens_BT]
    if positions == "learned":
        x = x + p["position_embedding"]["embedding"][:T]
    if coords is not None:
        x = x + p["segment_embedding"]["embedding"][coords[2]]
    D = x.shape[-1]
    K = D // heads
    causal = np.tril(np.ones((T, T), bool))
    scale = 1.0 / (1.0 - rate)
    for i in range(len(p["blocks"])):
        blk = p["blocks"][i]
        masks = [1.0] * 4 if keep is None else keep[i]
        drop = [lambda z, k=k: z * k * (1.0 if keep is None else scale) for k in masks]
        h = np_layer_norm(x, blk["ln_1"])
        qkv = h @ blk["qkv"]["kernel"] + blk["qkv"]["bias"]
        q, k, v = (qkv[..., j * D : (j + 1) * D].reshape(B, T, heads, K) for j in range(3))
        if positions == "rope":
            q, k = np_rope(q, np.arange(T), theta=theta), np_rope(k, np.arange(T), theta=theta)
            q, k = q * temperature, k * temperature
        if positions == "rope2d":
            half = np.arange(K // 4) * 4.0 / K
            theta_half = 10000.0**-half
            rows, cols = coords[0], coords[1]
            q = np.concatenate(
                [
                    np_rope(q[..., : K // 2], rows, theta=theta_half),
                    np_rope(q[..., K // 2 :], cols, theta=theta_half),
                ],
                -1,
            )
            k = np.concatenate(
                [
                    np_rope(k[..., : K // 2], rows, theta=theta_half),
                    np_rope(k[..., K // 2 :], cols, theta=theta_half),
                ],
                -1,
            )
        s = np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(K)
        s = np.where(causal, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("bhqt,bthk->bqhk", drop[0](a), v).reshape(B, T, D)
        x = h + drop[1](o @ blk["out"]["kernel"] + blk["out"]["bias"])  # residual onto LN₁(x)
        m = np_layer_norm(x, blk["ln_2"]) @ blk["mlp_in"]["kernel"] + blk["mlp_in"]["bias"]
        hidden = drop[2](NP_ACTIVATIONS[act](m))
        x = x + drop[3](hidden @ blk["mlp_out"]["kernel"] + blk["mlp_out"]["bias"])
    return np_layer_norm(x, p["ln_f"]) @ p["head"]["kernel"]


def params_of(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@partial(jax.jit, static_argnames=("graphdef", "last_only"))
def _apply(graphdef, state, tokens, last_only):
    return nnx.merge(graphdef, state)(tokens, last_only=last_only)


def jit_apply(model: nnx.Module, tokens, last_only: bool = False):
    """``model(tokens, last_only=...)`` jitted; compiled once per model structure."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, jnp.asarray(tokens), last_only)


# One small configuration for (almost) every test: each new shape costs compile time.
SMALL = dict(seq_len=6, depth=2, width=32, heads=4)
VOCAB = 13


@pytest.fixture(scope="module", params=["learned", "rope"])
def small_model(request) -> Decoder:
    return Decoder(VOCAB, positions=request.param, rngs=nnx.Rngs(1), **SMALL)


# ---------------------------------------------------------------------------------------
# Decoder forward


def test_decoder_matches_numpy_reference(rng, small_model):
    tokens = rng.integers(0, VOCAB, size=(3, 6))
    logits = jit_apply(small_model, tokens)
    assert logits.shape == (3, 6, VOCAB)
    expected = np_decoder(
        params_of(small_model), tokens, heads=4, positions=small_model.positions, act="gelu"
    )
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_other_activations_match_numpy_reference(rng, activation):
    model = Decoder(VOCAB, activation=activation, rngs=nnx.Rngs(5), **SMALL)
    tokens = rng.integers(0, VOCAB, size=(3, 6))
    expected = np_decoder(params_of(model), tokens, heads=4, positions="learned", act=activation)
    np.testing.assert_allclose(np.asarray(jit_apply(model, tokens)), expected, rtol=1e-5, atol=1e-5)


def test_decoder_accepts_shorter_sequences_and_rejects_longer(rng, small_model):
    tokens = rng.integers(0, VOCAB, size=(2, 4))
    expected = np_decoder(
        params_of(small_model), tokens, heads=4, positions=small_model.positions, act="gelu"
    )
    np.testing.assert_allclose(
        np.asarray(jit_apply(small_model, tokens)), expected, rtol=1e-5, atol=1e-5
    )
    if small_model.positions == "learned":
        with pytest.raises(ValueError, match="seq_len"):
            jax.eval_shape(small_model, jnp.zeros((2, 7), jnp.int32))


def test_last_only_equals_last_position_of_full_call(rng, small_model):
    tokens = rng.integers(0, VOCAB, size=(3, 6))
    full = jit_apply(small_model, tokens)
    last = jit_apply(small_model, tokens, last_only=True)
    assert last.shape == (3, VOCAB)
    np.testing.assert_allclose(np.asarray(last), np.asarray(full[:, -1]), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Initialisation and size


def test_init_matches_pytorch_defaults(small_model):
    p = params_of(small_model)
    width = SMALL["width"]

    def check_bound(w, bound, name, low=0.9):
        w = np.abs(np.asarray(w))
        assert w.max() <= bound, name
        assert w.max() > low * bound, name  # ≥ 1024 draws for kernels, ≥ 32 for biases

    tok = np.asarray(p["token_embedding"]["embedding"])  # 416 draws
    assert abs(tok.std() - 1.0) < 0.15 and abs(tok.mean()) < 0.15
    if small_model.positions == "learned":
        pos = np.asarray(p["position_embedding"]["embedding"])  # 192 draws
        assert abs(pos.std() - 1.0) < 0.2
    for i in range(2):
        blk = p["blocks"][i]
        check_bound(blk["qkv"]["kernel"], math.sqrt(6 / (width + 3 * width)), "qkv")
        check_bound(blk["out"]["kernel"], 1 / math.sqrt(width), "out")
        check_bound(blk["mlp_in"]["kernel"], 1 / math.sqrt(width), "mlp_in.kernel")
        check_bound(blk["mlp_in"]["bias"], 1 / math.sqrt(width), "mlp_in.bias")
        check_bound(blk["mlp_out"]["kernel"], 1 / math.sqrt(4 * width), "mlp_out.kernel")
        check_bound(blk["mlp_out"]["bias"], 1 / math.sqrt(4 * width), "mlp_out.bias", low=0.5)
        assert not np.any(blk["qkv"]["bias"]) and not np.any(blk["out"]["bias"])
        for ln in ("ln_1", "ln_2"):
            np.testing.assert_array_equal(blk[ln]["scale"], 1.0)
            np.testing.assert_array_equal(blk[ln]["bias"], 0.0)
    check_bound(p["head"]["kernel"], 1 / math.sqrt(width), "head")
    assert "bias" not in p["head"]
    assert small_model.ln_f.epsilon == small_model.blocks[0].ln_1.epsilon == 1e-5


def test_parameter_count_equals_pytorch_reference():
    D, V, S, F = 128, 99, 5, 4 * 128
    layer_norm = 2 * D  # weight, bias
    in_proj = 3 * D * D + 3 * D  # MHA in_proj_weight, in_proj_bias
    out_proj = D * D + D  # MHA out_proj
    mlp = D * F + F + F * D + D  # Linear(D, 4D), Linear(4D, D)
    per_block = 2 * layer_norm + in_proj + out_proj + mlp
    expected = V * D + S * D + 2 * per_block + layer_norm + D * V  # embeddings, ln_f, head
    model = nnx.eval_shape(  # shapes only: no random numbers drawn
        lambda: Decoder(99, seq_len=5, width=128, depth=2, heads=4, rngs=nnx.Rngs(0))
    )
    leaves = jax.tree.leaves(params_of(model))
    assert sum(leaf.size for leaf in leaves) == expected == 422_784


def test_rope_model_has_no_position_table(small_model):
    has_table = "position_embedding" in params_of(small_model)
    assert has_table == (small_model.positions == "learned")


# ---------------------------------------------------------------------------------------
# Transformations: grad, vmap


def test_jit_grad_is_finite_and_last_only_gives_the_same_gradient(rng):
    model = Decoder(VOCAB, rngs=nnx.Rngs(1), **SMALL)
    graphdef, params = nnx.split(model)
    tokens = jnp.asarray(rng.integers(0, VOCAB, size=(3, 6)))
    labels = jnp.asarray(rng.integers(0, VOCAB, size=(3,)))

    @jax.jit
    def losses_and_grads(params):
        def loss(params, last_only):
            m = nnx.merge(graphdef, params)
            logits = m(tokens, last_only=True) if last_only else m(tokens)[:, -1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return [jax.value_and_grad(loss)(params, last_only) for last_only in (False, True)]

    (loss_full, g_full), (loss_last, g_last) = losses_and_grads(params)
    assert np.isfinite(float(loss_full))
    assert float(loss_full) == pytest.approx(float(loss_last), rel=1e-6)
    for path, g in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(g_full)):
        assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_last), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_vmap_over_member_axis_equals_per_member_calls(rng):
    members = [Decoder(VOCAB, rngs=nnx.Rngs(s), **SMALL) for s in range(3)]
    graphdef, _ = nnx.split(members[0])
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(m) for m in members])
    tokens = jnp.asarray(rng.integers(0, VOCAB, size=(3, 6)))
    apply = jax.jit(jax.vmap(lambda params, x: nnx.merge(graphdef, params)(x), (0, None)))
    out_MBTV = apply(stacked, tokens)
    assert out_MBTV.shape == (3, 3, 6, VOCAB)
    assert not np.allclose(out_MBTV[0], out_MBTV[1])
    for i, member in enumerate(members):
        np.testing.assert_allclose(
            np.asarray(out_MBTV[i]), np.asarray(jit_apply(member, tokens)), rtol=1e-6, atol=1e-6
        )


# ---------------------------------------------------------------------------------------
# Analysis hooks


def test_intermediates_are_captured_with_shapes_and_causal_attention(rng, small_model):
    tokens = jnp.asarray(rng.integers(0, VOCAB, size=(3, 6)))
    # flax ≥ 0.12: ``nnx.capture`` replaces ``model(x); nnx.pop(model, nnx.Intermediate)``.
    # Under jit, capture on a module merged inside the traced function.
    graphdef, state = nnx.split(small_model)

    @jax.jit
    def forward_with_intermediates(state, tokens):
        return nnx.capture(nnx.merge(graphdef, state), nnx.Intermediate)(tokens)

    logits, inter = forward_with_intermediates(state, tokens)
    inter = nnx.to_pure_dict(inter)
    np.testing.assert_allclose(logits, jit_apply(small_model, tokens), rtol=1e-6, atol=1e-6)
    causal = np.tril(np.ones((6, 6), bool))
    for i in range(2):
        blk = {name: value[0] for name, value in inter["blocks"][i].items()}  # one call each
        assert blk["attention"].shape == (3, 4, 6, 6)
        for name in ("block_input", "attention_output", "block_output"):
            assert blk[name].shape == (3, 6, 32), name
        assert blk["mlp_hidden"].shape == (3, 6, 128)
        attn = np.asarray(blk["attention"])
        np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-6)
        assert np.all(attn[..., ~causal] == 0), "attention must be causal"
        assert np.all(attn[..., causal] > 0)
    np.testing.assert_array_equal(
        inter["blocks"][0]["block_output"][0], inter["blocks"][1]["block_input"][0]
    )
    final = np.asarray(inter["final_hidden"][0])
    assert final.shape == (3, 6, 32)
    np.testing.assert_allclose(
        final @ np.asarray(small_model.head.kernel[...]), logits, rtol=1e-5, atol=1e-5
    )
    # A plain call records nothing, so training steps carry no analysis state.
    jax.eval_shape(small_model, tokens)
    assert not jax.tree.leaves(nnx.state(small_model, nnx.Intermediate))


def test_intermediates_under_last_only_have_one_query_row(small_model):
    graphdef, state = nnx.split(small_model)

    def forward_with_intermediates(state, tokens):
        model = nnx.merge(graphdef, state)
        return nnx.capture(model, nnx.Intermediate)(tokens, last_only=True)

    _, inter = jax.eval_shape(forward_with_intermediates, state, jnp.zeros((2, 6), jnp.int32))
    assert inter["blocks"][0]["attention"][0].shape == (2, 4, 6, 6)
    assert inter["blocks"][1]["attention"][0].shape == (2, 4, 1, 6)
    assert inter["blocks"][1]["mlp_hidden"][0].shape == (2, 1, 128)
    assert inter["final_hidden"][0].shape == (2, 1, 32)


# ---------------------------------------------------------------------------------------
# Errors


def test_dropout_masks_the_four_torch_sites_and_is_off_without_a_key(rng):
    """With a key, the output equals the numpy reference fed the masks drawn from the
    documented stream (block i: ``split(fold_in(key, i), 4)``); without one, or at rate
    0, dropout is the identity."""
    rate, B, T, D, H, F = 0.3, 3, 5, 32, 4, 128
    model = Decoder(VOCAB, rngs=nnx.Rngs(2), dropout=rate, **SMALL)
    plain = Decoder(VOCAB, rngs=nnx.Rngs(2), **SMALL)
    tokens = rng.integers(0, VOCAB, size=(B, T))
    key = jax.random.key(7)
    keep = []
    for i in range(SMALL["depth"]):
        k = jax.random.split(jax.random.fold_in(key, i), 4)
        shapes = [(B, H, T, T), (B * T, D), (B * T, F), (B * T, D)]
        pairs = zip(k, shapes, strict=True)
        masks = [np.asarray(jax.random.bernoulli(kj, 1 - rate, sh)) for kj, sh in pairs]
        keep.append([masks[0], *(m.reshape(B, T, -1) for m in masks[1:])])
    got = model(jnp.asarray(tokens), dropout_key=key)
    kw = dict(heads=H, positions="learned", act="gelu")
    want = np_decoder(params_of(model), tokens, keep=keep, rate=rate, **kw)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)
    assert not np.allclose(np.asarray(got), np_decoder(params_of(model), tokens, **kw), atol=1e-2)
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(tokens))), plain(tokens))
    last = model(jnp.asarray(tokens), last_only=True, dropout_key=key)
    assert last.shape == (B, VOCAB) and np.all(np.isfinite(np.asarray(last)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(dropout=1.0), r"dropout = 1.0 must be in \[0, 1\)"),
        (dict(width=30, heads=4), "divisible"),
        (dict(activation="tanh"), "gelu, relu, silu"),
        (dict(positions="alibi"), "learned, rope"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Decoder(13, seq_len=4, rngs=nnx.Rngs(0), **kwargs)


# ---------------------------------------------------------------------------------------
# RoPE


def test_rope_frequencies_match_formula():
    np.testing.assert_allclose(
        np.asarray(rope_frequencies(16, base=500.0)),
        500.0 ** (-2.0 * np.arange(8) / 16),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)


ROPE_SHAPE = (2, 40, 3, 32)  # one shape for all RoPE tests (eager compiles are per shape)


@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_apply_rope_matches_numpy_reference(rng, base):
    x = rng.standard_normal(ROPE_SHAPE)
    positions = rng.permutation(ROPE_SHAPE[1])
    out = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(positions), base=base)
    assert out.dtype == jnp.float32
    # float32 angles m·θ for m < 40 carry ~3e-6 rad of rounding error.
    np.testing.assert_allclose(np.asarray(out), np_rope(x, positions, base), rtol=0, atol=3e-5)


def test_apply_rope_preserves_norms(rng):
    x = jnp.asarray(rng.standard_normal(ROPE_SHAPE), jnp.float32)
    out = apply_rope(x, jnp.arange(ROPE_SHAPE[1]))
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(out), axis=-1), np.linalg.norm(np.asarray(x), axis=-1), rtol=1e-5
    )
    np.testing.assert_array_equal(out[:, 0], x[:, 0])  # position 0 is not rotated
    assert not np.allclose(np.asarray(out[:, 1:]), np.asarray(x[:, 1:]))


def test_rope_inner_product_depends_only_on_relative_position(rng):
    """With q and k fixed, ⟨rope(q, m), rope(k, n)⟩ is constant along each diagonal m − n."""
    q_D, k_D = rng.standard_normal((2, ROPE_SHAPE[-1]))
    x = np.zeros(ROPE_SHAPE, np.float32)
    x[0, :, 0], x[0, :, 1] = q_D, k_D  # the same q (head 0) and k (head 1) at every position
    out = np.asarray(apply_rope(jnp.asarray(x), jnp.arange(ROPE_SHAPE[1])), np.float64)
    dots_MN = out[0, :, 0] @ out[0, :, 1].T
    for offset in (-7, 0, 3, 20):
        diagonal = np.diagonal(dots_MN, offset=offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=2e-4)
    assert not np.isclose(dots_MN[0, 0], dots_MN[0, 3])  # and it does depend on m − n


# ---------------------------------------------------------------------------------------
# Grid positions (2-D RoPE, segments) and context-scaled 1-D RoPE


def _grid_coords(rng, B, T):
    rows = rng.integers(0, 31, size=(B, T))
    cols = rng.integers(0, 31, size=(B, T))
    segments = rng.integers(0, 5, size=(B, T))
    return rows, cols, segments


def test_rope2d_decoder_with_segments_matches_numpy_reference(rng):
    model = Decoder(VOCAB, positions="rope2d", num_segments=5, rngs=nnx.Rngs(2), **SMALL)
    tokens = rng.integers(0, VOCAB, size=(3, 6))
    rows, cols, segments = _grid_coords(rng, 3, 6)
    logits = model(
        jnp.asarray(tokens),
        rows_BT=jnp.asarray(rows),
        cols_BT=jnp.asarray(cols),
        segments_BT=jnp.asarray(segments),
    )
    expected = np_decoder(
        params_of(model),
        tokens,
        heads=4,
        positions="rope2d",
        act="gelu",
        coords=(rows, cols, segments),
    )
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)
    # the coordinates matter: another column layout gives other logits
    moved = model(
        jnp.asarray(tokens),
        rows_BT=jnp.asarray(rows),
        cols_BT=jnp.asarray(cols[:, ::-1]),
        segments_BT=jnp.asarray(segments),
    )
    assert not np.allclose(np.asarray(moved), expected, atol=1e-3)


@pytest.mark.parametrize(
    "scaling",
    [
        RopeScaling("yarn", 4.0, 4),
        RopeScaling("linear", 2.0, 4),
        RopeScaling("dynamic", 2.0, 4),
    ],
    ids=lambda s: s.kind,
)
def test_scaled_rope_decoder_matches_numpy_reference(rng, scaling):
    model = Decoder(VOCAB, positions="rope", rope_scaling=scaling, rngs=nnx.Rngs(3), **SMALL)
    tokens = rng.integers(0, VOCAB, size=(2, 6))
    theta = np.asarray(rope_frequencies(8, scaling=scaling, seq_len=6), np.float64)
    temperature = 0.1 * math.log(scaling.factor) + 1 if scaling.kind == "yarn" else 1.0
    expected = np_decoder(
        params_of(model),
        tokens,
        heads=4,
        positions="rope",
        act="gelu",
        theta=theta,
        temperature=temperature,
    )
    np.testing.assert_allclose(
        np.asarray(model(jnp.asarray(tokens))), expected, rtol=1e-5, atol=1e-5
    )
    # a call may replace the scaling: None is plain RoPE
    plain = np_decoder(params_of(model), tokens, heads=4, positions="rope", act="gelu")
    np.testing.assert_allclose(
        np.asarray(model(jnp.asarray(tokens), rope_scaling=None)), plain, rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(plain, expected, atol=1e-4)


def test_scaled_rope_decoder_compiles_once_per_length(rng):
    model = Decoder(
        VOCAB,
        positions="rope",
        rope_scaling=RopeScaling("dynamic", 2.0, 4),
        rngs=nnx.Rngs(3),
        **{**SMALL, "seq_len": 16},
    )
    graphdef, state = nnx.split(model)
    traced = TraceCounter(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
    forward = jax.jit(traced)
    for T in (4, 8, 16, 8, 4, 16):
        forward(state, jnp.asarray(rng.integers(0, VOCAB, size=(2, T))))
    assert traced.count == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(positions="rope2d", width=24, heads=4), "divisible by 4"),
        (dict(positions="rope2d", rope_scaling=RopeScaling("ntk", 2.0, 8)), "1-D RoPE"),
        (dict(positions="learned", rope_scaling=RopeScaling("ntk", 2.0, 8)), "1-D RoPE"),
    ],
)
def test_bad_grid_or_scaling_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Decoder(VOCAB, seq_len=6, rngs=nnx.Rngs(0), **kwargs)
