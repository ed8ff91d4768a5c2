"""``report.md``: the run's results table, written from the run directory alone."""

from __future__ import annotations

import pathlib

import numpy as np

from grokjax.viz.analysis import analysis_section
from grokjax.viz.arc import arc_section, evaluations_section
from grokjax.viz.confusion import write_confusion_figures
from grokjax.viz.entropy import entropy_findings, entropy_table, has_entropy
from grokjax.viz.lm import is_lm, lm_findings, lm_levels_table, lm_table
from grokjax.viz.paper_metrics import paper_metrics_section
from grokjax.viz.phase_diagram import phase_diagram_section, write_phase_figures
from grokjax.viz.plots import objective_summary, synthetic_task, write_figures
from grokjax.viz.records import RunRecord, load_run

__all__ = ["results_table", "write_report"]


def _fmt_steps(values: list[int | None], budget: int) -> str:
    hit = [v for v in values if v is not None]
    if not hit:
        return f">{budget}"
    median = f"{np.median(hit):.0f}" if len(hit) == len(values) else f">{budget}"
    return f"{median} [{min(hit)}–{max(hit)}]" if len(hit) > 1 else median


def results_table(record: RunRecord) -> str:
    """Markdown table: per method, members that generalised, steps to the thresholds."""
    budget = record.budget
    base = record.methods[0]
    base_hits = [v for v in base.generalised if v is not None]
    base_median = (
        np.median(base_hits) if base_hits and len(base_hits) == len(base.generalised) else None
    )
    lines = [
        f"| method | members | generalised | steps to {record.config['val_threshold']:.0%} val "
        f"(median [min–max]) | steps to {record.config['train_threshold']:.0%} train | "
        "delay (median) | final val acc (median) | speed-up vs " + base.label + " |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in record.methods:
        hits = [v for v in m.generalised if v is not None]
        delays = [
            g - t
            for g, t in zip(m.generalised, m.memorised, strict=True)
            if g is not None and t is not None
        ]
        final = np.nanmedian(m.metrics["val_acc"][-1]) if m.steps.size else float("nan")
        if m is base:
            speedup = "1×" if base_median is not None else "—"
        elif hits and len(hits) == len(m.generalised):
            med = np.median(hits)
            speedup = (
                f"×{base_median / med:.1f}" if base_median is not None else f">×{budget / med:.1f}"
            )
        else:
            speedup = "—"
        lines.append(
            f"| {m.label} | {len(m.generalised)} | {len(hits)}/{len(m.generalised)} | "
            f"{_fmt_steps(m.generalised, budget)} | {_fmt_steps(m.memorised, budget)} | "
            f"{np.median(delays):.0f} | "
            if delays
            else f"| {m.label} | {len(m.generalised)} | "
            f"{len(hits)}/{len(m.generalised)} | {_fmt_steps(m.generalised, budget)} | "
            f"{_fmt_steps(m.memorised, budget)} | — | "
        )
        lines[-1] += f"{final:.3f} | {speedup} |"
    return "\n".join(lines)


def diverged_line(record: RunRecord, listed: int = 6) -> str:
    """Which members diverged and when ('' when none did), at most ``listed`` by name.

    >>> from grokjax.viz.records import MethodCurves
    >>> curves = MethodCurves("adamw", [0, 1], np.arange(1), {}, [None] * 2, [None] * 2,
    ...                       diverged=[None, 40])
    >>> print(diverged_line(RunRecord(None, {}, [curves])).split(": ", 1)[1])
    1 member: adamw member 1 (seed 1) at step 40.
    """
    gone = [
        (m.label, i, seed, step)
        for m in record.methods
        for i, (seed, step) in enumerate(zip(m.seeds, m.diverged, strict=False))
        if step is not None
    ]
    if not gone:
        return ""
    named = [f"{label} member {i} (seed {seed}) at step {step}" for label, i, seed, step in gone]
    more = f" and {len(named) - listed} more" if len(named) > listed else ""
    plural = "s" if len(gone) > 1 else ""
    return (
        "Diverged (loss or parameters NaN/Inf, or a runaway loss): "
        f"{len(gone)} member{plural}: {', '.join(named[:listed])}{more}."
    )


def _data_line(data: dict, swept_fraction: bool = False) -> str:
    if data.get("kind") == "sparse_parity":
        task = (
            f"sparse parity, {data['parity_bits']} parity + {data['noise_bits']} noise bits, "
            f"{data['num_samples']} samples"
        )
    elif data.get("kind") == "mnist":
        rest = f"{data['val_size']} others" if data.get("val_size") else "the others"
        task = f"MNIST digits ({data['source']}), {data['train_size']} train, {rest} validate"
    elif data.get("kind") == "imdb":
        task = (
            f"IMDb sentiment ({data['source']}), {data['num_reviews']} reviews, top "
            f"{data['vocab']} words, {data['seq_len']} tokens"
        )
    elif data.get("kind") == "qm9":
        task = f"QM9 polarizability ({data['source']}), first {data['num_molecules']} molecules"
    elif data.get("kind") in ("gaussian", "text", "lm", "arc"):
        task = synthetic_task(data)
    else:
        task = f"`{data['op']}` mod {data['p']}"
    fraction = f", {data['train_fraction']:.0%} train" if "train_fraction" in data else ""
    if swept_fraction:  # members train at their own fraction (grokjax.train.state)
        fraction = ", train fraction swept (validation: the rows held out at the largest)"
    return f"- data: {task}{fraction}, encoding `{data['encoding']}`"


def _model_line(model: dict) -> str:
    if model["kind"] == "decoder":
        return f"(depth {model['depth']}, width {model['width']}, {model['heads']} heads)"
    if model["kind"] == "hooked":  # has no "hidden": the MLP line below would fail
        mlp = f", MLP {model['mlp_width']}" if model.get("mlp_width") else ""
        return f"(depth {model['depth']}, width {model['width']}, {model['heads']} heads{mlp})"
    if model["kind"] == "mamba":
        return (
            f"(d_model {model['width']}, {model['depth']} layers, d_state "
            f"{model.get('d_state', 16)}, expand {model.get('expand', 2)})"
        )
    if model["kind"] == "lstm":
        return (
            f"(embedding {model['embed']}, {model['layers']} layers of {model['hidden']}, "
            f"init ×{model['init_scale']:g})"
        )
    if model["kind"] == "nnconv":
        return f"(NNConv widths {model['widths']}, init ×{model['init_scale']:g})"
    scale = f", init ×{model['init_scale']:g}" if model.get("init_scale", 1.0) != 1.0 else ""
    return f"(hidden {model['hidden']}{scale})"


def write_report(run_dir: str | pathlib.Path, *, extra: str = "") -> pathlib.Path:
    """(Re)draw the figures and write ``report.md`` for the run in ``run_dir``; runs
    with the mechanistic probes get an "## Analysis" section after the figures
    (:func:`grokjax.viz.analysis.analysis_section`), runs with the ``confusion_matrix``
    probe ``plots/confusion.png`` and ``plots/confusion_steps.png``
    (:func:`grokjax.viz.confusion.write_confusion_figures`), runs whose methods sweep a
    2-D grid the phase diagrams (:mod:`grokjax.viz.phase_diagram`)."""
    record = load_run(run_dir)
    write_figures(record)
    confusion = write_confusion_figures(record)  # none without the confusion_matrix probe
    write_phase_figures(record)  # none without a method sweeping a 2-D grid
    cfg = record.config
    data, model = cfg["data"], cfg["model"]
    last = max((int(m.steps[-1]) for m in record.methods if m.steps.size), default=0)
    never = [m.label for m in record.methods if any(v is None for v in m.generalised)]
    lines = [
        f"# {cfg['name']}",
        "",
        cfg.get("description") or "",
        "",
        _data_line(data, any("data.train_fraction" in m.get("sweep", {}) for m in cfg["methods"])),
        f"- precision: {cfg.get('dtype', 'float32')} parameters and activations; "
        f"{objective_summary(cfg)}",
        f"- model: {model['kind']} {_model_line(model)}",
        f"- budget {record.budget} steps, batch {cfg['batch_size']} ({cfg['sampling']} sampling); "
        f"trained to step {last}",
        "",
    ]
    # next-token accuracy has no grokking threshold to report; a regression's thresholds
    # are losses, reported with the paper's metrics
    thresholds = not is_lm(record) and data.get("kind") != "qm9"
    if thresholds:
        lines += ["## Results", "", results_table(record), ""]
    if never and thresholds:
        lines += [
            f"Not every member of {', '.join(never)} reached {cfg['val_threshold']:.0%} validation "
            f"accuracy within the {record.budget}-step budget: their medians are reported as "
            f"'>{record.budget}' rather than extrapolated.",
            "",
        ]
    if diverged := diverged_line(record):
        lines += [diverged, ""]
    if is_lm(record):
        lines += [
            "## Language-model convergence",
            "",
            "Medians over seeds at the last evaluation; the last column compares the steps "
            f"each method took to reach {record.methods[0].label}'s final validation loss.",
            "",
            lm_table(record),
            "",
            "Steps to the validation losses the first method had at a quarter, half, three "
            "quarters and the end of its run (medians over seeds, evaluation resolution):",
            "",
            lm_levels_table(record),
            "",
            lm_findings(record),
            "",
        ]
        if (pathlib.Path(run_dir) / "plots" / "activation_shapes.png").exists():
            lines += ["![learned activation shapes](plots/activation_shapes.png)", ""]
    if has_entropy(record):
        lines += [
            "## Entropy dynamics",
            "",
            "Final evaluation, members at the same input-noise σ averaged; Δ is the change of "
            f"the final training loss against {record.methods[0].label} at the same σ "
            "(negative: lower loss).",
            "",
            entropy_table(record),
            "",
            entropy_findings(record),
            "",
            "![entropy dynamics](plots/entropy.png)",
            "",
        ]
        sc = [c for m in cfg["methods"] if (c := _adaptive_controller(m["optimizer"]))]
        if sc:
            s = sc[0]
            lines += [
                "The adaptive controller's thresholds are a reconstruction (the source gives "
                f"its rules in words only): high {s['high']}, low {s['low']} (normalised "
                f"entropy, smoothing {s['smoothing']}), plateau when {s['plateau_window']} "
                f"smoothed readings span < {s['plateau_tolerance']}, cooldown "
                f"{s['cooldown']}, warm-up {s['warmup']}, pump σ {s['pump_noise']} for "
                f"{s['pump_steps']} steps.",
                "",
            ]
    for section in (
        paper_metrics_section(record),
        phase_diagram_section(record),
        arc_section(record),
        evaluations_section(run_dir),
    ):
        if section:
            lines += [section, ""]
    if extra:
        lines += [extra, ""]
    lines += [
        "## Figures",
        "",
        "![accuracy](plots/accuracy.png)",
        "",
        "![loss](plots/loss.png)",
        "",
    ]
    if thresholds:  # a regression's steps to its loss thresholds are in the table above
        lines += ["![steps to grok](plots/steps_to_grok.png)", ""]
    if (pathlib.Path(run_dir) / "plots" / "stability.png").exists():
        lines += ["![numerical stability](plots/stability.png)", ""]
    for path in confusion:
        what = "over training" if path.stem.endswith("steps") else "at the last evaluation"
        lines += [
            f"![validation confusion matrices {what} (members summed, rows normalised)]"
            f"(plots/{path.name})",
            "",
        ]
    analysis = analysis_section(record)  # empty without the mechanistic probes
    if analysis:
        lines += [analysis, ""]
    path = pathlib.Path(run_dir) / "report.md"
    path.write_text("\n".join(lines))
    return path


def _adaptive_controller(optimizer) -> dict | None:
    """The entropy controller's settings of an adaptive Surge-Collapse in a method's
    optimizer (a list of transform specs; a run of an older version wrote one table)."""
    from grokjax.optim import EntropyControllerConfig

    if isinstance(optimizer, dict):  # older run folders
        table = optimizer.get("surge_collapse", {})
        return table if table.get("schedule") == "adaptive" else None
    for spec in optimizer:
        if spec.get("transform") == "grokjax.surge_collapse" and spec.get("schedule") == "adaptive":
            return {**EntropyControllerConfig()._asdict(), **spec.get("controller", {})}
        for value in spec.values():
            if isinstance(value, list) and (found := _adaptive_controller(value)):
                return found
    return None
