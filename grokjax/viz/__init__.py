"""Figures and reports of runs, drawn from the run directory's files."""

from grokjax.viz.plots import plot_curves, plot_steps_to_grok, write_figures
from grokjax.viz.records import MethodCurves, RunRecord, load_run
from grokjax.viz.report import results_table, write_report

__all__ = [
    "MethodCurves",
    "RunRecord",
    "load_run",
    "plot_curves",
    "plot_steps_to_grok",
    "results_table",
    "write_figures",
    "write_report",
]
