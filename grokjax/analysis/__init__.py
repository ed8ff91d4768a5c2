"""Measurements of a model and its data: entropy, and the probes the trainer runs at
every evaluation (:mod:`grokjax.analysis.probes`)."""

from grokjax.analysis.entropy import activation_entropy, target_entropy
from grokjax.analysis.probes import (
    ProbeContext,
    activation_shapes,
    leaf_names,
    numerical_stability,
    surge_collapse_events,
)

__all__ = [
    "ProbeContext",
    "activation_entropy",
    "activation_shapes",
    "leaf_names",
    "numerical_stability",
    "surge_collapse_events",
    "target_entropy",
]
