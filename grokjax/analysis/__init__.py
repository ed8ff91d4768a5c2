"""Measurements of a model and its data: entropy, the probes the trainer runs at
every evaluation (:mod:`grokjax.analysis.probes`), Fourier analysis of modular-arithmetic
networks (:mod:`grokjax.analysis.fourier`) and run and activation statistics
(:mod:`grokjax.analysis.statistics`) and the mechanistic probes built on them
(:mod:`grokjax.analysis.mechanistic`), exact match on ARC tasks
(:mod:`grokjax.analysis.arc`), confusion matrices on the validation rows
(:mod:`grokjax.analysis.confusion`) and Liu et al.'s learning phases from accuracy
curves (:mod:`grokjax.analysis.phases`)."""

from grokjax.analysis.arc import arc_exact_match
from grokjax.analysis.confusion import confusion_counts, confusion_matrix, predicted_classes
from grokjax.analysis.entropy import activation_entropy, target_entropy
from grokjax.analysis.fourier import (
    excluded_logits,
    fourier_basis,
    fourier_fraction,
    fourier_norms,
    gini,
    key_frequencies,
    restricted_logits,
)
from grokjax.analysis.mechanistic import (
    activation_site_statistics,
    attention_patterns,
    gradient_flow,
    progress_measures,
    weight_evolution,
)
from grokjax.analysis.phases import PHASES, Phases, classify_phases, first_crossing
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
from grokjax.analysis.statistics import (
    EARLY_GROKKING_THRESHOLD,
    GrokkingPhases,
    activation_statistics,
    attention_entropy,
    early_grokking_score,
    early_grokking_scores,
    grokking_phases,
)

__all__ = [
    "EARLY_GROKKING_THRESHOLD",
    "ENTROPY_MEANS",
    "PHASES",
    "GrokkingPhases",
    "Phases",
    "ProbeContext",
    "activation_entropy",
    "activation_shapes",
    "activation_site_statistics",
    "activation_statistics",
    "arc_exact_match",
    "attention_entropy",
    "attention_patterns",
    "classify_phases",
    "confusion_counts",
    "confusion_matrix",
    "early_grokking_score",
    "early_grokking_scores",
    "excluded_logits",
    "first_crossing",
    "fourier_basis",
    "fourier_fraction",
    "fourier_norms",
    "gini",
    "gradient_flow",
    "grokking_phases",
    "key_frequencies",
    "last_step_geometry",
    "leaf_names",
    "numerical_stability",
    "predicted_classes",
    "probe_reads",
    "progress_measures",
    "reads",
    "restricted_logits",
    "surge_collapse_events",
    "target_entropy",
    "training_entropy",
    "weight_evolution",
]
