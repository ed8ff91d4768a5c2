"""optax GradientTransformations for grokking research: Grokfast filters and ⊥Grad."""

from grokjax.optim.grokfast import (
    GrokfastEmaState,
    GrokfastMaState,
    grokfast_ema,
    grokfast_ma,
)
from grokjax.optim.orthograd import OrthogradState, ortho_adamw, ortho_sgd, orthograd

__all__ = [
    "GrokfastEmaState",
    "GrokfastMaState",
    "OrthogradState",
    "grokfast_ema",
    "grokfast_ma",
    "ortho_adamw",
    "ortho_sgd",
    "orthograd",
]
