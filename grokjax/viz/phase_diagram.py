"""Phase diagrams of a run that sweeps a 2-D grid: steps to the validation threshold and
Liu et al.'s learning phase at every grid point, one panel per method.

A method's grid is its ``sweep`` (in ``config.json``) when it sweeps exactly two keys
with two or more values each; its members are the grid points × its seeds in the order
:meth:`grokjax.train.method.MethodConfig.members` gives them (the keys sorted, the
first key's values outermost, then the seeds). The axes are named by each key's last
part (``learning_rate``, ``weight_decay``, ``train_fraction``), so methods whose
optimizer lists differ (``optimizer.0.weight_decay`` against
``optimizer.1.weight_decay``) share axes; the first key is the x axis. An axis whose
values are positive and evenly spaced in ``log`` is drawn on a log scale.

Every member is classified by :func:`grokjax.analysis.phases.classify_phases` with Liu
et al.'s values: 90% thresholds on training and validation accuracy, a delay of 10³
steps between comprehension and grokking, the run's own budget. With several seeds
per grid point a cell shows the median steps (over seeds that reach the threshold,
and "never" unless all do) and the most common phase (ties go to the earlier phase in
:data:`~grokjax.analysis.phases.PHASES`).

- :func:`write_phase_figures`: ``plots/phase_diagram_steps.png`` (steps to the
  validation threshold) and ``plots/phase_diagram.png`` (phases);
- :func:`phase_diagram_section`: the report's ``## Phase diagram``: the criteria,
  members per phase and method, and for each method the grid points whose phase
  differs from the first method's at the same point.

References:
    Liu, Kitouni, Nolte, Michaud, Tegmark, Williams (2022). Towards Understanding
    Grokking: An Effective Theory of Representation Learning. NeurIPS 2022,
    arXiv:2205.10343 (phase diagrams over learning rate and weight decay, Fig. 6-7).
"""

from __future__ import annotations

import collections
import pathlib
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from grokjax.analysis.phases import LIU_DELAY, LIU_THRESHOLD, PHASES, classify_phases
from grokjax.viz.records import RunRecord, load_run

__all__ = [
    "PHASE_COLOURS",
    "PhaseGrid",
    "is_log_spaced",
    "phase_diagram_section",
    "phase_grids",
    "write_phase_figures",
]

#: Liu et al.'s colours: comprehension green, grokking yellow, memorisation purple,
#: confusion black.
PHASE_COLOURS = ("#a0da39", "#fde725", "#46327e", "#1e1e1e")


@dataclass
class PhaseGrid:
    """One method's grid: axis names and values (sorted), and per cell (y, x) the
    steps to the validation threshold (``nan``: never) and the phase code."""

    label: str
    names: tuple[str, str]  # (x axis, y axis), short names
    x: np.ndarray
    y: np.ndarray
    steps_YX: np.ndarray
    phase_YX: np.ndarray
    delay: float
    budget: float
    # cells where a member diverged (trained on with on_divergence = "continue")
    diverged_YX: np.ndarray | None = None


def is_log_spaced(values) -> bool:
    """Whether ``values`` (≥ 3 of them) are positive and evenly spaced in ``log``.

    >>> is_log_spaced([1e-4, 1e-3, 1e-2]), is_log_spaced([0.1, 0.2, 0.3])
    (True, False)
    """
    v = np.sort(np.asarray(values, float))
    if len(v) < 3 or v[0] <= 0:
        return False
    gaps = np.diff(np.log(v))
    return bool(np.allclose(gaps, gaps.mean(), rtol=0.1))


def _grid_keys(method: dict) -> list[str] | None:
    sweep = method.get("sweep") or {}
    keys = sorted(sweep)
    if len(keys) != 2 or any(len(sweep[k]) < 2 for k in keys):
        return None
    return keys


def phase_grids(record: RunRecord) -> list[PhaseGrid]:
    """Every method with a 2-D grid (see the module docstring), in the config's order."""
    cfg = record.config
    budget = float(record.budget)
    delay = float(LIU_DELAY)
    out = []
    for method_cfg, curves in zip(cfg["methods"], record.methods, strict=True):
        keys = _grid_keys(method_cfg)
        if keys is None or not curves.steps.size:
            continue
        seeds = len(method_cfg.get("seeds") or [0])
        values = [np.asarray(method_cfg["sweep"][k], float) for k in keys]
        phases = classify_phases(
            curves.steps,
            curves.metrics["train_acc"],
            curves.metrics["val_acc"],
            threshold=LIU_THRESHOLD,
            delay=delay,
            budget=budget,
        )
        reached = np.array([np.nan if g is None else g for g in curves.generalised], float)
        nx, ny = len(values[0]), len(values[1])
        if len(reached) != nx * ny * seeds:
            continue  # an interrupted run: not every member wrote its curves
        steps_XYS = reached.reshape(nx, ny, seeds)
        phase_XYS = phases.phase.reshape(nx, ny, seeds)
        steps_XY = np.where(
            np.isnan(steps_XYS).any(-1), np.nan, np.nanmedian(np.nan_to_num(steps_XYS), -1)
        )
        counts = np.stack([(phase_XYS == i).sum(-1) for i in range(len(PHASES))], -1)
        phase_XY = np.argmax(counts, -1)  # the most common; ties: the earlier phase
        gone = np.array([d is not None for d in curves.diverged] or [False] * len(reached))
        diverged_XY = gone.reshape(nx, ny, seeds).any(-1)
        ox, oy = np.argsort(values[0]), np.argsort(values[1])
        out.append(
            PhaseGrid(
                curves.label,
                tuple(k.rsplit(".", 1)[-1] for k in keys),
                values[0][ox],
                values[1][oy],
                steps_XY[ox][:, oy].T,
                phase_XY[ox][:, oy].T,
                delay,
                budget,
                diverged_XY[ox][:, oy].T,
            )
        )
    return out


def _edges(v: np.ndarray, log: bool) -> np.ndarray:
    w = np.log(v) if log else v
    if len(w) == 1:
        mid = np.array([w[0] - 0.5, w[0] + 0.5])
    else:
        inner = (w[1:] + w[:-1]) / 2
        mid = np.concatenate([[2 * w[0] - inner[0]], inner, [2 * w[-1] - inner[-1]]])
    return np.exp(mid) if log else mid


def _axes(ax, grid: PhaseGrid, values_YX: np.ndarray, **mesh):
    logx, logy = is_log_spaced(grid.x), is_log_spaced(grid.y)
    image = ax.pcolormesh(_edges(grid.x, logx), _edges(grid.y, logy), values_YX, **mesh)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xticks(grid.x, [f"{v:.2g}" for v in grid.x], rotation=60, fontsize=7)
    ax.set_yticks(grid.y, [f"{v:.2g}" for v in grid.y], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel(grid.names[0].replace("_", " ") + (" (log)" if logx else ""))
    ax.set_ylabel(grid.names[1].replace("_", " ") + (" (log)" if logy else ""))
    ax.set_title(grid.label)
    return image


def _plot_steps(grids: list[PhaseGrid], threshold: float):
    fig, axes = plt.subplots(
        1, len(grids), figsize=(4.6 * len(grids) + 1, 4.6), squeeze=False, layout="constrained"
    )
    finite = np.concatenate([g.steps_YX[np.isfinite(g.steps_YX)] for g in grids])
    lo, hi = (finite.min(), finite.max()) if finite.size else (1.0, 10.0)
    norm = LogNorm(vmin=max(lo, 1.0), vmax=max(hi, lo + 1.0, 2.0))
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#d9d9d9")
    image = None
    for ax, grid in zip(axes[0], grids, strict=True):
        image = _axes(ax, grid, np.ma.masked_invalid(grid.steps_YX), cmap=cmap, norm=norm)
        for (i, j), v in np.ndenumerate(grid.steps_YX):
            text = "—" if np.isnan(v) else (f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}")
            dark = not np.isnan(v) and np.mean(cmap(norm(v))[:3]) < 0.45
            colour = "white" if dark else "black"
            ax.text(grid.x[j], grid.y[i], text, ha="center", va="center", fontsize=5, color=colour)
    fig.colorbar(image, ax=axes[0].tolist(), label=f"steps to {threshold:.0%} val acc")
    fig.suptitle(
        f"Steps to {threshold:.0%} validation accuracy (grey —: not within "
        f"{grids[0].budget:.0f} steps)"
    )
    return fig


def _plot_phases(grids: list[PhaseGrid]):
    fig, axes = plt.subplots(
        1, len(grids), figsize=(4.6 * len(grids) + 1, 4.8), squeeze=False, layout="constrained"
    )
    cmap = ListedColormap(PHASE_COLOURS)
    for ax, grid in zip(axes[0], grids, strict=True):
        _axes(ax, grid, grid.phase_YX, cmap=cmap, vmin=-0.5, vmax=len(PHASES) - 0.5)
        _mark_diverged(ax, grid)
    handles = [Patch(color=c, label=p) for c, p in zip(PHASE_COLOURS, PHASES, strict=True)]
    if any(g.diverged_YX is not None and g.diverged_YX.any() for g in grids):
        handles.append(Line2D([], [], ls="", marker="x", color="red", label="diverged"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(
        f"Learning phases (Liu et al. 2022: {LIU_THRESHOLD:.0%} train/val accuracy, "
        f"delay ≥ {grids[0].delay:.0f} steps is grokking)"
    )
    return fig


def _mark_diverged(ax, grid: PhaseGrid) -> None:
    if grid.diverged_YX is None or not grid.diverged_YX.any():
        return
    i, j = np.nonzero(grid.diverged_YX)
    ax.plot(grid.x[j], grid.y[i], ls="", marker="x", color="red", markersize=6)


def write_phase_figures(run: str | pathlib.Path | RunRecord) -> list[pathlib.Path]:
    """``plots/phase_diagram_steps.png`` and ``plots/phase_diagram.png`` for a run with
    2-D grids (none, and ``[]``, for other runs)."""
    record = run if isinstance(run, RunRecord) else load_run(run)
    grids = phase_grids(record)
    if not grids:
        return []
    out = record.run_dir / "plots"
    out.mkdir(exist_ok=True)
    threshold = float(record.config.get("val_threshold", 0.95))
    paths = []
    for name, fig in (
        ("phase_diagram_steps.png", _plot_steps(grids, threshold)),
        ("phase_diagram.png", _plot_phases(grids)),
    ):
        fig.savefig(out / name, dpi=130, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / name)
    return paths


def _where(grid: PhaseGrid, cells: list[tuple[int, int]]) -> str:
    """The grid points of ``cells`` (y, x), as a list or, when many, their ranges."""
    (xn, yn), fmt = grid.names, "{:.2g}"
    if len(cells) <= 3:
        return ", ".join(
            f"({xn} {fmt.format(grid.x[j])}, {yn} {fmt.format(grid.y[i])})" for i, j in cells
        )
    xs = sorted({grid.x[j] for _, j in cells})
    ys = sorted({grid.y[i] for i, _ in cells})
    return (
        f"{xn} {fmt.format(xs[0])}–{fmt.format(xs[-1])}, {yn} {fmt.format(ys[0])}–"
        f"{fmt.format(ys[-1])}"
    )


def _moves(base: PhaseGrid, grid: PhaseGrid) -> list[str]:
    same = (
        base.names == grid.names
        and base.x.shape == grid.x.shape
        and base.y.shape == grid.y.shape
        and np.allclose(base.x, grid.x)
        and np.allclose(base.y, grid.y)
    )
    if not same:
        return [f"- {grid.label}: not on {base.label}'s grid; no point-by-point comparison."]
    moved = collections.defaultdict(list)
    for (i, j), p in np.ndenumerate(grid.phase_YX):
        if p != base.phase_YX[i, j]:
            moved[(int(base.phase_YX[i, j]), int(p))].append((i, j))
    total = sum(len(v) for v in moved.values())
    both = np.isfinite(base.steps_YX) & np.isfinite(grid.steps_YX)
    lines = [
        f"- **{grid.label}**: {total} of {grid.phase_YX.size} grid points differ from "
        f"{base.label}'s phase."
    ]
    for (a, b), cells in sorted(moved.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  - {PHASES[a]} → {PHASES[b]}: {len(cells)} ({_where(grid, cells)})")
    gained = int(np.sum(np.isfinite(grid.steps_YX) & ~np.isfinite(base.steps_YX)))
    lost = int(np.sum(~np.isfinite(grid.steps_YX) & np.isfinite(base.steps_YX)))
    if both.any():
        ratio = base.steps_YX[both] / grid.steps_YX[both]
        lines.append(
            f"  - steps to the validation threshold where both reach it "
            f"({int(both.sum())} point{'s' if both.sum() > 1 else ''}): {base.label} ÷ "
            f"{grid.label} median ×{np.median(ratio):.2f} "
            f"[{ratio.min():.2f}–{ratio.max():.2f}]; reached only by {grid.label}: {gained}, "
            f"only by {base.label}: {lost}"
        )
    else:
        lines.append(
            f"  - no point where both reach the validation threshold; reached only by "
            f"{grid.label}: {gained}, only by {base.label}: {lost}"
        )
    return lines


def phase_diagram_section(record: RunRecord, figures: bool = True) -> str:
    """``## Phase diagram`` for a run with 2-D grids ('' otherwise): the criteria, the
    grid points per phase and method, and how each method's phases differ from the
    first grid method's at the same points."""
    grids = phase_grids(record)
    if not grids:
        return ""
    threshold = float(record.config.get("val_threshold", 0.95))
    g0 = grids[0]
    lines = [
        "## Phase diagram",
        "",
        f"Grid: {g0.names[0].replace('_', ' ')} × {g0.names[1].replace('_', ' ')} "
        f"({len(g0.x)} × {len(g0.y)} points per method). Phases after Liu et al. 2022 "
        f"(arXiv:2205.10343, their phase-diagram code): with t_train and t_val the first "
        f"evaluations at which training and validation accuracy reach "
        f"{LIU_THRESHOLD:.0%} within the {g0.budget:.0f}-step budget, **comprehension** "
        f"when both are reached and t_val − t_train < Δ, **grokking** when both are reached "
        f"and t_val − t_train ≥ Δ, **memorisation** when only t_train is reached, "
        f"**confusion** when t_train is not; Δ = {g0.delay:.0f} steps (the authors' values; "
        f"their budget was 10⁵ steps, so some members counted here as memorising may "
        "grok later). Training accuracy is the mean over each evaluation interval's "
        "training batches; crossings are resolved to an evaluation interval. A grid "
        "point where a member diverged (NaN/Inf or a runaway loss; × in the phase figure) "
        "keeps the phase its accuracy curves give.",
        "",
        "| method | " + " | ".join(PHASES) + f" | reach {threshold:.0%} val | "
        f"median steps to {threshold:.0%} val | diverged |",
        "|---|" + "---|" * (len(PHASES) + 3),
    ]
    for g in grids:
        counts = [int(np.sum(g.phase_YX == i)) for i in range(len(PHASES))]
        hit = g.steps_YX[np.isfinite(g.steps_YX)]
        median = f"{np.median(hit):.0f}" if hit.size else "—"
        lines.append(
            f"| {g.label} | "
            + " | ".join(map(str, counts))
            + f" | {hit.size}/{g.steps_YX.size} | {median} | "
            f"{0 if g.diverged_YX is None else int(g.diverged_YX.sum())} |"
        )
    if len(grids) > 1:
        lines += ["", f"Against {g0.label} at the same grid points:", ""]
        for g in grids[1:]:
            lines += _moves(g0, g)
    if figures:
        lines += [
            "",
            "![phases](plots/phase_diagram.png)",
            "",
            f"![steps to {threshold:.0%} validation accuracy](plots/phase_diagram_steps.png)",
        ]
    return "\n".join(lines)
