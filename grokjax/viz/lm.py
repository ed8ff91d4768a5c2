"""Figures and tables of language-model runs: convergence and learned activation shapes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from grokjax.viz.records import MethodCurves, RunRecord

__all__ = ["is_lm", "lm_findings", "lm_levels_table", "lm_table", "plot_activation_shapes"]


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


def lm_levels_table(record: RunRecord, fractions=(0.25, 0.5, 0.75, 1.0)) -> str:
    """Convergence at several levels: the first method's median validation loss at the
    evaluations nearest ``fractions`` of its run, and for every method the step at which
    its median validation loss first reached each (steps at evaluation resolution; the
    ratio to the first method, < 1 is faster).

    >>> from grokjax.viz.records import MethodCurves, RunRecord
    >>> steps = np.array([10, 20, 30, 40])
    >>> def method(label, val_loss):  # one member
    ...     curves = {"val_loss": np.array(val_loss, float)[:, None]}
    ...     return MethodCurves(label, [0], steps, curves, [None], [None])
    >>> record = RunRecord(None, {}, [method("a", [4, 3, 2, 1]), method("b", [3, 2, 1.5, 1.2])])
    >>> print(lm_levels_table(record, fractions=(0.5, 1.0)).splitlines()[-1])
    | b | 10 (0.50×) | >40 |
    """
    base = record.methods[0]
    curve = _median(base, "val_loss")
    picks = [int(np.argmin(np.abs(base.steps - f * base.steps[-1]))) for f in fractions]
    targets = [float(curve[i]) for i in picks]
    pairs = list(zip(targets, picks, strict=True))
    head = " | ".join(f"val loss {t:.4f} (step {base.steps[i]})" for t, i in pairs)
    lines = [f"| method | {head} |", "|---|" + "---|" * len(targets)]
    for m in record.methods:
        if not m.steps.size:
            continue
        cells = []
        for t, i in pairs:
            steps = _first_at_or_below(m, "val_loss", t)
            base_steps = _first_at_or_below(base, "val_loss", t) or int(base.steps[i])
            cells.append(
                f"{steps} ({steps / base_steps:.2f}×)" if steps else f">{int(m.steps[-1])}"
            )
        lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
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
