"""Matplotlib figures of a run: learning curves and steps to grok."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from grokjax.viz.records import RunRecord

__all__ = [
    "plot_curves",
    "plot_stability",
    "plot_steps_to_grok",
    "synthetic_task",
    "write_figures",
]


def _colors(n: int) -> list:
    return [plt.get_cmap("tab10")(i % 10) for i in range(n)]


def plot_curves(record: RunRecord, kind: str = "acc") -> plt.Figure:
    """Accuracy (``kind="acc"``) or loss against step, log x; one thin line per member,
    the method's median thick; validation solid, training dashed."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for method, color in zip(record.methods, _colors(len(record.methods)), strict=True):
        if method.steps.size == 0:
            continue
        for split, style in (("train", "--"), ("val", "-")):
            values = method.metrics[f"{split}_{kind}"]
            ax.plot(method.steps, values, style, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(
                method.steps,
                np.nanmedian(values, axis=1),
                style,
                color=color,
                linewidth=2.2,
                label=f"{method.label} {split} (median of {values.shape[1]})",
            )
    ax.set_xscale("log")
    if kind == "loss":
        ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    kind_of_data = record.config["data"].get("kind")
    if kind == "acc":
        ylabel = f"fraction within ±{tol:g}" if (tol := _tolerance(record)) else "accuracy"
    else:
        ylabel = {"mnist": "MSE loss", "imdb": "BCE loss", "qm9": "squared error"}.get(
            kind_of_data, "cross-entropy loss"
        )
        if kind_of_data == "mnist" and record.config["data"].get("objective") != "mse":
            ylabel = "cross-entropy loss"
    ax.set_ylabel(ylabel)
    ax.set_title(_title(record))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _tolerance(record: RunRecord) -> float:
    """A regression run's "accuracy" tolerance (0 for classification)."""
    data = record.config["data"]
    return float(data.get("tolerance", 1.0)) if data.get("kind") == "qm9" else 0.0


def _title(record: RunRecord) -> str:
    data = record.config["data"]
    if data.get("kind") == "sparse_parity":
        task = f"sparse parity (k {data['parity_bits']}, n {data['noise_bits']})"
    elif data.get("kind") in ("gaussian", "text", "lm", "arc"):
        task = synthetic_task(data)
    elif "op" in data:
        task = f"{data['op']} mod {data['p']}"
    else:  # the Grokfast paper's other data sets
        task = {"mnist": "MNIST", "imdb": "IMDb", "qm9": "QM9"}.get(data["kind"], data["kind"])
    cfg = record.config
    precision = cfg.get("dtype", "float32")
    loss = objective_summary(cfg)
    fraction = f", {data['train_fraction']:.0%} train" if "train_fraction" in data else ""
    return f"{record.config['name']}: {task}{fraction}, {precision} params, {loss}"


def synthetic_task(data: dict) -> str:
    if data["kind"] == "arc":
        gen, real = data["generated"], data["real"]
        return (
            f"ARC-format tasks ({gen['train_tasks']} generated per family of "
            f"{len(gen['families'])}, sides {gen['min_side']}–{gen['max_side']}; real: "
            f"{', '.join(real['train']) or 'none'}), ≤ {data['max_len']} tokens"
        )
    if data["kind"] == "lm":
        source = data.get("text_path") or "pydoc_data text"
        tokens = data.get("tokenizer", "bytes")
        return f"next {tokens} token, {data['seq_len']}-token windows of {source}"
    if data["kind"] == "gaussian":
        return (
            f"Gaussian inputs ({data['features']} features), {data['classes']} random classes, "
            f"{data['num_samples']} samples"
        )
    source = data.get("text_path") or "pydoc_data text"
    return f"next byte after {data['context']} bytes of {source}, {data['num_samples']} windows"


def loss_summary(cfg: dict) -> str:
    """``"softmax CE in float32"``, or ``"loss per method"`` when methods override it."""
    losses = {
        (
            m.get("loss") or cfg.get("loss", "softmax"),
            m.get("loss_dtype") or cfg.get("loss_dtype", "float32"),
        )
        for m in cfg["methods"]
    }
    if len(losses) > 1:
        return "loss per method: " + ", ".join(
            f"{m['label']} {m.get('loss') or cfg.get('loss', 'softmax')} in "
            f"{m.get('loss_dtype') or cfg.get('loss_dtype', 'float32')}"
            for m in cfg["methods"]
        )
    (kind, dtype) = losses.pop()
    return f"{kind} CE in {dtype}"


_OBJECTIVES = {
    "imdb": "binary cross entropy on one logit",
    "qm9": "squared error",
}


def objective_summary(cfg: dict) -> str:
    """The training objective in words: :func:`loss_summary`, or the Grokfast
    paper's MNIST/IMDb/QM9 objectives."""
    data = cfg["data"]
    if data.get("kind") == "mnist" and data.get("objective", "mse") == "mse":
        return f"mean squared error on one-hot targets in {cfg.get('loss_dtype', 'float32')}"
    if data.get("kind") in _OBJECTIVES:
        return f"{_OBJECTIVES[data['kind']]} in {cfg.get('loss_dtype', 'float32')}"
    return loss_summary(cfg)


STABILITY_PANELS = (
    ("val_acc", "validation accuracy", False),
    ("sc_fraction", "Softmax Collapse fraction", False),
    ("zero_loss_fraction", "fraction of zero losses", False),
    ("nlm_cos_mean", "NLM cosine cos(w, -∇L), mean", False),
    ("weight_norm", "weight norm", True),
    ("logit_norm", "logit norm", True),
)


def plot_stability(record: RunRecord) -> plt.Figure:
    """Prieto et al.'s diagnostics against step (log x): validation accuracy, Softmax
    Collapse fraction, zero-loss fraction, NLM cosine, weight and logit norms; one thin
    line per member, the method's median thick."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, label, log_y) in zip(axes.flat, STABILITY_PANELS, strict=True):
        for method, color in zip(record.methods, _colors(len(record.methods)), strict=True):
            if method.steps.size == 0 or key not in method.metrics:
                continue
            values = method.metrics[key]
            ax.plot(method.steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(
                method.steps,
                np.nanmedian(values, axis=1),
                color=color,
                linewidth=2.2,
                label=f"{method.label} (median of {values.shape[1]})",
            )
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("optimisation step")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(_title(record), fontsize=10)
    fig.tight_layout()
    return fig


def plot_steps_to_grok(record: RunRecord) -> plt.Figure:
    """Steps to reach the validation threshold, one point per member, median bar per
    method; members that never got there are drawn at the budget as '^' markers."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(record.methods), 4.2))
    budget = record.budget
    rng = np.random.default_rng(0)
    for i, (method, color) in enumerate(
        zip(record.methods, _colors(len(record.methods)), strict=True)
    ):
        hit = np.array([s for s in method.generalised if s is not None], float)
        missed = sum(s is None for s in method.generalised)
        jitter = rng.uniform(-0.12, 0.12, hit.size)
        ax.scatter(i + jitter, hit, color=color, s=22, zorder=3)
        if missed:
            ax.scatter(
                i + rng.uniform(-0.12, 0.12, missed),
                np.full(missed, budget),
                marker="^",
                color=color,
                s=30,
                zorder=3,
                label=f"{method.label}: {missed} not by {budget}",
            )
        if hit.size and not missed:
            median = np.median(hit)
            ax.hlines(median, i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4)
            ax.annotate(f"{median:.0f}", (i + 0.32, median), fontsize=8, va="center")
    ax.set_xticks(range(len(record.methods)), [m.label for m in record.methods], rotation=15)
    if any(m.generalised for m in record.methods):  # a log axis needs a point to show
        ax.set_yscale("log")
    threshold = record.config["val_threshold"]
    ax.set_ylabel(f"steps to {threshold:.0%} validation accuracy")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if any(None in m.generalised for m in record.methods):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_figures(record: RunRecord) -> list[pathlib.Path]:
    """Write ``plots/accuracy.png``, ``plots/loss.png``, ``plots/steps_to_grok.png``
    and, for runs with diagnostics, ``plots/stability.png``, for entropy-tracking runs
    ``plots/entropy.png``; for runs with the mechanistic probes, the analysis figures
    (:func:`grokjax.viz.analysis.write_analysis_figures`, ``analysis/figures/``)."""
    out = record.run_dir / "plots"
    out.mkdir(exist_ok=True)
    paths = []
    figures = [
        ("accuracy.png", plot_curves(record, "acc")),
        ("loss.png", plot_curves(record, "loss")),
        ("steps_to_grok.png", plot_steps_to_grok(record)),
    ]
    if any("sc_fraction" in m.metrics for m in record.methods):
        figures.append(("stability.png", plot_stability(record)))
    from grokjax.viz.entropy import has_entropy, plot_entropy

    if has_entropy(record):
        figures.append(("entropy.png", plot_entropy(record)))
    from grokjax.viz.lm import plot_activation_shapes

    shapes = plot_activation_shapes(record)
    if shapes is not None:
        figures.append(("activation_shapes.png", shapes))
    for name, fig in figures:
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    from grokjax.viz.analysis import write_analysis_figures

    return paths + write_analysis_figures(record)
