"""grokjax.analysis.statistics against straightforward float64 numpy references."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.analysis import (
    EARLY_GROKKING_THRESHOLD,
    GrokkingPhases,
    activation_statistics,
    attention_entropy,
    early_grokking_score,
    early_grokking_scores,
    grokking_phases,
)

# ---------------------------------------------------------------- numpy references


def ref_score(r, t):
    r, t = np.asarray(r, np.float64), np.asarray(t, np.float64)
    mean_r = sum(r) / len(r)
    std_r = math.sqrt(sum((x - mean_r) ** 2 for x in r) / len(r))
    return (t[0] - t[-1]) / t[0] * (sum(t) / len(t)) / mean_r / (std_r + 1e-8)


def ref_attention_entropy(probs):
    B, H, Q, _ = probs.shape
    out = np.zeros(H)
    for h in range(H):
        total = 0.0
        for b in range(B):
            for q in range(Q):
                total -= sum(x * math.log(x) for x in probs[b, h, q] if x > 0)
        out[h] = total / (B * Q)
    return out


def causal_softmax(rng, B, H, T, scale=2.0):
    """Softmax of random scores with a causal mask: masked keys are exactly 0."""
    scores = scale * rng.standard_normal((B, H, T, T))
    mask = np.tril(np.ones((T, T), bool))
    e = np.where(mask, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    return e / e.sum(-1, keepdims=True)


def loss_curves(rng, n):
    """Positive, noisy train and test loss histories."""
    train = 0.02 + 0.01 * rng.random(n)
    test = np.linspace(3.0, 0.5, n) + 0.1 * rng.random(n)
    return train, test


# ---------------------------------------------------------------- early grokking score


def test_threshold_constant():
    assert EARLY_GROKKING_THRESHOLD == 0.1


def test_early_grokking_score_matches_numpy():
    rng = np.random.default_rng(0)
    for W in (2, 10, 100):
        r, t = loss_curves(rng, W)
        expected = ref_score(r, t)
        got = early_grokking_score(jnp.asarray(r, jnp.float32), jnp.asarray(t, jnp.float32))
        assert got.shape == () and got.dtype == jnp.float32
        assert float(got) == pytest.approx(expected, rel=1e-4)
        assert float(jax.jit(early_grokking_score)(r, t)) == pytest.approx(expected, rel=1e-4)
        with jax.enable_x64(True):
            got64 = early_grokking_score(jnp.asarray(r), jnp.asarray(t))
            assert got64.dtype == jnp.float64
            assert float(got64) == pytest.approx(expected, rel=1e-12)
    # a rising test loss gives a negative score; flat train loss: the 1e-8 floor
    assert float(early_grokking_score([0.1, 0.1], [1.0, 2.0])) < 0
    with jax.enable_x64(True):
        flat = early_grokking_score(jnp.array([0.5, 0.5]), jnp.array([2.0, 1.0]))
        assert float(flat) == pytest.approx(0.5 * 1.5 / 0.5 / 1e-8, rel=1e-12)


def test_early_grokking_score_vmaps_over_members():
    rng = np.random.default_rng(1)
    curves = [loss_curves(rng, 20) for _ in range(3)]
    r_M = np.stack([c[0] for c in curves])
    t_M = np.stack([c[1] for c in curves])
    got = np.asarray(jax.vmap(early_grokking_score)(r_M, t_M))
    np.testing.assert_allclose(got, [ref_score(r, t) for r, t in curves], rtol=1e-4)


def test_early_grokking_scores_windows():
    rng = np.random.default_rng(2)
    N, W = 37, 10
    r, t = loss_curves(rng, N)
    scores = early_grokking_scores(r, t, window=W)
    assert isinstance(scores, np.ndarray) and scores.shape == (N - W + 1,)
    assert scores.dtype == np.float64
    expected = [ref_score(r[i - W + 1 : i + 1], t[i - W + 1 : i + 1]) for i in range(W - 1, N)]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    # the last window agrees with the single-window jax function
    assert float(early_grokking_score(r[-W:], t[-W:])) == pytest.approx(scores[-1], rel=1e-4)
    # default window = 100; N == W gives one score, N < W none
    r2, t2 = loss_curves(rng, 100)
    np.testing.assert_allclose(early_grokking_scores(r2, t2), [ref_score(r2, t2)], rtol=1e-12)
    assert early_grokking_scores(r2[:99], t2[:99]).shape == (0,)
    assert early_grokking_scores(jnp.asarray(r), jnp.asarray(t), window=N).shape == (1,)
    with pytest.raises(ValueError, match="window"):
        early_grokking_scores(r, t, window=0)
    with pytest.raises(ValueError, match="same length"):
        early_grokking_scores(r, t[:-1], window=3)


# ---------------------------------------------------------------- grokking phases

STEPS = np.arange(0, 1000, 100)  # 10 evaluations


def test_grokking_phases_separate():
    train = [0.2, 0.6, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # M = 200
    val = [0.0, 0.0, 0.05, 0.1, 0.2, 0.5, 0.94, 0.96, 0.99, 1.0]  # C = 700
    excl = [1.0, 2.0, 3.0, 4.0, 6.0, 5.0, 2.0, 1.0, 9.0, 9.0]  # window max at 400
    ph = grokking_phases(STEPS, train, val, excl)
    assert ph == GrokkingPhases(memorised=200, circuit=400, cleaned_up=700, separate=True)
    assert ph.describe() == (
        "memorised at step 200, circuit formed by step 400, cleaned up at step 700 "
        "(delay 500 steps)"
    )
    # without the excluded loss there is no circuit step
    ph2 = grokking_phases(STEPS, train, val)
    assert (ph2.memorised, ph2.circuit, ph2.cleaned_up, ph2.separate) == (200, None, 700, True)
    assert "circuit step unknown" in ph2.describe() and "\n" not in ph2.describe()
    # the peak at the window's edges counts (M ≤ step ≤ C), outside it does not
    edge = [9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 7.0, 99.0, 99.0]
    assert grokking_phases(STEPS, train, val, edge).circuit == 700
    # ties: the earliest; NaN skipped
    tie = [0.0, 0.0, 1.0, 5.0, 5.0, np.nan, 1.0, 1.0, 0.0, 0.0]
    assert grokking_phases(STEPS, train, val, tie).circuit == 300
    all_nan = np.full(10, np.nan)
    assert grokking_phases(STEPS, train, val, all_nan).circuit is None
    # the dataclass is frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        ph.memorised = 0  # type: ignore[misc]


def test_grokking_phases_thresholds():
    train = [0.5, 0.9, 0.95, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    val = [0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0]
    assert grokking_phases(STEPS, train, val).memorised == 300
    assert grokking_phases(STEPS, train, val).cleaned_up == 500
    ph = grokking_phases(STEPS, train, val, train_threshold=0.9, val_threshold=0.8)
    assert (ph.memorised, ph.cleaned_up) == (100, 300)


def test_grokking_phases_no_separate_memorisation():
    # C < M: validation accuracy crosses first
    train = [0.1, 0.5, 0.9, 0.98, 0.999, 1.0, 1.0, 1.0, 1.0, 1.0]  # M = 400
    val = [0.1, 0.5, 0.96, 0.97, 0.98, 1.0, 1.0, 1.0, 1.0, 1.0]  # C = 200
    excl = np.arange(10.0)
    ph = grokking_phases(STEPS, train, val, excl)
    assert ph == GrokkingPhases(memorised=400, circuit=None, cleaned_up=200, separate=False)
    assert ph.describe().startswith("no separate memorisation")
    # C == M: both in the same evaluation
    val_same = [0.1, 0.5, 0.9, 0.9, 0.96, 1.0, 1.0, 1.0, 1.0, 1.0]
    ph = grokking_phases(STEPS, train, val_same, excl)
    assert (ph.memorised, ph.circuit, ph.cleaned_up, ph.separate) == (400, None, 400, False)
    assert "no separate memorisation" in ph.describe() and "400" in ph.describe()


def test_grokking_phases_thresholds_never_reached():
    low = np.full(10, 0.5)
    high = np.ones(10)
    excl = np.arange(10.0)
    never = grokking_phases(STEPS, low, low, excl)
    assert never == GrokkingPhases(None, None, None, False)
    assert never.describe() == "not memorised: neither accuracy reached its threshold"
    # memorised, never generalised
    train = [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    ph = grokking_phases(STEPS, train, low, excl)
    assert ph == GrokkingPhases(memorised=200, circuit=None, cleaned_up=None, separate=True)
    assert "not cleaned up" in ph.describe()
    # generalised without memorising (train never at threshold)
    ph = grokking_phases(STEPS, low, high, excl)
    assert ph == GrokkingPhases(memorised=None, circuit=None, cleaned_up=0, separate=False)
    assert ph.describe().startswith("no separate memorisation")


def test_grokking_phases_rejects_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        grokking_phases([0, 200, 100], [0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="one length"):
        grokking_phases([0, 100, 200], [0, 0, 0], [0, 0])
    with pytest.raises(ValueError, match="one length"):
        grokking_phases([0, 100, 200], [0, 0, 0], [0, 0, 0], [1.0, 2.0])


# ---------------------------------------------------------------- attention entropy


def test_attention_entropy_matches_numpy_with_causal_mask():
    rng = np.random.default_rng(3)
    probs = causal_softmax(rng, B=3, H=4, T=6)
    assert np.any(probs == 0)  # masked keys are exact zeros
    expected = ref_attention_entropy(probs)
    got = attention_entropy(jnp.asarray(probs, jnp.float32))
    assert got.shape == (4,) and got.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(attention_entropy)(probs)), expected, rtol=1e-5)
    with jax.enable_x64(True):
        got64 = attention_entropy(jnp.asarray(probs))
        assert got64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(got64), expected, rtol=1e-12)
    # vmap over a member axis
    probs_M = np.stack([probs, causal_softmax(rng, B=3, H=4, T=6)])
    got_M = np.asarray(jax.vmap(attention_entropy)(probs_M))
    np.testing.assert_allclose(got_M[1], ref_attention_entropy(probs_M[1]), rtol=1e-5)


def test_attention_entropy_uniform_and_one_hot():
    T = 7
    uniform = jnp.full((2, 3, 5, T), 1 / T)
    np.testing.assert_allclose(np.asarray(attention_entropy(uniform)), np.log(T), rtol=1e-6)
    # causal uniform: query q attends uniformly to q + 1 keys → mean of ln(q + 1)
    mask = np.tril(np.ones((T, T)))
    causal = np.broadcast_to(mask / mask.sum(-1, keepdims=True), (2, 1, T, T))
    expected = np.mean(np.log(np.arange(1, T + 1)))
    np.testing.assert_allclose(np.asarray(attention_entropy(causal)), [expected], rtol=1e-6)
    one_hot = np.zeros((2, 2, 4, T))
    one_hot[..., 3] = 1.0
    np.testing.assert_array_equal(np.asarray(attention_entropy(one_hot)), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"\(B, H, Q, T\)"):
        attention_entropy(np.zeros((2, 3, 4)))


# ---------------------------------------------------------------- activation statistics


def ref_stats(x):
    x = np.asarray(x, np.float64).reshape(-1)
    mean = sum(x) / len(x)
    return {
        "mean": mean,
        "std": math.sqrt(sum((v - mean) ** 2 for v in x) / len(x)),
        "zero_fraction": sum(1 for v in x if v == 0) / len(x),
        "rms": math.sqrt(sum(v * v for v in x) / len(x)),
    }


def test_activation_statistics_matches_numpy_on_relu_output():
    rng = np.random.default_rng(4)
    x = np.maximum(rng.standard_normal((8, 5, 16)) + 0.3, 0.0)  # exact zeros from ReLU
    expected = ref_stats(x)
    assert 0.2 < expected["zero_fraction"] < 0.5
    got = activation_statistics(jnp.asarray(x, jnp.float32))
    assert set(got) == {"mean", "std", "zero_fraction", "rms"}
    for name, value in got.items():
        assert value.shape == () and value.dtype == jnp.float32, name
        assert float(value) == pytest.approx(expected[name], rel=1e-5), name
    assert float(got["zero_fraction"]) == np.float32(np.count_nonzero(x == 0) / x.size)
    jitted = jax.jit(activation_statistics)(x)
    assert float(jitted["std"]) == pytest.approx(expected["std"], rel=1e-5)
    with jax.enable_x64(True):
        got64 = activation_statistics(jnp.asarray(x))
        for name, value in got64.items():
            assert value.dtype == jnp.float64, name
            assert float(value) == pytest.approx(expected[name], rel=1e-12), name


def test_activation_statistics_low_precision_and_vmap():
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal((4, 64)), 0.0)
    xb = jnp.asarray(x, jnp.bfloat16)
    got = activation_statistics(xb)
    expected = ref_stats(np.asarray(xb.astype(jnp.float32)))  # the bf16-rounded values
    for name, value in got.items():
        assert value.dtype == jnp.float32, name  # accumulated in float32, not bf16
        assert float(value) == pytest.approx(expected[name], rel=1e-5), name
    per_row = jax.vmap(activation_statistics)(jnp.asarray(x, jnp.float32))
    for i in range(4):
        ref = ref_stats(x[i])
        for name in ref:
            assert float(per_row[name][i]) == pytest.approx(ref[name], rel=1e-5, abs=1e-7)
    assert float(activation_statistics(np.zeros(10))["zero_fraction"]) == 1.0
    assert float(activation_statistics(np.zeros(10))["std"]) == 0.0
