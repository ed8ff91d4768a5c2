"""Binary-operation tables mod ``p``: the algorithmic data sets of grokking.

Power et al. (2022) train a small transformer on the table of a binary operation
``x ∘ y mod p`` for a prime ``p``, holding out a random fraction of the table; the
model first memorises the training pairs and only much later generalises ("groks").
This module builds those tables with numpy, in three input encodings:

* ``"tokens"``: ``[x, op, y, =]`` with ``= ↦ p`` and ``op ↦ p + 1`` (vocabulary
  ``p + 2``), the Grokfast reference's input (ironjr/grokfast ``main.py``);
* ``"tokens_no_op"``: ``[x, y, =]`` with ``= ↦ p`` (vocabulary ``p + 1``), Nanda et
  al.'s encoding;
* ``"onehot"``: ``onehot(x) ⊕ onehot(y)`` of width ``2p``, Prieto et al.'s MLP input.

The label is always ``x ∘ y mod p``, so every encoding has ``p`` output classes.
:data:`OPERATIONS` maps each of Power et al.'s operation names to ``f(x, y, p)``.

Examples
--------
>>> import numpy as np
>>> from grokjax.data import OPERATIONS
>>> list(OPERATIONS)[:4]
['x+y', 'x-y', 'x*y', 'x/y']
>>> OPERATIONS["x/y"](np.array([1, 6]), np.array([2, 3]), 7)  # 2·4 ≡ 1, 3·2 ≡ 6
array([4, 2])
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
from collections.abc import Callable, Mapping

import numpy as np

from grokjax.data.split import SplitSizes

__all__ = ["OPERATIONS", "ModularArithmetic", "modular_arithmetic"]

Operation = Callable[[np.ndarray, np.ndarray, int], np.ndarray]

ENCODINGS = ("tokens", "tokens_no_op", "onehot")

# Operations that divide by y: they need a prime p (so every y ≠ 0 is invertible).
_DIVIDING_OPS = frozenset({"x/y", "x/y if y odd else x-y"})


def _mod(a: np.ndarray, p: int) -> np.ndarray:
    """``a mod p`` as int64 in ``[0, p)``."""
    return np.mod(np.asarray(a, dtype=np.int64), p)


def _modpow(base: np.ndarray, exponent: int, p: int) -> np.ndarray:
    """Elementwise ``base ** exponent mod p`` by square-and-multiply (int64, no overflow)."""
    result = np.ones_like(base, dtype=np.int64) % p
    square = _mod(base, p)
    while exponent > 0:
        if exponent & 1:
            result = result * square % p
        square = square * square % p
        exponent >>= 1
    return result


def _inverse(y: np.ndarray, p: int) -> np.ndarray:
    """Elementwise ``y⁻¹ mod p`` for prime ``p`` (Fermat: ``y^(p-2)``); ``y ≢ 0`` required."""
    y = _mod(y, p)
    if np.any(y == 0):
        raise ValueError(f"division by y ≡ 0 (mod {p}) is undefined; drop the pairs with y = 0")
    inv = _modpow(y, p - 2, p)
    if np.any(inv * y % p != 1):
        raise ValueError(f"p={p} is not prime, so not every y ≠ 0 has an inverse mod p")
    return inv


def _add(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return (_mod(x, p) + _mod(y, p)) % p


def _sub(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return (_mod(x, p) - _mod(y, p)) % p


def _mul(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return _mod(x, p) * _mod(y, p) % p


def _div(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return _mod(x, p) * _inverse(y, p) % p


def _div_if_odd_else_sub(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    x, y = _mod(x, p), _mod(y, p)
    odd = y % 2 == 1
    # Odd y is never 0, so the inverse is defined there; even rows get a dummy divisor 1.
    quotient = x * _inverse(np.where(odd, y, 1), p) % p
    return np.where(odd, quotient, (x - y) % p)


def _sq_plus_sq(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    x, y = _mod(x, p), _mod(y, p)
    return (x * x % p + y * y % p) % p


def _sq_plus_xy_plus_sq(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    x, y = _mod(x, p), _mod(y, p)
    return (x * x % p + x * y % p + y * y % p) % p


def _sq_plus_xy_plus_sq_plus_x(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    return (_sq_plus_xy_plus_sq(x, y, p) + _mod(x, p)) % p


def _cube_plus_xy(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    x, y = _mod(x, p), _mod(y, p)
    x2 = x * x % p
    return (x2 * x % p + x * y % p) % p


def _cube_plus_xy2_plus_y(x: np.ndarray, y: np.ndarray, p: int) -> np.ndarray:
    x, y = _mod(x, p), _mod(y, p)
    x3 = x * x % p * x % p
    xy2 = x * (y * y % p) % p
    return (x3 + xy2 + y) % p


# Power et al. (2022)'s modular operations, ``name -> f(x, y, p)``: each ``f`` takes
# int64-compatible arrays and returns the int64 label in ``[0, p)``, reducing mod ``p``
# after every product (no overflow while ``p² < 2⁶³``). Division needs a prime ``p``
# and ``y ≠ 0`` and raises ``ValueError`` otherwise. Read-only.
OPERATIONS: Mapping[str, Operation] = types.MappingProxyType(
    {
        "x+y": _add,
        "x-y": _sub,
        "x*y": _mul,
        "x/y": _div,
        "x/y if y odd else x-y": _div_if_odd_else_sub,
        "x^2+y^2": _sq_plus_sq,
        "x^2+xy+y^2": _sq_plus_xy_plus_sq,
        "x^2+xy+y^2+x": _sq_plus_xy_plus_sq_plus_x,
        "x^3+xy": _cube_plus_xy,
        "x^3+xy^2+y": _cube_plus_xy2_plus_y,
    }
)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _neighbouring_primes(n: int) -> str:
    """``"p=13 or p=17"``: the primes just below and above ``n`` (for error messages)."""
    below = next((k for k in range(n - 1, 1, -1) if _is_prime(k)), None)
    above = next(k for k in range(n + 1, 2 * n + 2) if _is_prime(k))
    return f"p={below} or p={above}" if below is not None else f"p={above}"


@dataclasses.dataclass(frozen=True, eq=False)
class ModularArithmetic(SplitSizes):
    """The full table of ``x ∘ y mod p`` and its train/validation split.

    Build one with :func:`modular_arithmetic`. All arrays are read-only int32.

    Attributes
    ----------
    op : str
        The operation's name, a key of :data:`OPERATIONS`.
    p : int
        The modulus; labels lie in ``[0, p)``.
    x_N, y_N : np.ndarray
        Operands of the ``N`` table rows, in row-major ``(x, y)`` order.
    labels_N : np.ndarray
        ``x_N ∘ y_N mod p``.
    train_idx, val_idx : np.ndarray
        Disjoint row indices into the table whose union is every row.

    Examples
    --------
    >>> from grokjax.data import modular_arithmetic
    >>> ds = modular_arithmetic("x+y", p=3, train_fraction=0.5, seed=0)
    >>> ds.x_N, ds.y_N, ds.labels_N
    (array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=int32),
     array([0, 1, 2, 0, 1, 2, 0, 1, 2], dtype=int32),
     array([0, 1, 2, 1, 2, 0, 2, 0, 1], dtype=int32))
    >>> ds.num_train, ds.num_val
    (4, 5)
    >>> ds.tokens()[5]  # [x, op, y, =] with = ↦ p, op ↦ p + 1
    array([1, 4, 2, 3], dtype=int32)
    """

    op: str
    p: int
    x_N: np.ndarray
    y_N: np.ndarray
    labels_N: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x_N", "y_N", "labels_N", "train_idx", "val_idx"):
            array = np.array(getattr(self, name), dtype=np.int32)  # a private copy
            if array.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        n = self.x_N.shape[0]
        if self.y_N.shape[0] != n or self.labels_N.shape[0] != n:
            raise ValueError(
                f"x_N, y_N and labels_N must have the same length, got "
                f"{n}, {self.y_N.shape[0]} and {self.labels_N.shape[0]}"
            )

    def tokens(self) -> np.ndarray:
        """Rows ``[x, op, y, =]`` with ``= ↦ p`` and ``op ↦ p + 1``: shape ``(N, 4)``, int32.

        This is the Grokfast reference's model input (vocabulary ``p + 2``).

        Examples
        --------
        >>> from grokjax.data import modular_arithmetic
        >>> modular_arithmetic("x*y", p=5).tokens()[:2]
        array([[0, 6, 0, 5],
               [0, 6, 1, 5]], dtype=int32)
        """
        eq_N = np.full_like(self.x_N, self.p)
        op_N = np.full_like(self.x_N, self.p + 1)
        return np.stack([self.x_N, op_N, self.y_N, eq_N], axis=1)

    def tokens_no_op(self) -> np.ndarray:
        """Rows ``[x, y, =]`` with ``= ↦ p``: shape ``(N, 3)``, int32 (vocabulary ``p + 1``).

        Examples
        --------
        >>> from grokjax.data import modular_arithmetic
        >>> modular_arithmetic("x*y", p=5).tokens_no_op()[:2]
        array([[0, 0, 5],
               [0, 1, 5]], dtype=int32)
        """
        eq_N = np.full_like(self.x_N, self.p)
        return np.stack([self.x_N, self.y_N, eq_N], axis=1)

    def onehot(self) -> np.ndarray:
        """``onehot(x) ⊕ onehot(y)``: shape ``(N, 2p)``, float32 (Prieto et al.'s MLP input).

        Examples
        --------
        >>> from grokjax.data import modular_arithmetic
        >>> modular_arithmetic("x+y", p=3).onehot()[5]  # x = 1, y = 2
        array([0., 1., 0., 0., 0., 1.], dtype=float32)
        """
        n = self.x_N.shape[0]
        onehot_N2p = np.zeros((n, 2 * self.p), dtype=np.float32)
        rows_N = np.arange(n)
        onehot_N2p[rows_N, self.x_N] = 1.0
        onehot_N2p[rows_N, self.p + self.y_N] = 1.0
        return onehot_N2p

    def vocab_size(self, encoding: str) -> int:
        """Input vocabulary of ``encoding``: ``p + 2``, ``p + 1``, or ``p`` for ``"onehot"``.

        For ``"onehot"`` there are no tokens; the value returned is the number of
        classes ``p`` (the input width is ``2p``).

        Examples
        --------
        >>> from grokjax.data import modular_arithmetic
        >>> ds = modular_arithmetic("x*y", p=97)
        >>> [ds.vocab_size(e) for e in ("tokens", "tokens_no_op", "onehot")]
        [99, 98, 97]
        """
        _check_encoding(encoding)
        return {"tokens": self.p + 2, "tokens_no_op": self.p + 1, "onehot": self.p}[encoding]

    def inputs(self, encoding: str) -> np.ndarray:
        """The model input of every row in ``encoding`` (one of ``"tokens"``,
        ``"tokens_no_op"``, ``"onehot"``); index it with ``train_idx`` / ``val_idx``.

        Examples
        --------
        >>> from grokjax.data import modular_arithmetic
        >>> ds = modular_arithmetic("x*y", p=5)
        >>> ds.inputs("tokens")[ds.train_idx].shape
        (12, 4)
        """
        _check_encoding(encoding)
        if encoding == "tokens":
            return self.tokens()
        if encoding == "tokens_no_op":
            return self.tokens_no_op()
        return self.onehot()


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(
            f"unknown encoding {encoding!r}; allowed encodings: {', '.join(map(repr, ENCODINGS))}"
        )


def modular_arithmetic(
    op: str = "x*y",
    p: int = 97,
    train_fraction: float = 0.5,
    seed: int = 0,
    *,
    y_min: int = 0,
) -> ModularArithmetic:
    """The table of ``x ∘ y mod p`` over all pairs, randomly split into train and validation.

    Rows are all pairs ``0 ≤ x < p``, ``y_min ≤ y < p`` in row-major order (``x`` outer,
    ``y`` inner). For ``"x/y"`` the pairs with ``y = 0`` are always dropped; the mixed
    ``"x/y if y odd else x-y"`` keeps them (``0`` is even, so its ``x - y`` branch
    applies).

    Parameters
    ----------
    op : str
        A key of :data:`OPERATIONS`, e.g. ``"x*y"`` or ``"x/y"``.
    p : int
        The modulus, ≥ 2; must be prime for the dividing operations.
    train_fraction : float
        Fraction of rows in the training split, strictly inside ``(0, 1)``;
        ``floor(train_fraction · N)`` rows go to training, the rest to validation.
    seed : int
        Seed of the split: ``perm = np.random.default_rng(seed).permutation(N)``,
        ``train_idx = perm[:n_train]``, ``val_idx = perm[n_train:]``.
    y_min : int
        Smallest ``y``, in ``[0, p)``. ``y_min=1`` with ``op="x*y"`` reproduces the
        Grokfast reference table (``97 × 96 = 9312`` rows for ``p = 97``).

    Returns
    -------
    ModularArithmetic
        The table and its split; the same arguments give identical arrays.

    Raises
    ------
    ValueError
        For an unknown ``op``, ``p < 2``, a non-prime ``p`` with a dividing ``op``,
        ``train_fraction`` outside ``(0, 1)``, ``y_min`` outside ``[0, p)``, or a split
        that leaves the training or validation set empty.

    Examples
    --------
    >>> from grokjax.data import modular_arithmetic
    >>> ds = modular_arithmetic("x*y", p=97, y_min=1)  # the Grokfast reference table
    >>> len(ds.labels_N), ds.num_train, ds.num_val
    (9312, 4656, 4656)
    >>> ds.inputs("tokens").shape, ds.vocab_size("tokens")
    ((9312, 4), 99)
    """
    if op not in OPERATIONS:
        raise ValueError(f"unknown op {op!r}; allowed ops: {', '.join(map(repr, OPERATIONS))}")
    if isinstance(p, bool):
        raise TypeError(f"p must be an int, got {p!r}")
    p = operator.index(p)
    if p < 2:
        raise ValueError(f"p must be at least 2, got p={p}")
    if op in _DIVIDING_OPS and not _is_prime(p):
        raise ValueError(
            f"op={op!r} divides by y, which needs a prime modulus, but p={p} is not prime; "
            f"use a prime such as {_neighbouring_primes(p)}"
        )
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(
            f"train_fraction must lie strictly between 0 and 1, got train_fraction={train_fraction}"
        )
    y_min = operator.index(y_min)
    if not 0 <= y_min < p:
        raise ValueError(f"y_min must lie in [0, p) = [0, {p}), got y_min={y_min}")

    y_start = max(y_min, 1) if op == "x/y" else y_min
    ys = np.arange(y_start, p, dtype=np.int64)
    x_N = np.repeat(np.arange(p, dtype=np.int64), ys.shape[0])
    y_N = np.tile(ys, p)
    labels_N = OPERATIONS[op](x_N, y_N, p)

    n = x_N.shape[0]
    n_train = int(train_fraction * n)
    if n_train == 0 or n_train == n:
        raise ValueError(
            f"train_fraction={train_fraction} of N={n} rows leaves the "
            f"{'training' if n_train == 0 else 'validation'} set empty; "
            "move train_fraction away from 0 and 1 or use a larger p"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return ModularArithmetic(
        op=op,
        p=p,
        x_N=x_N,
        y_N=y_N,
        labels_N=labels_N,
        train_idx=perm[:n_train],
        val_idx=perm[n_train:],
    )
