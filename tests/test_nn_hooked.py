"""Nanda et al.'s TransformerLens-style transformer against a float64 numpy forward pass,
its model kind, and every kind's ``intermediates_fn``."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from grokjax.analysis.probes import leaf_names
from grokjax.errors import ConfigError
from grokjax.nn import HookedTransformer
from grokjax.nn.kinds import MODEL_KINDS, DecoderModel, HookedModel, MLPModel

NP_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def np_layer_norm(x: np.ndarray, p: dict | None) -> np.ndarray:
    if p is None:
        return x
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["w"] + p["b"]


def np_hooked(params: dict, tokens_BT: np.ndarray, *, act: str = "relu") -> np.ndarray:
    """TransformerLens's forward written out in float64 numpy, head by head."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    T = tokens_BT.shape[1]
    resid = p["embed"]["W_E"][tokens_BT] + p["pos_embed"]["W_pos"][:T]
    causal = np.tril(np.ones((T, T), bool))
    for i in range(len(p["blocks"])):
        blk = p["blocks"][i]
        attn, mlp = blk["attn"], blk["mlp"]
        h = np_layer_norm(resid, blk.get("ln1"))
        d_head = attn["W_Q"].shape[-1]
        attn_out = np.zeros_like(resid) + attn.get("b_O", 0.0)
        for j in range(attn["W_Q"].shape[0]):
            q, k, v = (
                h @ attn[f"W_{n}"][j] + (attn[f"b_{n}"][j] if "b_Q" in attn else 0.0) for n in "QKV"
            )
            s = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(d_head), -np.inf)
            a = np.exp(s - s.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            attn_out = attn_out + (a @ v) @ attn["W_O"][j]
        resid = resid + attn_out
        m = np_layer_norm(resid, blk.get("ln2")) @ mlp["W_in"] + mlp.get("b_in", 0.0)
        resid = resid + NP_ACTIVATIONS[act](m) @ mlp["W_out"] + mlp.get("b_out", 0.0)
    final = np_layer_norm(resid, p.get("ln_final"))
    return final @ p["unembed"]["W_U"] + p["unembed"].get("b_U", 0.0)


def params_of(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def named_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """Parameters by :func:`leaf_names` path."""
    params = nnx.state(model, nnx.Param)
    leaves = map(np.asarray, jax.tree.leaves(params))
    return dict(zip(leaf_names(params), leaves, strict=True))


@partial(jax.jit, static_argnames=("graphdef", "last_only"))
def _apply(graphdef, state, tokens, last_only):
    return nnx.merge(graphdef, state)(tokens, last_only=last_only)


def jit_apply(model: nnx.Module, tokens, last_only: bool = False):
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, jnp.asarray(tokens), last_only)


def perturbed(model: nnx.Module, seed: int = 7, scale: float = 0.2) -> nnx.Module:
    """The model with its constant-initialised parameters (zero biases, LayerNorm's ones
    and zeros) moved off their init by N(0, scale²) noise."""
    graphdef, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        x + scale * jax.random.normal(k, x.shape, x.dtype) if np.ptp(np.asarray(x)) == 0 else x
        for x, k in zip(leaves, keys, strict=True)
    ]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


SMALL = dict(seq_len=5, depth=2, width=32, heads=4, mlp_width=48)
VOCAB, OUT = 11, 7


@pytest.mark.parametrize(
    "biases, layer_norm, activation",
    [(False, False, "relu"), (True, True, "relu"), (True, False, "gelu"), (False, True, "silu")],
)
def test_forward_matches_numpy_reference(rng, biases, layer_norm, activation):
    model = HookedTransformer(
        VOCAB,
        OUT,
        biases=biases,
        layer_norm=layer_norm,
        activation=activation,
        rngs=nnx.Rngs(3),
        **SMALL,
    )
    model = perturbed(model)  # nonzero biases, LayerNorm scales and shifts off 1, 0
    tokens = rng.integers(0, VOCAB, size=(3, 5))
    logits = jit_apply(model, tokens)
    assert logits.shape == (3, 5, OUT)
    expected = np_hooked(params_of(model), tokens, act=activation)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)
    # causal: a prefix gives the prefix's logits (first rows of W_pos); longer is refused
    prefix = np.asarray(jit_apply(model, tokens[:, :3]))
    np.testing.assert_allclose(prefix, expected[:, :3], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="seq_len"):
        jax.eval_shape(model, jnp.zeros((2, 6), jnp.int32))


def test_float64_forward_matches_numpy_to_rounding(rng):
    with jax.enable_x64(True):
        model = HookedTransformer(
            VOCAB,
            OUT,
            biases=True,
            layer_norm=True,
            dtype=jnp.float64,
            param_dtype=jnp.float64,
            rngs=nnx.Rngs(4),
            **SMALL,
        )
        model = perturbed(model)
        tokens = rng.integers(0, VOCAB, size=(3, 5))
        logits = jit_apply(model, tokens)
        assert logits.dtype == jnp.float64
        expected = np_hooked(params_of(model), tokens)
        np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_last_only_equals_last_position_of_full_call(rng, layer_norm):
    model = HookedTransformer(VOCAB, OUT, layer_norm=layer_norm, rngs=nnx.Rngs(1), **SMALL)
    tokens = rng.integers(0, VOCAB, size=(4, 5))
    full = jit_apply(model, tokens)
    last = jit_apply(model, tokens, last_only=True)
    assert last.shape == (4, OUT)
    np.testing.assert_allclose(np.asarray(last), np.asarray(full[:, -1]), rtol=1e-6, atol=1e-6)


def test_nanda_config_parameters_and_init():
    p, D = 113, 128
    model = HookedTransformer(p + 1, p, seq_len=3, rngs=nnx.Rngs(0))
    named = named_params(model)
    names = leaf_names(nnx.split(model)[1])  # the whole state, as analysis code reads it
    assert {n: w.shape for n, w in named.items()} == {
        "embed/W_E": (p + 1, D),
        "pos_embed/W_pos": (3, D),
        "blocks/0/attn/W_Q": (4, D, 32),
        "blocks/0/attn/W_K": (4, D, 32),
        "blocks/0/attn/W_V": (4, D, 32),
        "blocks/0/attn/W_O": (4, 32, D),
        "blocks/0/mlp/W_in": (D, 512),
        "blocks/0/mlp/W_out": (512, D),
        "unembed/W_U": (D, p),
    }
    assert not any("/b" in n or "ln" in n for n in names)  # no biases, no LayerNorm
    assert sum(w.size for w in named.values()) == 226_048
    assert HookedTransformer.EMBEDDING in names and HookedTransformer.UNEMBEDDING in names
    assert HookedTransformer.POS_EMBEDDING in names
    std = 0.8 / math.sqrt(D)
    for name, w in named.items():
        tol = 0.03 if w.size > 10_000 else 0.1  # W_pos: 384 draws
        assert abs(w.std() / std - 1) < tol and abs(w.mean()) < 0.1 * std, name

    # seed 003's model; biases and LayerNorm add their (zero, one) leaves
    small = HookedTransformer(
        p + 1,
        p,
        seq_len=3,
        width=64,
        mlp_width=256,
        biases=True,
        layer_norm=True,
        rngs=nnx.Rngs(0),
    )
    sp = named_params(small)
    assert sp["blocks/0/attn/W_Q"].shape == (4, 64, 16)
    assert sp["blocks/0/attn/b_Q"].shape == (4, 16) and sp["unembed/b_U"].shape == (p,)
    for n in ("attn/b_Q", "attn/b_K", "attn/b_V", "attn/b_O", "mlp/b_in", "mlp/b_out"):
        assert not np.any(sp[f"blocks/0/{n}"]), n
    assert not np.any(sp["unembed/b_U"]) and np.all(sp["ln_final/w"] == 1.0)
    assert abs(sp["blocks/0/mlp/W_in"].std() - 0.1) < 0.003  # 0.8/√64
    custom = HookedTransformer(p + 1, p, seq_len=3, init_std=0.02, rngs=nnx.Rngs(0))
    assert abs(float(custom.blocks[0].mlp.W_in[...].std()) - 0.02) < 0.0006


def test_sown_sites_have_the_documented_shapes():
    model = HookedTransformer(VOCAB, OUT, rngs=nnx.Rngs(2), **SMALL)
    tokens = jnp.zeros((3, 5), jnp.int32)
    _, inter = nnx.capture(model, nnx.Intermediate)(tokens)
    assert inter["embedding"][0].shape == (3, 5, 32)
    assert inter["final_hidden"][0].shape == (3, 5, 32)
    for i in range(2):
        blk = inter["blocks"][i]
        assert blk["attention"][0].shape == (3, 4, 5, 5)
        assert blk["attention_output"][0].shape == (3, 5, 32)
        assert blk["mlp_hidden"][0].shape == (3, 5, 48)
        assert blk["block_output"][0].shape == (3, 5, 32)
    np.testing.assert_allclose(np.asarray(inter["blocks"][0]["attention"][0]).sum(-1), 1.0, 1e-6)
    _, last = nnx.capture(model, nnx.Intermediate)(tokens, last_only=True)
    assert last["blocks"][1]["attention"][0].shape == (3, 4, 1, 5)
    assert last["blocks"][0]["attention"][0].shape == (3, 4, 5, 5)
    assert last["final_hidden"][0].shape == (3, 1, 32)


# ---------------------------------------------------------------------------------------
# Model kinds


def modular_task(encoding: str = "tokens_no_op"):
    from grokjax.data.kinds import ModularData

    task, _ = ModularData(op="x+y", p=7, encoding=encoding).build(16, "epoch", "float32", [0])
    return task


def test_hooked_kind_validates_builds_and_is_registered():
    assert MODEL_KINDS["hooked"] is HookedModel
    HookedModel().validate()
    for bad, key in [
        (dict(width=30), "model.width"),
        (dict(heads=0), "model.heads"),
        (dict(mlp_width=0), "model.mlp_width"),
        (dict(init_std=0.0), "model.init_std"),
        (dict(activation="tanh"), "model.activation"),
    ]:
        with pytest.raises(ConfigError, match=key):
            HookedModel(**bad).validate()
    task = modular_task()
    model = HookedModel(width=16, heads=2, mlp_width=32).build(task, 0, "float32")
    assert isinstance(model, HookedTransformer)
    assert model.embed.W_E.shape == (8, 16) and model.unembed.W_U.shape == (16, 7)
    graphdef, params = nnx.split(model)
    x = task.inputs_N[:5]
    logits = HookedModel().logits_fn(graphdef)(params, x)
    assert logits.shape == (5, 7)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model(x)[:, -1]), 1e-5, 1e-6)


def test_an_experiment_with_a_hooked_model_loads():
    from grokjax.train import apply_overrides, resolve

    config = apply_overrides(resolve("grokfast_quick"), ["model.kind=hooked", "model.biases=true"])
    assert isinstance(config.model, HookedModel) and config.model.biases


KIND_CASES = {
    "decoder": (DecoderModel(depth=2, width=16, heads=2), "tokens"),
    "hooked": (
        HookedModel(depth=2, width=16, heads=2, mlp_width=24, layer_norm=True),
        "tokens_no_op",
    ),
}


@pytest.mark.parametrize("kind", ["decoder", "hooked"])
def test_transformer_intermediates_fn(kind):
    spec, encoding = KIND_CASES[kind]
    task = modular_task(encoding)
    model = spec.build(task, 0, "float32")
    graphdef, params = nnx.split(model)
    x = task.inputs_N[:6]
    T = x.shape[1]
    logits, sites = jax.jit(spec.intermediates_fn(graphdef))(params, x)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    F = 64 if kind == "decoder" else 24
    expected = {"embedding": (6, T, 16), "final": (6, T, 16)}
    for i in range(2):
        expected |= {
            f"block{i}/attention": (6, 2, T, T),
            f"block{i}/attention_output": (6, T, 16),
            f"block{i}/mlp_hidden": (6, T, F),
            f"block{i}/residual": (6, T, 16),
        }
    assert {k: v.shape for k, v in sites.items()} == expected
    # the last site feeds the head: the logits are its linear image
    if kind == "hooked":
        head = np.asarray(sites["final"]) @ np.asarray(model.unembed.W_U[...])
        np.testing.assert_allclose(head, np.asarray(logits), rtol=1e-5, atol=1e-5)
        W_E, W_pos = np.asarray(model.embed.W_E[...]), np.asarray(model.pos_embed.W_pos[...])
        np.testing.assert_allclose(
            np.asarray(sites["embedding"]), W_E[np.asarray(x)] + W_pos[:T], rtol=1e-6
        )
    # traceable under vmap and lax.map, as probes call it
    fn = spec.intermediates_fn(graphdef)
    mapped = jax.lax.map(lambda xi: fn(params, xi[None])[1]["block1/residual"][0], x)
    np.testing.assert_allclose(
        np.asarray(mapped), np.asarray(sites["block1/residual"]), rtol=1e-5, atol=1e-5
    )
    vmapped = jax.vmap(fn, in_axes=(None, 0))(params, x[:, None])[0]
    np.testing.assert_allclose(np.asarray(vmapped[:, 0]), np.asarray(logits), rtol=1e-5, atol=1e-5)


def test_mlp_intermediates_fn():
    task = modular_task("onehot")
    spec = MLPModel(hidden=(12, 10))
    model = spec.build(task, 0, "float32")
    graphdef, params = nnx.split(model)
    x = task.encode(task.inputs_N[:6])
    logits, sites = jax.jit(spec.intermediates_fn(graphdef))(params, x)
    np.testing.assert_array_equal(
        np.asarray(logits), np.asarray(spec.logits_fn(graphdef)(params, x))
    )
    assert logits.shape == (6, 7)
    assert {k: v.shape for k, v in sites.items()} == {"hidden0": (6, 12), "hidden1": (6, 10)}
    _, features = spec.features_fn(graphdef)(params, x)
    np.testing.assert_array_equal(np.asarray(sites["hidden1"]), np.asarray(features))
