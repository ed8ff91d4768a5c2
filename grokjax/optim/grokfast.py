"""Grokfast gradient filters (Lee et al. 2024) as optax transforms.

Grokfast amplifies the slow (low-frequency) component of the gradient sequence:
each raw minibatch gradient ``g_t`` is replaced by ``g_t + λ·ḡ_t`` where ``ḡ_t`` is a
low-pass filter of the raw gradients seen so far. The filter goes *before* the
optimizer in an :func:`optax.chain`, so the optimizer (and its weight decay) acts on
the filtered gradient::

    tx = optax.chain(gj.grokfast_ema(alpha=0.98, lamb=2.0),
                     optax.add_decayed_weights(5e-3),   # coupled L2, as in the paper
                     optax.adam(1e-3, b1=0.9, b2=0.98))

Both filters keep their whole state in the optax state (no Python-side state), so
they jit, vmap over a leading seed axis and sweep with :func:`optax.inject_hyperparams`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

__all__ = [
    "GrokfastEmaState",
    "GrokfastMaState",
    "grokfast_ema",
    "grokfast_ma",
]


class GrokfastEmaState(NamedTuple):
    """State of :func:`grokfast_ema`.

    Attributes:
        count: number of gradients seen (int32 scalar).
        mu: the EMA ``μ_t`` of the raw gradients, one array per parameter leaf.
    """

    count: jax.Array
    mu: optax.Updates


class GrokfastMaState(NamedTuple):
    """State of :func:`grokfast_ma`.

    Attributes:
        count: number of gradients seen (int32 scalar).
        window: per leaf a ring buffer of shape ``(window_size, *leaf.shape)`` with the
            last ``window_size`` raw gradients; gradient ``t`` (1-based) sits in slot
            ``(t - 1) % window_size``. Slots not yet written hold zeros.
        window_sum: per leaf the running sum of the buffer's entries (high word).
        compensation: per leaf the low word of the running sum: ``window_sum +
            compensation`` is the sum in double-word precision, which stays within an
            ulp of the exact window sum over any run, also when the gradients' scale
            falls by orders of magnitude.
        leaving: per leaf the buffer slot the *next* gradient overwrites (zeros until
            the window is full). It is a copy of ``window[count % window_size]``, read
            right after each write: a step that read a slot and then overwrote it would
            make XLA copy the whole buffer every step (``benchmarks/grokfast_ma_state.py``
            times both).
    """

    count: jax.Array
    window: optax.Updates
    window_sum: optax.Updates
    compensation: optax.Updates
    leaving: optax.Updates


def _check_unit_interval(name: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def _check_amplification(value: Any) -> None:
    # a Python number is checked here; an injected (traced) λ is the caller's to check
    if isinstance(value, (int, float)) and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"lamb must be a finite number >= 0, got {value!r}.")


def grokfast_ema(
    alpha: float = 0.98,
    lamb: float = 2.0,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Grokfast-EMA: add ``λ`` times an exponential moving average of the gradients.

    Per parameter leaf, with ``g_t`` the raw gradient at step ``t = 1, 2, …``:

    .. math::

        μ_1 = g_1, \qquad μ_t = α μ_{t-1} + (1 - α) g_t, \qquad
        \tilde g_t = g_t + λ μ_t .

    The EMA starts from the first gradient (not from zeros) and has no bias
    correction, exactly as in the authors' ``gradfilter_ema``; so the first output is
    ``(1 + λ)·g_1``. The state tracks raw gradients, never filtered ones.

    Args:
        alpha: EMA momentum ``α`` in [0, 1] (paper default 0.98).
        lamb: amplification ``λ`` of the slow component (paper default 2.0).
        accumulator_dtype: dtype of ``μ`` (default: the parameter's dtype). The
            update is computed in at least float32 either way, but a bfloat16 ``μ`` is
            rounded every step (a bias of ~0.2% at α = 0.98): use ``jnp.float32`` to
            keep a bfloat16 model's EMA in full precision.

    Returns:
        An :class:`optax.GradientTransformation`; ``alpha`` and ``lamb`` can be
        swept with :func:`optax.inject_hyperparams`.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> tx = gj.grokfast_ema(alpha=0.5, lamb=2.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> out, state = tx.update({"w": jnp.array([1.0, -1.0])}, state)
        >>> print(out["w"])  # (1 + λ)·g₁
        [ 3. -3.]
        >>> out, state = tx.update({"w": jnp.array([3.0, 1.0])}, state)
        >>> print(out["w"])  # g₂ + λ(α μ₁ + (1 - α) g₂) = g₂ + 2·(0.5·g₁ + 0.5·g₂)
        [7. 1.]
    """
    _check_unit_interval("alpha", alpha)
    _check_amplification(lamb)

    def init_fn(params: optax.Params) -> GrokfastEmaState:
        return GrokfastEmaState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(
        updates: optax.Updates, state: GrokfastEmaState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, GrokfastEmaState]:
        del params
        first = state.count == 0

        def new_mu(g: jax.Array, mu: jax.Array) -> jax.Array:
            # In at least float32: in bfloat16, α and 1 - α would round separately
            # (0.99 + 0.01 -> 0.998) and bias the average.
            compute = jnp.promote_types(mu.dtype, jnp.float32)
            g, mu_c = g.astype(compute), mu.astype(compute)
            return jnp.where(first, g, alpha * mu_c + (1 - alpha) * g).astype(mu.dtype)

        def amplify(g: jax.Array, mu: jax.Array) -> jax.Array:
            compute = jnp.promote_types(g.dtype, jnp.float32)
            return (g.astype(compute) + lamb * mu.astype(compute)).astype(g.dtype)

        mu = jax.tree.map(new_mu, updates, state.mu)
        filtered = jax.tree.map(amplify, updates, mu)
        return filtered, GrokfastEmaState(count=optax.safe_increment(state.count), mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def _static_window_size(window_size: Any) -> int:
    """The window size as a Python int (it fixes the ring buffer's shape)."""
    try:
        size = int(window_size)
    except jax.errors.ConcretizationTypeError as err:
        raise ValueError(
            "grokfast_ma: window_size sets the shape of the ring buffer and must be a "
            "static Python int; with optax.inject_hyperparams pass "
            "static_args=('window_size',)."
        ) from err
    if size != window_size or size < 1:
        raise ValueError(f"grokfast_ma: window_size must be an int >= 1, got {window_size!r}.")
    return size


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Knuth's error-free sum: ``s + e == a + b`` exactly, ``s = fl(a + b)``."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _double_add(hi: jax.Array, lo: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Add ``x`` to the unevaluated pair ``hi + lo`` (double-word arithmetic).

    The pair carries about twice the working precision, so rounding errors made
    while large gradients passed through the window stay ~ulp² of them and do not
    swamp the sum once the gradients are small (plain Kahan summation would keep an
    error of an ulp of the *largest* past values).
    """
    s, e = _two_sum(hi, x)
    e = e + lo
    hi = s + e
    return hi, e - (hi - s)


def grokfast_ma(
    window_size: int = 100,
    lamb: float = 5.0,
    filter_type: Literal["mean", "sum"] = "mean",
    warmup: bool = True,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Grokfast-MA: add ``λ`` times a moving average over a window of raw gradients.

    Per parameter leaf, with ``g_t`` the raw gradient at step ``t = 1, 2, …`` and
    ``W_t = {g_{max(1, t-w+1)}, …, g_t}`` the window (it includes ``g_t``):

    .. math::

        \tilde g_t = g_t + λ · \frac{1}{|W_t|} \sum_{g ∈ W_t} g
        \quad(\text{'mean'}), \qquad
        \tilde g_t = g_t + λ \sum_{g ∈ W_t} g \quad(\text{'sum'}).

    With ``warmup`` (the default) the output is ``g_t`` unchanged until the window is
    full (steps ``1 … w-1``); without it the mean runs over the ``|W_t| = min(t, w)``
    entries stored so far, as in the authors' ``gradfilter_ma``.

    The window is a ring buffer in the optax state, so the filter jits and vmaps.
    Its running sum is updated in O(parameters) per step in double-word arithmetic
    instead of re-summing ``w`` buffers (``w`` times the reads and adds per step,
    ``benchmarks/grokfast_ma_state.py``), and stays within an ulp of the exact window
    sum over any run, also when the gradient scale changes by orders of magnitude.

    Args:
        window_size: ``w``, the number of raw gradients averaged (paper default 100).
            It fixes the buffer's shape, so it is static: with
            :func:`optax.inject_hyperparams` pass ``static_args=("window_size",)``.
        lamb: amplification ``λ`` (paper default 5.0).
        filter_type: ``"mean"`` (divide by the number of entries) or ``"sum"``.
        warmup: pass gradients through unchanged until the window is full.
        accumulator_dtype: dtype of the running sum (default: the parameter's
            dtype). The buffer stores gradients in the parameter's dtype.

    Returns:
        An :class:`optax.GradientTransformation`. Memory: ``w + 3`` copies of the
        parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> tx = gj.grokfast_ma(window_size=2, lamb=1.0)
        >>> state = tx.init(jnp.zeros(1))
        >>> for g in [1.0, 3.0, 5.0]:
        ...     out, state = tx.update(jnp.array([g]), state)
        ...     print(out)  # warm-up, then g + mean(last two)
        [1.]
        [5.]
        [9.]
    """
    if filter_type not in ("mean", "sum"):
        raise ValueError(f"grokfast_ma: filter_type must be 'mean' or 'sum', got {filter_type!r}.")
    if not isinstance(window_size, jax.core.Tracer):
        _static_window_size(window_size)
    _check_amplification(lamb)

    def init_fn(params: optax.Params) -> GrokfastMaState:
        w = _static_window_size(window_size)
        return GrokfastMaState(
            count=jnp.zeros([], jnp.int32),
            window=jax.tree.map(
                lambda p: jnp.zeros((w, *jnp.shape(p)), jnp.result_type(p)), params
            ),
            window_sum=optax.tree.zeros_like(params, dtype=accumulator_dtype),
            compensation=optax.tree.zeros_like(params, dtype=accumulator_dtype),
            leaving=optax.tree.zeros_like(params),
        )

    def update_fn(
        updates: optax.Updates, state: GrokfastMaState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, GrokfastMaState]:
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        if not g_leaves:
            return updates, state._replace(count=optax.safe_increment(state.count))
        bufs = treedef.flatten_up_to(state.window)
        sums = treedef.flatten_up_to(state.window_sum)
        comps = treedef.flatten_up_to(state.compensation)
        olds = treedef.flatten_up_to(state.leaving)
        # The window size is read from the buffer's static shape: under
        # inject_hyperparams the factory's `window_size` argument may be a tracer.
        w = bufs[0].shape[0]
        count = state.count
        n_stored = jnp.minimum(count + 1, w)
        slot = count % w

        out = []
        for g, buf, total, comp, old in zip(g_leaves, bufs, sums, comps, olds, strict=True):
            stored = g.astype(buf.dtype)  # the sum must track exactly what the buffer holds
            total, comp = _double_add(total, comp, stored.astype(total.dtype))
            total, comp = _double_add(total, comp, -old.astype(total.dtype))
            buf = lax.dynamic_update_index_in_dim(buf, stored, slot, 0)
            old = lax.dynamic_index_in_dim(buf, (count + 1) % w, 0, keepdims=False)
            compute = jnp.promote_types(g.dtype, jnp.float32)
            window_total = total.astype(compute) + comp.astype(compute)
            avg = window_total / n_stored if filter_type == "mean" else window_total
            filtered = g.astype(compute) + lamb * avg
            if warmup:
                filtered = jnp.where(count + 1 >= w, filtered, g)
            out.append((filtered.astype(g.dtype), buf, total, comp, old))

        columns = [treedef.unflatten(col) for col in zip(*out, strict=True)]
        filtered, window, window_sum, compensation, leaving = columns
        new_state = GrokfastMaState(
            count=optax.safe_increment(count),
            window=window,
            window_sum=window_sum,
            compensation=compensation,
            leaving=leaving,
        )
        return filtered, new_state

    return optax.GradientTransformation(init_fn, update_fn)
