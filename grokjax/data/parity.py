"""Sparse parity (Barak et al. 2022), the non-modular task of Prieto et al. (2025).

Each sample is a vector of ``k + n`` random bits; its label is the parity (sum mod 2)
of the first ``k`` bits, and the other ``n`` bits are noise. Prieto et al. use
``k = 3``, ``n = 40``, 2000 samples and a 50% training split.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from grokjax.data.split import SplitSizes, random_split

__all__ = ["SparseParity", "sparse_parity"]


@dataclass(frozen=True)
class SparseParity(SplitSizes):
    """Distinct random bit vectors, their parity labels and a train/validation split.

    Build one with :func:`sparse_parity`. Arrays are read-only.

    Attributes
    ----------
    k, n : int
        Parity bits (the first ``k`` columns) and noise bits.
    bits_NB : np.ndarray
        ``(N, k + n)`` int8 in {0, 1}, every row distinct.
    labels_N : np.ndarray
        ``bits_NB[:, :k].sum(1) % 2`` (int32).
    train_idx, val_idx : np.ndarray
        Disjoint row indices whose union is every row.

    Examples
    --------
    >>> from grokjax.data import sparse_parity
    >>> ds = sparse_parity(k=3, n=5, num_samples=6, seed=0)
    >>> ds.bits_NB.shape, ds.num_train, ds.num_val
    ((6, 8), 3, 3)
    >>> bool((ds.labels_N == ds.bits_NB[:, :3].sum(1) % 2).all())
    True
    """

    k: int
    n: int
    bits_NB: np.ndarray
    labels_N: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in [
            ("bits_NB", np.int8),
            ("labels_N", np.int32),
            ("train_idx", np.int32),
            ("val_idx", np.int32),
        ]:
            array = np.array(getattr(self, name), dtype=dtype)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def num_classes(self) -> int:
        return 2

    def inputs(self, encoding: str = "bits") -> np.ndarray:
        """The model input: the bits as float32 ``(N, k + n)`` (encoding ``"bits"``)."""
        if encoding != "bits":
            raise ValueError(f"sparse parity has one encoding, 'bits'; got {encoding!r}.")
        return self.bits_NB.astype(np.float32)

    def vocab_size(self, encoding: str = "bits") -> int:
        """Input width ``k + n`` (there are no tokens)."""
        self.inputs(encoding)  # validates the encoding
        return self.k + self.n


def sparse_parity(
    k: int = 3,
    n: int = 40,
    num_samples: int = 2000,
    train_fraction: float = 0.5,
    seed: int = 0,
    *,
    sample_seed: int = 0,
) -> SparseParity:
    """``num_samples`` distinct random ``(k + n)``-bit vectors labelled by the parity of
    their first ``k`` bits, split into training and validation.

    Parameters
    ----------
    k, n : int
        Parity bits (≥ 1) and noise bits (≥ 0).
    num_samples : int
        Distinct samples, at most ``2 ** (k + n)``.
    train_fraction : float
        ``floor(train_fraction · N)`` rows train, the rest validate; in ``(0, 1)``.
    seed : int
        Seed of the split: ``np.random.default_rng(seed).permutation(N)``.
    sample_seed : int
        Seed of the samples: bits are drawn with ``np.random.default_rng(sample_seed)``,
        keeping the first occurrence of each distinct row, until there are enough.

    Raises
    ------
    ValueError
        For ``k < 1``, ``n < 0``, too many samples for ``k + n`` bits, a fraction
        outside ``(0, 1)`` or a split with an empty side.

    Examples
    --------
    >>> from grokjax.data import sparse_parity
    >>> ds = sparse_parity()  # Prieto et al.: k 3, n 40, 2000 samples, 50% train
    >>> ds.bits_NB.shape, ds.num_train
    ((2000, 43), 1000)
    """
    k, n, num_samples = operator.index(k), operator.index(n), operator.index(num_samples)
    if k < 1:
        raise ValueError(f"k (parity bits) must be at least 1, got k={k}")
    if n < 0:
        raise ValueError(f"n (noise bits) must be at least 0, got n={n}")
    width = k + n
    if not 2 <= num_samples <= 2**width:
        raise ValueError(
            f"num_samples={num_samples} distinct samples need 2 <= num_samples <= 2**(k + n) "
            f"= {2**width}; lower num_samples or add bits."
        )
    train_idx, val_idx = random_split(num_samples, train_fraction, seed)  # validates
    rng = np.random.default_rng(sample_seed)
    bits = np.zeros((0, width), np.int8)
    while bits.shape[0] < num_samples:
        drawn = rng.integers(0, 2, size=(num_samples, width), dtype=np.int8)
        both = np.concatenate([bits, drawn])
        _, first = np.unique(both, axis=0, return_index=True)
        bits = both[np.sort(first)][:num_samples]
    labels = bits[:, :k].sum(axis=1) % 2
    return SparseParity(k, n, bits, labels, train_idx, val_idx)
