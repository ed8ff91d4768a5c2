"""The seeded train/validation split every data set here uses."""

from __future__ import annotations

import numpy as np

__all__ = ["SplitSizes", "random_split"]


class SplitSizes:
    """``num_train`` / ``num_val`` of a data set holding ``train_idx`` / ``val_idx``."""

    train_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def num_train(self) -> int:
        """Number of training rows."""
        return int(self.train_idx.shape[0])

    @property
    def num_val(self) -> int:
        """Number of validation rows."""
        return int(self.val_idx.shape[0])


def random_split(
    num_samples: int, train_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``perm[:n_train], perm[n_train:]`` with ``perm = default_rng(seed).permutation(N)``
    and ``n_train = floor(train_fraction · N)``; int32.

    >>> train, val = random_split(10, 0.7, seed=0)
    >>> len(train), len(val), sorted([*train, *val]) == list(range(10))
    (7, 3, True)
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(
            f"train_fraction must lie strictly between 0 and 1, got train_fraction={train_fraction}"
        )
    n_train = int(np.floor(train_fraction * num_samples))
    if not 0 < n_train < num_samples:
        raise ValueError(
            f"train_fraction={train_fraction} of {num_samples} samples leaves an empty split."
        )
    perm = np.random.default_rng(seed).permutation(num_samples)
    return perm[:n_train].astype(np.int32), perm[n_train:].astype(np.int32)
