"""Operations with more than one backend: the Mamba selective scan."""

from grokjax.ops.selective_scan import (
    BACKENDS,
    GATES,
    selective_scan,
    selective_state_update,
)

__all__ = ["BACKENDS", "GATES", "selective_scan", "selective_state_update"]
