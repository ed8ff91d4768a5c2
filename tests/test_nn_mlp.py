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
