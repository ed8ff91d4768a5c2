"""SWELU and swish_k against numpy float64 references: values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import grokjax as gj
from grokjax.nn import SWELU, ActivationShape, SwishK, swelu, swish_k


def np_swelu(z, k, lam=1.0):
    return lam * np.sign(z) * (1 - np.exp(-(np.abs(z) ** k)))


def np_swelu_grads(z, k, lam=1.0):
    """Analytic ∂/∂z, ∂/∂k, ∂/∂λ in float64 (z ≠ 0)."""
    a = np.abs(z)
    decay = np.exp(-(a**k))
    dz = lam * k * a ** (k - 1) * decay
    dk = lam * np.sign(z) * decay * a**k * np.log(a)
    dlam = np.sign(z) * (1 - decay)
    return dz, dk, dlam


ZS = np.array([-7.5, -2.0, -0.7, -1e-3, 1e-4, 0.3, 1.0, 2.5, 9.0])


@pytest.mark.parametrize("k", [0.4, 1.0, 1.8])
def test_swelu_values_and_gradients_match_numpy(k):
    """Values to float32 rounding; ∂z, ∂k, ∂λ per element against the analytic float64 ones."""
    lam = 1.3
    got = np.asarray(swelu(jnp.asarray(ZS, jnp.float32), k, lam))
    np.testing.assert_allclose(got, np_swelu(ZS, k, lam), rtol=2e-6, atol=1e-7)
    grad = jax.vmap(jax.grad(swelu, argnums=(0, 1, 2)), in_axes=(0, None, None))
    dz, dk, dlam = (np.asarray(g) for g in grad(jnp.asarray(ZS, jnp.float32), k, lam))
    ref = np_swelu_grads(ZS, k, lam)
    for name, g, r in zip(("dz", "dk", "dlam"), (dz, dk, dlam), ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=1e-6, err_msg=name)


def test_swelu_gradients_against_finite_differences_in_float64():
    """Central differences in float64 on random z (|z| > 0.05), k and λ."""
    rng = np.random.default_rng(0)
    z = rng.uniform(0.05, 3.0, 20) * rng.choice([-1, 1], 20)
    with jax.enable_x64(True):
        for k in (0.5, 1.0, 1.7):
            f = lambda z, k, lam: jnp.sum(swelu(z, k, lam) * jnp.arange(1.0, 21.0))  # noqa: E731
            args = (jnp.asarray(z), jnp.float64(k), jnp.float64(0.9))
            grads = jax.grad(f, argnums=(0, 1, 2))(*args)
            for i, g in enumerate(grads):
                h = 1e-6
                if i == 0:
                    fd = [
                        (f(args[0].at[j].add(h), *args[1:]) - f(args[0].at[j].add(-h), *args[1:]))
                        / (2 * h)
                        for j in range(20)
                    ]
                else:
                    up = list(args)
                    down = list(args)
                    up[i] = up[i] + h
                    down[i] = down[i] - h
                    fd = (f(*up) - f(*down)) / (2 * h)
                np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k, slope", [(0.5, None), (1.0, 1.0), (2.0, 0.0)])
def test_swelu_at_zero_is_nan_free(k, slope):
    """At z = 0: value 0, ∂k = 0, ∂z finite (λ for k = 1, 0 for k > 1, large for k < 1)."""
    value, (dz, dk) = jax.value_and_grad(swelu, argnums=(0, 1))(0.0, k)
    assert float(value) == 0.0 and float(dk) == 0.0
    assert np.isfinite(float(dz))
    if slope is None:
        assert float(dz) > 1e6  # the true slope is infinite for k < 1
    else:
        assert abs(float(dz) - slope) < 1e-20


def test_swelu_is_odd_bounded_and_keeps_dtype():
    z = jnp.linspace(-50, 50, 101, dtype=jnp.bfloat16)
    out = swelu(z, 1.3, 2.0)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out), -np.asarray(swelu(-z, 1.3, 2.0)))
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32)))) <= 2.0


def test_swish_k_is_silu_at_one_and_matches_numpy():
    z = np.linspace(-6, 6, 25)
    np.testing.assert_array_equal(
        np.asarray(swish_k(jnp.asarray(z, jnp.float32), 1.0)),
        np.asarray(jax.nn.silu(jnp.asarray(z, jnp.float32))),
    )
    np.testing.assert_allclose(
        np.asarray(swish_k(jnp.asarray(z, jnp.float32), 2.5)),
        z / (1 + np.exp(-2.5 * z)),
        rtol=1e-6,
        atol=1e-7,
    )


def test_modules_learn_a_positive_k_that_weight_decay_can_skip():
    """k = exp(log_k) stays positive; ActivationShape variables can be masked out of decay."""
    act = SWELU(k=0.7, learn_lam=True)
    np.testing.assert_allclose(float(act.k), 0.7, rtol=1e-6)
    graphdef, shapes, rest = nnx.split(act, ActivationShape, ...)
    assert len(jax.tree.leaves(shapes)) == 2 and not jax.tree.leaves(rest)  # log_k, lam

    def loss(shapes):
        model = nnx.merge(graphdef, shapes, rest)
        return jnp.sum((model(jnp.linspace(-2, 2, 9)) - 0.5) ** 2)

    grads = jax.grad(loss)(shapes)
    assert all(np.isfinite(np.asarray(g)) for g in jax.tree.leaves(grads))
    tx = optax.sgd(10.0)  # a large step: k must stay positive anyway
    new = optax.apply_updates(shapes, tx.update(grads, tx.init(shapes))[0])
    assert float(nnx.merge(graphdef, new, rest).k) > 0
    with pytest.raises(ValueError, match="k > 0"):
        SwishK(k=0.0)
    assert gj.nn.SWELU is SWELU
