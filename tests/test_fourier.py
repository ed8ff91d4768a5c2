"""grokjax.analysis.fourier against straightforward float64 numpy references."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.analysis import (
    excluded_logits,
    fourier_basis,
    fourier_fraction,
    fourier_norms,
    gini,
    key_frequencies,
    restricted_logits,
)

# ---------------------------------------------------------------- numpy references


def ref_basis(p):
    """Row by row from the formulas, float64."""
    F = np.zeros((p, p))
    for x in range(p):
        F[0, x] = 1 / math.sqrt(p)
        for k in range(1, (p - 1) // 2 + 1):
            F[2 * k - 1, x] = math.cos(2 * math.pi * k * x / p) * math.sqrt(2 / p)
            F[2 * k, x] = math.sin(2 * math.pi * k * x / p) * math.sqrt(2 / p)
    return F


def ref_norms(W, p):
    F = ref_basis(p) @ np.asarray(W, np.float64)[:p]
    K = (p - 1) // 2
    out = [np.sqrt(np.sum(F[0] ** 2))]
    for k in range(1, K + 1):
        out.append(np.sqrt(np.sum(F[2 * k - 1] ** 2) + np.sum(F[2 * k] ** 2)))
    return np.array(out)


def ref_directions(p, w):
    """Unit-norm cos/sin(2πw(a+b)/p) over the p × p grid, by loops."""
    u, v = np.zeros((p, p)), np.zeros((p, p))
    for a in range(p):
        for b in range(p):
            u[a, b] = math.cos(2 * math.pi * w * (a + b) / p)
            v[a, b] = math.sin(2 * math.pi * w * (a + b) / p)
    return u / np.linalg.norm(u), v / np.linalg.norm(v)


def ref_projection(L, freqs):
    L = np.asarray(L, np.float64)
    p, _, C = L.shape
    P = np.zeros_like(L)
    for w in freqs:
        u, v = ref_directions(p, int(w))
        for c in range(C):
            P[:, :, c] += np.sum(u * L[:, :, c]) * u + np.sum(v * L[:, :, c]) * v
    return P


def ref_restricted(L, freqs):
    P = ref_projection(L, freqs)
    return P + (np.asarray(L, np.float64) - P).mean(axis=(0, 1), keepdims=True)


def ref_excluded(L, freqs):
    return np.asarray(L, np.float64) - ref_projection(L, freqs)


def ref_gini(x):
    x = np.sort(np.asarray(x, np.float64))
    n = len(x)
    total = x.sum()
    if total == 0:
        return 0.0
    return sum((2 * i - n - 1) * x[i - 1] for i in range(1, n + 1)) / (n * total)


def planted_embedding(p, d, freqs, amps, noise, rng):
    """``(p + 1, d)``: Σ_i amps[i]·(cos_w ⊗ a_i + sin_w ⊗ b_i) + noise, a big "=" row."""
    x = np.arange(p)[:, None]
    W = noise * rng.standard_normal((p + 1, d))
    for w, amp in zip(freqs, amps, strict=True):
        a, b = rng.standard_normal((2, d))
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        W[:p] += amp * (np.cos(2 * np.pi * w * x / p) * a + np.sin(2 * np.pi * w * x / p) * b)
    W[p] = 100.0  # the "=" token: must be ignored
    return W


def planted_logits(p, C, freqs, rng, constant=True):
    """A logit table made only of cos/sin(2πw(a+b)/p), w ∈ freqs, (+ a per-c constant)."""
    s = np.add.outer(np.arange(p), np.arange(p))[:, :, None]
    L = np.zeros((p, p, C))
    for w in freqs:
        alpha, beta = rng.standard_normal((2, 1, 1, C))
        L += alpha * np.cos(2 * np.pi * w * s / p) + beta * np.sin(2 * np.pi * w * s / p)
    if constant:
        L += rng.standard_normal((1, 1, C))
    return L


# ---------------------------------------------------------------- fourier_basis


@pytest.mark.parametrize("p", [3, 5, 7, 23, 113])
def test_basis_is_orthonormal_and_matches_formula(p):
    F = np.asarray(fourier_basis(p))
    assert F.shape == (p, p) and F.dtype == np.float32
    np.testing.assert_allclose(F @ F.T, np.eye(p), atol=2e-6)
    np.testing.assert_allclose(F, ref_basis(p), rtol=0, atol=1e-6)
    with jax.enable_x64(True):
        F64 = np.asarray(fourier_basis(p, jnp.float64))
    assert F64.dtype == np.float64
    np.testing.assert_allclose(F64 @ F64.T, np.eye(p), atol=1e-13)
    np.testing.assert_allclose(F64, ref_basis(p), rtol=0, atol=1e-13)


def test_basis_row_order():
    p = 7
    F = np.asarray(fourier_basis(p), np.float64)
    x = np.arange(p)
    np.testing.assert_allclose(F[0], np.full(p, 1 / np.sqrt(7)), atol=1e-7)
    np.testing.assert_allclose(F[1], np.cos(2 * np.pi * x / 7) * np.sqrt(2 / 7), atol=1e-7)
    np.testing.assert_allclose(F[2], np.sin(2 * np.pi * x / 7) * np.sqrt(2 / 7), atol=1e-7)
    np.testing.assert_allclose(F[5], np.cos(2 * np.pi * 3 * x / 7) * np.sqrt(2 / 7), atol=1e-7)
    np.testing.assert_allclose(F[6], np.sin(2 * np.pi * 3 * x / 7) * np.sqrt(2 / 7), atol=1e-7)
    assert F[3, 1] == pytest.approx(math.cos(4 * math.pi / 7) * math.sqrt(2 / 7), abs=1e-7)
    assert F[4, 2] == pytest.approx(math.sin(8 * math.pi / 7) * math.sqrt(2 / 7), abs=1e-7)


@pytest.mark.parametrize("p", [1, 2, 4, 10])
def test_basis_rejects_even_or_small_p(p):
    with pytest.raises(ValueError, match=f"p={p}"):
        fourier_basis(p)


# ---------------------------------------------------------------- fourier_norms


def test_fourier_norms_match_numpy_and_parseval():
    rng = np.random.default_rng(1)
    p, d = 13, 6
    W = rng.standard_normal((p + 1, d))
    norms = fourier_norms(jnp.asarray(W, jnp.float32), p)
    assert norms.shape == ((p - 1) // 2 + 1,) and norms.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(norms), ref_norms(W, p), rtol=2e-5)
    # Parseval: Σ N_k² = ‖W[:p]‖_F², the "=" row excluded
    assert float(jnp.sum(norms**2)) == pytest.approx(np.sum(W[:p] ** 2), rel=1e-5)
    with jax.enable_x64(True):
        norms64 = fourier_norms(jnp.asarray(W), p)
        assert norms64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(norms64), ref_norms(W, p), rtol=1e-12)
        assert float(jnp.sum(norms64**2)) == pytest.approx(np.sum(W[:p] ** 2), rel=1e-12)


def test_fourier_norms_ignore_extra_rows_and_check_shape():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((12, 3))
    W2 = W.copy()
    W2[11] = 1e3
    np.testing.assert_array_equal(fourier_norms(W, 11), fourier_norms(W2, 11))
    with pytest.raises(ValueError, match="n >= p"):
        fourier_norms(W[:10], 11)


def test_fourier_norms_vmap_over_members():
    rng = np.random.default_rng(3)
    W_MPD = rng.standard_normal((4, 12, 5))
    out = jax.jit(jax.vmap(functools.partial(fourier_norms, p=11)))(jnp.asarray(W_MPD))
    for m in range(4):
        np.testing.assert_allclose(np.asarray(out[m]), ref_norms(W_MPD[m], 11), rtol=2e-5)


# ---------------------------------------------------------------- key_frequencies


def test_key_frequencies_recovers_planted_frequencies_in_order():
    rng = np.random.default_rng(4)
    p, freqs = 23, [7, 2, 11, 5]
    W = planted_embedding(p, 16, freqs, amps=[5.0, 3.0, 2.0, 1.0], noise=0.01, rng=rng)
    got = key_frequencies(jnp.asarray(W, jnp.float32), p, 4)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), freqs)
    # same as ranking the numpy reference norms
    assert list(np.argsort(-ref_norms(W, p)[1:])[:4] + 1) == freqs
    np.testing.assert_array_equal(np.asarray(key_frequencies(W, p, 2)), [7, 2])
    # jit with a traced W, and the planted frequencies hold ≳ all of the norm²
    jitted = jax.jit(key_frequencies, static_argnums=(1, 2))
    np.testing.assert_array_equal(np.asarray(jitted(jnp.asarray(W), p, 4)), freqs)
    frac = fourier_fraction(fourier_norms(W, p), jnp.asarray(freqs))
    assert 0.999 < float(frac) <= 1.0


def test_key_frequencies_ties_keep_the_lower_frequency_first():
    p = 11
    # a delta at x = 0: every frequency's norm is exactly √(2/p) (sin 0 = 0, cos 0 = 1)
    delta = np.zeros((p, 1))
    delta[0] = 1.0
    norms = np.asarray(fourier_norms(delta, p))
    assert np.all(norms[1:] == norms[1])
    np.testing.assert_array_equal(np.asarray(key_frequencies(delta, p, 5)), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(np.asarray(key_frequencies(np.zeros((p, 3)), p, 3)), [1, 2, 3])
    # a tie behind a clear winner: 4 first, then the tied rest from low to high
    x = np.arange(p)[:, None]
    W = np.concatenate([delta, 3 * np.cos(2 * np.pi * 4 * x / p)], axis=1)
    np.testing.assert_array_equal(np.asarray(key_frequencies(W, p, 3)), [4, 1, 2])


def test_key_frequencies_vmap_and_bad_k():
    rng = np.random.default_rng(5)
    p = 17
    Ws = np.stack(
        [
            planted_embedding(p, 8, [3, 8], [4.0, 2.0], 0.01, rng),
            planted_embedding(p, 8, [1, 6], [4.0, 2.0], 0.01, rng),
        ]
    )
    fn = jax.jit(jax.vmap(functools.partial(key_frequencies, p=p, k=2)))
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(Ws))), [[3, 8], [1, 6]])
    for k in (0, 9):
        with pytest.raises(ValueError, match="k="):
            key_frequencies(Ws[0], p, k)


# ---------------------------------------------------------------- restricted / excluded


@pytest.fixture
def table():
    rng = np.random.default_rng(6)
    p, C = 11, 7
    return rng.standard_normal((p, p, C)), np.array([3, 1, 5])


def test_restricted_and_excluded_match_numpy(table):
    L, freqs = table
    R = restricted_logits(jnp.asarray(L, jnp.float32), jnp.asarray(freqs))
    E = excluded_logits(jnp.asarray(L, jnp.float32), jnp.asarray(freqs))
    assert R.shape == L.shape and R.dtype == jnp.float32 and E.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(R), ref_restricted(L, freqs), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(np.asarray(E), ref_excluded(L, freqs), rtol=1e-4, atol=2e-6)
    with jax.enable_x64(True):
        R64 = restricted_logits(jnp.asarray(L), freqs)
        E64 = excluded_logits(jnp.asarray(L), freqs)
        assert R64.dtype == jnp.float64 and E64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(R64), ref_restricted(L, freqs), atol=1e-12)
        np.testing.assert_allclose(np.asarray(E64), ref_excluded(L, freqs), atol=1e-12)


def test_projection_identities(table):
    L, freqs = table
    p = L.shape[0]
    with jax.enable_x64(True):
        R = np.asarray(restricted_logits(jnp.asarray(L), freqs))
        E = np.asarray(excluded_logits(jnp.asarray(L), freqs))
        P = L - E
        # restricted + excluded − L = mean_{a,b}(L − P(L)), broadcast over (a, b)
        bias = (L - P).mean(axis=(0, 1), keepdims=True)
        np.testing.assert_allclose(R + E - L, np.broadcast_to(bias, L.shape), atol=1e-12)
        assert np.abs(bias).max() > 1e-3  # the identity is not trivially 0 = 0
        # P is idempotent: P(P(L)) = P(L)
        P_of_P = P - np.asarray(excluded_logits(jnp.asarray(P), freqs))
        np.testing.assert_allclose(P_of_P, P, atol=1e-12)
        # excluded ⟂ every u_w, v_w; the projection lies in their span (nonzero)
        for w in freqs:
            u, v = ref_directions(p, w)
            np.testing.assert_allclose(np.einsum("ab,abc->c", u, E), 0, atol=1e-12)
            np.testing.assert_allclose(np.einsum("ab,abc->c", v, E), 0, atol=1e-12)
        assert np.abs(P).max() > 0.1
        # orthogonal: ‖L‖² = ‖P‖² + ‖E‖² for every output column
        np.testing.assert_allclose(
            (L**2).sum(axis=(0, 1)), (P**2).sum(axis=(0, 1)) + (E**2).sum(axis=(0, 1)), rtol=1e-12
        )
    # the directions of the other frequencies are untouched by excluding `freqs`
    u2, _ = ref_directions(p, 2)
    np.testing.assert_allclose(
        np.einsum("ab,abc->c", u2, np.asarray(excluded_logits(L, freqs))),
        np.einsum("ab,abc->c", u2, L),
        rtol=1e-4,
        atol=1e-5,
    )


def test_table_of_chosen_frequencies_is_kept_exactly():
    rng = np.random.default_rng(7)
    p, C, freqs = 13, 5, [2, 6, 4]
    L = planted_logits(p, C, freqs, rng, constant=True)
    const = L.mean(axis=(0, 1), keepdims=True)
    R = np.asarray(restricted_logits(jnp.asarray(L, jnp.float32), jnp.asarray(freqs)))
    E = np.asarray(excluded_logits(jnp.asarray(L, jnp.float32), jnp.asarray(freqs)))
    np.testing.assert_allclose(R, L, atol=2e-5)
    np.testing.assert_allclose(E, np.broadcast_to(const, L.shape), atol=2e-5)
    L0 = planted_logits(p, C, freqs, rng, constant=False)
    np.testing.assert_allclose(np.asarray(excluded_logits(L0, freqs)), 0, atol=2e-5)
    np.testing.assert_allclose(np.asarray(restricted_logits(L0, freqs)), L0, atol=2e-5)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(restricted_logits(L, freqs)), L, atol=1e-12)
        np.testing.assert_allclose(np.asarray(excluded_logits(L0, freqs)), 0, atol=1e-12)
    # a subset of the frequencies keeps only those
    R_sub = np.asarray(restricted_logits(L0, [2]))
    np.testing.assert_allclose(R_sub, ref_restricted(L0, [2]), atol=2e-5)
    assert np.abs(R_sub - L0).max() > 0.1


def test_restricted_under_jit_with_traced_freqs_and_vmap(table):
    L, freqs = table
    jr = jax.jit(restricted_logits)
    je = jax.jit(excluded_logits)
    for fr in (freqs, np.array([2, 4, 5])):  # same shape: one compile, traced values
        np.testing.assert_allclose(
            np.asarray(jr(jnp.asarray(L, jnp.float32), jnp.asarray(fr))),
            ref_restricted(L, fr),
            rtol=1e-4,
            atol=2e-6,
        )
        np.testing.assert_allclose(
            np.asarray(je(jnp.asarray(L, jnp.float32), jnp.asarray(fr))),
            ref_excluded(L, fr),
            rtol=1e-4,
            atol=2e-6,
        )
    rng = np.random.default_rng(8)
    L_M = rng.standard_normal((3, *L.shape))
    freqs_M = np.array([[1, 2], [5, 3], [4, 1]])
    R_M = jax.jit(jax.vmap(restricted_logits))(jnp.asarray(L_M), jnp.asarray(freqs_M))
    E_M = jax.vmap(excluded_logits, in_axes=(0, None))(jnp.asarray(L_M), jnp.asarray([2, 3]))
    for m in range(3):
        np.testing.assert_allclose(
            np.asarray(R_M[m]), ref_restricted(L_M[m], freqs_M[m]), rtol=1e-4, atol=2e-6
        )
        np.testing.assert_allclose(
            np.asarray(E_M[m]), ref_excluded(L_M[m], [2, 3]), rtol=1e-4, atol=2e-6
        )


def test_restricted_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(p, p, C\)"):
        restricted_logits(np.zeros((5, 4, 3)), [1])
    with pytest.raises(ValueError, match="1-D"):
        excluded_logits(np.zeros((5, 5, 3)), [[1]])


# ---------------------------------------------------------------- fourier_fraction


def test_fourier_fraction_matches_numpy():
    rng = np.random.default_rng(9)
    norms = np.abs(rng.standard_normal(12))
    freqs = np.array([4, 1, 9])
    expected = sum(norms[w] ** 2 for w in freqs) / sum(n**2 for n in norms)
    got = fourier_fraction(jnp.asarray(norms, jnp.float32), jnp.asarray(freqs))
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(jax.jit(fourier_fraction)(norms, freqs)) == pytest.approx(expected, rel=1e-5)
    with jax.enable_x64(True):
        got64 = fourier_fraction(jnp.asarray(norms), freqs)
        assert got64.dtype == jnp.float64
        assert float(got64) == pytest.approx(expected, rel=1e-12)
    # every index, constant included: 1; no norm at all: 0 (not NaN)
    assert float(fourier_fraction(norms, np.arange(12))) == pytest.approx(1.0, rel=1e-6)
    assert float(fourier_fraction(np.zeros(6), np.array([1, 2]))) == 0.0
    # leading axes
    batch = np.abs(rng.standard_normal((3, 12)))
    got_b = np.asarray(fourier_fraction(batch, freqs))
    exp_b = (batch[:, freqs] ** 2).sum(1) / (batch**2).sum(1)
    np.testing.assert_allclose(got_b, exp_b, rtol=1e-5)


# ---------------------------------------------------------------- gini


def test_gini_special_values():
    for n in (1, 2, 5, 64):
        assert float(gini(jnp.full((n,), 3.7))) == pytest.approx(0.0, abs=1e-6)
        one_hot = np.zeros(n)
        one_hot[n // 2] = 2.5
        assert float(gini(one_hot)) == pytest.approx((n - 1) / n, abs=1e-6)
        zero = gini(jnp.zeros(n))
        assert np.isfinite(float(zero)) and float(zero) == 0.0


def test_gini_matches_numpy_and_is_permutation_invariant():
    rng = np.random.default_rng(10)
    for n in (3, 10, 57):
        x = rng.exponential(size=n)
        expected = ref_gini(x)
        assert 0.05 < expected < 1
        assert float(gini(jnp.asarray(x, jnp.float32))) == pytest.approx(expected, rel=1e-5)
        perm = rng.permutation(n)
        assert float(gini(x[perm])) == pytest.approx(expected, rel=1e-5)
        with jax.enable_x64(True):
            g64 = gini(jnp.asarray(x))
            assert g64.dtype == jnp.float64
            assert float(g64) == pytest.approx(expected, rel=1e-12)
    # last axis, batched, and under jit
    X = rng.exponential(size=(4, 9))
    np.testing.assert_allclose(
        np.asarray(jax.jit(gini)(X)), [ref_gini(row) for row in X], rtol=1e-5
    )
    # exhaustive small permutation check on a vector with ties
    x = np.array([0.0, 1.0, 1.0, 4.0])
    values = {round(float(gini(np.array(q))), 6) for q in itertools.permutations(x)}
    assert values == {round(ref_gini(x), 6)}
