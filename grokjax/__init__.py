"""grokjax: the JAX library for grokking research.

The public API is flat::

    import grokjax as gj
    tx = optax.chain(gj.grokfast_ema(alpha=0.98, lamb=2.0), optax.adamw(1e-3))
"""

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
    GrokfastEmaState,
    GrokfastMaState,
    OrthogradState,
    grokfast_ema,
    grokfast_ma,
    ortho_adamw,
    ortho_sgd,
    orthograd,
)

__version__ = "0.1.0"

__all__ = [
    "GrokfastEmaState",
    "GrokfastMaState",
    "OrthogradState",
    "cross_entropy_with_integer_labels",
    "global_weight_norm",
    "grokfast_ema",
    "grokfast_ma",
    "log_stablemax",
    "nlm_cosine",
    "ortho_adamw",
    "ortho_sgd",
    "orthograd",
    "softmax_collapse_fraction",
    "stablemax",
    "stablemax_cross_entropy_with_integer_labels",
    "weight_norms",
    "zero_loss_fraction",
]
