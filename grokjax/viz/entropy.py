"""Figures and tables of entropy-tracking runs (Surge-Collapse, seed 001)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from grokjax.viz.records import MethodCurves, RunRecord

__all__ = ["entropy_findings", "entropy_table", "has_entropy", "member_noise", "plot_entropy"]

_STYLES = ("-", "--", ":", "-.")
_PANELS = (
    ("train_loss", "training loss (interval mean)", True),
    ("val_loss", "validation loss", True),
    ("target_entropy", "target entropy of the batches (bits)", False),
    ("act_entropy_norm", "activation entropy / ln(width)", False),
    ("zero_fraction", "fraction of parameters exactly 0", False),
    ("train_acc", "training accuracy (interval mean)", False),
)
_EVENTS = (("collapses", "v", "collapse"), ("surges", "^", "surge"), ("pumps", "o", "pump"))


def has_entropy(record: RunRecord) -> bool:
    return any("act_entropy_norm" in m.metrics for m in record.methods)


def member_noise(record: RunRecord, method: MethodCurves) -> np.ndarray:
    """Each member's input-noise σ (swept values are logged per row)."""
    if "input_noise" in method.metrics and method.steps.size:
        return method.metrics["input_noise"][0]
    cfg = next(m for m in record.config["methods"] if m["label"] == method.label)
    return np.full(method.metrics["train_loss"].shape[1], cfg.get("input_noise", 0.0))


def plot_entropy(record: RunRecord) -> plt.Figure:
    """Loss, target entropy, activation entropy, sparsity and training accuracy per
    step: one colour per input-noise level, one line style per method (members of a
    method at the same σ are averaged), Surge-Collapse events marked on the activation
    entropy panel at the evaluation after they happened."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    levels = sorted({float(s) for m in record.methods for s in member_noise(record, m)})
    colors = {s: plt.get_cmap("viridis")(i / max(len(levels) - 1, 1)) for i, s in enumerate(levels)}
    for ax, (key, title, log_y) in zip(axes.flat, _PANELS, strict=True):
        for method, style in zip(record.methods, _STYLES * 4, strict=False):
            if method.steps.size == 0 or key not in method.metrics:
                continue
            noise = member_noise(record, method)
            for sigma in levels:
                cols = noise == sigma
                if not cols.any():
                    continue
                values = np.nanmean(method.metrics[key][:, cols], axis=1)
                ax.plot(
                    method.steps,
                    values,
                    style,
                    color=colors[sigma],
                    linewidth=1.4,
                    label=f"{method.label}, σ={sigma:g}",
                )
                if key != "act_entropy_norm":
                    continue
                for event, marker, _ in _EVENTS:
                    if event not in method.metrics:
                        continue
                    counts = np.nanmax(method.metrics[event][:, cols], axis=1)
                    fired = np.diff(np.concatenate([[0.0], counts])) > 0
                    ax.scatter(
                        method.steps[fired],
                        values[fired],
                        marker=marker,
                        s=18,
                        color=colors[sigma],
                        zorder=3,
                    )
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("optimisation step")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles = [
        plt.Line2D([], [], linestyle="none", marker=m, color="gray", label=name)
        for _, m, name in _EVENTS
    ]
    axes.flat[3].legend(handles=handles, fontsize=7, loc="lower left", title="events")
    axes.flat[0].legend(fontsize=6, loc="best", ncol=2)
    fig.suptitle(f"{record.config['name']}: entropy dynamics", fontsize=11)
    fig.tight_layout()
    return fig


def _final(method: MethodCurves, key: str, cols: np.ndarray) -> float:
    if key not in method.metrics or not method.steps.size:
        return float("nan")
    return float(np.nanmean(method.metrics[key][-1, cols]))


def entropy_table(record: RunRecord) -> str:
    """Markdown: per method and noise level, the final metrics and event counts, and
    the change of the final training/validation loss against the first method (the
    baseline) at the same σ."""
    base = record.methods[0]
    base_noise = member_noise(record, base)
    lines = [
        "| method | σ | members | train loss | Δ vs " + base.label + " | train acc | val loss | "
        "val acc | act. entropy / ln W | zeros | collapses | surges | pumps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in record.methods:
        noise = member_noise(record, method)
        for sigma in sorted(set(noise.tolist())):
            cols = noise == sigma
            loss = _final(method, "train_loss", cols)
            ref = (
                _final(base, "train_loss", base_noise == sigma)
                if (base_noise == sigma).any()
                else float("nan")
            )
            delta = "—" if method is base or np.isnan(ref) else f"{loss - ref:+.3f}"
            lines.append(
                f"| {method.label} | {sigma:g} | {int(cols.sum())} | {loss:.3f} | {delta} | "
                f"{_final(method, 'train_acc', cols):.3f} | "
                f"{_final(method, 'val_loss', cols):.3f} | "
                f"{_final(method, 'val_acc', cols):.4f} | "
                f"{_final(method, 'act_entropy_norm', cols):.4f} | "
                f"{_final(method, 'zero_fraction', cols):.3f} | "
                + " | ".join(f"{_final(method, e, cols):.0f}" for e, _, _ in _EVENTS)
                + " |"
            )
    return "\n".join(lines)


def entropy_findings(record: RunRecord) -> str:
    """One sentence per non-baseline method: at how many noise levels it ended with a
    lower training and validation loss than the baseline, counted from the run's final
    losses whichever way they fall."""
    base = record.methods[0]
    base_noise = member_noise(record, base)
    out = []
    for method in record.methods[1:]:
        noise = member_noise(record, method)
        levels = [s for s in sorted(set(noise.tolist())) if (base_noise == s).any()]
        if not levels:
            continue
        better = {
            key: [
                s
                for s in levels
                if _final(method, key, noise == s) < _final(base, key, base_noise == s)
            ]
            for key in ("train_loss", "val_loss")
        }
        out.append(
            f"- {method.label}: lower final training loss than {base.label} at "
            f"{len(better['train_loss'])}/{len(levels)} noise levels "
            f"({', '.join(f'{s:g}' for s in better['train_loss']) or 'none'}), lower final "
            f"validation loss at {len(better['val_loss'])}/{len(levels)} "
            f"({', '.join(f'{s:g}' for s in better['val_loss']) or 'none'})."
        )
    return "\n".join(out)
