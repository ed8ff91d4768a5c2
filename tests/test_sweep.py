"""A hyperparameter sweep is a vmap: inject_hyperparams members == separate runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TraceCounter

import grokjax as gj

MEMBERS, STEPS, DIN, DHID, DOUT, BATCH = 4, 25, 6, 16, 3, 32


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (DIN, DHID)) / np.sqrt(DIN),
        "w2": jax.random.normal(k2, (DHID, DOUT)) / np.sqrt(DHID),
        "b": jnp.zeros(DOUT),
    }


def loss_fn(params, x, y):
    logits = jnp.tanh(x @ params["w1"]) @ params["w2"] + params["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_train(tx):
    """K steps of minibatch training in one lax.scan; batches drawn from the key."""

    def train(params, opt_state, key):
        def step(carry, key):
            params, opt_state = carry
            kx, ky = jax.random.split(key)
            x = jax.random.normal(kx, (BATCH, DIN))
            y = jax.random.randint(ky, (BATCH,), 0, DOUT)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), jax.random.split(key, STEPS)
        )
        return params, losses

    return train


SWEEPS = {
    "grokfast_ema+adamw": (
        optax.inject_hyperparams(
            lambda alpha, lamb, learning_rate: optax.chain(
                gj.grokfast_ema(alpha, lamb), optax.adamw(learning_rate, weight_decay=0.01)
            )
        ),
        dict(
            alpha=[0.5, 0.8, 0.9, 0.98],
            lamb=[0.5, 1.0, 2.0, 5.0],
            learning_rate=[1e-3, 3e-3, 1e-2, 3e-2],
        ),
    ),
    "grokfast_ma+adam": (
        optax.inject_hyperparams(
            lambda lamb, learning_rate: optax.chain(
                gj.grokfast_ma(5, lamb), optax.adam(learning_rate)
            )
        ),
        dict(lamb=[0.0, 1.0, 2.0, 5.0], learning_rate=[1e-3, 3e-3, 1e-2, 3e-2]),
    ),
    "ortho_adamw": (
        optax.inject_hyperparams(gj.ortho_adamw),
        dict(learning_rate=[1e-3, 3e-3, 1e-2, 3e-2], b2=[0.9, 0.95, 0.99, 0.999]),
    ),
    "ortho_sgd": (
        optax.inject_hyperparams(gj.ortho_sgd),
        dict(learning_rate=[0.01, 0.03, 0.1, 0.3], momentum=[0.0, 0.5, 0.8, 0.9]),
    ),
}


@pytest.fixture
def x64():
    # float64 makes "equal" sharp: in float32, batched and unbatched matmuls round
    # differently and 25 training steps amplify that well past a tight tolerance.
    with jax.enable_x64(True):
        yield


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", SWEEPS)
def test_vmapped_sweep_equals_separate_runs_and_compiles_once(name):
    factory, grid = SWEEPS[name]
    hps = {k: jnp.asarray(v, jnp.float64) for k, v in grid.items()}
    keys = jax.random.split(jax.random.key(0), MEMBERS)
    params = jax.vmap(init_params)(keys)
    states = jax.vmap(lambda p, hp: factory(**hp).init(p))(params, hps)
    # The update reads hyperparameters from the state; the values here are placeholders.
    train = make_train(factory(**{k: v[0] for k, v in grid.items()}))

    traced = TraceCounter(jax.vmap(train))
    sweep = jax.jit(traced)
    final_M, losses_MK = sweep(params, states, keys)

    single = jax.jit(train)  # one member at a time, its hyperparameters in its own state
    for m in range(MEMBERS):
        one = factory(**{k: v[m] for k, v in grid.items()})
        p_m = jax.tree.map(lambda x, m=m: x[m], params)
        final, losses = single(p_m, one.init(p_m), keys[m])
        assert losses.dtype == np.float64
        np.testing.assert_allclose(losses_MK[m], losses, rtol=1e-10, atol=1e-12)
        jax.tree.map(
            lambda a, b, m=m: np.testing.assert_allclose(a[m], b, rtol=1e-10, atol=1e-12),
            final_M,
            final,
        )

    # members really differ: the sweep is not silently running one setting
    assert np.ptp(np.asarray(losses_MK[:, -1])) > 1e-3

    # a second call with other hyperparameter values reuses the compiled program
    states2 = jax.vmap(lambda p, hp: factory(**hp).init(p))(
        params, jax.tree.map(lambda v: v[::-1], hps)
    )
    sweep(params, states2, keys)
    assert traced.count == 1
    assert sweep._cache_size() == 1
