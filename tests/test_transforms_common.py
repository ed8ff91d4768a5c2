"""Conformance of every grokjax gradient transformation and wrapper (cf. optax's
``contrib/_common_test.py``): hyperparameter injection without recompiling, dtypes,
``vmap`` over members, ``optax.MultiSteps``, ``lax.cond`` and ``jit``.

Each row of ``ROWS`` names a factory, small keyword arguments, and every float
hyperparameter that :func:`optax.inject_hyperparams` injects, with a second value that
must change the update. Parameters and gradients are one small pytree (a matrix, a
vector, a scalar); every check runs a few steps from fresh random trees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TraceCounter, assert_trees_close, random_tree

import grokjax as gj

SHAPES = {"w": (5, 3), "b": (3,), "s": ()}
STEPS = 3
MEMBERS = 3


def _ema_adam_in(
    learning_rate: float, alpha: float, lamb: float, *, dtype: Any
) -> optax.GradientTransformation:
    """Grokfast-EMA then Adam, computed and stored in ``dtype`` (the wrapper's row)."""
    inner = optax.chain(gj.grokfast_ema(alpha=alpha, lamb=lamb), optax.adam(learning_rate))
    return gj.with_state_dtype(inner, dtype)


@dataclasses.dataclass(frozen=True)
class Row:
    """One transformation of the table.

    Attributes:
        name: the test id.
        factory: builds the transformation from ``kwargs``.
        kwargs: small, fast settings (events of ``surge_collapse`` within ``STEPS``).
        float_hps: every float hyperparameter ``inject_hyperparams`` injects, mapped to
            a second value that changes the second update.
        static_args: arguments ``inject_hyperparams`` must leave static.
        state_dtype: the dtype of the state's float leaves when a wrapper fixes it.
        x64: the row needs ``jax.enable_x64`` (float64 state).
        api: the public grokjax function the row tests (default: the factory's name).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    kwargs: dict[str, Any]
    float_hps: dict[str, float]
    static_args: tuple[str, ...] = ()
    state_dtype: Any = None
    x64: bool = False
    api: str = ""

    def make(self) -> optax.GradientTransformation:
        return self.factory(**self.kwargs)

    def make_injected(self) -> optax.GradientTransformation:
        return optax.inject_hyperparams(self.factory, static_args=self.static_args)(**self.kwargs)

    def precision(self) -> contextlib.AbstractContextManager:
        return jax.enable_x64(True) if self.x64 else contextlib.nullcontext()


ROWS = [
    Row("grokfast_ema", gj.grokfast_ema, {"alpha": 0.9, "lamb": 2.0}, {"alpha": 0.5, "lamb": 0.5}),
    Row(
        "grokfast_ma",
        gj.grokfast_ma,
        {"window_size": 2, "lamb": 5.0},
        {"lamb": 1.0},
        static_args=("window_size",),
    ),
    Row("orthograd", gj.orthograd, {"eps": 1e-30}, {"eps": 1.0}),
    Row(
        "ortho_adamw",
        gj.ortho_adamw,
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.99, "eps": 1e-8, "weight_decay": 0.1},
        {
            "learning_rate": 0.1,
            "b1": 0.5,
            "b2": 0.5,
            "eps": 1.0,
            "eps_root": 1.0,
            "weight_decay": 1.0,
            "ortho_eps": 1.0,
        },
    ),
    Row(
        "ortho_sgd",
        gj.ortho_sgd,
        {"learning_rate": 0.1, "momentum": 0.8},
        {"learning_rate": 0.5, "momentum": 0.2, "ortho_eps": 1.0},
    ),
    Row(
        "surge_collapse",
        gj.surge_collapse,
        # Update 2 collapses half of each leaf and surges the zeros; 1 and 3 do nothing.
        {
            "inner": optax.sgd(0.1),
            "collapse_every": 2,
            "surge_every": 2,
            "sparsity": 0.5,
            "recovery": 0.1,
            "key": 0,
        },
        {"sparsity": 0.2, "recovery": 1.0},
        static_args=("collapse_every", "surge_every", "key"),
    ),
    Row(
        "with_state_dtype_f32",
        _ema_adam_in,
        {"learning_rate": 0.01, "alpha": 0.9, "lamb": 2.0, "dtype": jnp.float32},
        {"learning_rate": 0.1, "alpha": 0.5, "lamb": 0.5},
        static_args=("dtype",),
        state_dtype=jnp.float32,
        api="with_state_dtype",
    ),
    Row(
        "with_state_dtype_f64",
        _ema_adam_in,
        {"learning_rate": 0.01, "alpha": 0.9, "lamb": 2.0, "dtype": jnp.float64},
        {"learning_rate": 0.1, "alpha": 0.5, "lamb": 0.5},
        static_args=("dtype",),
        state_dtype=jnp.float64,
        x64=True,
        api="with_state_dtype",
    ),
]

rows = pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])


# --- helpers ------------------------------------------------------------------------


@pytest.fixture
def row_precision(row: Row) -> Iterator[None]:
    """Runs the test inside the row's x64 setting."""
    with row.precision():
        yield


def _tree(rng: np.random.Generator, dtype: Any = jnp.float32, lead: tuple[int, ...] = ()):
    """A random ``SHAPES`` pytree in ``dtype``, with leading axes ``lead``."""
    shapes = {k: (*lead, *v) for k, v in SHAPES.items()}
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), random_tree(rng, shapes=shapes))


def _step(tree: Any, t: int) -> Any:
    return jax.tree.map(lambda x: x[t], tree)


def _run(tx: optax.GradientTransformation, params: Any, grads_seq: Any) -> tuple[Any, Any]:
    """``init`` and ``STEPS`` updates applied to the parameters: (updates per step, state)."""
    state = tx.init(params)
    outs = []
    for t in range(STEPS):
        u, state = tx.update(_step(grads_seq, t), state, params)
        params = optax.apply_updates(params, u)
        outs.append(u)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs), state


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _assert_close(actual: Any, expected: Any, rtol: float, atol: float) -> None:
    """Same tree structure; leaves equal in dtype and shape and (all)close in value."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True
    ):
        where = jax.tree_util.keystr(path)
        a, b = jnp.asarray(a), jnp.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(b, np.float64), rtol, atol, err_msg=where
        )


def _assert_same_types(actual: Any, expected: Any) -> None:
    """Same tree structure, leaf dtypes and shapes."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True
    ):
        a, b = jnp.asarray(a), jnp.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), jax.tree_util.keystr(path)


def _differs(a: Any, b: Any) -> bool:
    return any(
        not np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), 1e-4, 1e-6)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# --- the checks ---------------------------------------------------------------------


def test_the_table_covers_every_transform():
    """Every public factory of a GradientTransformation in ``grokjax.optim`` has a row."""
    public = {
        name
        for name in gj.optim.__all__
        if inspect.isfunction(fn := getattr(gj.optim, name))
        and "GradientTransformation" in str(inspect.signature(fn).return_annotation)
    }
    assert public == {row.api or row.factory.__name__ for row in ROWS}


@rows
def test_inject_hyperparams_matches_and_does_not_recompile(row: Row, row_precision, rng):
    """Injected == plain over ``STEPS``; a new injected value reuses the compiled
    update and changes its result."""
    params, grads = _tree(rng), _tree(rng, lead=(STEPS,))
    injected = row.make_injected()
    got_updates, got_state = jax.jit(lambda p, g: _run(injected, p, g))(params, grads)
    want_updates, want_state = jax.jit(lambda p, g: _run(row.make(), p, g))(params, grads)
    _assert_close(got_updates, want_updates, rtol=1e-5, atol=1e-7)
    _assert_close(got_state.inner_state, want_state, rtol=1e-5, atol=1e-7)

    state = injected.init(params)
    floats = {k for k, v in state.hyperparams.items() if _is_float(v)}
    assert floats == set(row.float_hps)

    traced = TraceCounter(injected.update)
    update = jax.jit(traced)
    _, state = update(_step(grads, 0), state, params)
    base, _ = update(_step(grads, 1), state, params)
    for name, value in row.float_hps.items():
        hps = {**state.hyperparams, name: jax.lax.full_like(state.hyperparams[name], value)}
        changed, _ = update(_step(grads, 1), state._replace(hyperparams=hps), params)
        assert traced.count == 1, f"{name}: the update was traced again"
        assert _differs(changed, base), f"{name}={value} left the update unchanged"


@rows
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_updates_and_state_keep_their_dtypes(row: Row, dtype: str, rng):
    """Updates in each gradient leaf's dtype; the state's leaves keep their dtypes."""
    with jax.enable_x64(row.x64 or dtype == "float64"):
        params, grads = _tree(rng, dtype), _tree(rng, dtype, lead=(STEPS,))
        tx = row.make()
        state_size = jnp.dtype(row.state_dtype or dtype).itemsize
        if jnp.dtype(dtype).itemsize > state_size:  # a wrapper must refuse to narrow
            with pytest.raises(ValueError, match="would narrow"):
                tx.init(params)
            return
        init = tx.init(params)
        updates, state = jax.jit(lambda p, g: _run(tx, p, g))(params, grads)
        for (path, u), g in zip(
            jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(grads), strict=True
        ):
            assert u.dtype == g.dtype, jax.tree_util.keystr(path)
        _assert_same_types(state, init)
        if row.state_dtype is not None:
            float_dtypes = {x.dtype for x in jax.tree.leaves(state) if _is_float(x)}
            assert float_dtypes == {jnp.dtype(row.state_dtype)}


@rows
def test_vmap_over_members_equals_each_member_alone(row: Row, row_precision, rng):
    params, grads = _tree(rng, lead=(MEMBERS,)), _tree(rng, lead=(MEMBERS, STEPS))
    tx = row.make()
    batched = jax.jit(jax.vmap(lambda p, g: _run(tx, p, g)))(params, grads)
    one = jax.jit(lambda p, g: _run(tx, p, g))
    for i in range(MEMBERS):
        _assert_close(_step(batched, i), one(_step(params, i), _step(grads, i)), 1e-5, 1e-6)


@rows
def test_multi_steps_accumulates_then_applies_the_mean(row: Row, row_precision, rng):
    """``MultiSteps(every_k_schedule=2)`` under jit: zeros, then ``tx`` on the mean."""
    tx = row.make()
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    params, g1, g2 = _tree(rng), _tree(rng), _tree(rng)
    traced = TraceCounter(multi.update)
    update = jax.jit(traced)
    first, state = update(g1, multi.init(params), params)
    second, _ = update(g2, state, params)
    assert traced.count == 1  # the state keeps its types across steps
    for leaf in jax.tree.leaves(first):
        np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
    assert any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(second))
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    want, _ = jax.jit(tx.update)(mean, tx.init(params), params)
    assert_trees_close(second, want, rtol=1e-5, atol=1e-6)


@rows
def test_state_passes_through_lax_cond(row: Row, row_precision, rng):
    """Both branches of a ``cond`` on the state give the same structure and dtypes."""
    tx = row.make()
    params, grads = _tree(rng), _tree(rng)
    state = tx.init(params)

    @jax.jit
    def maybe_update(pred: jax.Array, state: Any) -> Any:
        return jax.lax.cond(pred, lambda s: tx.update(grads, s, params)[1], lambda s: s, state)

    _assert_close(maybe_update(False, state), state, rtol=0, atol=0)
    _, want = jax.jit(tx.update)(grads, state, params)
    _assert_close(maybe_update(True, state), want, rtol=1e-6, atol=1e-7)
    _assert_same_types(want, state)


@rows
def test_jit_update_equals_eager_update(row: Row, row_precision, rng):
    tx = row.make()
    params, grads = _tree(rng), _tree(rng, lead=(STEPS,))
    update = jax.jit(tx.update)
    state_jit = state_eager = tx.init(params)
    for t in range(STEPS):
        g = _step(grads, t)
        u_jit, state_jit = update(g, state_jit, params)
        u_eager, state_eager = tx.update(g, state_eager, params)
        _assert_close(u_jit, u_eager, rtol=1e-5, atol=1e-6)
        _assert_close(state_jit, state_eager, rtol=1e-5, atol=1e-6)
