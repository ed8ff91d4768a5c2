"""optax GradientTransformations for grokking research: Grokfast, ⊥Grad, Surge-Collapse."""

from grokjax.optim.grokfast import (
    GrokfastEmaState,
    GrokfastMaState,
    grokfast_ema,
    grokfast_ma,
)
from grokjax.optim.orthograd import OrthogradState, ortho_adamw, ortho_sgd, orthograd
from grokjax.optim.precision import with_state_dtype
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
    "entropy_controller_init",
    "entropy_controller_step",
    "grokfast_ema",
    "grokfast_ma",
    "ortho_adamw",
    "ortho_sgd",
    "orthograd",
    "surge",
    "surge_collapse",
    "surge_collapse_events",
    "surge_collapse_input_noise",
    "with_state_dtype",
    "zero_fraction",
]
