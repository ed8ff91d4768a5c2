"""Figures and the report section of the mechanistic probes (grokking analysis).

Drawn from a run directory's files alone: ``metrics.jsonl`` (the probes' scalars),
``analysis/step_<step>.npz`` (their arrays) and, once ``grokjax analyze`` has run,
``analysis/checkpoints.jsonl`` and ``analysis/checkpoint_<step>.npz`` (the same
measures recomputed from the checkpoints, with Nanda's restricted and excluded losses
under the final checkpoint's key frequencies).

- :func:`plot_attention`: one member's attention heatmaps per head at steps before,
  during and after grokking;
- :func:`plot_fourier_spectrum`: the embedding's Fourier norms per frequency over
  training, one panel per member;
- :func:`plot_progress_measures`: Nanda et al. 2023's Fig. 7 (losses, restricted and
  excluded loss, Gini coefficients, weight norm) with the grokking phases marked;
- :func:`plot_gradient_flow`: gradient norm and update/parameter ratio per leaf;
- :func:`plot_activation_statistics`: mean, std, zero fraction and RMS per site;
- :func:`write_analysis_figures`: all of them, every method, as PNG files;
- :func:`analysis_section`: the report's "## Analysis" markdown.

Every figure function returns ``None`` when the run has no data for it (a probe left
out, a run without a ``metrics.jsonl``); an unknown method label or member index is a
``ValueError``. The ``weight_evolution`` probe's scalars have no figure here.

References:
  Nanda, Chan, Lieberum, Smith, Steinhardt 2023, "Progress measures for grokking via
  mechanistic interpretability" (Fig. 7, Section 5.2).
  Seed 003, "Grokking Transformer Analysis" (attention, activation statistics,
  gradient flow; the legacy early-grokking score).
"""

from __future__ import annotations

import pathlib
import re
import warnings
import zipfile
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from grokjax.analysis.statistics import (
    EARLY_GROKKING_THRESHOLD,
    GrokkingPhases,
    early_grokking_scores,
    grokking_phases,
)
from grokjax.errors import RunFolderError
from grokjax.runs import read_metrics
from grokjax.viz.records import MethodCurves, RunRecord, load_run

__all__ = [
    "analysis_section",
    "figure_name",
    "member_phases",
    "phase_steps",
    "plot_activation_statistics",
    "plot_attention",
    "plot_fourier_spectrum",
    "plot_gradient_flow",
    "plot_progress_measures",
    "write_analysis_figures",
]

RunLike = str | pathlib.Path | RunRecord

PROGRESS_PANELS = (
    (
        "(a) train and test loss",
        (("progress/train_loss", "train loss"), ("progress/test_loss", "test loss")),
        True,
    ),
    ("(b) restricted and excluded loss", (), True),  # filled from the checkpoints or online
    (
        "(c) Gini coefficient of the Fourier norms",
        (("progress/gini_embed", "Gini of W_E"), ("progress/gini_unembed", "Gini of W_U")),
        False,
    ),
    ("(d) total squared weight norm Σ‖w‖²", (("progress/weight_norm_sq", "Σ‖w‖²"),), False),
)
PROGRESS_KEYS = (
    *(k for _, keys, _ in PROGRESS_PANELS for k, _ in keys),
    "progress/restricted_loss_online",
    "progress/excluded_loss_online",
)
GRADIENT_PANELS = (  # scalar, panel title, log y
    ("grad_norm", "gradient norm ‖g‖", True),
    ("update_ratio", "update / parameter norm ‖u‖ / ‖w‖", True),
)
ACTIVATION_PANELS = (
    ("mean", "mean", False),
    ("std", "standard deviation", True),
    ("zero_fraction", "fraction of exact zeros", False),
    ("rms", "RMS", True),
)
# how each phase end is drawn: (GrokkingPhases field, colour, line style, legend name)
PHASE_STYLES = (
    ("memorised", "tab:gray", ":", "memorisation end M"),
    ("circuit", "tab:orange", "--", "circuit formation end"),
    ("cleaned_up", "tab:green", "-", "cleanup end C"),
)
FIGURES = (  # file prefix, what it shows
    ("attention", "attention patterns"),
    ("fourier", "Fourier spectrum of the embedding"),
    ("progress", "progress measures"),
    ("gradient_flow", "gradient flow"),
    ("activations", "activation statistics"),
)
NANDA_SOURCE = "Nanda's definition (final checkpoint's key frequencies, `grokjax analyze`)"
ONLINE_SOURCE = "online (current key frequencies)"


@dataclass
class _Curves:
    """One method's rows of a ``.jsonl``: ``steps`` (S,) and each scalar as (S, M)."""

    steps: np.ndarray
    metrics: dict[str, np.ndarray]


@dataclass
class _Run:
    """A run directory read once: its record, the checkpoint analysis and the array
    files (their keys listed, arrays loaded on demand)."""

    record: RunRecord
    checkpoints: dict[str, _Curves]  # method label -> curves of checkpoints.jsonl
    step_files: list[tuple[int, pathlib.Path]]
    checkpoint_files: list[tuple[int, pathlib.Path]]
    _keys: dict[pathlib.Path, set[str]] = field(default_factory=dict)

    def keys(self, path: pathlib.Path) -> set[str]:
        if path not in self._keys:
            try:
                with np.load(path) as saved:
                    self._keys[path] = set(saved.files)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # cut off by a crash
                self._keys[path] = set()
        return self._keys[path]

    def arrays(self, key: str, checkpoints: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(steps, arrays)``: ``key`` from every step (or checkpoint) file that has it."""
        files = self.checkpoint_files if checkpoints else self.step_files
        steps, out = [], []
        for step, path in files:
            if key in self.keys(path):
                with np.load(path) as saved:
                    out.append(np.asarray(saved[key]))
                steps.append(step)
        return np.asarray(steps, np.int64), out

    def has_array(self, key: str, checkpoints: bool = False) -> bool:
        files = self.checkpoint_files if checkpoints else self.step_files
        return any(key in self.keys(path) for _, path in files)

    def array_keys(self, prefix: str) -> list[str]:
        return sorted({k for _, p in self.step_files for k in self.keys(p) if k.startswith(prefix)})


def _numbered(folder: pathlib.Path, prefix: str) -> list[tuple[int, pathlib.Path]]:
    files = []
    for path in folder.glob(f"{prefix}_*.npz"):
        number = path.stem.removeprefix(f"{prefix}_")
        if number.isdigit():
            files.append((int(number), path))
    return sorted(files)


def _curves(rows: list[dict], label: str) -> _Curves:
    mine = [r for r in rows if r.get("method") == label]
    steps = np.array(sorted({r["step"] for r in mine}), np.int64)
    members = 1 + max((r["member"] for r in mine), default=-1)
    index = {s: i for i, s in enumerate(steps)}
    names = {k for r in mine for k, v in r.items() if isinstance(v, float)}
    metrics = {}
    for key in sorted(names):
        arr = np.full((len(steps), members), np.nan)
        for r in mine:
            arr[index[r["step"]], r["member"]] = r.get(key, np.nan)
        metrics[key] = arr
    return _Curves(steps, metrics)


def _load(run: RunLike | _Run) -> _Run | None:
    """The run's files, or ``None`` when it has no metrics to draw from."""
    if isinstance(run, _Run):
        return run
    if isinstance(run, RunRecord):
        record = run
        if record.run_dir is None:
            return None
    else:
        try:
            record = load_run(run)
        except (RunFolderError, FileNotFoundError):
            return None
    folder = pathlib.Path(record.run_dir) / "analysis"
    checkpoints = {}
    path = folder / "checkpoints.jsonl"
    if path.exists():
        try:
            rows, _ = read_metrics(path)
        except RunFolderError:  # a damaged line: draw from metrics.jsonl alone
            rows = []
        checkpoints = {m.label: _curves(rows, m.label) for m in record.methods}
    return _Run(
        record,
        checkpoints,
        _numbered(folder, "step") if folder.is_dir() else [],
        _numbered(folder, "checkpoint") if folder.is_dir() else [],
    )


def _method(data: _Run, label: str) -> MethodCurves:
    for m in data.record.methods:
        if m.label == label:
            return m
    labels = [m.label for m in data.record.methods]
    raise ValueError(f"no method {label!r} in {data.record.run_dir} (its methods: {labels}).")


def _members(method: MethodCurves) -> int:
    return method.metrics["train_acc"].shape[1]


def _median(values_SM: np.ndarray) -> np.ndarray:
    """Median over members (axis 1); NaN where no member has a value, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row
        return np.nanmedian(values_SM, axis=1)


def _has(values: np.ndarray | None) -> bool:
    return values is not None and bool(np.isfinite(values).any())


def _thresholds(record: RunRecord) -> dict[str, float]:
    return {
        "train_threshold": float(record.config.get("train_threshold", 0.99)),
        "val_threshold": float(record.config.get("val_threshold", 0.95)),
    }


def _excluded(data: _Run, method: MethodCurves) -> tuple[np.ndarray, np.ndarray, str] | None:
    """``(steps, excluded loss (S, M), source)``: Nanda's from ``checkpoints.jsonl``
    when ``grokjax analyze`` wrote it, else the online one; ``None`` without either."""
    ckpt = data.checkpoints.get(method.label)
    if ckpt is not None and _has(ckpt.metrics.get("progress/excluded_loss")):
        return ckpt.steps, ckpt.metrics["progress/excluded_loss"], NANDA_SOURCE
    online = method.metrics.get("progress/excluded_loss_online")
    if _has(online):
        return method.steps, online, ONLINE_SOURCE
    return None


def _member_phases(data: _Run, method: MethodCurves, member: int) -> GrokkingPhases:
    """:func:`~grokjax.analysis.statistics.grokking_phases` of one member, on the union
    of the evaluation and checkpoint steps: the accuracies (NaN at checkpoint-only
    steps, never a threshold crossing) give M and C, the excluded loss (NaN where it
    was not measured, skipped) the circuit step."""
    steps = method.steps
    train = method.metrics["train_acc"][:, member]
    val = method.metrics["val_acc"][:, member]
    excluded = _excluded(data, method)
    if excluded is None:
        return grokking_phases(steps, train, val, **_thresholds(data.record))
    ex_steps, ex_SM, _ = excluded
    ex = ex_SM[:, member] if member < ex_SM.shape[1] else np.full(ex_steps.shape, np.nan)
    grid = np.union1d(steps, ex_steps)

    def on_grid(at: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.full(grid.shape, np.nan)
        out[np.searchsorted(grid, at)] = values
        return out

    phases = grokking_phases(
        grid,
        on_grid(steps, train),
        on_grid(steps, val),
        on_grid(ex_steps, ex),
        **_thresholds(data.record),
    )
    online = method.metrics.get("progress/excluded_loss_online")
    if phases.circuit is None and phases.separate and phases.cleaned_up and _has(online):
        # no checkpoint between M and C: the online excluded loss still places the circuit
        phases = grokking_phases(steps, train, val, online[:, member], **_thresholds(data.record))
    return phases


def member_phases(run_dir: RunLike, method: str) -> list[GrokkingPhases] | None:
    """The grokking phases of every member of ``method`` (in member order), from its
    accuracies and the excluded loss (Nanda's definition when ``grokjax analyze`` has
    run, else the online one); ``None`` when the run has no metrics."""
    data = _load(run_dir)
    if data is None:
        return None
    m = _method(data, method)
    return [_member_phases(data, m, i) for i in range(_members(m))]


def _mark_phases(ax, phases: list[GrokkingPhases]) -> None:
    """Each member's phase ends as vertical lines across ``ax`` (a line collection,
    not among ``ax.lines``)."""
    for name, color, style, _ in PHASE_STYLES:
        xs = [getattr(p, name) for p in phases if getattr(p, name) is not None]
        if xs:
            ax.vlines(
                xs,
                0,
                1,
                transform=ax.get_xaxis_transform(),
                colors=color,
                linestyles=style,
                linewidth=1,
                alpha=0.8,
            )


def _phase_legend(ax, phases: list[GrokkingPhases], loc: str = "best") -> None:
    handles = [
        plt.Line2D([], [], color=color, linestyle=style, label=name)
        for field_name, color, style, name in PHASE_STYLES
        if any(getattr(p, field_name) is not None for p in phases)
    ]
    kept = ax.get_legend_handles_labels()[0]
    ax.legend(handles=kept + handles, fontsize=7, loc=loc)


def phase_steps(steps: np.ndarray, phases: GrokkingPhases) -> list[tuple[int, str]]:
    """Up to five of the available ``steps`` (sorted) to show a member's attention at,
    each with a row label: the first evaluation, memorisation end M, the midpoint of M
    and cleanup end C, C, and the last evaluation, each snapped to the nearest
    available step (the earlier on ties), repeats merged. Without a separate
    memorisation phase or without C: five evenly spaced steps.

    >>> ph = GrokkingPhases(memorised=300, circuit=None, cleaned_up=800, separate=True)
    >>> phase_steps(np.arange(0, 1200, 100), ph)  # doctest: +NORMALIZE_WHITESPACE
    [(0, 'first evaluation'), (300, 'memorised (M)'), (500, 'midway M–C'),
     (800, 'cleaned up (C)'), (1100, 'last evaluation')]
    >>> phase_steps(np.arange(0, 900, 100), GrokkingPhases(300, None, None, True))
    [(0, 'step'), (200, 'step'), (400, 'step'), (600, 'step'), (800, 'step')]
    """
    steps = np.asarray(steps)
    if steps.size == 0:
        return []
    m, c = phases.memorised, phases.cleaned_up
    if phases.separate and m is not None and c is not None:
        wanted = [
            (steps[0], "first evaluation"),
            (m, "memorised (M)"),
            ((m + c) / 2, "midway M–C"),
            (c, "cleaned up (C)"),
            (steps[-1], "last evaluation"),
        ]
    else:
        picks = np.round(np.linspace(0, steps.size - 1, min(5, steps.size))).astype(int)
        wanted = [(steps[i], "step") for i in picks]
    out: list[tuple[int, str]] = []
    for target, label in wanted:
        step = int(steps[int(np.argmin(np.abs(steps - target)))])
        if out and out[-1][0] == step:
            if label not in out[-1][1].split(" / "):
                out[-1] = (step, f"{out[-1][1]} / {label}")
        elif all(step != s for s, _ in out):
            out.append((step, label))
    return out


def _block_number(key: str) -> int:
    digits = re.findall(r"\d+", key.rsplit("/", 1)[-1])
    return int(digits[0]) if digits else 0


def _attention(
    data: _Run, label: str, member: int = 0, steps: list[int] | None = None
) -> plt.Figure | None:
    method = _method(data, label)
    if not 0 <= member < _members(method):
        raise ValueError(f"member {member} out of range: {label} has {_members(method)}.")
    keys = sorted(data.array_keys(f"{label}/attention/"), key=_block_number)
    if not keys:
        return None
    per_block = []
    for key in keys:
        at, arrays = data.arrays(key)
        per_block.append(dict(zip(at.tolist(), arrays, strict=True)))
    available = np.array(sorted(per_block[0]), np.int64)
    if steps is None:
        rows = phase_steps(available, _member_phases(data, method, member))
    else:
        rows = []
        for s in steps:
            near = int(available[int(np.argmin(np.abs(available - s)))])
            if all(near != r for r, _ in rows):
                rows.append((near, "step"))
    if not rows:
        return None
    heads = [
        (b, h)
        for b, block in enumerate(per_block)
        for h in range(next(iter(block.values())).shape[1])
    ]
    fig, axes = plt.subplots(
        len(rows),
        len(heads),
        figsize=(1.2 + 2.3 * len(heads), 0.6 + 2.2 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for r, (step, why) in enumerate(rows):
        for c, (b, h) in enumerate(heads):
            ax = axes[r, c]
            pattern = per_block[b].get(step)
            if pattern is None:
                ax.set_axis_off()
                continue
            pattern_QT = pattern[member, h]
            image = ax.imshow(pattern_QT, vmin=0.0, vmax=1.0, cmap="viridis", origin="upper")
            T = pattern_QT.shape[-1]
            ax.set_xticks(range(T))
            ax.set_yticks(range(pattern_QT.shape[0]))
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(f"{keys[b].split('/')[-1]} head {h}", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("key position", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"step {step}\n{why}\nquery position", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="mean attention probability")
    fig.suptitle(
        f"{label}, member {member} (seed {method.seeds[member]}): mean attention per head "
        "on the probe batch",
        fontsize=10,
    )
    return fig


def plot_attention(
    run_dir: RunLike, method: str, member: int = 0, steps: list[int] | None = None
) -> plt.Figure | None:
    """Attention heatmaps of one member: query position (rows of each panel) × key
    position (columns), the attention probability averaged over the probe batch, one
    column of panels per head (of every block) and one row per step, on one colour
    scale 0…1. By default the steps are the first evaluation, the member's
    memorisation end M, the midpoint of M and cleanup end C, C and the last evaluation
    (:func:`phase_steps`); ``steps`` picks others (each snapped to the nearest saved
    one). ``None`` when the run saved no ``attention/block*`` arrays for ``method``."""
    data = _load(run_dir)
    return None if data is None else _attention(data, method, member, steps)


def _final_key_freqs(data: _Run, label: str) -> tuple[np.ndarray | None, str]:
    """``(key frequencies (M, k), source)`` of the last checkpoint analysed by
    ``grokjax analyze``, else of the last evaluation; ``(None, "")`` without any."""
    key = f"{label}/progress/key_freqs"
    for checkpoints, source in ((True, "final checkpoint"), (False, "last evaluation")):
        if data.has_array(key, checkpoints):
            _, arrays = data.arrays(key, checkpoints)
            return np.asarray(arrays[-1]).astype(np.int64), source
    return None, ""


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted ``centres`` (midpoints; half a gap beyond the ends)."""
    c = np.asarray(centres, np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _fourier(data: _Run, label: str) -> plt.Figure | None:
    method = _method(data, label)
    steps, arrays = data.arrays(f"{label}/progress/embed_fourier_norms")
    if not arrays:
        return None
    norms_SMK = np.stack(arrays)  # (S, M, K+1)
    members, K = norms_SMK.shape[1], norms_SMK.shape[2] - 1
    if K < 1:
        return None
    freqs, source = _final_key_freqs(data, label)
    phases = [_member_phases(data, method, i) for i in range(min(members, _members(method)))]
    vmax = float(np.nanmax(norms_SMK[:, :, 1:])) if np.isfinite(norms_SMK[:, :, 1:]).any() else 1
    fig, axes = plt.subplots(
        members,
        1,
        figsize=(9, 0.8 + 2.4 * members),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    x_edges, y_edges = _edges(steps), _edges(np.arange(1, K + 1))
    mesh = None
    for i, ax in enumerate(axes[:, 0]):
        spectrum_KS = norms_SMK[:, i, 1:].T
        mesh = ax.pcolormesh(x_edges, y_edges, spectrum_KS, vmin=0, vmax=vmax, cmap="magma")
        title = f"member {i}"
        if i < len(method.seeds):
            title += f" (seed {method.seeds[i]})"
        if freqs is not None and i < freqs.shape[0]:
            keys = sorted(int(f) for f in freqs[i])
            ax.scatter(
                np.full(len(keys), x_edges[-1]),
                keys,
                marker="<",
                s=36,
                color="tab:cyan",
                clip_on=False,
                zorder=4,
            )
            title += f": key frequencies {', '.join(map(str, keys))} ({source}, ◀)"
        if i < len(phases):
            _mark_phases(ax, [phases[i]])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("frequency k")
        ax.set_ylim(y_edges[0], y_edges[-1])
    axes[-1, 0].set_xlabel("optimisation step")
    if mesh is not None:
        fig.colorbar(
            mesh, ax=axes, shrink=0.8, label="Fourier norm of W_E (constant term left out)"
        )
    fig.suptitle(f"{label}: the embedding's Fourier spectrum over training", fontsize=10)
    return fig


def plot_fourier_spectrum(run_dir: RunLike, method: str) -> plt.Figure | None:
    """The token embedding's Fourier norm spectrum over training: frequency ``k`` =
    1…K (y; the constant term left out) × step (x) heatmap, one panel per member, on
    one colour scale; the final key frequencies marked ◀ at the right edge (those of
    the last checkpoint analysed by ``grokjax analyze``, else of the last evaluation)
    and the member's phase ends as vertical lines. ``None`` without the
    ``progress/embed_fourier_norms`` arrays."""
    data = _load(run_dir)
    return None if data is None else _fourier(data, method)


def _restricted_excluded(
    data: _Run, method: MethodCurves
) -> tuple[np.ndarray, list[tuple[str, np.ndarray, str]]]:
    """``(steps, [(key, values (S, M), label)])`` of panel (b)."""
    ckpt = data.checkpoints.get(method.label)
    nanda = ("progress/restricted_loss", "progress/excluded_loss")
    if ckpt is not None and any(_has(ckpt.metrics.get(k)) for k in nanda):
        return ckpt.steps, [
            (k, ckpt.metrics[k], f"{k.split('/')[-1].split('_')[0]} loss (Nanda: final key freqs)")
            for k in nanda
            if _has(ckpt.metrics.get(k))
        ]
    online = ("progress/restricted_loss_online", "progress/excluded_loss_online")
    return method.steps, [
        (k, method.metrics[k], f"{k.split('/')[-1].split('_')[0]} loss, {ONLINE_SOURCE}")
        for k in online
        if _has(method.metrics.get(k))
    ]


def _progress(data: _Run, label: str) -> plt.Figure | None:
    method = _method(data, label)
    if not any(_has(method.metrics.get(k)) for k in PROGRESS_KEYS):
        return None
    phases = [_member_phases(data, method, i) for i in range(_members(method))]
    fig, axes = plt.subplots(4, 1, figsize=(8.5, 12), sharex=True, layout="constrained")
    colors = plt.get_cmap("tab10")
    for ax, (title, keys, log_y) in zip(axes, PROGRESS_PANELS, strict=True):
        steps = method.steps
        curves = [(k, method.metrics[k], name) for k, name in keys if _has(method.metrics.get(k))]
        if not keys:  # panel (b)
            steps, curves = _restricted_excluded(data, method)
        for j, (_, values_SM, name) in enumerate(curves):
            for i in range(values_SM.shape[1]):
                ax.plot(
                    steps,
                    values_SM[:, i],
                    color=colors(j),
                    linewidth=0.9,
                    alpha=0.8,
                    label=f"{name} ({values_SM.shape[1]} members)" if i == 0 else None,
                )
        if log_y and any(np.nanmax(v, initial=0) > 0 for _, v, _ in curves):
            ax.set_yscale("log")
        _mark_phases(ax, phases)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(True, which="both", alpha=0.3)
        if curves:
            ax.legend(fontsize=7, loc="best")
    _phase_legend(axes[0], phases)
    axes[-1].set_xlabel("optimisation step")
    fig.suptitle(
        f"{label}: progress measures (Nanda et al. 2023, Fig. 7); members as thin lines, "
        "phase ends per member",
        fontsize=10,
    )
    return fig


def plot_progress_measures(run_dir: RunLike, method: str) -> plt.Figure | None:
    """Nanda et al. 2023's Fig. 7 on one shared step axis, four panels: (a) train and
    test loss over the member's whole splits (log y); (b) restricted and excluded loss
    (log y), Nanda's definition from ``analysis/checkpoints.jsonl`` at the checkpoint
    steps once ``grokjax analyze`` has run, else the online ones (current key
    frequencies) from ``metrics.jsonl``, labelled which; (c) the Gini coefficients of
    the embedding's and unembedding's Fourier norms; (d) the total squared weight
    norm. Each member is a thin line, one colour per quantity; each member's phase
    ends (memorisation end M, circuit formation end = the largest excluded loss in
    [M, C], cleanup end C) are vertical lines. ``None`` without ``progress/`` scalars."""
    data = _load(run_dir)
    return None if data is None else _progress(data, method)


def _scalar_groups(method: MethodCurves, prefix: str, stat: str) -> list[str]:
    """The names between ``prefix`` and ``/stat`` of the method's scalars, in order."""
    names = []
    for key in method.metrics:
        if key.startswith(prefix) and key.endswith(f"/{stat}") and _has(method.metrics[key]):
            names.append(key[len(prefix) : -len(stat) - 1])
    return names


def _lines_per_name(
    data: _Run,
    label: str,
    prefix: str,
    panels: tuple,
    title: str,
    legend_title: str,
    shape: tuple[int, int],
) -> plt.Figure | None:
    method = _method(data, label)
    names = sorted({n for p in panels for n in _scalar_groups(method, prefix, p[0])})
    if not names:
        return None
    phases = [_member_phases(data, method, i) for i in range(_members(method))]
    fig, axes = plt.subplots(
        *shape,
        figsize=(6.5 * shape[1] + 2.5, 3.8 * shape[0]),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    styles = ("-", "--", ":", "-.")
    cmap, n_colors = ("tab10", 10) if len(names) <= 10 else ("tab20", 20)
    for ax, (stat, panel_title, log_y) in zip(axes.flat, panels, strict=True):
        for j, name in enumerate(names):
            values = method.metrics.get(f"{prefix}{name}/{stat}")
            if not _has(values):
                continue
            ax.plot(
                method.steps,
                _median(values),
                color=plt.get_cmap(cmap)(j % n_colors),
                linestyle=styles[(j // n_colors) % len(styles)],
                linewidth=1.3,
                label=name,
            )
        if log_y and ax.lines:
            ax.set_yscale("log")
        _mark_phases(ax, phases)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("optimisation step")
    handles = {}  # every name once, from whichever panel drew it
    for ax in axes.flat:
        handles |= {line.get_label(): line for line in ax.lines if line.get_label() not in handles}
    handles |= {
        name: plt.Line2D([], [], color=color, linestyle=style)
        for field_name, color, style, name in PHASE_STYLES
        if any(getattr(p, field_name) is not None for p in phases)
    }
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside right upper",
        fontsize=7,
        title=legend_title,
    )
    fig.suptitle(
        f"{label}: {title}, median over {_members(method)} members; phase ends per member",
        fontsize=10,
    )
    return fig


def plot_gradient_flow(run_dir: RunLike, method: str) -> plt.Figure | None:
    """Per parameter leaf, over steps (log y): the norm of the last training step's
    gradient ‖g‖ and the ratio of its update to the parameters ‖u‖/‖w‖, the median
    over members, one line per leaf; members' phase ends as vertical lines. ``None``
    without ``grad/`` scalars."""
    data = _load(run_dir)
    if data is None:
        return None
    return _lines_per_name(
        data, method, "grad/", GRADIENT_PANELS, "gradient flow per leaf", "leaf", (1, 2)
    )


def plot_activation_statistics(run_dir: RunLike, method: str) -> plt.Figure | None:
    """Per activation site over steps, on the probe batch: mean, standard deviation
    (log y), fraction of exact zeros and RMS (log y), the median over members, one
    line per site; members' phase ends as vertical lines. ``None`` without ``act/``
    scalars."""
    data = _load(run_dir)
    if data is None:
        return None
    return _lines_per_name(
        data, method, "act/", ACTIVATION_PANELS, "activation statistics per site", "site", (2, 2)
    )


def figure_name(label: str) -> str:
    """A method label as a file-name part.

    >>> figure_name("adamw wd=1.0/lr 1e-3")
    'adamw_wd=1.0_lr_1e-3'
    """
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", label).strip("_") or "method"


def _file_labels(record: RunRecord) -> dict[str, str]:
    """Method label -> its file-name part (the group index added on a clash)."""
    names = [figure_name(m.label) for m in record.methods]
    return {
        m.label: name if names.count(name) == 1 else f"{name}_{g}"
        for g, (m, name) in enumerate(zip(record.methods, names, strict=True))
    }


def _available(data: _Run, method: MethodCurves) -> list[str]:
    """The figure prefixes (:data:`FIGURES`) ``method`` has data for."""
    label, out = method.label, []
    if data.array_keys(f"{label}/attention/"):
        out.append("attention")
    if data.has_array(f"{label}/progress/embed_fourier_norms"):
        out.append("fourier")
    if any(_has(method.metrics.get(k)) for k in PROGRESS_KEYS):
        out.append("progress")
    if any(_scalar_groups(method, "grad/", stat) for stat, *_ in GRADIENT_PANELS):
        out.append("gradient_flow")
    if any(_scalar_groups(method, "act/", stat) for stat, *_ in ACTIVATION_PANELS):
        out.append("activations")
    return out


_DRAW = {
    "attention": _attention,
    "fourier": _fourier,
    "progress": _progress,
    "gradient_flow": lambda data, label: _lines_per_name(
        data, label, "grad/", GRADIENT_PANELS, "gradient flow per leaf", "leaf", (1, 2)
    ),
    "activations": lambda data, label: _lines_per_name(
        data, label, "act/", ACTIVATION_PANELS, "activation statistics per site", "site", (2, 2)
    ),
}


def write_analysis_figures(run_dir: RunLike) -> list[pathlib.Path]:
    """Draw every analysis figure of every method that has the data into
    ``<run_dir>/analysis/figures/<figure>_<method>.png`` (``attention``, member 0 only;
    ``fourier``, ``progress``, ``gradient_flow``, ``activations``), closing each; the
    paths written, none for a run without these probes."""
    data = _load(run_dir)
    if data is None:
        return []
    out = pathlib.Path(data.record.run_dir) / "analysis" / "figures"
    files = _file_labels(data.record)
    paths = []
    for method in data.record.methods:
        for prefix in _available(data, method):
            fig = _DRAW[prefix](data, method.label)
            if fig is None:
                continue
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{prefix}_{files[method.label]}.png"
            try:
                fig.savefig(path, dpi=110)
            finally:
                plt.close(fig)
            paths.append(path)
    return paths


@dataclass(frozen=True)
class _EarlyScore:
    window: int
    first: int | None  # first step (end of a window) with the score above the threshold
    before: tuple[int, int]  # (windows above, windows) ending before C
    after: tuple[int, int] | None  # the same ending at or after C; None without C


def _early_score(
    method: MethodCurves, member: int, cleaned_up: int | None, window: int
) -> _EarlyScore | None:
    """Seed 003's legacy early-grokking score over the member's (train loss, val loss)
    evaluations, ``min(window, evaluations)`` at a time; windows are placed at the
    step of their last evaluation."""
    train = method.metrics["train_loss"][:, member]
    val = method.metrics["val_loss"][:, member]
    ok = np.isfinite(train) & np.isfinite(val)
    if not ok.any():
        return None
    w = min(window, int(ok.sum()))
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = early_grokking_scores(train[ok], val[ok], window=w)
    ends = method.steps[ok][w - 1 :]
    above = scores > EARLY_GROKKING_THRESHOLD
    first = int(ends[above][0]) if above.any() else None
    if cleaned_up is None:
        return _EarlyScore(w, first, (int(above.sum()), above.size), None)
    pre = ends < cleaned_up
    return _EarlyScore(
        w,
        first,
        (int(above[pre].sum()), int(pre.sum())),
        (int(above[~pre].sum()), int((~pre).sum())),
    )


def _fraction(counts: tuple[int, int] | None) -> str:
    if counts is None or counts[1] == 0:
        return "—"
    return f"{counts[0]}/{counts[1]} ({counts[0] / counts[1]:.0%})"


def _step(value: int | None) -> str:
    return "—" if value is None else str(value)


def _note(phases: GrokkingPhases) -> str:
    if phases.memorised is None and phases.cleaned_up is None:
        return "not memorised"
    if not phases.separate:
        return "no separate memorisation"
    if phases.cleaned_up is None:
        return "not cleaned up"
    return ""


def _final(values_SM: np.ndarray | None, member: int) -> float:
    """The member's last finite value (NaN without one)."""
    if values_SM is None or member >= values_SM.shape[1]:
        return float("nan")
    column = values_SM[:, member]
    finite = column[np.isfinite(column)]
    return float(finite[-1]) if finite.size else float("nan")


def _number(value: float, fmt: str = ".3f") -> str:
    return "—" if np.isnan(value) else format(value, fmt)


def _method_section(data: _Run, method: MethodCurves, figures: list[str], window: int) -> str:
    label, members = method.label, _members(method)
    phases = [_member_phases(data, method, i) for i in range(members)]
    excluded = _excluded(data, method)
    freqs, freq_source = _final_key_freqs(data, label)
    source = excluded[2] if excluded else "no excluded loss recorded: circuit step unknown"
    if excluded and excluded[2] == NANDA_SOURCE:
        source += " where a checkpoint lies between M and C, else online"
    lines = [
        f"### {label}",
        "",
        f"Grokking phases per member; circuit formation end from the excluded loss, {source}. "
        f"Key frequencies of the {freq_source or 'run (none recorded)'}; key fraction and "
        "Gini coefficients at the last evaluation.",
        "",
        "| member | seed | memorisation end M | circuit formation end | cleanup end C | note | "
        "final key frequencies | key fraction | Gini W_E / W_U |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, ph in enumerate(phases):
        keys = (
            ", ".join(str(int(f)) for f in sorted(freqs[i]))
            if freqs is not None and i < freqs.shape[0]
            else "—"
        )
        gini = (
            f"{_number(_final(method.metrics.get('progress/gini_embed'), i))} / "
            f"{_number(_final(method.metrics.get('progress/gini_unembed'), i))}"
        )
        lines.append(
            f"| {i} | {method.seeds[i] if i < len(method.seeds) else '—'} | "
            f"{_step(ph.memorised)} | {_step(ph.circuit)} | {_step(ph.cleaned_up)} | "
            f"{_note(ph)} | {keys} | "
            f"{_number(_final(method.metrics.get('progress/key_fraction'), i))} | {gini} |"
        )
    scores = [_early_score(method, i, ph.cleaned_up, window) for i, ph in enumerate(phases)]
    widths = sorted({s.window for s in scores if s is not None})
    lines += [
        "",
        "Seed 003's legacy early-grokking score over windows of "
        f"{' / '.join(map(str, widths)) or '—'} evaluations of (train loss, validation loss), "
        f"detected above {EARLY_GROKKING_THRESHOLD}; a window counts at the step of its last "
        "evaluation, before C when that is earlier than C.",
        "",
        "| member | seed | first step above the threshold | windows above, before C | "
        "windows above, from C on |",
        "|---|---|---|---|---|",
    ]
    for i, s in enumerate(scores):
        seed = method.seeds[i] if i < len(method.seeds) else "—"
        if s is None:
            lines.append(f"| {i} | {seed} | — | — | — |")
            continue
        first = _step(s.first) if s.first is not None else "never"
        lines.append(f"| {i} | {seed} | {first} | {_fraction(s.before)} | {_fraction(s.after)} |")
    if figures:
        names = dict(FIGURES)
        file = _file_labels(data.record)[label]
        lines.append("")
        for prefix in figures:
            what = names[prefix] + (" (member 0)" if prefix == "attention" else "")
            lines += [f"![{label}: {what}](analysis/figures/{prefix}_{file}.png)", ""]
    return "\n".join(lines).rstrip()


def analysis_section(run_dir: RunLike, *, window: int = 100) -> str:
    """The report's "## Analysis" markdown: per method with probe data, a table of its
    members (seed, memorisation end M, circuit formation end, cleanup end C, "no
    separate memorisation" when so, the final key frequencies, key fraction and Gini
    coefficients), seed 003's legacy early-grokking score (over ``min(window,
    evaluations)`` evaluations: the first step above the threshold and the fraction of
    windows above it before and from C on), and links to the method's figures in
    ``analysis/figures/``. The empty string when no method has attention, activation,
    gradient-flow or progress-measure data."""
    data = _load(run_dir)
    if data is None:
        return ""
    parts = []
    for method in data.record.methods:
        figures = _available(data, method)
        if figures and method.steps.size:
            parts.append(_method_section(data, method, figures, window))
    if not parts:
        return ""
    thresholds = _thresholds(data.record)
    head = [
        "## Analysis",
        "",
        "Nanda et al. 2023's phases, at evaluation resolution: memorisation ends at M, the "
        f"first evaluation with train accuracy ≥ {thresholds['train_threshold']:.0%}; "
        f"cleanup ends at C, the first with validation accuracy ≥ "
        f"{thresholds['val_threshold']:.0%}; circuit formation ends at the largest excluded "
        'loss between them. "No separate memorisation": C came no later than M.',
        "",
    ]
    return "\n".join([*head, "\n\n".join(parts)])
