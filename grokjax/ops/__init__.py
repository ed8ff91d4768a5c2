"""Operations with more than one backend: the Mamba selective scan (its gate's activation
maths, SWELU and swish_k, in :mod:`grokjax.ops.activations`)."""

from grokjax.ops.selective_scan import (
    BACKENDS,
    GATES,
    selective_scan,
    selective_state_update,
)

__all__ = ["BACKENDS", "GATES", "selective_scan", "selective_state_update"]
