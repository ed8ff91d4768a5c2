"""Figures and reports of runs, drawn from the run directory's files."""

from grokjax.viz.analysis import (
    analysis_section,
    plot_activation_statistics,
    plot_attention,
    plot_fourier_spectrum,
    plot_gradient_flow,
    plot_progress_measures,
    write_analysis_figures,
)
from grokjax.viz.confusion import plot_confusion, plot_confusion_steps, write_confusion_figures
from grokjax.viz.phase_diagram import phase_diagram_section, write_phase_figures
from grokjax.viz.plots import plot_curves, plot_steps_to_grok, write_figures
from grokjax.viz.records import MethodCurves, RunRecord, load_run
from grokjax.viz.report import results_table, write_report

__all__ = [
    "MethodCurves",
    "RunRecord",
    "analysis_section",
    "load_run",
    "phase_diagram_section",
    "plot_activation_statistics",
    "plot_attention",
    "plot_confusion",
    "plot_confusion_steps",
    "plot_curves",
    "plot_fourier_spectrum",
    "plot_gradient_flow",
    "plot_progress_measures",
    "plot_steps_to_grok",
    "results_table",
    "write_analysis_figures",
    "write_confusion_figures",
    "write_figures",
    "write_phase_figures",
    "write_report",
]
