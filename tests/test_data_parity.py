"""Sparse parity: labels, distinct samples, the split, determinism and errors."""

from __future__ import annotations

import numpy as np
import pytest

from grokjax.data import sparse_parity


def test_labels_are_the_parity_of_the_first_k_bits():
    ds = sparse_parity(k=3, n=40, num_samples=2000, train_fraction=0.5, seed=0)
    assert ds.bits_NB.shape == (2000, 43)
    assert set(np.unique(ds.bits_NB)) <= {0, 1}
    for row, label in zip(ds.bits_NB, ds.labels_N, strict=True):
        ones = 0
        for bit in row[:3]:
            ones ^= int(bit)
        assert label == ones
    # the noise bits carry no label information on their own: both classes appear
    assert 0.4 < ds.labels_N.mean() < 0.6


def test_samples_are_distinct_and_split_exactly():
    ds = sparse_parity(k=2, n=3, num_samples=32, train_fraction=0.5, seed=1)  # all 2**5 rows
    assert len({tuple(r) for r in ds.bits_NB}) == 32
    assert ds.num_train == 16 and ds.num_val == 16
    assert sorted([*ds.train_idx, *ds.val_idx]) == list(range(32))


def test_seeds_split_and_sample_independently():
    a = sparse_parity(k=3, n=10, num_samples=100, seed=0)
    b = sparse_parity(k=3, n=10, num_samples=100, seed=1)
    c = sparse_parity(k=3, n=10, num_samples=100, seed=0, sample_seed=1)
    np.testing.assert_array_equal(a.bits_NB, b.bits_NB)  # same samples, other split
    assert not np.array_equal(a.train_idx, b.train_idx)
    assert not np.array_equal(a.bits_NB, c.bits_NB)
    again = sparse_parity(k=3, n=10, num_samples=100, seed=0)
    np.testing.assert_array_equal(a.bits_NB, again.bits_NB)
    np.testing.assert_array_equal(a.train_idx, again.train_idx)
    assert a.inputs().dtype == np.float32 and a.vocab_size() == 13


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k"),
        ({"n": -1}, "n"),
        ({"k": 2, "n": 2, "num_samples": 17}, "num_samples"),
        ({"train_fraction": 1.0}, "train_fraction"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparse_parity(**kwargs)
