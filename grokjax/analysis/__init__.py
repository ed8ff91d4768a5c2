"""Measurements of a model and its data: entropy (more analysis lands here)."""

from grokjax.analysis.entropy import activation_entropy, target_entropy

__all__ = ["activation_entropy", "target_entropy"]
