"""optax GradientTransformations for grokking research: Grokfast, ⊥Grad, Surge-Collapse,
and the schedules optax lacks."""

from typing import Any

import jax

from grokjax.optim.grokfast import (
    GrokfastEmaState,
    GrokfastMaState,
    grokfast_ema,
    grokfast_ma,
)
from grokjax.optim.orthograd import OrthogradState, ortho_adamw, ortho_sgd, orthograd
from grokjax.optim.precision import with_state_dtype
from grokjax.optim.schedules import cyclic_schedule, weight_decay_ramp
from grokjax.optim.surge_collapse import (
    EntropyControllerConfig,
    EntropyControllerState,
    SurgeCollapseState,
    collapse,
    collapse_mask,
    entropy_controller_init,
    entropy_controller_step,
    surge,
    surge_collapse,
    surge_collapse_events,
    surge_collapse_input_noise,
    zero_fraction,
)

# State types of transforms whose update skips costly work with a ``lax.cond`` on a
# data-dependent predicate. Under ``vmap`` such a ``cond`` becomes a ``select`` that
# runs both branches, so a trainer that can map members one by one (``lax.map``)
# should map these updates instead of vmapping them.
BRANCHING_STATES: tuple[type, ...] = (SurgeCollapseState,)
# State types of transforms that may ask for Gaussian noise on the next batch's inputs
# (Surge-Collapse's entropy pump; read with ``surge_collapse_input_noise``).
INPUT_NOISE_STATES: tuple[type, ...] = (SurgeCollapseState,)


def has_state(opt_state: Any, types: tuple[type, ...]) -> bool:
    """Whether ``opt_state`` holds a state of one of ``types`` anywhere.

    >>> import jax.numpy as jnp, optax
    >>> state = surge_collapse(optax.sgd(0.1)).init({"w": jnp.ones(2)})
    >>> has_state(state, BRANCHING_STATES), has_state(state, (GrokfastEmaState,))
    (True, False)
    """
    found: list[bool] = []
    jax.tree.map(
        lambda _: None, opt_state, is_leaf=lambda n: found.append(isinstance(n, types)) or False
    )
    return any(found)


__all__ = [
    "BRANCHING_STATES",
    "INPUT_NOISE_STATES",
    "EntropyControllerConfig",
    "EntropyControllerState",
    "GrokfastEmaState",
    "GrokfastMaState",
    "OrthogradState",
    "SurgeCollapseState",
    "collapse",
    "collapse_mask",
    "cyclic_schedule",
    "entropy_controller_init",
    "entropy_controller_step",
    "grokfast_ema",
    "grokfast_ma",
    "has_state",
    "ortho_adamw",
    "ortho_sgd",
    "orthograd",
    "surge",
    "surge_collapse",
    "surge_collapse_events",
    "surge_collapse_input_noise",
    "weight_decay_ramp",
    "with_state_dtype",
    "zero_fraction",
]
