"""Surge-Collapse: collapse, surge, the entropy controller and the optax transform,
against independent float64 numpy references and exact (bitwise) expectations."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import grokjax as gj

SPARSITIES = (0.0, 0.25, 0.5, 0.9, 1.0)
# n − 1 = 0, 1, 20, 59, 200: integer and fractional quantile positions
SHAPES = {"s": (), "two": (2,), "m": (3, 7), "t": (4, 5, 3), "long": (3, 67)}


# --- helpers -----------------------------------------------------------------------


def bits(x):
    """The raw bits of an array (bitwise comparisons tell +0 from −0 and NaNs apart)."""
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def assert_bitwise_equal(a, b, where=None, err_msg=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    if where is not None:
        a, b = a[where], b[where]
    np.testing.assert_array_equal(bits(a), bits(b), err_msg=err_msg)


def separated(rng, shape):
    """Random-sign values whose sorted magnitudes are ≈ 1 apart (distinct, far from any
    interpolated quantile), shuffled."""
    n = math.prod(shape)
    mags = rng.permutation(n) + rng.uniform(0.25, 0.75, n)
    return (rng.choice([-1.0, 1.0], n) * mags).reshape(shape)


def collapse_mask_reference(x, sparsity):
    """|x| < np.quantile(|x|, sparsity) (linear), in float64."""
    a = np.abs(np.asarray(x, np.float64))
    return a < np.quantile(a.reshape(-1), sparsity)


def expected_count(n, sparsity):
    """⌈sparsity·(n − 1)⌉ zeros for n distinct magnitudes."""
    return math.ceil(sparsity * (n - 1) - 1e-9)


def to_np(tree):
    return jax.tree.map(np.asarray, tree)


# --- collapse ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_collapse_zeros_the_expected_entries(rng, dtype):
    """Per leaf exactly the entries with |p| below the sparsity-quantile become +0
    (⌈s(n−1)⌉ of them for distinct magnitudes); the rest are bit-identical."""
    x64 = dtype == "float64"
    with jax.enable_x64(x64):
        if dtype == "bfloat16":  # bfloat16 has ties: the mask semantics still hold
            params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
        else:
            params = {k: 1e-2 * separated(rng, s) for k, s in SHAPES.items()}
        params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
        fn = jax.jit(lambda p, s: (gj.collapse(p, s), gj.collapse_mask(p, s)))
        for sparsity in SPARSITIES:
            out, mask = to_np(fn(params, sparsity))
            for k, p in to_np(params).items():
                want = collapse_mask_reference(p.astype(np.float64), sparsity)
                np.testing.assert_array_equal(mask[k], want, err_msg=f"{k} s={sparsity}")
                if dtype != "bfloat16":
                    assert want.sum() == expected_count(p.size, sparsity), (k, sparsity)
                assert out[k].dtype == p.dtype and out[k].shape == p.shape
                assert np.all(bits(out[k][want]) == 0)  # exactly +0
                assert_bitwise_equal(out[k], p, where=~want, err_msg=f"{k} s={sparsity}")
            n_total = sum(p.size for p in jax.tree.leaves(params))
            zeros = sum(int(m.sum()) for m in mask.values())
            np.testing.assert_allclose(float(gj.zero_fraction(out)), zeros / n_total, rtol=1e-6)


def test_collapse_doc_example_and_eager_call():
    """The docstring example, called eagerly with Python floats."""
    out = gj.collapse({"w": jnp.array([0.1, -0.5, 0.2, 0.9, -0.05])}, 0.5)
    np.testing.assert_array_equal(out["w"], np.float32([0.0, -0.5, 0.2, 0.9, 0.0]))


def test_collapse_include_and_none_leaves(rng):
    """Excluded leaves (pytree of bools or a callable) are untouched; None passes through."""
    params = {
        "w": jnp.asarray(separated(rng, (6, 4)), jnp.float32),
        "b": jnp.asarray(separated(rng, (4,)), jnp.float32),
        "emb": jnp.asarray(separated(rng, (3, 5)), jnp.float32),
        "none": None,
    }
    full = gj.collapse(params, 0.5)
    assert full["none"] is None
    for include in (
        {"w": True, "b": False, "emb": False, "none": False},
        {"w": True, "b": False, "emb": False, "none": None},
        lambda p: jax.tree.map(lambda x: x.shape == (6, 4), p),
    ):
        out = gj.collapse(params, 0.5, include=include)
        mask = gj.collapse_mask(params, 0.5, include=include)
        assert out["none"] is None and mask["none"] is None
        want = collapse_mask_reference(params["w"], 0.5)
        np.testing.assert_array_equal(mask["w"], want)
        assert_bitwise_equal(out["w"], full["w"])
        assert int(np.sum(np.asarray(out["w"]) == 0)) == expected_count(24, 0.5)
        for k in ("b", "emb"):
            assert not np.asarray(mask[k]).any()
            assert_bitwise_equal(out[k], params[k])
            assert np.count_nonzero(np.asarray(full[k]) == 0) > 0  # it would have collapsed


def test_collapse_vmaps_per_member(rng):
    """Under vmap each member uses its own quantile, as if collapsed alone."""
    stacked = jnp.asarray(np.stack([separated(rng, (5, 4)) * 10.0**i for i in range(3)]))
    out = np.asarray(jax.jit(jax.vmap(lambda x: gj.collapse(x, 0.25)))(stacked))
    for i in range(3):
        want = collapse_mask_reference(np.asarray(stacked[i]), 0.25)
        assert want.sum() == expected_count(20, 0.25)
        np.testing.assert_array_equal(out[i] == 0, want)
        assert_bitwise_equal(out[i], np.asarray(stacked[i]), where=~want)


def test_collapse_rejects_sparsity_outside_unit_interval():
    """A sparsity outside [0, 1] is an error."""
    for s in (-0.1, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            gj.collapse({"w": jnp.ones(3)}, s)


# --- surge -------------------------------------------------------------------------


def with_zeros(rng, shapes, frac=0.4, dtype=jnp.float32):
    """Random leaves with about ``frac`` exact zeros (some of them −0.0)."""
    out = {}
    for k, s in shapes.items():
        x = rng.standard_normal(s)
        x[rng.random(s) < frac] = 0.0
        x[(x == 0) & (rng.random(s) < 0.3)] = -0.0
        x.reshape(-1)[0] = -0.0  # at least one negative zero per leaf
        out[k] = jnp.asarray(x, dtype)
    return out


SURGE_SHAPES = {"a": (40, 3), "b": (2, 3, 4)}


@jax.jit
def documented_draws(key):
    """recovery·N(0, 1) in float32 with jax.random.split(key, num_leaves) in tree order."""
    keys = jax.random.split(key, len(SURGE_SHAPES))
    pairs = zip(keys, SURGE_SHAPES.items(), strict=True)  # dict order = sorted = tree order
    return {k: 0.3 * jax.random.normal(kk, s) for kk, (k, s) in pairs}


def test_surge_touches_exactly_the_zeros(rng):
    """Every exact zero (±0) becomes recovery·N(0,1) from the leaf's own key (split in tree
    order; up to rounding); every nonzero entry is bit-identical."""
    key = jax.random.key(3)
    draws = to_np(documented_draws(key))
    params = with_zeros(rng, SURGE_SHAPES)
    out = to_np(jax.jit(gj.surge, static_argnames="recovery")(params, key, recovery=0.3))
    for k, p in to_np(params).items():
        zero = p == 0
        assert (~zero).any() and np.signbit(p[zero]).any()
        assert out[k].dtype == p.dtype
        assert_bitwise_equal(out[k], p, where=~zero, err_msg=k)
        assert np.all(out[k][zero] != 0)
        np.testing.assert_allclose(out[k][zero], draws[k][zero], rtol=1e-6, atol=0, err_msg=k)


def test_surge_only_pruned_mask(rng):
    """With only_pruned_mask, only zeros it marks are surged; other zeros stay exactly 0
    (here with a float32 and a bfloat16 leaf: the dtypes are kept)."""
    params = with_zeros(rng, {"a": (30,)}, frac=0.5)
    params |= with_zeros(rng, {"b": (5, 6)}, frac=0.5, dtype=jnp.bfloat16)
    marks = {k: jnp.asarray(rng.random(v.shape) < 0.5) for k, v in params.items()}
    out = to_np(jax.jit(gj.surge)(params, jax.random.key(1), 0.1, only_pruned_mask=marks))
    for k, p in to_np(params).items():
        m = np.asarray(marks[k])
        zero = p == 0
        assert out[k].dtype == p.dtype == {"a": np.float32, "b": jnp.bfloat16}[k]
        assert (zero & m).any() and (zero & ~m).any() and (~zero & m).any()
        assert np.all(out[k][zero & m] != 0)
        assert_bitwise_equal(out[k], p, where=~(zero & m), err_msg=k)


def test_surge_draws_differ_per_leaf_and_key_and_vmap():
    """Leaves draw independently; different keys differ; the same key repeats; vmap over
    keys gives each key's result."""
    params = {"a": jnp.zeros(64), "b": jnp.zeros(64)}
    keys = jax.random.split(jax.random.key(0), 3)
    surge = jax.jit(gj.surge)
    out = to_np(surge(params, keys[0]))
    assert not np.any(out["a"] == out["b"])
    again = to_np(surge(params, keys[0]))
    assert_bitwise_equal(again["a"], out["a"])
    batched = to_np(jax.jit(jax.vmap(gj.surge, in_axes=(None, 0)))(params, keys))
    for i in range(3):
        single = to_np(surge(params, keys[i]))
        for k in params:
            np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-6, atol=1e-7)
    assert not np.any(batched["a"][0] == batched["a"][1])


def test_surge_draws_have_the_recovery_scale():
    """On n = 200k zeros with recovery σ = 0.1 the sample mean, std and the fraction within
    ±σ agree with N(0, σ²) within 5 standard errors (SE(mean) = σ/√n, SE(std) ≈ σ/√(2n))."""
    n, sigma = 200_000, 0.1
    params = {"w": jnp.zeros((400, 500)), "other": jnp.ones(3)}
    surge = jax.jit(gj.surge)  # recovery traced: one compile for both scales
    result = surge(params, jax.random.key(42), sigma)
    np.testing.assert_array_equal(result["other"], np.ones(3, np.float32))
    out = np.asarray(result["w"], np.float64).ravel()
    assert np.all(out != 0)
    assert abs(out.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(out.std() - sigma) < 5 * sigma / np.sqrt(2 * n)
    p1 = 0.6826894921370859  # P(|Z| < 1)
    assert abs(np.mean(np.abs(out) < sigma) - p1) < 5 * np.sqrt(p1 * (1 - p1) / n)
    # a 10× recovery is 10× the scale
    big = np.asarray(surge(params, jax.random.key(42), 10 * sigma)["w"], np.float64).ravel()
    np.testing.assert_allclose(big, 10 * out, rtol=1e-6)


def test_zero_fraction_counts_exact_zeros(rng):
    """Fraction of exact zeros (±0) over all leaves."""
    params = with_zeros(rng, {"a": (13,), "b": (4, 5)}, frac=0.3)
    want = sum(int(np.sum(np.asarray(v) == 0)) for v in params.values()) / 33
    np.testing.assert_allclose(float(gj.zero_fraction(params)), want, rtol=1e-7)


# --- the entropy controller --------------------------------------------------------


def controller_reference(trace, cfg):
    """The rules of EntropyControllerConfig, in float64 Python: EMA smoothing; once
    ``warmup`` readings have passed and no event fired in the last ``cooldown`` readings:
    high → collapse+surge, else low → pump, else a full, flat window → collapse."""
    s, window, last_event, last_pump = None, [], None, None
    rows = []
    for t, e in enumerate(np.asarray(trace, np.float64), start=1):
        s = e if s is None else cfg.smoothing * s + (1 - cfg.smoothing) * e
        window = [*window, s][-cfg.plateau_window :]
        ready = t >= cfg.warmup and (last_event is None or t - last_event > cfg.cooldown)
        high = ready and s > cfg.high
        low = ready and not high and s < cfg.low
        flat = len(window) == cfg.plateau_window and max(window) - min(window) < (
            cfg.plateau_tolerance
        )
        plateau = ready and not high and not low and flat
        if high or low or plateau:
            last_event = t
        if low:
            last_pump = t
        pumping = last_pump is not None and t - last_pump < cfg.pump_steps
        rows.append((s, high or plateau, high, low, pumping, max(window) - min(window)))
    s, collapse, surge, pump, pumping, spread = map(np.asarray, zip(*rows, strict=True))
    return dict(smoothed=s, collapse=collapse, surge=surge, pump=pump, pumping=pumping), spread


def controller_scan(trace, values, window):
    """lax.scan of entropy_controller_step; the thresholds in ``values`` may be traced
    (the config is a NamedTuple pytree), only the window length is static."""
    cfg = values._replace(plateau_window=window)

    def body(state, e):
        state, d = gj.entropy_controller_step(state, e, cfg)
        return state, dict(
            smoothed=state.smoothed,
            collapse=d.collapse,
            surge=d.surge,
            pump=d.pump,
            pumping=state.pump_left > 0,
            pump_left=state.pump_left,
        )

    return jax.lax.scan(body, gj.entropy_controller_init(cfg), trace)[1]


jit_controller_scan = jax.jit(controller_scan, static_argnames="window")
CHUNK = 150  # traces are padded to a multiple of this: few compiles


def run_controller(trace, cfg):
    """The controller's outputs for every reading of ``trace``, under jit."""
    trace = np.asarray(trace, np.float32)
    n = len(trace)
    padded = np.pad(trace, (0, -n % CHUNK), mode="edge")
    values = cfg._replace(plateau_window=None)
    out = jit_controller_scan(jnp.asarray(padded), values, cfg.plateau_window)
    return {k: np.asarray(v)[:n] for k, v in out.items()}


# Explicit thresholds (the defaults are a calibration and may move).
CFG = gj.EntropyControllerConfig(
    high=0.985, low=0.95, smoothing=0.9, plateau_window=100, plateau_tolerance=2e-4,
    cooldown=100, warmup=100, pump_noise=0.1, pump_steps=100,
)  # fmt: skip


def fire_steps(flags):
    return np.flatnonzero(np.asarray(flags)) + 1  # 1-based readings


def moving_trace(n, cfg=CFG, period=20):
    """A sinusoid centred between low and high, 0.4·(high − low) in amplitude."""
    centre, amplitude = (cfg.low + cfg.high) / 2, 0.4 * (cfg.high - cfg.low)
    return centre + amplitude * np.sin(2 * np.pi * np.arange(n) / period)


def test_controller_smoothing_is_the_ema(rng):
    """s_1 = e_1, s_t = β s_{t−1} + (1−β) e_t, computed in numpy."""
    trace = rng.uniform(0.0, 1.0, 60)
    for beta in (0.0, 0.8):
        cfg = CFG._replace(smoothing=beta)
        got = np.asarray(run_controller(trace, cfg)["smoothed"])
        want = [trace[0]]
        for e in trace[1:]:
            want.append(beta * want[-1] + (1 - beta) * e)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_controller_high_entropy_collapses_and_surges_with_cooldown():
    """A constant trace above ``high`` fires collapse+surge (never pump) from reading
    ``warmup`` on, then again each time ``cooldown`` quiet readings have passed."""
    cfg = CFG._replace(warmup=10, cooldown=7)
    out = run_controller(np.full(100, 0.995), cfg)
    fired = fire_steps(out["collapse"])
    np.testing.assert_array_equal(fired, np.arange(10, 101, 8))
    np.testing.assert_array_equal(np.diff(fired), cfg.cooldown + 1)  # `cooldown` quiet updates
    np.testing.assert_array_equal(out["surge"], out["collapse"])
    assert not np.asarray(out["pump"]).any()
    # cooldown=0 fires on every reading after warmup
    out = run_controller(np.full(30, 0.995), cfg._replace(cooldown=0))
    np.testing.assert_array_equal(fire_steps(out["surge"]), np.arange(10, 31))


def test_controller_low_entropy_pumps_for_pump_steps():
    """A trace below ``low`` pumps (no collapse, no surge); pump_left stays positive for
    exactly ``pump_steps`` readings starting with the one that fired."""
    cfg = CFG._replace(warmup=5, cooldown=30, pump_steps=12, pump_noise=0.2)
    trace = np.full(100, 0.8)
    out = run_controller(trace, cfg)
    fired = fire_steps(out["pump"])
    np.testing.assert_array_equal(fired, [5, 36, 67, 98])
    assert not np.asarray(out["collapse"]).any() and not np.asarray(out["surge"]).any()
    pumping = np.zeros(100, bool)
    for f in fired:
        pumping[f - 1 : f - 1 + cfg.pump_steps] = True
    np.testing.assert_array_equal(out["pumping"], pumping)
    np.testing.assert_array_equal(np.asarray(out["pump_left"])[4:16], np.arange(12, 0, -1))
    # one dip below `low` in a moving mid-range trace: one pump, then exactly 12 steps
    trace = moving_trace(80, cfg)
    trace[39] = 0.0  # smoothed drops below `low` at reading 40 and recovers after a few
    out = run_controller(trace, cfg._replace(warmup=1))
    assert fire_steps(out["pump"]).tolist() == [40]
    assert fire_steps(out["pumping"]).tolist() == list(range(40, 52))
    assert not np.asarray(out["collapse"]).any()


def test_controller_plateau_collapses_only_once_the_window_is_full():
    """A flat trace between low and high collapses (no surge, no pump) from the reading
    that fills the window (or ends warmup, if later), then every cooldown + 1 readings."""
    cfg = CFG._replace(warmup=5, plateau_window=20, cooldown=15)
    out = run_controller(np.full(90, 0.97), cfg)
    np.testing.assert_array_equal(fire_steps(out["collapse"]), [20, 36, 52, 68, 84])
    assert not np.asarray(out["surge"]).any() and not np.asarray(out["pump"]).any()
    out = run_controller(np.full(90, 0.97), cfg._replace(warmup=30))
    np.testing.assert_array_equal(fire_steps(out["collapse"]), [30, 46, 62, 78])
    # a flat trace near 0 (pump disabled: low = 0): the not yet filled window must not
    # count as flat either
    out = run_controller(np.full(90, 1e-5), cfg._replace(low=0.0, warmup=1))
    np.testing.assert_array_equal(fire_steps(out["collapse"]), [20, 36, 52, 68, 84])


@pytest.mark.parametrize("defaults", [False, True])
def test_controller_moving_mid_range_trace_never_fires(defaults):
    """Between low and high, moving by more than plateau_tolerance within every window:
    no event at all (explicit thresholds, and the library defaults)."""
    cfg = gj.EntropyControllerConfig() if defaults else CFG
    trace = moving_trace(600, cfg)
    ref, spread = controller_reference(trace, cfg)
    assert np.all(spread[cfg.plateau_window - 1 :] > 2 * cfg.plateau_tolerance)
    margin = 0.1 * (cfg.high - cfg.low)
    assert np.all((ref["smoothed"] > cfg.low + margin) & (ref["smoothed"] < cfg.high - margin))
    out = run_controller(trace, cfg)
    for k in ("collapse", "surge", "pump", "pumping"):
        assert not np.asarray(out[k]).any(), k


def test_controller_matches_reference_on_mixed_traces_under_vmap(rng):
    """Piecewise traces visiting every regime: vmap(jit(scan)) decisions equal the numpy
    reference reading by reading."""
    cfg = CFG._replace(
        smoothing=0.7, plateau_window=12, plateau_tolerance=5e-4, cooldown=6, warmup=8,
        pump_steps=5,
    )  # fmt: skip
    traces = []
    for _ in range(3):
        parts = []
        for kind in rng.permutation(["moving", "high", "low", "flat", "moving", "high", "flat"]):
            n = int(rng.integers(15, 40))
            if kind == "moving":
                parts.append(moving_trace(n, cfg, period=int(rng.integers(5, 9))))
            elif kind == "high":
                parts.append(0.996 + 0.003 * rng.uniform(-1, 1, n))
            elif kind == "low":
                parts.append(0.90 + 0.02 * rng.uniform(-1, 1, n))
            else:
                parts.append(np.full(n, rng.uniform(0.96, 0.975)))
        traces.append(np.concatenate(parts)[:150])
    traces = np.stack([np.pad(t, (0, 150 - len(t)), mode="edge") for t in traces])
    scan = functools.partial(controller_scan, window=cfg.plateau_window)
    out = jax.jit(jax.vmap(scan, in_axes=(0, None)))(
        jnp.asarray(traces, jnp.float32), cfg._replace(plateau_window=None)
    )
    for i, trace in enumerate(traces):
        ref, _ = controller_reference(trace, cfg)
        np.testing.assert_allclose(out["smoothed"][i], ref["smoothed"], rtol=1e-6)
        for k in ("collapse", "surge", "pump", "pumping"):
            np.testing.assert_array_equal(out[k][i], ref[k], err_msg=f"trace {i}: {k}")
        for k in ("surge", "pump"):
            assert ref[k].any(), k  # every rule fired somewhere
        assert (ref["collapse"] & ~ref["surge"]).any()  # a plateau collapse


# --- the optax transform -----------------------------------------------------------

TREE = {"dense": {"w": (8, 5), "b": (5,)}}  # leaves: b, w (few leaves: fast compiles)


def random_params(rng, shapes=TREE):
    if isinstance(shapes, dict):
        return {k: random_params(rng, v) for k, v in shapes.items()}
    return jnp.asarray(rng.standard_normal(shapes), jnp.float32)


def grads_seq(rng, n, shapes=TREE):
    return [random_params(rng, shapes) for _ in range(n)]


def run_tx(tx, params, grads, **extra):
    """Jitted updates, eager ``optax.apply_updates`` (one IEEE add per entry, so params
    compare bit for bit); the params after each update, the states and the updates."""
    update = jax.jit(tx.update)
    state, traj, states, updates = tx.init(params), [], [], []
    for g in grads:
        u, state = update(g, state, params, **extra)
        params = optax.apply_updates(params, u)
        traj.append(params)
        states.append(state)
        updates.append(u)
    return traj, states, updates


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_fixed_schedule_fires_on_multiples():
    """Under jit + scan: collapse at k % collapse_every == 0, surge at k % surge_every == 0;
    a collapse-only update leaves ⌈s(n−1)⌉ zeros per leaf, a collapse+surge update none."""
    rng = np.random.default_rng(1)
    params = random_params(rng)
    grads = jax.tree.map(lambda *xs: jnp.stack(xs), *grads_seq(rng, 24))
    tx = gj.surge_collapse(optax.sgd(0.05), collapse_every=3, surge_every=4, sparsity=0.4)

    @jax.jit
    def run(params, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
            return (p, s), (gj.surge_collapse_events(s), p)

        return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    k = np.arange(1, 25)
    events, traj = run(params, grads)
    np.testing.assert_array_equal(np.diff(events["collapses"], prepend=0), k % 3 == 0)
    np.testing.assert_array_equal(np.diff(events["surges"], prepend=0), k % 4 == 0)
    assert not np.asarray(events["pumps"]).any() and not np.asarray(events["input_noise"]).any()
    for step in range(24):
        zeros = [int(np.sum(x[step] == 0)) for x in leaves(traj)]
        sizes = [x[step].size for x in leaves(traj)]
        if (step + 1) % 3 == 0 and (step + 1) % 4:
            assert zeros == [expected_count(n, 0.4) for n in sizes], step
        else:
            assert zeros == [0] * len(sizes), step


def test_transform_params_equal_inner_alone_except_collapsed(rng):
    """Bit for bit: without an event the update is the inner optimizer's (run alone) and
    the params are p + u; a collapse lands the numpy-masked entries on exactly +0 and the
    rest on p + u. surge_every=0 never surges."""
    make = lambda: optax.sgd(0.1, momentum=0.9)  # noqa: E731 (Adam: see the moments test)
    params = random_params(rng)
    grads = grads_seq(rng, 7)
    tx = gj.surge_collapse(make(), collapse_every=3, surge_every=0, sparsity=0.5)
    traj, states, updates = run_tx(tx, params, grads)
    plain_updates = run_tx(make(), params, grads)[2]  # independent of the params
    prev = params
    for k in range(1, 8):
        want = optax.apply_updates(prev, plain_updates[k - 1])
        for q, w, u, pu in zip(
            leaves(traj[k - 1]), leaves(want), leaves(updates[k - 1]), leaves(plain_updates[k - 1]),
            strict=True,
        ):  # fmt: skip
            mask = collapse_mask_reference(w, 0.5) if k % 3 == 0 else np.zeros(w.shape, bool)
            assert mask.sum() == expected_count(w.size, 0.5) * (k % 3 == 0)
            assert np.all(bits(q[mask]) == 0)
            assert_bitwise_equal(q, w, where=~mask, err_msg=f"update {k}")
            assert_bitwise_equal(u, pu, where=~mask, err_msg=f"update {k}")
        prev = traj[k - 1]
        assert int(states[k - 1].collapses) == k // 3 and int(states[k - 1].surges) == 0


def test_transform_moments_reset_and_keep(rng):
    """Adam inside: params equal plain Adam's bit for bit except at the entries the update-2
    collapse+surge touched (included leaves only). moments='reset' zeros mu and nu exactly
    there, after which they restart from the next gradient; 'keep' leaves the state equal
    to plain Adam's bit for bit. The excluded leaf's exact zeros are never surged."""
    params = random_params(rng)
    params["dense"]["b"] = params["dense"]["b"].at[:2].set(0.0)
    grads = grads_seq(rng, 3)
    for g in grads:  # zero gradients keep those at exactly 0 under Adam
        g["dense"]["b"] = g["dense"]["b"].at[:2].set(0.0)
    include = {"dense": {"w": True, "b": False}}
    b1, b2 = 0.8, 0.99
    plain_traj, plain_states, _ = run_tx(optax.adam(0.05, b1=b1, b2=b2), params, grads)
    # update 2 collapses p + u of plain Adam (update 1 had no event): the touched entries
    touched = [
        collapse_mask_reference(x, 0.5) if inc else np.zeros(x.shape, bool)
        for x, inc in zip(leaves(plain_traj[1]), jax.tree.leaves(include), strict=True)
    ]
    assert [t.sum() for t in touched] == [0, 20]
    restart = {"mu": lambda g: (1 - b1) * g, "nu": lambda g: (1 - b2) * g * g}
    for moments in ("keep", "reset"):
        tx = gj.surge_collapse(
            optax.adam(0.05, b1=b1, b2=b2),
            collapse_every=2,
            surge_every=2,
            sparsity=0.5,
            moments=moments,
            include=include,
        )
        traj, states, _ = run_tx(tx, params, grads)
        for k in range(3):
            # params: plain Adam's bit for bit, except the touched entries (0, then surged)
            for i, (got, want) in enumerate(
                zip(leaves(traj[k]), leaves(plain_traj[k]), strict=True)
            ):
                t = touched[i] if k else np.zeros(got.shape, bool)
                assert_bitwise_equal(got, want, where=~t, err_msg=f"{moments} params {k + 1}")
                assert np.all(got[t] != want[t])
            assert np.all(np.asarray(traj[k]["dense"]["b"])[:2] == 0)
            inner, ref = states[k].inner_state[0], plain_states[k][0]
            assert int(inner.count) == int(ref.count) == k + 1
            g = leaves(grads[k])
            for name in ("mu", "nu"):
                pairs = zip(leaves(getattr(inner, name)), leaves(getattr(ref, name)), strict=True)
                for i, (got, want) in enumerate(pairs):
                    msg = f"{moments} {name} leaf {i} update {k + 1}"
                    if moments == "keep" or k == 0:
                        assert_bitwise_equal(got, want, err_msg=msg)
                        continue
                    t = touched[i]
                    assert_bitwise_equal(got, want, where=~t, err_msg=msg)
                    if k == 1:
                        assert np.all(bits(got[t]) == 0), msg
                    elif t.any():  # restarted from zero at update 2
                        np.testing.assert_allclose(
                            got[t], restart[name](g[i][t]), rtol=1e-6, err_msg=msg
                        )
                        assert not np.allclose(want[t], got[t], rtol=1e-3)


def test_surge_only_pruned_restricts_surges(rng):
    """surge_only_pruned: a surge without a collapse touches nothing, and a collapse that
    zeros nothing (more than `sparsity` exact zeros already: threshold 0) surges nothing;
    without it every exact zero is surged."""
    a = rng.standard_normal(40)
    a[:25] = 0.0  # 62.5 % zeros > sparsity: quantile 0, nothing below it
    b = rng.standard_normal(30)
    b[:6] = 0.0  # 20 % zeros: the collapse zeros these and more
    params = {k: jnp.asarray(v, jnp.float32) for k, v in dict(a=a, b=b).items()}
    # zero gradients where the params are 0, so sgd keeps them at 0
    grads = [
        {k: jnp.asarray(np.where(v == 0, 0.0, rng.standard_normal(v.shape)), jnp.float32)
         for k, v in dict(a=a, b=b).items()}
        for _ in range(2)
    ]  # fmt: skip
    plain = run_tx(optax.sgd(0.1), params, grads)[0]
    zero = {k: np.asarray(plain[0][k]) == 0 for k in params}
    assert [zero[k].sum() for k in "ab"] == [25, 6]
    cmask_b = collapse_mask_reference(plain[1]["b"], 0.5)
    assert cmask_b.sum() == expected_count(30, 0.5) and cmask_b[:6].all()
    assert not collapse_mask_reference(plain[1]["a"], 0.5).any()
    for only in (True, False):
        tx = gj.surge_collapse(
            optax.sgd(0.1), collapse_every=2, surge_every=1, surge_only_pruned=only
        )
        traj, states, _ = run_tx(tx, params, grads)
        assert [int(states[1].collapses), int(states[1].surges)] == [1, 2]
        # update 1: surge, no collapse
        for k in "ab":
            got = np.asarray(traj[0][k])
            assert_bitwise_equal(got, plain[0][k], where=~zero[k])
            assert np.all((got[zero[k]] == 0) == only), (k, only)
        if only:  # update 2: collapse + surge
            assert_bitwise_equal(traj[1]["a"], plain[1]["a"])  # threshold 0: nothing pruned
            got_b = np.asarray(traj[1]["b"])
            assert_bitwise_equal(got_b, plain[1]["b"], where=~cmask_b)
            assert np.all(got_b[cmask_b] != 0)
        else:
            assert all(np.all(np.asarray(traj[1][k]) != 0) for k in "ab")


def test_adaptive_schedule_follows_the_controller():
    """schedule='adaptive' under jit + scan: the events and input_noise after every update
    are the numpy controller reference's decisions on the activation_entropy trace; a
    plateau collapse leaves ⌈s(n−1)⌉ zeros per leaf."""
    cfg = CFG._replace(
        warmup=3, cooldown=4, pump_steps=3, plateau_window=6, plateau_tolerance=1e-3,
        smoothing=0.5, pump_noise=0.25,
    )  # fmt: skip
    trace = np.concatenate(
        [
            moving_trace(10, cfg, period=5),
            np.full(10, 0.999),
            moving_trace(8, cfg, period=5),
            np.full(8, 0.5),
            np.full(15, 0.97),
            moving_trace(5, cfg, period=5),
        ]
    )
    ref, _ = controller_reference(trace, cfg)
    assert ref["surge"].any() and ref["pump"].any() and (ref["collapse"] & ~ref["surge"]).any()
    rng = np.random.default_rng(2)
    params = random_params(rng)
    grads = jax.tree.map(lambda *xs: jnp.stack(xs), *grads_seq(rng, len(trace)))
    tx = gj.surge_collapse(optax.sgd(0.01), schedule="adaptive", controller=cfg, sparsity=0.5)

    @jax.jit
    def run(params, grads, trace):
        def body(carry, xs):
            p, s = carry
            g, e = xs
            u, s = tx.update(g, s, p, activation_entropy=e)
            p = optax.apply_updates(p, u)
            return (p, s), (gj.surge_collapse_events(s), p)

        return jax.lax.scan(body, (params, tx.init(params)), (grads, trace))[1]

    events, traj = run(params, grads, jnp.asarray(trace, jnp.float32))
    for name, rule in (("collapses", "collapse"), ("surges", "surge"), ("pumps", "pump")):
        np.testing.assert_array_equal(np.diff(events[name], prepend=0), ref[rule], err_msg=name)
    np.testing.assert_array_equal(events["input_noise"], np.where(ref["pumping"], 0.25, 0.0))
    for step in np.flatnonzero(ref["collapse"] & ~ref["surge"]):
        zeros = [int(np.sum(x[step] == 0)) for x in leaves(traj)]
        assert zeros == [expected_count(x[step].size, 0.5) for x in leaves(traj)]
    with pytest.raises(ValueError, match="activation_entropy"):
        tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)


def test_transform_inside_chain_and_inject_hyperparams(rng):
    """activation_entropy passes through optax.chain and optax.inject_hyperparams (nested);
    the event helpers find the nested state; an injected sparsity takes effect on the next
    update."""
    params = random_params(rng)
    grads = grads_seq(rng, 4)
    cfg = CFG._replace(warmup=1, cooldown=0, smoothing=0.0, pump_steps=2, pump_noise=0.3)
    inject = functools.partial(
        optax.inject_hyperparams, static_args=("collapse_every", "surge_every", "key")
    )
    chained = optax.chain(
        optax.clip_by_global_norm(1e3),
        inject(gj.surge_collapse)(optax.sgd(0.1), schedule="adaptive", controller=cfg),
    )
    entropies = [0.999, 0.5, 0.97, 0.97]  # high, low, neither (window not full), neither
    update, state, noise = jax.jit(chained.update), chained.init(params), []
    for g, e in zip(grads, entropies, strict=True):
        _, state = update(g, state, params, activation_entropy=jnp.float32(e))
        noise.append(float(gj.surge_collapse_input_noise(state)))
    events = gj.surge_collapse_events(state)
    assert [int(events[k]) for k in ("collapses", "surges", "pumps")] == [1, 1, 1]
    np.testing.assert_allclose(noise, [0.0, 0.3, 0.3, 0.0], rtol=1e-7)
    with pytest.raises(ValueError, match="activation_entropy"):
        chained.update(grads[0], chained.init(params), params)

    tx = inject(gj.surge_collapse)(optax.sgd(0.1), collapse_every=1, surge_every=0, sparsity=0.5)
    traj, states, _ = run_tx(tx, params, grads[:1])
    assert [int(np.sum(x == 0)) for x in leaves(traj[0])] == [2, 20]
    state = states[0]
    state.hyperparams["sparsity"] = jnp.float32(0.25)
    u, state = jax.jit(tx.update)(grads[1], state, traj[0])
    after = optax.apply_updates(traj[0], u)
    assert [int(np.sum(x == 0)) for x in leaves(after)] == [1, 10]
    assert int(gj.surge_collapse_events(state)["collapses"]) == 2


def test_inject_hyperparams_with_default_arguments(rng):
    """optax.inject_hyperparams(gj.surge_collapse)(inner) works under jit as it is."""
    params = random_params(rng)
    tx = optax.inject_hyperparams(gj.surge_collapse)(optax.sgd(0.1), collapse_every=1)
    _, state = jax.jit(tx.update)(random_params(rng), tx.init(params), params)
    assert int(gj.surge_collapse_events(state)["collapses"]) == 1


def test_transform_surges_and_vmaps_over_member_keys(rng):
    """vmap over members with keys from jax.random.split (passed as key=): the entries the
    last update collapsed are surged to different values in every member, every other entry
    is identical across members, and each member matches running it alone. Alone, update k
    surges to the draws of surge(collapse(p + u), fold_in(key, k)), up to the rounding of
    p + (d − p), and leaves the other entries on p + u exactly."""
    params = random_params(rng)
    grads = grads_seq(rng, 4)
    keys = jax.random.split(jax.random.key(0), 3)

    def make(key):
        return gj.surge_collapse(
            optax.sgd(0.1), collapse_every=2, surge_every=4, sparsity=0.5, recovery=0.05, key=key
        )

    state = jax.vmap(lambda k: make(k).init(params))(keys)
    update = jax.jit(jax.vmap(make(keys[0]).update, in_axes=(None, 0, 0)))
    members = jax.tree.map(lambda x: jnp.stack([x] * 3), params)
    for g in grads:
        u, state = update(g, state, members)
        members = optax.apply_updates(members, u)
    np.testing.assert_array_equal(state.surges, [1, 1, 1])
    np.testing.assert_array_equal(state.collapses, [2, 2, 2])
    alone = run_tx(make(keys[1]), params, grads)[0]
    before = optax.apply_updates(alone[2], jax.tree.map(lambda g: -0.1 * g, grads[3]))
    reference = jax.jit(lambda q, k: gj.surge(gj.collapse(q, 0.5), k, 0.05))
    draws = reference(before, jax.random.fold_in(keys[1], 4))
    for s, a, q, d, p in zip(
        leaves(members), leaves(alone[3]), leaves(before), leaves(draws), leaves(alone[2]),
        strict=True,
    ):  # fmt: skip
        z = collapse_mask_reference(q, 0.5)  # collapsed by update 4, then surged
        assert z.sum() == expected_count(z.size, 0.5)
        for i in range(3):
            assert_bitwise_equal(s[i], s[0], where=~z)
            assert np.all(s[i][z] != 0)
            for j in range(i):
                assert not np.any(s[i][z] == s[j][z])
        np.testing.assert_allclose(s[0][~z], q[~z], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(s[1], a, rtol=1e-6, atol=1e-7)
        # alone: exact p + u off the collapse, the documented draws on it
        assert_bitwise_equal(a, q, where=~z)
        err = np.abs(a[z].astype(np.float64) - d[z])
        assert np.all(err <= 1.5e-7 * (np.abs(p[z]) + np.abs(d[z]))), err.max()


def test_transform_validates_and_helpers_without_a_state(rng):
    """Bad schedule/moments/negative periods and missing params raise; the event helpers
    give zeros for a state without a surge_collapse."""
    for kwargs in (
        dict(schedule="cosine"),
        dict(moments="zero"),
        dict(collapse_every=-1),
        dict(surge_every=-2),
    ):
        with pytest.raises(ValueError):
            gj.surge_collapse(optax.sgd(0.1), **kwargs)
    tx = gj.surge_collapse(optax.sgd(0.1))
    params = {"w": jnp.ones(4)}
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))
    plain = optax.adam(0.1).init(params)
    events = gj.surge_collapse_events(plain)
    assert all(int(v) == 0 for v in events.values())
    assert float(gj.surge_collapse_input_noise(plain)) == 0.0


def test_transform_none_leaves(rng):
    """None leaves pass through the transform's updates."""
    params = {"w": jnp.asarray(rng.standard_normal(12), jnp.float32), "n": None}
    grads = {"w": jnp.asarray(rng.standard_normal(12), jnp.float32), "n": None}
    tx = gj.surge_collapse(optax.sgd(0.1), collapse_every=1, surge_every=0)
    u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    assert u["n"] is None
    after = optax.apply_updates(params, u)
    assert int(np.sum(np.asarray(after["w"]) == 0)) == expected_count(12, 0.5)


def test_transform_include_pytree_with_none_leaves(rng):
    """An include pytree that gj.collapse accepts works in the transform too."""
    params = {"w": jnp.asarray(rng.standard_normal(12), jnp.float32), "n": None}
    include = {"w": True, "n": False}
    gj.collapse(params, 0.5, include=include)  # fine
    tx = gj.surge_collapse(optax.sgd(0.1), collapse_every=1, include=include)
    u, _ = tx.update(params, tx.init(params), params)
    assert u["n"] is None
