"""Scaled RoPE (linear, NTK, dynamic NTK, YaRN) and 2-D RoPE against float64 numpy
references written out here, plus the rotations' invariances."""

from __future__ import annotations

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.nn import (
    RopeScaling,
    apply_rope,
    apply_rope_2d,
    rope_attention_scale,
    rope_frequencies,
    rope_scaling_from_config,
)

# ---------------------------------------------------------------------------------------
# numpy float64 references: the formulas, each written out independently


def np_plain(d: int, base: float) -> np.ndarray:
    i = np.arange(d // 2, dtype=np.float64)
    return base ** (-2.0 * i / d)


def np_linear(d: int, base: float, s: float) -> np.ndarray:
    return np_plain(d, base) / s


def np_ntk(d: int, base: float, s: float) -> np.ndarray:
    return np_plain(d, base * s ** (d / (d - 2)))


def np_dynamic(d: int, base: float, s: float, l0: int, length: int) -> np.ndarray:
    s_len = max(1.0, s * length / l0 - (s - 1.0))
    return np_plain(d, base * s_len ** (d / (d - 2)))


def np_yarn(d, base, s, l0, beta_fast=32.0, beta_slow=1.0) -> np.ndarray:
    """YaRN as the task states it: c(n), low/high, ramp r, θ' = (θ/s)·r + θ·(1 − r)."""

    def c(n):
        return d * np.log(l0 / (2 * np.pi * n)) / (2 * np.log(base))

    low = max(np.floor(c(beta_fast)), 0.0)
    high = min(np.ceil(c(beta_slow)), d - 1.0)
    if low == high:
        high += 0.001
    i = np.arange(d // 2, dtype=np.float64)
    r = np.clip((i - low) / (high - low), 0.0, 1.0)
    theta = np_plain(d, base)
    return theta / s * r + theta * (1.0 - r)


def np_yarn_hf(dim, base, factor, original_max_position_embeddings, beta_fast=32, beta_slow=1):
    """YaRN following Hugging Face ``_compute_yarn_parameters`` (truncate=True) line by line."""

    def find_correction_dim(num_rotations, dim, base, max_position_embeddings):
        return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (
            2 * math.log(base)
        )

    def find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings):
        low = math.floor(find_correction_dim(low_rot, dim, base, max_position_embeddings))
        high = math.ceil(find_correction_dim(high_rot, dim, base, max_position_embeddings))
        return max(low, 0), min(high, dim - 1)

    def linear_ramp_factor(min_, max_, dim):
        if min_ == max_:
            max_ += 0.001
        linear_func = (np.arange(dim, dtype=np.float64) - min_) / (max_ - min_)
        return np.clip(linear_func, 0, 1)

    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    low, high = find_correction_range(
        beta_fast, beta_slow, dim, base, original_max_position_embeddings
    )
    inv_freq_extrapolation_factor = 1 - linear_ramp_factor(low, high, dim // 2)
    return (
        inv_freq_interpolation * (1 - inv_freq_extrapolation_factor)
        + inv_freq_extrapolation * inv_freq_extrapolation_factor
    )


def np_rotate(x: np.ndarray, positions: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Interleaved-pair rotation via complex numbers; positions broadcast to x.shape[:-2]."""
    x = np.asarray(x, np.float64)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    angle = np.asarray(positions, np.float64)[..., None] * theta  # (..., T, d/2)
    z = z * np.exp(1j * angle)[..., None, :]  # broadcast over heads
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def np_rope_2d(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, base: float) -> np.ndarray:
    half = x.shape[-1] // 2
    theta = np_plain(half, base)
    return np.concatenate(
        [np_rotate(x[..., :half], rows, theta), np_rotate(x[..., half:], cols, theta)], -1
    )


# ---------------------------------------------------------------------------------------
# frequencies

HEAD_DIMS = (8, 16, 64, 128)
BASES = (10000.0, 500000.0)
FACTORS = (1.0, 2.0, 4.0, 8.0)
L0S = (64, 512, 2048)
GRID = list(itertools.product(HEAD_DIMS, BASES, FACTORS, L0S))


def freqs(d, base, kind, s, l0, seq_len=None, **kw) -> np.ndarray:
    out = rope_frequencies(d, base, RopeScaling(kind, s, l0, **kw), seq_len=seq_len)
    assert out.dtype == jnp.float32 and out.shape == (d // 2,)
    return np.asarray(out, np.float64)


def test_plain_frequencies_match_formula():
    for d, base in itertools.product(HEAD_DIMS, BASES):
        out = rope_frequencies(d, base)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out), np_plain(d, base), rtol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
def test_static_kinds_match_formulas(kind):
    reference = {"linear": np_linear, "ntk": np_ntk, "yarn": np_yarn}[kind]
    for d, base, s, l0 in GRID:
        expected = reference(d, base, s) if kind != "yarn" else reference(d, base, s, l0)
        np.testing.assert_allclose(
            freqs(d, base, kind, s, l0), expected, rtol=1e-6, err_msg=f"{d=} {base=} {s=} {l0=}"
        )


def test_dynamic_matches_formula():
    for (d, base, s, l0), frac in itertools.product(GRID, (0.25, 1.0, 1.5, 3.0, 9.0)):
        length = max(1, int(frac * l0))
        np.testing.assert_allclose(
            freqs(d, base, "dynamic", s, l0, seq_len=length),
            np_dynamic(d, base, s, l0, length),
            rtol=1e-6,
            err_msg=f"{d=} {base=} {s=} {l0=} {length=}",
        )


def test_yarn_matches_hugging_face_structure():
    """Both references (the formula, and HF's code structure) agree with ours, including
    non-default betas and a tiny L₀ that hits the clamps and the low == high branch."""
    cases = [(*g, 32.0, 1.0) for g in GRID]
    cases += [(64, 10000.0, 4.0, 512, 16.0, 2.0), (16, 10000.0, 2.0, 4, 32.0, 1.0)]
    cases += [(128, 10000.0, 4.0, 2 * 10**6, 32.0, 1.0)]  # high clamped to d − 1
    for d, base, s, l0, bf, bs in cases:
        ours = freqs(d, base, "yarn", s, l0, beta_fast=bf, beta_slow=bs)
        hf = np_yarn_hf(d, base, s, l0, bf, bs)
        np.testing.assert_allclose(np_yarn(d, base, s, l0, bf, bs), hf, rtol=1e-12)
        np.testing.assert_allclose(ours, hf, rtol=1e-6, err_msg=f"{d=} {base=} {s=} {l0=}")


def test_yarn_ramp_is_exercised():
    """The grid covers pure extrapolation, pure interpolation and the ramp between."""
    ours = freqs(128, 10000.0, "yarn", 4.0, 2048)
    plain = np_plain(128, 10000.0)
    ratio = plain / ours
    np.testing.assert_allclose(ratio[:16], 1.0, rtol=1e-6)  # low = 16
    np.testing.assert_allclose(ratio[41:], 4.0, rtol=1e-6)  # high = 41
    assert np.all((ratio[17:41] > 1.0) & (ratio[17:41] < 4.0))


def test_factor_one_is_plain_rope():
    for d, base, _, l0 in GRID:
        plain = np.asarray(rope_frequencies(d, base))
        for kind in ("linear", "ntk", "yarn"):
            np.testing.assert_allclose(freqs(d, base, kind, 1.0, l0), plain, rtol=1e-7)


def test_dynamic_is_plain_up_to_original_length_and_ntk_at_its_factor():
    for d, base, s, l0 in GRID:
        plain = np.asarray(rope_frequencies(d, base))
        for length in (1, l0 // 2, l0 - 1, l0):
            np.testing.assert_array_equal(freqs(d, base, "dynamic", s, l0, seq_len=length), plain)
        if s > 1:  # beyond L₀ the frequencies slow down
            assert np.all(freqs(d, base, "dynamic", s, l0, seq_len=2 * l0)[1:] < plain[1:])
    for s, l0 in [(2.0, 64), (4.0, 64), (8.0, 64), (2.0, 512), (4.0, 2048)]:
        length = l0 * (2 * s - 1) / s
        assert length == int(length)
        for d, base in itertools.product(HEAD_DIMS, BASES):
            np.testing.assert_allclose(
                freqs(d, base, "dynamic", s, l0, seq_len=int(length)),
                freqs(d, base, "ntk", s, l0),
                rtol=1e-7,
            )


def test_rope_attention_scale():
    for s in FACTORS:
        scale = rope_attention_scale(RopeScaling("yarn", s, 512))
        assert type(scale) is float
        assert scale == pytest.approx(0.1 * math.log(s) + 1.0, rel=1e-12)
        for kind in ("linear", "ntk", "dynamic"):
            assert rope_attention_scale(RopeScaling(kind, s, 512)) == 1.0
    assert rope_attention_scale(RopeScaling("yarn", 1.0, 512)) == 1.0
    assert rope_attention_scale(None) == 1.0
    assert rope_attention_scale(RopeScaling("yarn", 8.0, 64)) > 1.2


# ---------------------------------------------------------------------------------------
# rotations

SHAPE = (2, 40, 3, 16)  # one shape for most tests (eager compiles are per shape)
SCALINGS = [
    None,
    RopeScaling("linear", 4.0, 16),
    RopeScaling("ntk", 4.0, 16),
    RopeScaling("dynamic", 4.0, 16),  # T = 40 > L₀: the dynamic factor is active
    RopeScaling("yarn", 4.0, 16),
]
SCALING_IDS = ["plain", "linear", "ntk", "dynamic", "yarn"]


@pytest.mark.parametrize("scaling", SCALINGS, ids=SCALING_IDS)
def test_apply_rope_preserves_norms(rng, scaling):
    x = jnp.asarray(rng.standard_normal(SHAPE), jnp.float32)
    out = apply_rope(x, jnp.asarray(rng.integers(0, 300, SHAPE[1])), scaling=scaling)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(out), axis=-1), np.linalg.norm(np.asarray(x), axis=-1), rtol=1e-5
    )
    assert not np.allclose(np.asarray(out), np.asarray(x))


@pytest.mark.parametrize("scaling", SCALINGS, ids=SCALING_IDS)
def test_inner_product_depends_only_on_relative_position(rng, scaling):
    q_D, k_D = rng.standard_normal((2, SHAPE[-1]))
    x = np.zeros(SHAPE, np.float32)
    x[0, :, 0], x[0, :, 1] = q_D, k_D  # the same q (head 0) and k (head 1) at every position
    out = np.asarray(apply_rope(jnp.asarray(x), jnp.arange(SHAPE[1]), scaling=scaling))
    dots_MN = out[0, :, 0].astype(np.float64) @ out[0, :, 1].T
    for offset in (-7, 0, 3, 20):
        diagonal = np.diagonal(dots_MN, offset=offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=2e-4)
    assert not np.isclose(dots_MN[0, 0], dots_MN[0, 3])


@pytest.mark.parametrize(
    "scaling",
    [RopeScaling("yarn", 4.0, 16), RopeScaling("dynamic", 3.0, 16), RopeScaling("ntk", 8.0, 16)],
    ids=["yarn", "dynamic", "ntk"],
)
def test_apply_rope_matches_numpy_rotation(rng, scaling):
    x = rng.standard_normal(SHAPE)
    positions = rng.integers(0, 120, SHAPE[1])
    d, s, l0, base = SHAPE[-1], scaling.factor, scaling.original_max_position, 500.0
    theta = {
        "yarn": lambda: np_yarn(d, base, s, l0),
        "dynamic": lambda: np_dynamic(d, base, s, l0, SHAPE[1]),  # L defaults to T
        "ntk": lambda: np_ntk(d, base, s),
    }[scaling.kind]()
    out = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(positions), base, scaling)
    assert out.dtype == jnp.float32
    # float32 angles m·θ for m < 120 carry ~1e-5 rad of rounding error.
    np.testing.assert_allclose(np.asarray(out), np_rotate(x, positions, theta), atol=5e-5)
    assert not np.allclose(np.asarray(out), np_rotate(x, positions, np_plain(d, base)), atol=1e-3)


def test_dynamic_seq_len_overrides_the_array_length(rng):
    x = rng.standard_normal(SHAPE)
    positions = np.arange(SHAPE[1])
    scaling = RopeScaling("dynamic", 2.0, 16)
    out = apply_rope(jnp.asarray(x, jnp.float32), positions, scaling=scaling, seq_len=100)
    expected = np_rotate(x, positions, np_dynamic(SHAPE[-1], 10000.0, 2.0, 16, 100))
    np.testing.assert_allclose(np.asarray(out), expected, atol=3e-5)
    default = apply_rope(jnp.asarray(x, jnp.float32), positions, scaling=scaling)
    assert not np.allclose(np.asarray(out), np.asarray(default), atol=1e-3)


def test_apply_rope_compiles_under_jit(rng):
    x = jnp.asarray(rng.standard_normal(SHAPE), jnp.float32)
    positions = jnp.arange(SHAPE[1])
    for scaling in SCALINGS[1:]:
        eager = apply_rope(x, positions, 1000.0, scaling)
        closure = jax.jit(partial(apply_rope, base=1000.0, scaling=scaling))
        static = jax.jit(apply_rope, static_argnames=("base", "scaling"))
        np.testing.assert_allclose(closure(x, positions), eager, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            static(x, positions, base=1000.0, scaling=scaling), eager, rtol=1e-5, atol=1e-6
        )


# ---------------------------------------------------------------------------------------
# 2-D RoPE


def grid_coords(rng, shape):
    return rng.integers(0, 30, shape), rng.integers(0, 30, shape)


def test_rope_2d_matches_numpy(rng):
    x = rng.standard_normal(SHAPE)
    rows, cols = grid_coords(rng, SHAPE[1])
    out = apply_rope_2d(jnp.asarray(x, jnp.float32), rows, cols, base=100.0)
    assert out.dtype == jnp.float32 and out.shape == SHAPE
    np.testing.assert_allclose(np.asarray(out), np_rope_2d(x, rows, cols, 100.0), atol=2e-5)


def test_rope_2d_per_example_coordinates(rng):
    x = rng.standard_normal(SHAPE)
    rows_BT, cols_BT = grid_coords(rng, SHAPE[:2])
    out = np.asarray(apply_rope_2d(jnp.asarray(x, jnp.float32), rows_BT, cols_BT))
    np.testing.assert_allclose(out, np_rope_2d(x, rows_BT, cols_BT, 10000.0), atol=2e-5)
    for b in range(SHAPE[0]):  # each example uses its own coordinates
        single = apply_rope_2d(jnp.asarray(x[b], jnp.float32), rows_BT[b], cols_BT[b])
        np.testing.assert_allclose(out[b], np.asarray(single), rtol=1e-6, atol=1e-6)
    swapped = np.asarray(apply_rope_2d(jnp.asarray(x, jnp.float32), rows_BT[::-1], cols_BT[::-1]))
    assert not np.allclose(out, swapped, atol=1e-3)


def test_rope_2d_with_zero_column_is_1d_rope_on_first_half(rng):
    x = jnp.asarray(rng.standard_normal(SHAPE), jnp.float32)
    half = SHAPE[-1] // 2
    coords = jnp.asarray(rng.integers(0, 30, SHAPE[1]))
    zeros = jnp.zeros(SHAPE[1], jnp.int32)
    by_rows = np.asarray(apply_rope_2d(x, coords, zeros))
    np.testing.assert_allclose(by_rows[..., :half], apply_rope(x[..., :half], coords), atol=1e-6)
    np.testing.assert_array_equal(by_rows[..., half:], x[..., half:])
    by_cols = np.asarray(apply_rope_2d(x, zeros, coords))  # the symmetric check
    np.testing.assert_array_equal(by_cols[..., :half], x[..., :half])
    np.testing.assert_allclose(by_cols[..., half:], apply_rope(x[..., half:], coords), atol=1e-6)


def test_rope_2d_preserves_norms(rng):
    x = jnp.asarray(rng.standard_normal(SHAPE), jnp.float32)
    out = apply_rope_2d(x, *grid_coords(rng, SHAPE[1]))
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(out), axis=-1), np.linalg.norm(np.asarray(x), axis=-1), rtol=1e-5
    )


def test_rope_2d_inner_product_depends_only_on_coordinate_differences(rng):
    q_D, k_D = rng.standard_normal((2, SHAPE[-1]))
    x = np.zeros(SHAPE, np.float32)
    x[0, :, 0], x[0, :, 1] = q_D, k_D
    x = jnp.asarray(x)
    rows, cols = grid_coords(rng, SHAPE[1])

    def dots(rows_q, cols_q, rows_k, cols_k):
        q = np.asarray(apply_rope_2d(x, rows_q, cols_q), np.float64)[0, :, 0]
        k = np.asarray(apply_rope_2d(x, rows_k, cols_k), np.float64)[0, :, 1]
        return q @ k.T  # (T, T): query token m against key token n

    reference = dots(rows, cols, rows, cols)
    for shift in (3, 17):
        np.testing.assert_allclose(
            dots(rows + shift, cols, rows + shift, cols), reference, atol=2e-4
        )
        np.testing.assert_allclose(
            dots(rows, cols + shift, rows, cols + shift), reference, atol=2e-4
        )
    assert not np.allclose(dots(rows + 3, cols, rows, cols), reference, atol=1e-2)
    assert not np.allclose(dots(rows, cols + 3, rows, cols), reference, atol=1e-2)


def test_rope_2d_needs_head_dim_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        apply_rope_2d(jnp.ones((1, 2, 1, 6)), jnp.arange(2), jnp.arange(2))


# ---------------------------------------------------------------------------------------
# validation and configs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="cubic", factor=2.0, original_max_position=64), "kind must be one of"),
        (dict(kind="linear", factor=0.5, original_max_position=64), "factor must be ≥ 1"),
        (dict(kind="linear", factor=float("nan"), original_max_position=64), "factor"),
        (dict(kind="ntk", factor=2.0, original_max_position=0), "original_max_position"),
        (dict(kind="ntk", factor=2.0, original_max_position=-8), "original_max_position"),
        (dict(kind="ntk", factor=2.0, original_max_position=64.5), "original_max_position"),
        (dict(kind="yarn", factor=2.0, original_max_position=64, beta_fast=1.0), "beta_fast"),
        (dict(kind="yarn", factor=2.0, original_max_position=64, beta_slow=0.0), "beta_slow"),
    ],
)
def test_rope_scaling_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RopeScaling(**kwargs)


def test_dynamic_needs_seq_len():
    with pytest.raises(ValueError, match="seq_len"):
        rope_frequencies(16, scaling=RopeScaling("dynamic", 2.0, 64))
    with pytest.raises(ValueError, match="seq_len"):
        rope_frequencies(16, scaling=RopeScaling("dynamic", 2.0, 64), seq_len=0)
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)


def test_rope_scaling_from_config():
    assert rope_scaling_from_config(None) is None
    assert rope_scaling_from_config({}) is None
    config = {"kind": "yarn", "factor": 4, "original_max_position": 512, "beta_fast": 16}
    scaling = rope_scaling_from_config(config)
    assert scaling == RopeScaling("yarn", 4.0, 512, beta_fast=16.0)
    assert type(scaling.factor) is float and hash(scaling) == hash(RopeScaling("yarn", 4, 512, 16))
    with pytest.raises(ValueError, match="'scale'"):
        rope_scaling_from_config({"kind": "linear", "factor": 2.0, "scale": 3})
    with pytest.raises(ValueError, match="original_max_position"):
        rope_scaling_from_config({"kind": "linear", "factor": 2.0})
    with pytest.raises(ValueError, match="kind must be one of"):
        rope_scaling_from_config({"kind": "ntk-aware", "factor": 2.0, "original_max_position": 8})
