"""activation_entropy and target_entropy against independent float64 numpy references."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grokjax as gj

# --- numpy float64 references, written from the docstrings ---------------------------


def softmax_entropy_reference(h):
    """Per-sample entropy (nats) of softmax over the last axis, shape h.shape[:-1]."""
    h = np.asarray(h, np.float64)
    z = h - h.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -plogp.sum(axis=-1)


def histogram_entropy_reference(h, bins):
    """Per-sample entropy (nats) of the frequencies of ``bins`` equal-width bins over
    that sample's [min, max] (np.histogram: last bin closed; 0 for a constant sample)."""
    h = np.asarray(h, np.float64)
    flat = h.reshape(-1, h.shape[-1])
    out = np.empty(len(flat))
    for i, x in enumerate(flat):
        if x.max() == x.min():
            out[i] = 0.0
            continue
        counts, _ = np.histogram(x, bins=bins, range=(x.min(), x.max()))
        assert counts.sum() == x.size
        q = counts[counts > 0] / x.size
        out[i] = -(q * np.log(q)).sum()
    return out.reshape(h.shape[:-1])


def masked_mean(per_sample, where=None):
    per_sample = np.asarray(per_sample, np.float64)
    if where is None:
        return per_sample.mean()
    w = np.broadcast_to(np.asarray(where, np.float64), per_sample.shape)
    return (per_sample * w).sum() / max(w.sum(), 1.0)


def target_entropy_reference(labels, num_classes, where=None):
    """Entropy in bits of the (selected) label frequencies."""
    labels = np.asarray(labels).reshape(-1)
    w = np.ones(labels.shape) if where is None else np.asarray(where, np.float64).reshape(-1)
    counts = np.bincount(labels, weights=w, minlength=num_classes)
    q = counts[counts > 0] / counts.sum()
    return float(-(q * np.log2(q)).sum())


# --- helpers ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("method", "bins"))
def entropies(h, where=None, *, method="softmax", bins=32):
    """(raw, normalised) activation entropy in one compiled call."""
    kw = dict(method=method, bins=bins, where=where)
    return gj.activation_entropy(h, **kw), gj.activation_entropy(h, normalize=True, **kw)


@functools.partial(jax.jit, static_argnames=("method", "bins"))
def per_sample_entropy(h, *, method="softmax", bins=32):
    """activation_entropy of each row of a (B, W) array on its own (a batch of one)."""
    return jax.vmap(lambda x: gj.activation_entropy(x[None], method=method, bins=bins))(h)


# --- activation_entropy: softmax -----------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 64), (3, 5, 10), (7, 2)])
def test_softmax_entropy_matches_reference(rng, shape):
    """Mean over the batch of −Σ p ln p with p = softmax(h), any number of batch axes,
    for per-sample scales from 0.1 to 10; normalize=True divides by ln W."""
    scale = np.exp(rng.uniform(np.log(0.1), np.log(10.0), (*shape[:-1], 1)))
    h = (scale * rng.standard_normal(shape)).astype(np.float32)
    got, normed = entropies(jnp.asarray(h))
    assert got.dtype == jnp.float32 and got.shape == ()
    want = masked_mean(softmax_entropy_reference(h))
    np.testing.assert_allclose(float(got), want, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(float(normed), want / math.log(shape[-1]), rtol=2e-6, atol=2e-6)
    assert 0.0 <= float(normed) <= 1.0 + 1e-6


@pytest.mark.parametrize("width", [2, 7, 256])
def test_softmax_entropy_uniform_and_dominated(rng, width):
    """Equal activations give ln W (normalised: 1); one dominant unit gives ≈ 0."""
    h = np.zeros((6, width), np.float32)
    h[:3] = np.array([[0.0], [-3.5], [100.0]])  # rows 0-2: equal activations
    h[3:] = rng.standard_normal((3, width))
    h[3:5, rng.integers(0, width)] = 200.0  # rows 3-4: one overwhelming unit
    h[5] = 0.0
    h[5, 0] = 12.0  # row 5: dominant, not overwhelming
    got = np.asarray(per_sample_entropy(jnp.asarray(h)), np.float64)
    np.testing.assert_allclose(got[:3], math.log(width), rtol=1e-6)
    assert np.all((got[3:5] >= 0.0) & (got[3:5] < 1e-6))
    assert got[5] < 0.01 * math.log(width) and got[5] > 0.0
    np.testing.assert_allclose(got, softmax_entropy_reference(h), rtol=1e-5, atol=2e-6)
    _, normed = entropies(jnp.asarray(h[:3]))
    np.testing.assert_allclose(float(normed), 1.0, rtol=1e-6)


def test_softmax_entropy_is_shift_invariant_per_sample(rng):
    """softmax ignores a per-sample constant, so the entropy does too."""
    h = rng.standard_normal((2, 8, 32)).astype(np.float32)
    h[1] = h[0] + (50 * rng.standard_normal((8, 1))).astype(np.float32)
    got = per_sample_entropy(jnp.asarray(h.reshape(16, 32)))
    np.testing.assert_allclose(np.asarray(got[:8]), np.asarray(got[8:]), rtol=1e-5)


# --- activation_entropy: histogram ---------------------------------------------------


@pytest.mark.parametrize(
    "shape,bins", [((16, 64), 2), ((16, 64), 7), ((16, 64), 32), ((4, 3, 50), 100), ((6, 2), 3)]
)
def test_histogram_entropy_matches_reference(rng, shape, bins):
    """Per-sample histogram over [min, max] (last bin closed), entropy of frequencies;
    normalize=True divides by ln bins."""
    h = rng.standard_normal(shape).astype(np.float32)
    h[0] = np.abs(h[0]) ** 3  # a skewed sample as well
    got, normed = entropies(jnp.asarray(h), method="histogram", bins=bins)
    want = masked_mean(histogram_entropy_reference(h, bins))
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(normed), want / math.log(bins), rtol=1e-5, atol=1e-6)
    assert 0.0 <= float(normed) <= 1.0 + 1e-6


def test_histogram_entropy_special_cases():
    """Constant samples give 0; the max lands in the (closed) last bin; one value per bin
    gives ln bins."""
    bins = 10
    centres = (np.arange(bins) + 0.5) / bins
    h = np.zeros((4, 12), np.float32)
    h[0] = 2.5  # constant: 0
    h[1] = [0.0, 1.0] * 6  # min in bin 0, max in the last bin: ln 2
    h[2] = np.concatenate([[0.0], centres, [1.0]])  # 2, 1, …, 1, 2 per bin
    h[3, :bins] = centres * 7.0 - 3.0  # one value per bin over [-3, 4] …
    h[3, 0], h[3, bins - 1] = -3.0, 4.0
    h[3, bins:] = h[3, [2, 7]]  # … plus two more: counts 1,1,2,1,1,1,1,2,1,1
    got = np.asarray(per_sample_entropy(jnp.asarray(h), method="histogram", bins=bins))
    want = histogram_entropy_reference(h, bins)
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1], math.log(2), rtol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    q = np.array([1, 1, 2, 1, 1, 1, 1, 2, 1, 1]) / 12
    np.testing.assert_allclose(got[3], -(q * np.log(q)).sum(), rtol=1e-6)
    uniform = jnp.asarray(h[3:, :bins])
    _, normed = entropies(uniform, method="histogram", bins=bins)
    np.testing.assert_allclose(float(normed), 1.0, rtol=1e-6)


def test_histogram_entropy_integer_activations_on_bin_edges():
    """Integers 0..25 with 25 bins: edges are exactly the integers, as np.histogram bins them."""
    x = np.arange(26, dtype=np.float32)[None]
    got, _ = entropies(jnp.asarray(x), method="histogram", bins=25)
    np.testing.assert_allclose(float(got), histogram_entropy_reference(x, 25)[0], rtol=1e-6)


# --- where, dtypes, jit/vmap, errors -------------------------------------------------


@pytest.mark.parametrize("method", ["softmax", "histogram"])
def test_activation_entropy_where_selects_samples(rng, method):
    """``where`` averages over the selected samples only (also broadcast from a prefix)."""
    h = rng.standard_normal((4, 6, 20)).astype(np.float32)
    h[1] = np.abs(h[1]) ** 3 * 5.0  # make some rows different from the rest
    if method == "softmax":
        per = softmax_entropy_reference(h)
    else:
        per = histogram_entropy_reference(h, 16)
    where = rng.random((4, 6)) < 0.5
    where[0, 0] = True
    got, _ = entropies(jnp.asarray(h), jnp.asarray(where), method=method, bins=16)
    np.testing.assert_allclose(float(got), masked_mean(per, where), rtol=1e-5, atol=1e-6)
    assert abs(masked_mean(per, where) - masked_mean(per)) > 1e-3  # the mask matters here
    # a (4, 1) mask broadcasts over the second batch axis
    rows = np.array([[False], [True], [False], [True]])
    got, _ = entropies(jnp.asarray(h), jnp.asarray(rows), method=method, bins=16)
    np.testing.assert_allclose(float(got), per[[1, 3]].mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["softmax", "histogram"])
def test_activation_entropy_dtypes(rng, method):
    """bfloat16 is computed in float32 (on its rounded values); float64 stays float64."""
    h = rng.standard_normal((8, 40))
    h16 = jnp.asarray(h, jnp.bfloat16)
    if method == "softmax":
        ref = softmax_entropy_reference
    else:
        ref = functools.partial(histogram_entropy_reference, bins=12)
    got, _ = entropies(h16, method=method, bins=12)
    assert got.dtype == jnp.float32
    want = masked_mean(ref(np.asarray(h16, np.float64)))
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
    with jax.enable_x64(True):
        got, _ = entropies(jnp.asarray(h, jnp.float64), method=method, bins=12)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), masked_mean(ref(h)), rtol=1e-12)


@pytest.mark.parametrize("method", ["softmax", "histogram"])
def test_activation_entropy_jits_and_vmaps(rng, method):
    """vmap over a stack of batches (with masks) gives one value per batch, as numpy."""
    hs = rng.standard_normal((5, 8, 30)).astype(np.float32)
    where = rng.random((5, 8)) < 0.7
    fn = lambda h, w: gj.activation_entropy(h, method=method, bins=10, where=w)  # noqa: E731
    got = jax.jit(jax.vmap(fn))(jnp.asarray(hs), jnp.asarray(where))
    if method == "softmax":
        ref = softmax_entropy_reference
    else:
        ref = functools.partial(histogram_entropy_reference, bins=10)
    want = [masked_mean(ref(hs[i]), where[i]) for i in range(5)]
    assert got.shape == (5,)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_activation_entropy_rejects_bad_arguments():
    """Unknown method, width < 2, bins < 2 are errors, not silent numbers."""
    with pytest.raises(ValueError, match="method"):
        gj.activation_entropy(jnp.zeros((2, 4)), method="kde")
    with pytest.raises(ValueError, match="width"):
        gj.activation_entropy(jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match="bins"):
        gj.activation_entropy(jnp.zeros((3, 4)), method="histogram", bins=1)


# --- target_entropy ------------------------------------------------------------------

target_entropy = jax.jit(gj.target_entropy, static_argnums=1)


@pytest.mark.parametrize("num_classes,shape", [(2, (8, 13)), (5, (64,)), (97, (8, 13)), (10, (1,))])
def test_target_entropy_matches_reference(rng, num_classes, shape):
    """Entropy in bits of the batch's label frequencies, also for (B, T) label arrays."""
    labels = rng.integers(0, num_classes, shape)
    got = target_entropy(jnp.asarray(labels, jnp.int32), num_classes)
    assert got.dtype == jnp.float32 and got.shape == ()
    want = target_entropy_reference(labels, num_classes)
    np.testing.assert_allclose(float(got), want, rtol=1e-6, atol=1e-6)
    assert -1e-6 <= float(got) <= math.log2(num_classes) + 1e-6


@pytest.mark.parametrize("num_classes", [2, 5, 113])
def test_target_entropy_uniform_and_single_class(rng, num_classes):
    """Equal class counts give log2 K; a single class (of any K) gives 0; skew lowers it."""
    labels = rng.permutation(np.tile(np.arange(num_classes), 4))
    got = float(target_entropy(jnp.asarray(labels), num_classes))
    np.testing.assert_allclose(got, math.log2(num_classes), rtol=1e-6)
    single = np.full(labels.shape, num_classes - 1)
    assert float(target_entropy(jnp.asarray(single), num_classes)) == 0.0
    skewed = labels.copy()
    skewed[labels == 1] = 0  # class 0 twice as frequent, class 1 gone
    got_skewed = float(target_entropy(jnp.asarray(skewed), num_classes))
    np.testing.assert_allclose(
        got_skewed, target_entropy_reference(skewed, num_classes), rtol=1e-6, atol=1e-7
    )
    assert got_skewed < got - 0.01


def test_target_entropy_where_and_jit_vmap(rng):
    """``where`` counts only the selected labels; jit/vmap over batches match numpy."""
    labels = rng.integers(0, 6, (4, 50))
    labels[:, :10] = 0  # padding is all class 0: masking it changes the answer
    where = np.ones((4, 50), bool)
    where[:, :10] = False
    where[:, 10:] = rng.random((4, 40)) < 0.8
    fn = jax.jit(jax.vmap(lambda y, w: gj.target_entropy(y, 6, where=w)))
    got = np.asarray(fn(jnp.asarray(labels), jnp.asarray(where)))
    want = [target_entropy_reference(labels[i], 6, where[i]) for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    unmasked = [target_entropy_reference(labels[i], 6) for i in range(4)]
    assert np.all(np.abs(np.asarray(want) - unmasked) > 1e-2)
    # a mask selecting one class only gives 0
    one = labels[0] == 3
    assert one.sum() > 0
    got = target_entropy(jnp.asarray(labels[0]), 6, where=jnp.asarray(one))
    assert float(got) == 0.0
