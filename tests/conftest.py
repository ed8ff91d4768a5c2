"""Shared test helpers: random gradient pytrees and a compile counter."""

from __future__ import annotations

import numpy as np
import pytest

# Several leaves of different ranks, including a scalar and a nested dict.
TREE_SHAPES = {"dense": {"w": (5, 3), "b": (3,)}, "emb": (7, 4, 2), "scale": ()}


def random_tree(rng: np.random.Generator, scale: float = 1.0, shapes=TREE_SHAPES):
    """A pytree of float64 numpy arrays with the shapes of ``shapes``."""
    if isinstance(shapes, dict):
        return {k: random_tree(rng, scale, v) for k, v in shapes.items()}
    return scale * rng.standard_normal(shapes)


def tree_leaves_with_paths(tree, prefix=""):
    """Flatten a nested dict of arrays into ``[(path, array)]`` (numpy-side helper)."""
    if isinstance(tree, dict):
        out = []
        for k in sorted(tree):
            out += tree_leaves_with_paths(tree[k], f"{prefix}/{k}")
        return out
    return [(prefix, tree)]


def assert_trees_close(actual, expected, rtol, atol):
    """Leaf-by-leaf ``np.testing.assert_allclose`` with the leaf's path in the message."""
    act = dict(tree_leaves_with_paths(actual))
    exp = dict(tree_leaves_with_paths(expected))
    assert act.keys() == exp.keys()
    for path in exp:
        np.testing.assert_allclose(
            np.asarray(act[path], np.float64), exp[path], rtol=rtol, atol=atol, err_msg=path
        )


class TraceCounter:
    """Counts how often a function is traced (i.e. compiled by ``jax.jit``)."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
