"""chex checks on public entry points: a wrong argument is an AssertionError naming it,
also under ``jit`` (shapes and dtypes are static)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.analysis import excluded_logits, fourier_fraction, restricted_logits


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_fourier_fraction_names_a_bad_norms_or_freqs(wrap):
    norms = jnp.array([0.0, 3.0, 0.0, 4.0])
    with pytest.raises(AssertionError, match="freqs must be a 1-D"):
        wrap(fourier_fraction)(norms, jnp.array([[3]]))  # was: a result with an extra axis
    with pytest.raises(AssertionError, match="freqs must be integer"):
        wrap(fourier_fraction)(norms, jnp.array([3.0]))
    with pytest.raises(AssertionError, match="norms must be"):
        wrap(fourier_fraction)(jnp.float32(1.0), jnp.array([0]))


@pytest.mark.parametrize("fn", [restricted_logits, excluded_logits])
def test_restricted_and_excluded_logits_refuse_float_frequencies(fn):
    """A float frequency was cast to int32 silently (1.7 -> 1)."""
    L = jnp.asarray(np.random.default_rng(0).standard_normal((5, 5, 2)), jnp.float32)
    with pytest.raises(AssertionError, match="freqs must be integer"):
        fn(L, jnp.array([1.7]))
    with pytest.raises(AssertionError, match="freqs must be integer"):
        jax.jit(fn)(L, jnp.array([1.0]))
    assert fn(L, np.array([1])).shape == (5, 5, 2)  # numpy and Python ints stay fine
    assert fn(L, [2]).shape == (5, 5, 2)
