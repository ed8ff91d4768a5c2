"""``with_state_dtype``: an optax transformation computed and stored in a wider dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_stability import small  # (a + b) mod 11, AdamW eps 1e-25: runs in seconds

import grokjax as gj
from grokjax.train import ConfigError, run_experiment


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


def test_state_structure_is_the_inner_one_and_params_reach_the_inner_transform_widened():
    """Weight decay reads the params: the inner transform sees them (and the gradients)
    in float64, the state adds no nodes, and integer leaves pass through as optax's."""
    seen = {}

    def record_dtypes():  # a transform that notes what it receives, then does nothing
        def update(updates, state, params=None):
            seen.setdefault("updates", updates["w"].dtype)  # the first call: the wrapper's
            seen.setdefault("params", params["w"].dtype)
            return updates, state

        return optax.GradientTransformation(lambda p: optax.EmptyState(), update)

    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "n": jnp.arange(3)}
    grads = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "n": jnp.ones(3, int)}
    inner = optax.chain(record_dtypes(), optax.add_decayed_weights(0.5), optax.scale(-0.1))
    tx = gj.with_state_dtype(inner, jnp.float64)
    with jax.enable_x64(True):
        state = tx.init(params)
        assert jax.tree.structure(state) == jax.tree.structure(inner.init(params))
        updates, _ = tx.update(grads, state, params)
        plain, _ = inner.update(grads, inner.init(params), params)
    assert seen == {"updates": jnp.float64, "params": jnp.float64}
    w64, g64 = (np.asarray(x, np.float64) for x in (params["w"], grads["w"]))
    np.testing.assert_allclose(updates["w"], -0.1 * (g64 + 0.5 * w64), rtol=1e-6)
    assert updates["w"].dtype == jnp.float32
    # integer leaves: the same update as the plain chain computes (not cast to int)
    assert updates["n"].dtype == plain["n"].dtype
    np.testing.assert_array_equal(updates["n"], plain["n"])


def test_extra_args_reach_an_inner_transform_that_takes_them_and_others_ignore_them():
    def noted(updates, state, params=None, *, value):
        return jax.tree.map(lambda u: u * value, updates), state

    takes_value = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), noted)
    with jax.enable_x64(True):
        w = jnp.ones(2, jnp.float32)
        for inner, expected in [(takes_value, 3.0), (optax.scale(1.0), 1.0)]:
            tx = optax.chain(gj.with_state_dtype(inner, jnp.float64), optax.identity())
            u, _ = tx.update(w, tx.init(w), w, value=3.0)
            np.testing.assert_array_equal(u, expected * np.ones(2))


def test_float64_state_without_x64_and_narrowing_are_clear_errors():
    tx = gj.with_state_dtype(optax.adam(1e-3), jnp.float64)
    with jax.enable_x64(False), pytest.raises(ValueError, match=r"jax\.enable_x64"):
        tx.init(jnp.zeros(2))
    with jax.enable_x64(True):
        state = tx.init(jnp.zeros(2, jnp.float32))
    with jax.enable_x64(False), pytest.raises(ValueError, match=r"jax\.enable_x64"):
        tx.update(jnp.ones(2, jnp.float32), state)  # x64 switched off after init
    with pytest.raises(ValueError, match="float dtype"):
        gj.with_state_dtype(optax.adam(1e-3), jnp.int32)
    with jax.enable_x64(True), pytest.raises(ValueError, match="would narrow parameters"):
        gj.with_state_dtype(optax.adam(1e-3), jnp.float32).init(jnp.zeros(2, jnp.float64))


def _adam_state(state):
    found = []
    jax.tree.map(
        lambda _: None,
        state,
        is_leaf=lambda n: (
            found.append(n) or True if isinstance(n, optax.ScaleByAdamState) else False
        ),
    )
    (adam,) = found
    return adam


def test_config_state_dtype_reaches_the_optimizer_and_silences_the_eps_warning():
    lr, b1, b2, eps = 0.01, 0.9, 0.99, 1e-25
    adamw = f"{{transform='optax.adamw', learning_rate={lr}, b2={b2}, eps={eps}, weight_decay=0.0}}"
    config = small(
        "methods=[{label='adamw', seeds=[0], sweep={'optimizer.0.inner.0.b2'=[0.99]}, "
        f"optimizer=[{{transform='grokjax.with_state_dtype', dtype='float64', inner=[{adamw}]}}]}}]"
    )
    assert config.needs_x64 and config.precision_warnings() == []
    # The trainer's chain (inject_hyperparams of the swept β2 → with_state_dtype → AdamW
    # with decoupled decay 0) against the float64 reference: the second moment to
    # float64 rounding, which needs the swept β2 itself in float64 (a float32 0.99 is
    # off by 1e-8, 1e-6 relative in 1 − β2), and the float32 updates to float32 rounding.
    opt = config.methods[0].build_optimizer()
    tx = opt({"0.inner.0.b2": b2})
    grads = _grad_sequence(np.random.default_rng(2), steps=4, shape=(16,))
    expected = _np_adam(grads, lr, b1, b2, eps)
    nu_expected = np.zeros(16)
    with jax.enable_x64(True):
        w = jnp.zeros(16, jnp.float32)
        state = tx.init(w)
        assert {v.dtype for v in state.hyperparams.values()} == {jnp.dtype("float64")}
        for g, e in zip(grads, expected, strict=True):
            u, state = jax.jit(tx.update)(jnp.asarray(g), state, w)
            nu_expected = b2 * nu_expected + (1 - b2) * np.float64(g) ** 2
            np.testing.assert_allclose(np.asarray(u, np.float64), e, rtol=1e-6)
        nu = _adam_state(state).nu
        assert nu.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(nu), nu_expected, rtol=1e-12)

    result = run_experiment(config, progress=False)
    state = result.final_states[0]
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
    float_state = [x for x in jax.tree.leaves(state.opt_state.inner_state) if x.ndim > 1]
    assert float_state and {x.dtype for x in float_state} == {jnp.dtype("float64")}
    assert state.opt_state.hyperparams["optimizer_0_inner_0_b2"].dtype == jnp.float64
    assert np.isfinite(result.history[0]["val_loss"][-1]).all()

    with pytest.raises(ConfigError, match=r"methods.0.optimizer.0.dtype = 'float16'"):
        small(
            "methods=[{label='a', optimizer=[{transform='grokjax.with_state_dtype', "
            f"dtype='float16', inner=[{adamw}]}}]}}]"
        )
