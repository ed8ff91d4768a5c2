"""Surge-Collapse training (Aragon, seed 001): magnitude pruning and noisy re-expansion.

Three pure pieces and one optax transform:

- :func:`collapse` zeros, per leaf, every entry whose magnitude lies below the
  ``sparsity``-quantile of the leaf's magnitudes.
- :func:`surge` replaces every entry that is exactly 0 by ``recovery·N(0, 1)``.
- :func:`entropy_controller_step` is the adaptive rule set of the source, which gives
  it in words only. **Its thresholds are a reconstruction** (see
  :class:`EntropyControllerConfig`), calibrated on one model's entropy ranges.
- :func:`surge_collapse` wraps an inner optimizer: it applies the inner update, then
  collapses / surges the *updated* parameters on a fixed schedule or as the
  controller decides, reading the current activation entropy from the update's extra
  arguments. Its state (PRNG key, controller state, event counters) lives in the optax
  state, so it jits and vmaps over members.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "EntropyControllerConfig",
    "EntropyControllerState",
    "SurgeCollapseState",
    "collapse",
    "collapse_mask",
    "entropy_controller_init",
    "entropy_controller_step",
    "surge",
    "surge_collapse",
    "surge_collapse_events",
    "surge_collapse_input_noise",
    "zero_fraction",
]

Include = Any  # None | a pytree of bools | a function of params returning one


def _include_tree(params, include: Include):
    """A pytree of Python/array bools, one per leaf of ``params`` (optax.masked style)."""
    if include is None:
        return jax.tree.map(lambda _: True, params)
    mask = include(params) if callable(include) else include
    return mask


def collapse_mask(params, sparsity: float = 0.5, *, include: Include = None):
    r"""Per leaf, ``|p| < quantile(|p|, sparsity)`` (linear interpolation, as numpy).

    Leaves that ``include`` leaves out get an all-False mask. The quantile is computed
    in at least float32. See :func:`collapse`.
    """
    if isinstance(sparsity, (int, float)) and not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity}: must lie in [0, 1] (the quantile zeroed).")

    def leaf(p, keep):
        if p is None:
            return None
        a = jnp.abs(p).astype(jnp.promote_types(p.dtype, jnp.float32))
        threshold = jnp.quantile(a.reshape(-1), sparsity, method="linear")
        return (a < threshold) & jnp.asarray(keep, bool)

    return jax.tree.map(leaf, params, _include_tree(params, include), is_leaf=lambda x: x is None)


def collapse(params, sparsity: float = 0.5, *, include: Include = None):
    r"""Zero the small-magnitude entries of every (included) leaf.

    For a leaf ``p`` with ``n`` entries, ``t = quantile(|p|, sparsity)`` with numpy's
    linear interpolation (sorted magnitudes ``a_(0) ≤ … ≤ a_(n−1)``, position
    ``sparsity·(n−1)``), and every entry with ``|p| < t`` becomes exactly 0; entries at
    or above ``t`` are unchanged. With distinct magnitudes that zeros
    ``⌈sparsity·(n−1)⌉`` entries (``sparsity = 0`` zeros none).

    Args:
        params: a pytree of arrays (``None`` leaves pass through).
        sparsity: the quantile in ``[0, 1]``.
        include: ``None`` (every leaf), or a pytree of bools / a function of
            ``params`` returning one (``optax.masked`` convention) selecting leaves.

    >>> collapse({"w": jnp.array([0.1, -0.5, 0.2, 0.9, -0.05])}, 0.5)
    {'w': Array([ 0. , -0.5,  0.2,  0.9,  0. ], dtype=float32)}
    """
    masks = collapse_mask(params, sparsity, include=include)
    return jax.tree.map(
        lambda p, m: None if p is None else jnp.where(m, jnp.zeros_like(p), p),
        params,
        masks,
        is_leaf=lambda x: x is None,
    )


def _leaf_draws(params, key: jax.Array, recovery):
    """``recovery·N(0, 1)`` per leaf, in the leaf's dtype, a fresh key per leaf."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    draws = [
        (recovery * jax.random.normal(k, p.shape, jnp.promote_types(p.dtype, jnp.float32))).astype(
            p.dtype
        )
        for p, k in zip(leaves, keys, strict=False)
    ]
    return jax.tree.unflatten(treedef, draws)


def surge(params, key: jax.Array, recovery: float = 0.1, *, only_pruned_mask=None):
    r"""Re-expand dead weights: every entry exactly 0 becomes ``recovery·ε``, ε ~ N(0, 1).

    Each leaf draws with its own key (``jax.random.split(key, num_leaves)`` in tree
    order). ``only_pruned_mask`` (a pytree of bools like ``params``, e.g. the mask of
    :func:`collapse_mask`) restricts the surge to zeros it marks; other entries,
    including zeros it does not mark, are unchanged.

    >>> p = {"w": jnp.array([0.0, 1.0, 0.0, -2.0])}
    >>> out = surge(p, jax.random.key(0), recovery=0.1)["w"]
    >>> bool(out[1] == 1.0 and out[3] == -2.0 and (out[0] != 0) and abs(out[0]) < 1.0)
    True
    """
    draws = _leaf_draws(params, key, recovery)
    if only_pruned_mask is None:
        only_pruned_mask = jax.tree.map(lambda _: True, params)
    return jax.tree.map(
        lambda p, d, m: jnp.where((p == 0) & jnp.asarray(m, bool), d, p),
        params,
        draws,
        only_pruned_mask,
    )


def zero_fraction(params) -> jax.Array:
    """Fraction of all parameter entries that are exactly 0 (float32).

    >>> zero_fraction({"a": jnp.array([0.0, 1.0]), "b": jnp.zeros(2)})
    Array(0.75, dtype=float32)
    """
    leaves = jax.tree.leaves(params)
    zeros = sum(jnp.sum(p == 0).astype(jnp.float32) for p in leaves)
    total = sum(p.size for p in leaves)
    return zeros / max(total, 1)


# --- the adaptive controller ----------------------------------------------------------


class EntropyControllerConfig(NamedTuple):
    """Thresholds of the adaptive Surge-Collapse controller (a documented reconstruction).

    The source (seed 001) states the rules in words only: high activation entropy →
    collapse and re-expand; low entropy → "entropy pump" (extra input noise); an entropy
    plateau → collapse as regularisation. Ours act on the *normalised* activation
    entropy ``e = H / ln(width)`` ∈ [0, 1], smoothed as ``s_t = β s_{t−1} + (1−β) e_t``
    (``s_1 = e_1``). Rules are checked after every update, in this order, once
    ``warmup`` updates have passed and no event fired in the last ``cooldown`` updates:

    1. ``s > high``: collapse then surge (re-expand) the updated parameters;
    2. ``s < low``: pump: ``pump_noise`` extra input noise for the next ``pump_steps``
       steps;
    3. the last ``plateau_window`` smoothed values span less than
       ``plateau_tolerance`` (max − min): collapse.

    The defaults were calibrated on the Surge-Collapse MLP (128 → 256 ReLU → 128,
    Gaussian inputs, Adam lr 1e-3, batch 64; ``benchmarks/surge_collapse_calibration.py``,
    numbers in ``benchmarks/RESULTS.md``): over 3,000 baseline steps the smoothed
    normalised entropy falls from 0.985 to ≈0.75 as the network memorises; ``high``
    is its 90th percentile (0.975), ``low`` its 10th (0.78), and ``plateau_tolerance``
    the 10th percentile of its span over 100-step windows (5e-3; median 9.5e-3).
    Other models and data need their own calibration.
    """

    high: float = 0.975
    low: float = 0.78
    smoothing: float = 0.9
    plateau_window: int = 100
    plateau_tolerance: float = 5e-3
    cooldown: int = 100
    warmup: int = 100
    pump_noise: float = 0.1
    pump_steps: int = 100


class EntropyControllerState(NamedTuple):
    step: jax.Array  # int32: readings so far
    smoothed: jax.Array  # float32: s_t
    window: jax.Array  # (plateau_window,) float32 ring of the last smoothed values
    cooldown: jax.Array  # int32: updates until the controller may fire again
    pump_left: jax.Array  # int32: steps of pump noise still to come


def entropy_controller_init(config: EntropyControllerConfig) -> EntropyControllerState:
    return EntropyControllerState(
        step=jnp.zeros([], jnp.int32),
        smoothed=jnp.zeros([], jnp.float32),
        window=jnp.zeros((config.plateau_window,), jnp.float32),
        cooldown=jnp.zeros([], jnp.int32),
        pump_left=jnp.zeros([], jnp.int32),
    )


class ControllerDecision(NamedTuple):
    collapse: jax.Array  # bool
    surge: jax.Array  # bool
    pump: jax.Array  # bool


def entropy_controller_step(
    state: EntropyControllerState, entropy: jax.Array, config: EntropyControllerConfig
) -> tuple[EntropyControllerState, ControllerDecision]:
    """Read one normalised entropy ``e`` and decide (see :class:`EntropyControllerConfig`).

    >>> cfg = EntropyControllerConfig(warmup=1, cooldown=5)
    >>> st = entropy_controller_init(cfg)
    >>> st, d = entropy_controller_step(st, jnp.float32(0.999), cfg)   # very high entropy
    >>> bool(d.collapse), bool(d.surge), bool(d.pump)
    (True, True, False)
    """
    e = jnp.asarray(entropy, jnp.float32)
    beta = config.smoothing
    smoothed = jnp.where(state.step == 0, e, beta * state.smoothed + (1 - beta) * e)
    window = state.window.at[state.step % config.plateau_window].set(smoothed)
    readings = state.step + 1
    ready = (readings >= config.warmup) & (state.cooldown == 0)
    high = ready & (smoothed > config.high)
    low = ready & ~high & (smoothed < config.low)
    flat = (readings >= config.plateau_window) & (
        jnp.max(window) - jnp.min(window) < config.plateau_tolerance
    )
    plateau = ready & ~high & ~low & flat
    fired = high | low | plateau
    new = EntropyControllerState(
        step=readings,
        smoothed=smoothed,
        window=window,
        cooldown=jnp.where(fired, config.cooldown, jnp.maximum(state.cooldown - 1, 0)).astype(
            jnp.int32
        ),
        pump_left=jnp.where(low, config.pump_steps, jnp.maximum(state.pump_left - 1, 0)).astype(
            jnp.int32
        ),
    )
    return new, ControllerDecision(collapse=high | plateau, surge=high, pump=low)


# --- the optax transform --------------------------------------------------------------


def _due(count: jax.Array, every) -> jax.Array:
    """``count % every == 0`` and ``every > 0`` (``every`` may be an injected array)."""
    every = jnp.asarray(every, jnp.int32)
    return (every > 0) & (count % jnp.maximum(every, 1) == 0)


def _as_key(key) -> jax.Array:
    """A PRNG key from a key (typed or raw ``uint32[2]``) or an integer seed."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,):
        return key
    return jax.random.PRNGKey(key)


class SurgeCollapseState(NamedTuple):
    """State of :func:`surge_collapse`; ``input_noise`` is what the pump asks for now."""

    count: jax.Array  # int32 updates so far
    key: jax.Array  # PRNG key of the surges (update k draws with fold_in(key, k))
    inner_state: optax.OptState
    controller: EntropyControllerState
    input_noise: jax.Array  # float32 σ of extra input noise for the next step
    collapses: jax.Array  # int32 counts of collapse / surge / pump events (a scheduled
    surges: jax.Array  # surge counts even when no entry was exactly 0)
    pumps: jax.Array


_SCHEDULES = ("fixed", "adaptive")
_MOMENTS = ("keep", "reset")


def surge_collapse(
    inner: optax.GradientTransformation,
    *,
    schedule: str = "fixed",
    sparsity: float = 0.5,
    recovery: float = 0.1,
    collapse_every: int = 100,
    surge_every: int = 200,
    moments: str = "keep",
    surge_only_pruned: bool = False,
    include: Include = None,
    controller: EntropyControllerConfig | None = None,
    key: jax.Array | int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""Run ``inner``, then collapse / surge the parameters it produced.

    Update ``k = 1, 2, …``: ``u = inner(g)``, ``q = p + u``; then, when a collapse is
    due, :func:`collapse` ``q`` (``sparsity``, ``include``), and when a surge is due,
    :func:`surge` the result (every exact zero, or with ``surge_only_pruned`` only the
    entries this update's collapse zeroed) with key ``fold_in(key, k)``. The returned
    updates are ``u`` where nothing happened and ``target − p`` at touched entries, so
    ``optax.apply_updates`` lands collapsed entries on exactly 0.

    ``schedule="fixed"`` (the source): collapse when ``k % collapse_every == 0``, surge
    when ``k % surge_every == 0`` (0 disables either). ``schedule="adaptive"``: the
    :func:`entropy_controller_step` (``controller``, default
    :class:`EntropyControllerConfig`) decides from the extra argument
    ``activation_entropy`` (the batch's normalised activation entropy, required), and
    its pump is exposed as ``state.input_noise`` (read it with
    :func:`surge_collapse_input_noise` and add that much Gaussian noise to the next
    batch's inputs).

    ``moments="keep"`` leaves the inner optimizer's state alone (the source);
    ``"reset"`` zeros every parameter-shaped state leaf (e.g. Adam's moments) at the
    entries collapsed or surged. Updates without an event skip the event code (a
    ``lax.cond``), but under ``vmap`` over members the ``cond`` becomes a ``select`` and
    every update sorts each included leaf, with or without an event: map over members
    (``lax.map``) where that matters.

    Give each member its own ``key`` (or set the state's ``key`` field after ``init``,
    e.g. with ``optax.tree_utils.tree_set``).

    >>> tx = surge_collapse(optax.sgd(0.0), collapse_every=1, surge_every=0, sparsity=0.5)
    >>> p = {"w": jnp.array([0.1, -0.5, 0.2, 0.9, -0.05])}
    >>> u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    >>> optax.apply_updates(p, u)
    {'w': Array([ 0. , -0.5,  0.2,  0.9,  0. ], dtype=float32)}
    """
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: choose one of {_SCHEDULES}.")
    if moments not in _MOMENTS:
        raise ValueError(f"moments={moments!r}: choose one of {_MOMENTS}.")
    if isinstance(sparsity, (int, float)) and not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity={sparsity}: must be in [0, 1] (a quantile of |p|).")
    if isinstance(recovery, (int, float)) and not recovery >= 0:
        raise ValueError(f"recovery={recovery}: must be >= 0 (the surge's noise scale).")
    if any(isinstance(n, int) and n < 0 for n in (collapse_every, surge_every)):
        raise ValueError(
            f"collapse_every={collapse_every}, surge_every={surge_every}: must be >= 0 "
            "(0 disables the event)."
        )
    inner = optax.with_extra_args_support(inner)
    controller = controller if controller is not None else EntropyControllerConfig()

    def init_fn(params) -> SurgeCollapseState:
        k = _as_key(key)
        zero = jnp.zeros([], jnp.int32)
        return SurgeCollapseState(
            count=zero,
            key=k,
            inner_state=inner.init(params),
            controller=entropy_controller_init(controller),
            input_noise=jnp.zeros([], jnp.float32),
            collapses=zero,
            surges=zero,
            pumps=zero,
        )

    def update_fn(updates, state: SurgeCollapseState, params=None, **extra_args):
        if params is None:
            raise ValueError("surge_collapse needs params: call tx.update(grads, state, params).")
        entropy = extra_args.get("activation_entropy")
        inner_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        count = state.count + 1
        ctrl = state.controller
        if schedule == "fixed":
            do_collapse = _due(count, collapse_every)
            do_surge = _due(count, surge_every)
            do_pump = jnp.bool_(False)
        else:
            if entropy is None:
                raise ValueError(
                    "surge_collapse(schedule='adaptive') reads the normalised activation "
                    "entropy: call tx.update(grads, state, params, activation_entropy=e)."
                )
            ctrl, decision = entropy_controller_step(ctrl, entropy, controller)
            do_collapse, do_surge, do_pump = decision

        def events(inner_state):
            new_params = optax.apply_updates(params, inner_updates)
            include_tree = jax.tree.map(  # aligned with params: None where params are None
                lambda p, inc: None if p is None else inc,
                new_params,
                _include_tree(new_params, include),
                is_leaf=lambda x: x is None,
            )
            cmask = jax.tree.map(
                lambda m: m & do_collapse, collapse_mask(new_params, sparsity, include=include)
            )
            collapsed = jax.tree.map(
                lambda q, m: jnp.where(m, jnp.zeros_like(q), q), new_params, cmask
            )
            draws = _leaf_draws(collapsed, jax.random.fold_in(state.key, count), recovery)
            smask = jax.tree.map(
                lambda q, m, inc: (
                    (q == 0)
                    & jnp.asarray(inc, bool)
                    & do_surge
                    & (m if surge_only_pruned else True)
                ),
                collapsed,
                cmask,
                include_tree,
            )
            touched = jax.tree.map(jnp.logical_or, cmask, smask)
            final = jax.tree.map(lambda q, d, s: jnp.where(s, d, q), collapsed, draws, smask)
            out = jax.tree.map(
                lambda u, t, f, p: jnp.where(t, (f - p).astype(u.dtype), u),
                inner_updates,
                touched,
                final,
                params,
            )
            if moments == "reset":
                inner_state = optax.tree_utils.tree_map_params(
                    inner,
                    lambda v, t: jnp.where(t, jnp.zeros_like(v), v),
                    inner_state,
                    touched,
                    transform_non_params=lambda v: v,
                )
            return out, inner_state

        # Only updates with an event sort the leaves (a ``cond``; under ``vmap`` with a
        # per-member predicate it becomes a ``select`` and both branches run).
        out, inner_state = jax.lax.cond(
            do_collapse | do_surge, events, lambda st: (inner_updates, st), inner_state
        )
        pump_left = ctrl.pump_left
        return out, SurgeCollapseState(
            count=count,
            key=state.key,
            inner_state=inner_state,
            controller=ctrl,
            input_noise=jnp.where(pump_left > 0, controller.pump_noise, 0.0).astype(jnp.float32),
            collapses=state.collapses + do_collapse.astype(jnp.int32),
            surges=state.surges + do_surge.astype(jnp.int32),
            pumps=state.pumps + do_pump.astype(jnp.int32),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def surge_collapse_input_noise(opt_state) -> jax.Array:
    """The pump's extra input-noise σ in ``opt_state`` (0 without a surge_collapse).

    Finds the :class:`SurgeCollapseState` anywhere in a nested optax state (chains,
    ``inject_hyperparams``); stacked member states give one value per member.
    """
    found = _find_states(opt_state)
    if not found:
        return jnp.zeros([], jnp.float32)
    return found[0].input_noise


def _find_states(opt_state) -> list[SurgeCollapseState]:
    found = []

    def visit(node):
        if isinstance(node, SurgeCollapseState):
            found.append(node)
            return True
        return False

    jax.tree.map(lambda _: None, opt_state, is_leaf=visit)
    return found


def surge_collapse_events(opt_state) -> dict[str, jax.Array]:
    """``collapses``, ``surges``, ``pumps`` counters and ``input_noise`` of ``opt_state``.

    Zeros when ``opt_state`` holds no :class:`SurgeCollapseState`.
    """
    found = _find_states(opt_state)
    if not found:
        zero = jnp.zeros([], jnp.int32)
        return {"collapses": zero, "surges": zero, "pumps": zero, "input_noise": zero}
    s = found[0]
    return {
        "collapses": s.collapses,
        "surges": s.surges,
        "pumps": s.pumps,
        "input_noise": s.input_noise,
    }
