"""The one-hot MLP of Prieto et al. against a float64 numpy reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from grokjax.nn import MLP

NP_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def np_mlp(layers: list[dict], x: np.ndarray, act: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Forward in float64; returns the output and the hidden activations."""
    h, hidden = np.asarray(x, np.float64), []
    for i, layer in enumerate(layers):
        h = h @ np.asarray(layer["kernel"], np.float64)
        if "bias" in layer:
            h = h + np.asarray(layer["bias"], np.float64)
        if i < len(layers) - 1:
            h = NP_ACTIVATIONS[act](h)
            hidden.append(h)
    return h, hidden


def layers_of(model: MLP) -> list[dict]:
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return [params["layers"][i] for i in range(len(params["layers"]))]


@pytest.mark.parametrize(
    ("activation", "use_bias"), [("relu", False), ("gelu", True), ("silu", True)]
)
def test_mlp_matches_numpy_reference(rng, activation, use_bias):
    model = MLP([10, 16, 12, 5], activation=activation, use_bias=use_bias, rngs=nnx.Rngs(0))
    x = rng.standard_normal((7, 10))
    graphdef, state = nnx.split(model)
    out = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, jnp.asarray(x))
    assert out.shape == (7, 5)
    expected, _ = np_mlp(layers_of(model), x, activation)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_prieto_mlp_init_bounds_and_size():
    p = 113
    model = MLP([2 * p, 200, 200, p], rngs=nnx.Rngs(0))
    layers = layers_of(model)
    assert [set(layer) for layer in layers] == [{"kernel"}] * 3  # no biases
    for layer, fan_in in zip(layers, [2 * p, 200, 200], strict=True):
        w = np.abs(np.asarray(layer["kernel"]))
        bound = 1 / math.sqrt(fan_in)
        assert 0.9 * bound < w.max() <= bound
    n_params = sum(leaf.size for leaf in jax.tree.leaves(layers))
    assert n_params == 2 * p * 200 + 200 * 200 + 200 * p


def test_biases_use_the_same_bound():
    model = MLP([226, 200, 200, 113], use_bias=True, rngs=nnx.Rngs(1))
    for layer, fan_in in zip(layers_of(model), [226, 200, 200], strict=True):
        bound = 1 / math.sqrt(fan_in)
        for leaf in (layer["kernel"], layer["bias"]):
            assert 0.9 * bound < np.abs(np.asarray(leaf)).max() <= bound


def test_hidden_activations_are_sown(rng):
    model = MLP([10, 16, 12, 5], rngs=nnx.Rngs(0))
    x = rng.standard_normal((7, 10))
    out, inter = nnx.capture(model, nnx.Intermediate)(jnp.asarray(x, jnp.float32))
    expected_out, expected_hidden = np_mlp(layers_of(model), x, "relu")
    assert set(inter) == {"hidden_0", "hidden_1"}
    for i, h in enumerate(expected_hidden):
        np.testing.assert_allclose(np.asarray(inter[f"hidden_{i}"][0]), h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), expected_out, rtol=1e-5, atol=1e-5)
    model(jnp.asarray(x, jnp.float32))  # a plain call stores nothing
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="input and an output"):
        MLP([4], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="gelu, relu, silu"):
        MLP([4, 2], activation="swish", rngs=nnx.Rngs(0))


def _onehot_rows(ids: np.ndarray, width: int) -> np.ndarray:
    rows = np.zeros((ids.shape[0], width))
    for k in range(ids.shape[1]):
        rows[np.arange(ids.shape[0]), ids[:, k]] += 1.0
    return rows


@pytest.mark.parametrize(("sizes", "use_bias"), [([12, 16, 12, 5], False), ([12, 5], True)])
def test_integer_inputs_are_the_positions_of_one_hot_ones(rng, sizes, use_bias):
    """Logits and every gradient from ids equal the float64 reference on the one-hot
    rows (a repeated id counts twice, as the sum of one-hot rows does)."""
    model = MLP(sizes, use_bias=use_bias, rngs=nnx.Rngs(3))
    ids = np.stack([rng.integers(0, 6, 9), 6 + rng.integers(0, 6, 9)], axis=1)
    ids[0] = [4, 4]
    x = _onehot_rows(ids, sizes[0])
    layers = layers_of(model)
    expected, _ = np_mlp(layers, x, "relu")
    graphdef, params = nnx.split(model)

    def total(params, inputs):
        ids = jnp.issubdtype(inputs.dtype, jnp.integer)
        return jnp.sum(nnx.merge(graphdef, params)(inputs, one_hot_ids=ids) ** 2)

    out = nnx.merge(graphdef, params)(jnp.asarray(ids), one_hot_ids=True)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model(jnp.asarray(x, jnp.float32))))
    # the first layer's gradient is X^T dH: a scatter-add of dH rows at the ids
    grads = jax.grad(total)(params, jnp.asarray(ids))
    dense_grads = jax.grad(total)(params, jnp.asarray(x, jnp.float32))
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(dense_grads), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    first_1H = np.asarray(nnx.to_pure_dict(grads)["layers"][0]["kernel"])
    unused = ~np.isin(np.arange(sizes[0]), ids)
    assert unused.any() and not np.any(first_1H[unused])  # rows never gathered get no gradient
    if len(sizes) == 2:  # one layer: d Σ y² / dW = 2 Xᵀ y, in float64
        np.testing.assert_allclose(first_1H, 2 * x.T @ expected, rtol=1e-5, atol=1e-5)


def test_ids_out_of_range_give_nan_and_the_flag_is_explicit():
    model = MLP([6, 4, 3], rngs=nnx.Rngs(0))
    out = model(jnp.array([[0, 6], [-1, 2], [0, 2]]), one_hot_ids=True)
    assert np.all(np.isnan(np.asarray(out[:2]))) and np.all(np.isfinite(np.asarray(out[2])))
    # without the flag an integer input is a vector of numbers, as any other input
    bits = jnp.array([[1, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(
        np.asarray(model(bits)), np.asarray(model(bits.astype(jnp.float32)))
    )
    with pytest.raises(TypeError, match="one_hot_ids=True reads integer positions"):
        model(bits.astype(jnp.float32), one_hot_ids=True)


def test_integer_inputs_follow_the_computation_dtype():
    model = MLP([6, 4, 3], dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    ids = jnp.array([[0, 3], [2, 5]])
    out = model(ids, one_hot_ids=True)
    assert out.dtype == jnp.bfloat16
    dense = model(jax.nn.one_hot(ids, 6).sum(1).astype(jnp.bfloat16))
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(dense, np.float32))
