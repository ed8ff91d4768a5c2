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

__all__ = [
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
