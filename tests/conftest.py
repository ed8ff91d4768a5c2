"""Shared test helpers: random gradient pytrees and a compile counter; strict JAX settings.

The suite shares one persistent XLA compilation cache: a temporary directory removed
at exit, unless ``JAX_COMPILATION_CACHE_DIR`` names one already (then that is used and
kept); ``GROKJAX_TEST_COMPILE_CACHE=0`` turns it off. Many tests build the same small
training programs, and XLA's compile, not the training, dominates their time: a tiny
decoder run took 14.3 s on a cold cache and 1.5 s on a warm one (2-core CPU).
Compilation counts asserted by the tests are JAX's trace-cache sizes, which the
persistent cache does not change. The one subprocess (the 8-device sharding test)
inherits the cache through the ``JAX_*`` environment variables; its programs' keys
include their device assignment, so they do not collide with single-device entries.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

if os.environ.get("GROKJAX_TEST_COMPILE_CACHE", "1") != "0":
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        _cache_dir = tempfile.mkdtemp(prefix="grokjax-test-xla-cache-")
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )

# Implicit rank promotion (e.g. (n,) + (n, 1) -> (n, n)) is an error in the whole
# session, subprocesses included: broadcasts in the library must be spelled out.
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
jax.config.update("jax_numpy_rank_promotion", "raise")

# A modular-arithmetic run small enough to train in seconds (overrides of a preset).
TINY_MODULAR = [
    "data.p=11",
    "data.op=x+y",
    "data.y_min=0",
    "model.width=16",
    "model.heads=2",
    "model.depth=1",
    "batch_size=16",
    "stop_when_grokked=false",
]

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
