"""``with_state_dtype``: an optax transformation computed and stored in a wider dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import grokjax as gj
from grokjax.train import apply_overrides, resolve, run_experiment
from grokjax.train.config import OptimizerConfig
from grokjax.train.optimizers import initial_hyperparams, optimizer_factory


def _np_adam(grads, lr, b1, b2, eps):
    """Adam (Kingma & Ba, bias-corrected, eps outside the root) in float64 numpy."""
    m = np.zeros_like(grads[0], np.float64)
    v = np.zeros_like(grads[0], np.float64)
    steps = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        steps.append(-lr * m_hat / (np.sqrt(v_hat) + eps))
    return steps


def _grad_sequence(rng, steps, shape):
    """float32 gradients whose entries span magnitudes 1e-30 … 1 (the StableMax range)."""
    scales = 10.0 ** rng.uniform(-30, 0, size=shape)
    return [(rng.standard_normal(shape) * scales).astype(np.float32) for _ in range(steps)]


def test_float64_adam_state_matches_the_float64_reference_where_float32_state_blows_up():
    rng = np.random.default_rng(0)
    grads = _grad_sequence(rng, steps=6, shape=(64,))
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-25
    expected = _np_adam(grads, lr, b1, b2, eps)
    params = jnp.zeros(64, jnp.float32)

    def run(tx):
        state = tx.init(params)
        update = jax.jit(tx.update)
        out = []
        for g in grads:
            u, state = update(jnp.asarray(g), state, params)
            out.append(u)
        return out, state

    with jax.enable_x64(True):
        got, state = run(gj.with_state_dtype(optax.adam(lr, b1, b2, eps), jnp.float64))
        for u, e in zip(got, expected, strict=True):
            assert u.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(u, np.float64), e, rtol=1e-6, atol=0)
        adam_state = state[0]
        assert adam_state.mu.dtype == adam_state.nu.dtype == jnp.float64
        assert float(jnp.min(adam_state.nu[jnp.abs(adam_state.mu) > 0])) > 0

    # The same gradients with float32 state: the tiny entries get v = 0 and steps of
    # lr·m/eps, orders of magnitude beyond the reference's |step| <= ~lr·3.
    got32, _ = run(optax.adam(lr, b1, b2, eps))
    assert np.max(np.abs(np.asarray(got32[-1]))) > 1e3 * lr
    assert np.max(np.abs(expected[-1])) < 4 * lr


def test_state_structure_is_the_inner_one_and_params_reach_the_inner_transform():
    """Weight decay reads the params: they are cast too, and the state adds no nodes."""
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "n": jnp.arange(3)}
    grads = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "n": jnp.zeros(3, int)}
    inner = optax.chain(optax.add_decayed_weights(0.5), optax.scale(-0.1))
    tx = gj.with_state_dtype(inner, jnp.float64)
    with jax.enable_x64(True):
        state = tx.init(params)
        assert jax.tree.structure(state) == jax.tree.structure(inner.init(params))
        updates, _ = tx.update(grads, state, params)
    w64, g64 = (np.asarray(x, np.float64) for x in (params["w"], grads["w"]))
    np.testing.assert_allclose(updates["w"], -0.1 * (g64 + 0.5 * w64), rtol=1e-6)
    assert updates["w"].dtype == jnp.float32 and updates["n"].dtype == grads["n"].dtype


def test_float64_state_without_x64_is_a_clear_error():
    assert not jax.config.jax_enable_x64
    tx = gj.with_state_dtype(optax.adam(1e-3), jnp.float64)
    with pytest.raises(ValueError, match=r"jax\.enable_x64"):
        tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="float dtype"):
        gj.with_state_dtype(optax.adam(1e-3), jnp.int32)


def test_config_state_dtype_reaches_the_optimizer_and_silences_the_eps_warning():
    config = apply_overrides(
        resolve("orthograd_quick"),
        [
            "data.p=11",
            "data.train_fraction=0.5",
            "model.hidden=[8]",
            "batch_size=1000",
            "eval_every=5",
            "steps=10",
            "methods=[{label='adamw', optimizer={learning_rate=0.01, b2=0.99, eps=1e-25, "
            "decay='decoupled', warmup_steps=0, state_dtype='float64'}, seeds=[0]}]",
        ],
    )
    assert config.needs_x64 and config.precision_warnings() == []
    opt = config.methods[0].optimizer
    tx = optimizer_factory(opt)(**initial_hyperparams(opt))
    with jax.enable_x64(True):
        nu = tx.init(jnp.zeros(3, jnp.float32)).inner_state[0].nu
    assert nu.dtype == jnp.float64

    result = run_experiment(config, progress=False)
    state = result.final_states[0]
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
    float_state = [x for x in jax.tree.leaves(state.opt_state.inner_state) if x.ndim > 1]
    assert float_state and {x.dtype for x in float_state} == {jnp.dtype("float64")}
    assert np.isfinite(result.history[0]["val_loss"][-1]).all()

    with pytest.raises(ValueError, match="state_dtype"):
        OptimizerConfig(state_dtype="float16").validate()
