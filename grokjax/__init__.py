"""grokjax: the JAX library for grokking research.

The public API is flat::

    import grokjax as gj
    tx = optax.chain(gj.grokfast_ema(alpha=0.98, lamb=2.0), optax.adamw(1e-3))
"""

from grokjax import nn, ops
from grokjax.analysis import activation_entropy, target_entropy
from grokjax.losses import (
    cross_entropy_with_integer_labels,
    global_weight_norm,
    log_stablemax,
    nlm_cosine,
    softmax_collapse_fraction,
    stablemax,
    stablemax_cross_entropy_with_integer_labels,
    weight_norms,
    zero_loss_fraction,
)
from grokjax.optim import (
    EntropyControllerConfig,
    EntropyControllerState,
    GrokfastEmaState,
    GrokfastMaState,
    OrthogradState,
    SurgeCollapseState,
    collapse,
    collapse_mask,
    cyclic_schedule,
    entropy_controller_init,
    entropy_controller_step,
    grokfast_ema,
    grokfast_ma,
    ortho_adamw,
    ortho_sgd,
    orthograd,
    surge,
    surge_collapse,
    surge_collapse_events,
    surge_collapse_input_noise,
    weight_decay_ramp,
    with_state_dtype,
    zero_fraction,
)

__version__ = "0.1.0"

__all__ = [
    "EntropyControllerConfig",
    "EntropyControllerState",
    "GrokfastEmaState",
    "GrokfastMaState",
    "OrthogradState",
    "SurgeCollapseState",
    "activation_entropy",
    "collapse",
    "collapse_mask",
    "cross_entropy_with_integer_labels",
    "cyclic_schedule",
    "entropy_controller_init",
    "entropy_controller_step",
    "global_weight_norm",
    "grokfast_ema",
    "grokfast_ma",
    "log_stablemax",
    "nlm_cosine",
    "nn",
    "ops",
    "ortho_adamw",
    "ortho_sgd",
    "orthograd",
    "softmax_collapse_fraction",
    "stablemax",
    "stablemax_cross_entropy_with_integer_labels",
    "surge",
    "surge_collapse",
    "surge_collapse_events",
    "surge_collapse_input_noise",
    "target_entropy",
    "weight_decay_ramp",
    "weight_norms",
    "with_state_dtype",
    "zero_fraction",
    "zero_loss_fraction",
]
