"""⊥Grad, ⊥AdamW and ⊥SGD against float64 numpy references, plus their properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, random_tree, tree_leaves_with_paths

import grokjax as gj

EPS = 1e-30


def orthograd_reference(g, w, eps=EPS):
    """Prieto et al.'s projection, per leaf, in float64. A one-element leaf has no
    direction orthogonal to a nonzero weight (the ε → 0 limit gives g⊥ = 0); with a
    zero weight nothing is projected out and g̃ = g."""
    if np.size(g) == 1:
        return np.where(np.asarray(w) == 0, g, 0.0)
    g_v, w_v = np.ravel(g).astype(np.float64), np.ravel(w).astype(np.float64)
    g_perp = g_v - (w_v @ g_v) / (w_v @ w_v + eps) * w_v
    out = g_perp * (np.linalg.norm(g_v) / (np.linalg.norm(g_perp) + eps))
    return out.reshape(np.shape(g))


def apply(tx, grads, params, dtype=jnp.float32):
    cast = lambda t: jax.tree.map(lambda x: jnp.asarray(x, dtype), t)  # noqa: E731
    params, grads = cast(params), cast(grads)
    out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return out


def test_orthograd_matches_reference(rng):
    for _ in range(5):
        w, g = random_tree(rng, scale=3.0), random_tree(rng)
        got = apply(gj.orthograd(), g, w)
        want = jax.tree.map(orthograd_reference, g, w)
        assert_trees_close(got, want, rtol=2e-5, atol=2e-6)


def test_orthograd_is_orthogonal_and_keeps_the_norm(rng):
    w, g = random_tree(rng, scale=2.0), random_tree(rng)
    got = dict(tree_leaves_with_paths(jax.tree.map(np.asarray, apply(gj.orthograd(), g, w))))
    for path, w_leaf in tree_leaves_with_paths(w):
        g_leaf = dict(tree_leaves_with_paths(g))[path]
        out = got[path].astype(np.float64).ravel()
        if w_leaf.size == 1:  # a scalar leaf has no orthogonal complement: g⊥ = 0
            np.testing.assert_allclose(out, 0.0, atol=1e-6)
            continue
        cos = out @ w_leaf.ravel() / (np.linalg.norm(out) * np.linalg.norm(w_leaf))
        assert abs(cos) < 1e-6, (path, cos)
        np.testing.assert_allclose(np.linalg.norm(out), np.linalg.norm(g_leaf), rtol=1e-6)


def test_orthograd_zero_weights_and_zero_gradients_give_no_nan(rng):
    g = rng.standard_normal((4, 3))
    w = rng.standard_normal((4, 3))
    zeros = np.zeros((4, 3))
    tx = gj.orthograd()
    np.testing.assert_allclose(apply(tx, g, zeros), g, rtol=1e-6)  # nothing to remove
    np.testing.assert_array_equal(apply(tx, zeros, w), zeros)
    np.testing.assert_array_equal(apply(tx, zeros, zeros), zeros)
    for dtype in (jnp.float16, jnp.bfloat16):
        assert np.isfinite(np.asarray(apply(tx, zeros, zeros, dtype), np.float32)).all()


@pytest.mark.parametrize(
    "dtype,rtol", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3), (jnp.float32, 2e-5)]
)
def test_orthograd_keeps_the_dtype(rng, dtype, rtol):
    w, g = random_tree(rng), random_tree(rng)
    got = apply(gj.orthograd(), g, w, dtype)
    assert all(x.dtype == dtype for x in jax.tree.leaves(got))
    # against the reference on the inputs as rounded to `dtype`
    rounded = lambda t: jax.tree.map(lambda x: np.asarray(jnp.asarray(x, dtype), np.float64), t)  # noqa: E731
    want = jax.tree.map(orthograd_reference, rounded(g), rounded(w))
    assert_trees_close(
        jax.tree.map(lambda x: np.asarray(x, np.float64), got), want, rtol=rtol, atol=rtol
    )


def test_orthograd_float64_under_x64(rng):
    with jax.enable_x64(True):
        w, g = random_tree(rng), random_tree(rng)
        got = apply(gj.orthograd(), g, w, jnp.float64)
        assert all(x.dtype == np.float64 for x in jax.tree.leaves(got))
        assert_trees_close(got, jax.tree.map(orthograd_reference, g, w), rtol=1e-12, atol=1e-13)


def test_orthograd_eps_that_underflows_uses_the_smallest_normal():
    # 1e-50 underflows to 0 in float32: with ε = 0 a zero leaf would give 0/0 = NaN.
    zeros = np.zeros(3)
    out = apply(gj.orthograd(eps=1e-50), zeros, zeros)
    np.testing.assert_array_equal(out, zeros)


def test_orthograd_needs_params():
    tx = gj.orthograd()
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(jnp.ones(3), tx.init(jnp.ones(3)))


def test_orthograd_none_leaves_and_masks(rng):
    params = {"a": jnp.asarray(rng.standard_normal(4), jnp.float32), "b": None}
    grads = {"a": jnp.asarray(rng.standard_normal(4), jnp.float32), "b": None}
    out = apply(gj.orthograd(), grads, params)
    assert out["b"] is None

    params = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([1.0, 0.0])}
    grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([3.0, 4.0])}
    masked = optax.masked(gj.orthograd(), {"a": True, "b": False})
    out = apply(masked, grads, params)
    np.testing.assert_allclose(out["a"], [0.0, 5.0], atol=1e-6)
    np.testing.assert_array_equal(out["b"], grads["b"])


# --- ⊥AdamW and ⊥SGD: hyperparameters must reach the optimizer exactly ----------------


def ortho_adamw_reference(grads_seq, w0, lr, b1, b2, eps, wd):
    """⊥ then AdamW (decoupled decay on the current weights), in float64."""
    w, m, v, traj = w0.copy(), 0.0, 0.0, []
    for t, g in enumerate(grads_seq, start=1):
        g = orthograd_reference(g, w)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * w)
        traj.append(w.copy())
    return traj


def ortho_sgd_reference(grads_seq, w0, lr, momentum):
    w, buf, traj = w0.copy(), 0.0, []
    for g in grads_seq:
        buf = momentum * buf + orthograd_reference(g, w)
        w = w - lr * buf
        traj.append(w.copy())
    return traj


def run_optimizer(tx, grads_seq, w0):
    def body(carry, g):
        w, state = carry
        updates, state = tx.update(g, state, w)
        w = optax.apply_updates(w, updates)
        return (w, state), w

    w0 = jnp.asarray(w0, jnp.float32)
    gs = jnp.asarray(np.stack(grads_seq), jnp.float32)
    _, traj = jax.jit(lambda w, gs: jax.lax.scan(body, (w, tx.init(w)), gs))(w0, gs)
    return np.asarray(traj)


@pytest.mark.parametrize(
    "hp",
    [
        dict(learning_rate=0.01, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0),
        # non-defaults everywhere; the paper-era code silently used b2=0.999, eps=1e-8
        dict(learning_rate=0.003, b1=0.8, b2=0.95, eps=1e-3, weight_decay=0.1),
    ],
)
def test_ortho_adamw_matches_reference(rng, hp):
    w0 = rng.standard_normal((6, 5))
    seq = [rng.standard_normal((6, 5)) for _ in range(30)]
    got = run_optimizer(gj.ortho_adamw(**hp), seq, w0)
    want = ortho_adamw_reference(
        seq, w0, hp["learning_rate"], hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    )
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)
    # and b2 really is used: the reference with b2=0.999 is measurably different
    other = ortho_adamw_reference(
        seq, w0, hp["learning_rate"], hp["b1"], 0.999, hp["eps"], hp["weight_decay"]
    )
    assert np.abs(np.stack(other) - got).max() > 1e-3


def test_ortho_sgd_matches_reference(rng):
    w0 = rng.standard_normal((4, 7))
    seq = [rng.standard_normal((4, 7)) for _ in range(30)]
    got = run_optimizer(gj.ortho_sgd(learning_rate=0.05, momentum=0.8), seq, w0)
    np.testing.assert_allclose(
        got, np.stack(ortho_sgd_reference(seq, w0, 0.05, 0.8)), rtol=1e-5, atol=1e-5
    )


def test_ortho_adamw_updates_are_orthogonal_on_the_first_step(rng):
    # Adam's first update is -lr·g̃/(|g̃| + eps) elementwise: not orthogonal in general,
    # but with a one-hot weight the component along w must be exactly zero.
    w = np.zeros(5)
    w[2] = 1.0
    g = rng.standard_normal(5)
    out = apply(gj.ortho_adamw(0.01, eps=1e-25), g, w)
    assert float(out[2]) == 0.0


def test_orthograd_eps_can_be_injected(rng):
    w, g = random_tree(rng), random_tree(rng)
    tx = optax.inject_hyperparams(gj.orthograd)(eps=1e-30)
    got = apply(tx, g, w)
    assert_trees_close(got, jax.tree.map(orthograd_reference, g, w), rtol=2e-5, atol=2e-6)


def test_orthograd_one_element_leaves():
    params = {"s": jnp.array(2.0), "b": jnp.array([0.0]), "v": jnp.array([1.0, 0.0])}
    grads = {"s": jnp.array(-3.0), "b": jnp.array([0.7]), "v": jnp.array([1.0, 2.0])}
    out = apply(gj.orthograd(), grads, params)
    assert float(out["s"]) == 0.0  # nothing orthogonal to a nonzero scalar
    np.testing.assert_array_equal(out["b"], np.float32([0.7]))  # a zero weight projects nothing out
    np.testing.assert_allclose(out["v"], [0.0, np.sqrt(5.0)], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-20, 1e-30, 1e20])
def test_orthograd_and_nlm_cosine_at_extreme_scales(scale):
    """‖g‖² underflows (or overflows) in float32 at these scales; the result must not."""
    w = np.array([1.0, 0.0, 0.0])
    g = scale * np.array([3.0, 4.0, 0.0])
    out = np.asarray(apply(gj.orthograd(), g, w), np.float64)
    np.testing.assert_allclose(out, [0.0, 5.0 * scale, 0.0], rtol=1e-6)
    cos = gj.nlm_cosine(jnp.asarray(w, jnp.float32), jnp.asarray(-g, jnp.float32))
    np.testing.assert_allclose(float(cos), 0.6, rtol=1e-6)
    cos_big_w = gj.nlm_cosine(jnp.asarray(1e20 * w, jnp.float32), jnp.asarray(-g, jnp.float32))
    np.testing.assert_allclose(float(cos_big_w), 0.6, rtol=1e-6)
