"""Binary-operation tables mod p against pure-Python references (grokjax.data.modular)."""

from __future__ import annotations

import numpy as np
import pytest

from grokjax.data import OPERATIONS, ModularArithmetic, modular_arithmetic


def inv(y: int, p: int) -> int:
    return pow(y, -1, p)


# Independent reference: Python ints, no reduction tricks, one formula per op.
REFERENCE = {
    "x+y": lambda x, y, p: (x + y) % p,
    "x-y": lambda x, y, p: (x - y) % p,
    "x*y": lambda x, y, p: (x * y) % p,
    "x/y": lambda x, y, p: (x * inv(y, p)) % p,
    "x/y if y odd else x-y": lambda x, y, p: (x * inv(y, p)) % p if y % 2 else (x - y) % p,
    "x^2+y^2": lambda x, y, p: (x**2 + y**2) % p,
    "x^2+xy+y^2": lambda x, y, p: (x**2 + x * y + y**2) % p,
    "x^2+xy+y^2+x": lambda x, y, p: (x**2 + x * y + y**2 + x) % p,
    "x^3+xy": lambda x, y, p: (x**3 + x * y) % p,
    "x^3+xy^2+y": lambda x, y, p: (x**3 + x * y**2 + y) % p,
}
DIVIDING = {"x/y", "x/y if y odd else x-y"}


def reference_table(op: str, p: int, y_min: int = 0) -> list[tuple[int, int, int]]:
    """``[(x, y, label)]`` in row-major order, built with loops over Python ints."""
    y_lo = max(y_min, 1) if op == "x/y" else y_min
    return [(x, y, REFERENCE[op](x, y, p)) for x in range(p) for y in range(y_lo, p)]


def test_operations_are_exactly_power_et_al():
    assert list(OPERATIONS) == list(REFERENCE)


@pytest.mark.parametrize("p", [7, 11])
@pytest.mark.parametrize("op", list(REFERENCE))
def test_labels_match_python_reference(op, p):
    ds = modular_arithmetic(op, p=p)
    table = reference_table(op, p)
    assert len(ds.labels_N) == len(table)
    np.testing.assert_array_equal(ds.x_N, [t[0] for t in table])
    np.testing.assert_array_equal(ds.y_N, [t[1] for t in table])
    np.testing.assert_array_equal(ds.labels_N, [t[2] for t in table], err_msg=op)
    for name in ("x_N", "y_N", "labels_N", "train_idx", "val_idx"):
        assert getattr(ds, name).dtype == np.int32, name


@pytest.mark.parametrize("op", list(REFERENCE))
def test_operations_called_directly(op):
    p = 11
    x = np.repeat(np.arange(p), p)
    y = np.tile(np.arange(p), p)
    keep = y != 0 if op == "x/y" else np.ones_like(y, dtype=bool)
    x, y = x[keep], y[keep]
    expected = [REFERENCE[op](int(a), int(b), p) for a, b in zip(x, y, strict=True)]
    np.testing.assert_array_equal(OPERATIONS[op](x, y, p), expected)


def test_division_inverts_multiplication():
    p = 97
    ds = modular_arithmetic("x/y", p=p)
    assert ds.y_N.min() == 1
    x = ds.x_N.astype(np.int64)
    y = ds.y_N.astype(np.int64)
    np.testing.assert_array_equal(ds.labels_N.astype(np.int64) * y % p, x)


def test_division_by_zero_raises_when_called_directly():
    with pytest.raises(ValueError, match="y = 0"):
        OPERATIONS["x/y"](np.array([1, 2]), np.array([1, 0]), 7)


def test_mixed_op_keeps_y_zero_rows():
    p = 7
    ds = modular_arithmetic("x/y if y odd else x-y", p=p)
    assert len(ds.labels_N) == p * p
    zero = ds.y_N == 0
    np.testing.assert_array_equal(ds.labels_N[zero], ds.x_N[zero])  # x - 0


def test_table_sizes():
    assert len(modular_arithmetic("x*y", p=97).labels_N) == 9409
    assert len(modular_arithmetic("x*y", p=97, y_min=1).labels_N) == 9312
    assert len(modular_arithmetic("x/y", p=97).labels_N) == 9312
    assert len(modular_arithmetic("x/y", p=97, y_min=1).labels_N) == 9312


def test_y_min_one_is_the_grokfast_table():
    """x ∈ [0, p), y ∈ [1, p) in row-major order: torch.cartesian_prod(arange(p), arange(1, p))."""
    p = 97
    ds = modular_arithmetic("x*y", p=p, y_min=1)
    pairs = [(x, y) for x in range(p) for y in range(1, p)]
    np.testing.assert_array_equal(np.stack([ds.x_N, ds.y_N], axis=1), pairs)
    np.testing.assert_array_equal(ds.labels_N, [x * y % p for x, y in pairs])


@pytest.mark.parametrize("frac", [0.5, 0.3, 0.77, 0.01])
def test_split_partitions_the_table(frac):
    ds = modular_arithmetic("x+y", p=23, train_fraction=frac, seed=3)
    n = len(ds.labels_N)
    n_train = int(frac * n)
    assert ds.num_train == len(ds.train_idx) == n_train
    assert ds.num_val == len(ds.val_idx) == n - n_train
    assert not set(ds.train_idx.tolist()) & set(ds.val_idx.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([ds.train_idx, ds.val_idx])), np.arange(n))


def test_split_half_is_n_over_2():
    ds = modular_arithmetic("x*y", p=97, train_fraction=0.5, y_min=1)
    assert ds.num_train == 9312 // 2 == ds.num_val
    ds = modular_arithmetic("x+y", p=7, train_fraction=0.5)  # N = 49 is odd
    assert (ds.num_train, ds.num_val) == (24, 25)


def test_split_follows_default_rng_permutation():
    ds = modular_arithmetic("x-y", p=13, train_fraction=0.4, seed=11)
    n = 13 * 13
    perm = np.random.default_rng(11).permutation(n)
    np.testing.assert_array_equal(ds.train_idx, perm[: int(0.4 * n)])
    np.testing.assert_array_equal(ds.val_idx, perm[int(0.4 * n) :])


def test_deterministic_and_seed_dependent():
    a = modular_arithmetic("x^2+y^2", p=31, seed=5)
    b = modular_arithmetic("x^2+y^2", p=31, seed=5)
    c = modular_arithmetic("x^2+y^2", p=31, seed=6)
    for name in ("x_N", "y_N", "labels_N", "train_idx", "val_idx"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.labels_N, c.labels_N)
    assert not np.array_equal(a.train_idx, c.train_idx)
    assert set(a.train_idx.tolist()) != set(c.train_idx.tolist())


def test_tokens():
    p = 13
    ds = modular_arithmetic("x*y", p=p, y_min=1)
    tokens_N4 = ds.tokens()
    assert tokens_N4.shape == (len(ds.labels_N), 4)
    assert tokens_N4.dtype == np.int32
    for i in [0, 1, 12, 50, len(ds.labels_N) - 1]:
        assert tokens_N4[i].tolist() == [int(ds.x_N[i]), p + 1, int(ds.y_N[i]), p]
    assert tokens_N4[0].tolist() == [0, p + 1, 1, p]  # first row of the y_min=1 table
    assert tokens_N4.min() >= 0
    assert tokens_N4.max() < ds.vocab_size("tokens") == p + 2
    np.testing.assert_array_equal(ds.inputs("tokens"), tokens_N4)


def test_tokens_no_op():
    p = 11
    ds = modular_arithmetic("x-y", p=p)
    tokens_N3 = ds.tokens_no_op()
    assert tokens_N3.shape == (p * p, 3)
    assert tokens_N3.dtype == np.int32
    np.testing.assert_array_equal(tokens_N3[:, 0], ds.x_N)
    np.testing.assert_array_equal(tokens_N3[:, 1], ds.y_N)
    assert (tokens_N3[:, 2] == p).all()
    assert tokens_N3.max() < ds.vocab_size("tokens_no_op") == p + 1
    np.testing.assert_array_equal(ds.inputs("tokens_no_op"), tokens_N3)


def test_onehot():
    p = 11
    ds = modular_arithmetic("x/y", p=p)
    onehot_N2p = ds.onehot()
    assert onehot_N2p.shape == (len(ds.labels_N), 2 * p)
    assert onehot_N2p.dtype == np.float32
    assert set(np.unique(onehot_N2p).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(onehot_N2p.sum(axis=1), 2.0)
    for i, (x, y) in enumerate(zip(ds.x_N, ds.y_N, strict=True)):
        assert np.flatnonzero(onehot_N2p[i]).tolist() == [x, p + y]
    assert ds.vocab_size("onehot") == p
    np.testing.assert_array_equal(ds.inputs("onehot"), onehot_N2p)


def test_bad_encoding_raises():
    ds = modular_arithmetic("x+y", p=5)
    for call in (ds.inputs, ds.vocab_size):
        with pytest.raises(ValueError, match="'tokens', 'tokens_no_op', 'onehot'") as info:
            call("one_hot")
        assert "one_hot" in str(info.value)


def test_unknown_op_lists_allowed_ops():
    with pytest.raises(ValueError, match="x\\*\\*y") as info:
        modular_arithmetic("x**y", p=7)
    for name in OPERATIONS:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("op", sorted(DIVIDING))
def test_non_prime_p_with_division_raises(op):
    with pytest.raises(ValueError, match="p=15 is not prime") as info:
        modular_arithmetic(op, p=15)
    assert "p=13" in str(info.value) and "p=17" in str(info.value)  # suggests primes


def test_non_prime_p_without_division_works():
    ds = modular_arithmetic("x+y", p=15)
    assert len(ds.labels_N) == 225
    np.testing.assert_array_equal(ds.labels_N, [(x + y) % 15 for x in range(15) for y in range(15)])
    assert len(modular_arithmetic("x*y", p=2, train_fraction=0.5).labels_N) == 4


@pytest.mark.parametrize("p", [1, 0, -5])
def test_p_below_two_raises(p):
    with pytest.raises(ValueError, match="p must be at least 2"):
        modular_arithmetic("x+y", p=p)


@pytest.mark.parametrize("frac", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_bad_train_fraction_raises(frac):
    with pytest.raises(ValueError, match="train_fraction"):
        modular_arithmetic("x+y", p=7, train_fraction=frac)


@pytest.mark.parametrize("y_min", [-1, 7, 100])
def test_bad_y_min_raises(y_min):
    with pytest.raises(ValueError, match="y_min"):
        modular_arithmetic("x+y", p=7, y_min=y_min)


@pytest.mark.parametrize(("p", "frac"), [(2, 0.1), (3, 0.1), (7, 0.02)])
def test_empty_training_split_raises(p, frac):
    assert int(frac * p * p) == 0
    with pytest.raises(ValueError, match="training set empty"):
        modular_arithmetic("x+y", p=p, train_fraction=frac)


def test_smallest_nonempty_split_works():
    ds = modular_arithmetic("x+y", p=2, train_fraction=0.25)  # N = 4: one train row
    assert (ds.num_train, ds.num_val) == (1, 3)
    ds = modular_arithmetic("x+y", p=2, train_fraction=0.99)  # int(3.96) = 3: one val row
    assert (ds.num_train, ds.num_val) == (3, 1)


def test_large_p_matches_reference_on_a_subset():
    p = 1009
    op = "x^3+xy^2+y"
    ds = modular_arithmetic(op, p=p)
    assert len(ds.labels_N) == p * p
    assert ds.labels_N.min() >= 0 and ds.labels_N.max() < p
    rows = np.random.default_rng(0).choice(len(ds.labels_N), size=200, replace=False)
    for i in rows:
        x, y = int(ds.x_N[i]), int(ds.y_N[i])
        assert (x, y) == divmod(int(i), p)
        assert int(ds.labels_N[i]) == (x**3 + x * y**2 + y) % p


@pytest.mark.parametrize("p", [10007, 65537])  # 65537² > 2³¹: int32 products would overflow
def test_large_p_all_ops_without_overflow(p):
    x = np.array([p - 1, p - 2, 12345 % p, 1], dtype=np.int64)
    y = np.array([p - 1, p - 3, 9876, p - 2], dtype=np.int64)
    for op in REFERENCE:
        expected = [REFERENCE[op](int(a), int(b), p) for a, b in zip(x, y, strict=True)]
        np.testing.assert_array_equal(OPERATIONS[op](x, y, p), expected, err_msg=op)


def test_dataclass_is_frozen_and_read_only():
    ds = modular_arithmetic("x+y", p=5)
    assert isinstance(ds, ModularArithmetic)
    with pytest.raises(AttributeError):
        ds.p = 7  # type: ignore[misc]
    with pytest.raises(ValueError):
        ds.labels_N[0] = 3
