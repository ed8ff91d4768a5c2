"""Grokfast EMA/MA filters against an independent float64 numpy reference."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TraceCounter, assert_trees_close, random_tree

import grokjax as gj

NUM_STEPS = 40


# --- numpy float64 references, written from the papers' recursions -----------------


def ema_reference(grads_seq, alpha, lamb):
    """μ_1 = g_1; μ_t = α μ_{t-1} + (1-α) g_t; output g_t + λ μ_t (per leaf)."""
    outs, mu = [], None
    for g in grads_seq:
        mu = g if mu is None else jax.tree.map(lambda m, x: alpha * m + (1 - alpha) * x, mu, g)
        outs.append(jax.tree.map(lambda x, m: x + lamb * m, g, mu))
    return outs


def ma_reference(grads_seq, window, lamb, filter_type, warmup):
    """The authors' deque filter: append g_t; modify once full (or always without warmup)."""
    outs, dq = [], collections.deque(maxlen=window)
    for g in grads_seq:
        dq.append(g)
        if warmup and len(dq) < window:
            outs.append(g)
            continue
        total = jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0), *dq)
        avg = jax.tree.map(lambda s: s / len(dq), total) if filter_type == "mean" else total
        outs.append(jax.tree.map(lambda x, a: x + lamb * a, g, avg))
    return outs


# --- helpers ------------------------------------------------------------------------


def run_filter(tx, grads_seq, dtype=jnp.float32):
    """Apply ``tx`` to a sequence of gradient trees in one jitted lax.scan."""
    stacked = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs), dtype), *grads_seq)
    params = jax.tree.map(lambda x: x[0], stacked)

    def body(state, g):
        out, state = tx.update(g, state, params)
        return state, out

    traced = TraceCounter(lambda s, gs: jax.lax.scan(body, s, gs))
    fn = jax.jit(traced)
    state, outs = fn(tx.init(params), stacked)
    fn(tx.init(params), stacked)  # a second call must reuse the compiled program
    assert traced.count == 1
    return [
        jax.tree.map(lambda x, i=i: np.asarray(x[i]), outs) for i in range(len(grads_seq))
    ], state


def grads_sequence(rng, n=NUM_STEPS):
    # A slowly varying component plus noise, so filtering matters.
    slow = random_tree(rng)
    return [jax.tree.map(lambda s: s + rng.standard_normal(s.shape), slow) for _ in range(n)]


# --- EMA ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,lamb", [(0.98, 2.0), (0.8, 0.1), (0.5, 5.0), (0.0, 1.0)])
def test_ema_matches_reference(rng, alpha, lamb):
    seq = grads_sequence(rng)
    outs, _ = run_filter(gj.grokfast_ema(alpha=alpha, lamb=lamb), seq)
    for got, want in zip(outs, ema_reference(seq, alpha, lamb), strict=True):
        assert_trees_close(got, want, rtol=2e-6, atol=2e-6)


def test_ema_first_step_is_one_plus_lambda_times_grad(rng):
    g = random_tree(rng)
    outs, state = run_filter(gj.grokfast_ema(alpha=0.98, lamb=2.0), [g])
    assert_trees_close(outs[0], jax.tree.map(lambda x: 3.0 * x, g), rtol=1e-6, atol=0)
    assert int(state.count) == 1


def test_ema_rejects_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match="alpha"):
        gj.grokfast_ema(alpha=1.5)


# --- MA -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window,filter_type,warmup",
    [
        (10, "mean", True),
        (10, "mean", False),
        (10, "sum", True),
        (10, "sum", False),
        (1, "mean", True),
        (1, "sum", False),
        (NUM_STEPS + 5, "mean", False),  # window never fills
        (NUM_STEPS + 5, "mean", True),  # ... so with warm-up nothing changes
        (NUM_STEPS, "mean", True),  # fills exactly at the last step
    ],
)
def test_ma_matches_reference(rng, window, filter_type, warmup):
    seq = grads_sequence(rng)
    lamb = 5.0
    tx = gj.grokfast_ma(window_size=window, lamb=lamb, filter_type=filter_type, warmup=warmup)
    outs, _ = run_filter(tx, seq)
    ref = ma_reference(seq, window, lamb, filter_type, warmup)
    scale = window if filter_type == "sum" else 1  # sums of `window` O(1) terms
    for t, (got, want) in enumerate(zip(outs, ref, strict=True)):
        assert_trees_close(got, want, rtol=1e-5, atol=1e-5 * scale * lamb), t


def test_ma_warmup_passes_gradients_through_until_full(rng):
    seq = grads_sequence(rng, n=6)
    outs, _ = run_filter(gj.grokfast_ma(window_size=4, lamb=5.0), seq)
    for t in range(3):  # steps 1..w-1 unchanged, bit for bit
        as_f32 = jax.tree.map(lambda x: np.float32(x).astype(np.float64), seq[t])
        assert_trees_close(outs[t], as_f32, rtol=0, atol=0)
    with pytest.raises(AssertionError):
        assert_trees_close(outs[3], seq[3], rtol=1e-3, atol=0)


def test_ma_state_holds_raw_gradients(rng):
    seq = grads_sequence(rng, n=7)
    _, state = run_filter(gj.grokfast_ma(window_size=3, lamb=5.0), seq)
    # Gradient t (1-based) sits in slot (t-1) % 3: steps 7, 5, 6 -> slots 0, 1, 2.
    expected = jax.tree.map(lambda *xs: np.stack(xs), seq[6], seq[4], seq[5])
    assert_trees_close(jax.tree.map(np.asarray, state.window), expected, rtol=1e-7, atol=0)
    want_sum = jax.tree.map(lambda a, b, c: a + b + c, seq[4], seq[5], seq[6])
    assert_trees_close(state.window_sum, want_sum, rtol=1e-6, atol=1e-6)


def test_ma_running_sum_stays_exact_over_long_runs():
    """Double-word summation: no drift after thousands of steps.

    Gradients with a large common offset: every add and subtract rounds at the
    offset's scale, and plain float32 accumulation drifts by 46.6 ulps here.
    """
    rng = np.random.default_rng(1)
    steps, window, offset = 4000, 7, 1000.0
    gs = offset + rng.standard_normal((steps, 64))
    tx = gj.grokfast_ma(window_size=window, lamb=1.0, filter_type="sum", warmup=False)
    g32 = jnp.asarray(gs, jnp.float32)

    def body(state, g):
        _, state = tx.update(g, state)
        return state, state.window_sum

    _, sums = jax.jit(lambda s, x: jax.lax.scan(body, s, x))(tx.init(g32[0]), g32)
    g32_64 = np.asarray(g32, np.float64)  # the float32 inputs, exactly, in float64
    exact = np.stack([g32_64[max(0, t - window + 1) : t + 1].sum(0) for t in range(steps)])
    err_ulps = np.abs(np.asarray(sums, np.float64) - exact) / np.spacing(
        np.float32(offset * window)
    )
    assert err_ulps.max() <= 1.0, err_ulps.max()


def test_ma_running_sum_survives_a_falling_gradient_scale():
    """Large gradients pass through the window, then tiny ones: the sum must forget them.

    Kahan summation keeps an error of an ulp of the *past* large values (the sum was
    off by 1e-2 with gradients of 1e-3 after 1e4-sized ones), far above the now tiny
    window sum; re-summing the buffer in float32 is accurate to ~1e-7.
    """
    rng = np.random.default_rng(2)
    window = 100
    scales = np.concatenate([np.full(300, 1e4), np.full(300, 1.0), np.full(700, 1e-4)])
    gs = np.float32(scales[:, None] * rng.standard_normal((scales.size, 32)))
    tx = gj.grokfast_ma(window_size=window, lamb=1.0, filter_type="mean", warmup=False)

    def body(state, g):
        out, state = tx.update(g, state)
        return state, out

    _, outs = jax.jit(lambda s, x: jax.lax.scan(body, s, x))(
        tx.init(jnp.zeros(32)), jnp.asarray(gs)
    )
    g64 = gs.astype(np.float64)
    means = np.stack([g64[max(0, t - window + 1) : t + 1].mean(0) for t in range(len(gs))])
    exact = g64 + means
    rel = np.abs(np.asarray(outs, np.float64) - exact) / np.abs(exact).max(axis=1, keepdims=True)
    assert rel[-300:].max() < 1e-6, rel[-300:].max()  # long after the large values left
    assert rel.max() < 1e-6, rel.max()


def test_ema_in_bfloat16_has_no_rounding_bias():
    """α and 1 - α rounded separately to bf16 sum to 0.998: μ would settle ~16% low."""
    rng = np.random.default_rng(3)
    gs = jnp.asarray(1.0 + 0.5 * rng.standard_normal((3000, 512)), jnp.bfloat16)
    tx = gj.grokfast_ema(alpha=0.99, lamb=2.0)  # accumulator in bf16 (the default)

    def body(state, g):
        _, state = tx.update(g, state)
        return state, None

    state, _ = jax.jit(lambda s, x: jax.lax.scan(body, s, x))(tx.init(gs[0]), gs)
    assert state.mu.dtype == jnp.bfloat16
    assert (
        abs(
            float(jnp.mean(state.mu.astype(jnp.float32)))
            - float(jnp.mean(gs[-500:].astype(jnp.float32)))
        )
        < 0.01
    )


def test_ma_sum_tracks_the_stored_value_when_grads_and_params_differ_in_dtype():
    tx = gj.grokfast_ma(window_size=2, lamb=1.0, warmup=False, accumulator_dtype=jnp.float32)
    state = tx.init(jnp.zeros(3, jnp.bfloat16))  # buffer in the params' dtype
    for g in (
        jnp.full(3, 1.001, jnp.float32),
        jnp.zeros(3, jnp.float32),
        jnp.zeros(3, jnp.float32),
    ):
        _, state = tx.update(g, state)
    # 1.001 left the window: what was added (bf16(1.001) = 1.0) must have been subtracted
    np.testing.assert_array_equal(
        np.asarray(state.window_sum) + np.asarray(state.compensation), 0.0
    )


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_ma_rejects_bad_window(bad):
    with pytest.raises(ValueError, match="window_size"):
        gj.grokfast_ma(window_size=bad)


def test_ma_rejects_unknown_filter_type():
    with pytest.raises(ValueError, match="filter_type"):
        gj.grokfast_ma(filter_type="median")


# --- optax conventions shared by both filters ----------------------------------------

FILTERS = {
    "ema": lambda: gj.grokfast_ema(alpha=0.9, lamb=2.0),
    "ma": lambda: gj.grokfast_ma(window_size=3, lamb=5.0, warmup=False),
}


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_filters_keep_the_gradient_dtype(rng, name, dtype):
    seq = grads_sequence(rng, n=5)
    outs, _ = run_filter(FILTERS[name](), seq, dtype=dtype)
    for leaf in jax.tree.leaves(outs):
        assert leaf.dtype == dtype
    # ... also inside a chain with an optax optimizer, whose hyperparameters are float32.
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), seq[0])
    tx = optax.inject_hyperparams(
        lambda learning_rate: optax.chain(FILTERS[name](), optax.adam(learning_rate))
    )(learning_rate=1e-3)
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(updates))


@pytest.mark.parametrize("name", FILTERS)
def test_filters_keep_float64_under_x64(rng, name):
    with jax.enable_x64(True):
        seq = grads_sequence(rng, n=6)
        outs, _ = run_filter(FILTERS[name](), seq, dtype=jnp.float64)
        assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(outs))
        ref = (
            ema_reference(seq, 0.9, 2.0)
            if name == "ema"
            else ma_reference(seq, 3, 5.0, "mean", False)
        )
        for got, want in zip(outs, ref, strict=True):
            assert_trees_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FILTERS)
def test_filters_handle_none_leaves_and_masks(rng, name):
    g = {"a": jnp.asarray(rng.standard_normal(3), jnp.float32), "frozen": None}
    tx = FILTERS[name]()
    out, _ = tx.update(g, tx.init(g))
    assert out["frozen"] is None

    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    grads = {"a": jnp.full(3, 2.0), "b": jnp.full(2, 2.0)}
    masked = optax.masked(tx, {"a": True, "b": False})
    out, _ = jax.jit(masked.update)(grads, masked.init(params), params)
    np.testing.assert_array_equal(out["b"], grads["b"])  # untouched
    assert not np.allclose(out["a"], grads["a"])  # filtered (first step: (1+λ)·g)


@pytest.mark.parametrize("name", FILTERS)
def test_filters_vmap_over_a_leading_seed_axis(rng, name):
    members = 3
    seqs = [grads_sequence(rng, n=5) for _ in range(members)]
    tx = FILTERS[name]()
    per_member = [run_filter(tx, seq)[0] for seq in seqs]

    stacked = jnp.asarray(
        np.stack([np.stack([seq[t]["emb"] for t in range(5)]) for seq in seqs]), jnp.float32
    )  # (members, steps, ...)

    def run_one(gs):
        def body(state, g):
            out, state = tx.update(g, state)
            return state, out

        return jax.lax.scan(body, tx.init(gs[0]), gs)[1]

    outs = jax.jit(jax.vmap(run_one))(stacked)
    for m in range(members):
        for t in range(5):
            np.testing.assert_allclose(outs[m, t], per_member[m][t]["emb"], rtol=1e-6, atol=1e-6)


def test_ma_window_size_under_inject_hyperparams(rng):
    """window_size is static; lamb is swept. Without static_args it works while init
    runs outside jit (optax 0.2.8 injects ints); inside jit it needs static_args."""
    seq = grads_sequence(rng, n=8)
    ref = ma_reference(seq, 4, 3.0, "mean", True)
    for kwargs in ({}, {"static_args": ("window_size",)}):
        tx = optax.inject_hyperparams(gj.grokfast_ma, **kwargs)(window_size=4, lamb=3.0)
        outs, _ = run_filter(tx, seq)
        for got, want in zip(outs, ref, strict=True):
            assert_trees_close(got, want, rtol=1e-5, atol=1e-5)
    jitted_init = jax.jit(
        optax.inject_hyperparams(gj.grokfast_ma, static_args=("window_size",))(4, 3.0).init
    )
    assert jitted_init(jnp.zeros(3)).inner_state.window.shape == (4, 3)


@pytest.mark.parametrize("name", ["ema", "ma"])
def test_accumulator_dtype_keeps_a_bf16_filter_in_float32(rng, name):
    seq = grads_sequence(rng, n=12)
    make = {
        "ema": lambda **kw: gj.grokfast_ema(alpha=0.9, lamb=2.0, **kw),
        "ma": lambda **kw: gj.grokfast_ma(window_size=4, lamb=5.0, warmup=False, **kw),
    }[name]
    outs, state = run_filter(make(accumulator_dtype=jnp.float32), seq, dtype=jnp.bfloat16)
    accumulators = state.mu if name == "ema" else state.window_sum
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(accumulators))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(outs))
    # against the reference run on the bf16-rounded gradients: within bf16 output rounding
    rounded = [
        jax.tree.map(lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64), g) for g in seq
    ]
    ref = (
        ema_reference(rounded, 0.9, 2.0)
        if name == "ema"
        else ma_reference(rounded, 4, 5.0, "mean", False)
    )
    for got, want in zip(outs, ref, strict=True):
        assert_trees_close(
            jax.tree.map(lambda x: np.asarray(x, np.float64), got), want, rtol=1e-2, atol=1e-2
        )
