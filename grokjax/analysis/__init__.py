"""Measurements of a model and its data: entropy, and the probes the trainer runs at
every evaluation (:mod:`grokjax.analysis.probes`)."""

from grokjax.analysis.entropy import activation_entropy, target_entropy
from grokjax.analysis.probes import (
    ENTROPY_MEANS,
    ProbeContext,
    activation_shapes,
    last_step_geometry,
    leaf_names,
    numerical_stability,
    probe_reads,
    reads,
    surge_collapse_events,
    training_entropy,
)

__all__ = [
    "ENTROPY_MEANS",
    "ProbeContext",
    "activation_entropy",
    "activation_shapes",
    "last_step_geometry",
    "leaf_names",
    "numerical_stability",
    "probe_reads",
    "reads",
    "surge_collapse_events",
    "target_entropy",
    "training_entropy",
]
