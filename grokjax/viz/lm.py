"""Figures and tables of language-model runs: convergence and learned activation shapes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from grokjax.viz.records import MethodCurves, RunRecord

__all__ = ["is_lm", "lm_findings", "lm_table", "plot_activation_shapes"]


def is_lm(record: RunRecord) -> bool:
    return record.config["data"].get("kind") == "lm"


def _median(method: MethodCurves, key: str) -> np.ndarray:
    return np.nanmedian(method.metrics[key], axis=1)


def _first_at_or_below(method: MethodCurves, key: str, target: float) -> int | None:
    hit = np.nonzero(_median(method, key) <= target)[0]
    return int(method.steps[hit[0]]) if hit.size else None


def lm_table(record: RunRecord) -> str:
    """Per method (medians over seeds): final training and validation loss, validation
    next-token accuracy, and the step at which the median validation loss first reached
    the first method's final median validation loss (its convergence relative to it)."""
    base = record.methods[0]
    target = float(_median(base, "val_loss")[-1])
    base_steps = _first_at_or_below(base, "val_loss", target)
    lines = [
        f"| method | members | train loss | val loss | val acc | steps to val loss {target:.4f} "
        f"({base.label}'s final) | relative to {base.label} |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in record.methods:
        if not m.steps.size:
            continue
        steps = _first_at_or_below(m, "val_loss", target)
        rel = f"{steps / base_steps:.2f}×" if steps and base_steps else "not reached"
        lines.append(
            f"| {m.label} | {m.metrics['val_loss'].shape[1]} | "
            f"{_median(m, 'train_loss')[-1]:.4f} | {_median(m, 'val_loss')[-1]:.4f} | "
            f"{_median(m, 'val_acc')[-1]:.4f} | {steps if steps else '>' + str(m.steps[-1])} | "
            f"{rel} |"
        )
    return "\n".join(lines)


def lm_findings(record: RunRecord) -> str:
    """The learned shapes ``k`` per site at the end (median over seeds)."""
    out = []
    for m in record.methods:
        ks = {k: float(_median(m, k)[-1]) for k in sorted(m.metrics) if k.startswith("k/")}
        if ks:
            out.append(
                f"- {m.label}: final k "
                + ", ".join(f"{name[2:]} {value:.3f}" for name, value in ks.items())
            )
    return "\n".join(out)


def plot_activation_shapes(record: RunRecord) -> plt.Figure | None:
    """Every learnable activation shape ``k`` against step (median over seeds, thin
    member lines), one panel per method that has any; ``None`` when no method has one."""
    methods = [m for m in record.methods if any(k.startswith("k/") for k in m.metrics)]
    if not methods:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 4), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        sites = sorted(k for k in m.metrics if k.startswith("k/"))
        for i, site in enumerate(sites):
            color = plt.get_cmap("tab10")(i % 10)
            ax.plot(m.steps, m.metrics[site], color=color, alpha=0.3, linewidth=0.8)
            ax.plot(m.steps, _median(m, site), color=color, linewidth=2, label=site[2:])
        ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{m.label}: learned k per activation site", fontsize=10)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("k")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
