"""StableMax family and numerical-stability diagnostics against float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_tree

import grokjax as gj


def s_ref(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))


def stablemax_ref(x):
    s = s_ref(x)
    return s / s.sum(-1, keepdims=True)


def ce_grad_ref(x, y):
    """d/dx of -log stablemax(x)[y]: (p_j - [j = y]) · s'(x_j)/s(x_j), s'/s = 1/(1 + |x|)."""
    x = np.asarray(x, np.float64)
    p = stablemax_ref(x)
    onehot = np.eye(x.shape[-1])[y]
    return (p - onehot) / (1 + np.abs(x))


def random_logits(rng, shape=(64, 11)):
    # a mix of scales, so both branches of s and large magnitudes are exercised
    return rng.standard_normal(shape) * rng.choice([0.1, 1.0, 10.0, 1e3], size=shape)


def test_stablemax_matches_reference(rng):
    x = random_logits(rng)
    np.testing.assert_allclose(
        gj.stablemax(jnp.asarray(x, jnp.float32)), stablemax_ref(x), rtol=2e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        gj.stablemax(jnp.asarray(x.T, jnp.float32), axis=0),
        stablemax_ref(x).T,
        rtol=2e-6,
        atol=1e-7,
    )


def test_log_stablemax_matches_reference(rng):
    x = random_logits(rng)
    got = gj.log_stablemax(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, np.log(stablemax_ref(x)), rtol=2e-6, atol=2e-6)
    with jax.enable_x64(True):
        got64 = gj.log_stablemax(jnp.asarray(x, jnp.float64))
        assert got64.dtype == np.float64
        np.testing.assert_allclose(got64, np.log(stablemax_ref(x)), rtol=1e-13, atol=1e-13)


def test_stablemax_is_not_shift_invariant():
    x = jnp.array([1.0, 0.0, -1.0])
    assert not np.allclose(gj.stablemax(x), gj.stablemax(x + 5.0))


SPECIAL_POINTS = [0.0, 1.0, -1.0, 1e6, -1e6]


@pytest.mark.parametrize("point", SPECIAL_POINTS)
@pytest.mark.parametrize("label", [0, 1])
def test_stablemax_ce_gradient_is_finite_and_exact_at_special_points(point, label):
    x = np.array([point, 0.5, -2.0, point])
    grad = jax.grad(lambda z: gj.stablemax_cross_entropy_with_integer_labels(z, jnp.array(label)))(
        jnp.asarray(x, jnp.float32)
    )
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(grad, ce_grad_ref(x, label), rtol=1e-5, atol=1e-7)


def test_naive_where_form_has_nan_gradient_at_one():
    """Why the double where matters: the reference code's form breaks at x = 1 exactly."""

    def naive_log_stablemax(x):
        s = jnp.where(x >= 0, x + 1, 1 / (1 - x))
        return jnp.log(s / s.sum())

    x = jnp.array([1.0, 0.0, -0.5], jnp.float32)
    assert np.isnan(np.asarray(jax.grad(lambda z: naive_log_stablemax(z)[1])(x))).any()
    assert np.isfinite(np.asarray(jax.grad(lambda z: gj.log_stablemax(z)[1])(x))).all()


def test_stablemax_ce_matches_reference(rng):
    x = random_logits(rng)
    y = rng.integers(0, x.shape[-1], size=x.shape[0])
    want = -np.log(stablemax_ref(x))[np.arange(len(y)), y]
    got = gj.stablemax_cross_entropy_with_integer_labels(
        jnp.asarray(x, jnp.float32), jnp.asarray(y)
    )
    assert got.shape == (x.shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    # leading batch dims of any rank
    got3 = gj.stablemax_cross_entropy_with_integer_labels(
        jnp.asarray(x.reshape(8, 8, -1), jnp.float32), jnp.asarray(y.reshape(8, 8))
    )
    np.testing.assert_allclose(got3, want.reshape(8, 8), rtol=2e-6, atol=2e-6)


def test_stablemax_ce_float64_path(rng):
    x = random_logits(rng)
    y = rng.integers(0, x.shape[-1], size=x.shape[0])
    want = -np.log(stablemax_ref(x))[np.arange(len(y)), y]
    with jax.enable_x64(True):
        got = gj.stablemax_cross_entropy_with_integer_labels(
            jnp.asarray(x, jnp.float32), jnp.asarray(y), dtype=jnp.float64
        )
        assert got.dtype == np.float64
        # float32 logits, float64 loss: exact up to the logits' rounding to float32
        want32 = -np.log(stablemax_ref(np.float32(x)))[np.arange(len(y)), y]
        np.testing.assert_allclose(got, want32, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_float64_without_x64_is_a_clear_error():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="jax_enable_x64"):
        gj.stablemax_cross_entropy_with_integer_labels(x, jnp.array([0, 1]), dtype=jnp.float64)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        gj.softmax_collapse_fraction(x, dtype=jnp.float64)


def test_softmax_cross_entropy_option_matches_optax(rng):
    import optax

    x = jnp.asarray(random_logits(rng), jnp.float32)
    y = jnp.asarray(rng.integers(0, x.shape[-1], size=x.shape[0]))
    np.testing.assert_array_equal(
        gj.cross_entropy_with_integer_labels(x, y),
        optax.softmax_cross_entropy_with_integer_labels(x, y),
    )
    with pytest.raises(ValueError, match="normalizer"):
        gj.cross_entropy_with_integer_labels(x, y, normalizer="sparsemax")


# --- Softmax Collapse and friends ---------------------------------------------------


def gap_rows(gaps, num_classes=5):
    """One row per gap: the gap on class 0, zeros elsewhere."""
    rows = np.zeros((len(gaps), num_classes))
    rows[:, 0] = gaps
    return rows


@pytest.mark.parametrize(
    "dtype,expected",
    [
        # exp(-10)·4 ≈ 1.8e-4 < half an ulp of 1 in float16 (4.9e-4), not in float32;
        # exp(-20)·4 ≈ 8.2e-9 < float32's (6.0e-8), not float64's (1.1e-16);
        # exp(-40)·4 ≈ 1.7e-17 is absorbed even in float64. A gap of 0 never collapses.
        (jnp.float16, 3 / 4),
        (jnp.float32, 2 / 4),
        (jnp.float64, 1 / 4),
    ],
)
def test_softmax_collapse_fraction_on_hand_built_rows(dtype, expected):
    logits = jnp.asarray(gap_rows([0.0, 10.0, 20.0, 40.0]), jnp.float32)
    with jax.enable_x64(dtype == jnp.float64):
        assert float(gj.softmax_collapse_fraction(logits, dtype=dtype)) == expected


def test_stablemax_normalizer_collapses_only_at_huge_gaps():
    # s(40) + 4·s(0) = 45 != 41: StableMax does not collapse where softmax does.
    logits = jnp.asarray(gap_rows([40.0, 1e9]), jnp.float32)
    assert float(gj.softmax_collapse_fraction(logits, normalizer="softmax")) == 1.0
    # in float32, 1e9 + 1 + 4 rounds back to 1e9 + 1 (ulp 64 at 1e9); in float64 it does not
    assert float(gj.softmax_collapse_fraction(logits, normalizer="stablemax")) == 0.5
    with jax.enable_x64(True):
        got = gj.softmax_collapse_fraction(
            logits.astype(jnp.float64), dtype=jnp.float64, normalizer="stablemax"
        )
        assert float(got) == 0.0


def test_zero_loss_fraction():
    logits = jnp.asarray(gap_rows([0.0, 10.0, 200.0, 200.0]), jnp.float32)
    losses = gj.cross_entropy_with_integer_labels(logits, jnp.array([0, 0, 0, 1]))
    # only the confidently right row with a gap of 200 has exactly zero loss in float32
    assert float(gj.zero_loss_fraction(losses)) == 0.25


def test_nlm_cosine_matches_reference(rng):
    w, g = random_tree(rng), random_tree(rng)
    got = gj.nlm_cosine(jax.tree.map(jnp.asarray, w), jax.tree.map(jnp.asarray, g))

    def cos_ref(a, b):
        a, b = np.ravel(a), -np.ravel(b)
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    jax.tree.map(
        lambda x, a, b: np.testing.assert_allclose(x, cos_ref(a, b), rtol=1e-5, atol=1e-6),
        got,
        w,
        g,
    )
    # pure NLM: the gradient points against the weights
    assert float(gj.nlm_cosine(jnp.ones(4), -3.0 * jnp.ones(4))) == pytest.approx(1.0)
    assert float(gj.nlm_cosine(jnp.zeros(4), jnp.ones(4))) == 0.0


def test_weight_norms(rng):
    w = random_tree(rng)
    got = gj.weight_norms(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), w))
    jax.tree.map(
        lambda n, x: np.testing.assert_allclose(n, np.linalg.norm(np.ravel(x)), rtol=1e-6), got, w
    )
    total = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(w)))
    np.testing.assert_allclose(gj.global_weight_norm(w), total, rtol=1e-6)
    bf16 = gj.global_weight_norm({"a": jnp.full((1000,), 3.0, jnp.bfloat16)})
    np.testing.assert_allclose(bf16, 3.0 * np.sqrt(1000), rtol=1e-6)  # accumulated in float32
