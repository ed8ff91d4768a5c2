r"""Figures of the ``confusion_matrix`` probe: validation confusion matrices per method.

Drawn from a run directory's files alone: ``analysis/step_<step>.npz`` holds, for a run
whose probes include :func:`grokjax.analysis.confusion_matrix`, ``<method>/confusion``
of shape ``(members, C, C)`` (rows true class, columns predicted class, int32 counts).

- :func:`plot_confusion`: one panel per method at one evaluation (by default each
  method's last);
- :func:`plot_confusion_steps`: one row per method, one column per chosen step (by
  default :func:`default_steps`: the first evaluation, the first at or after the
  method's median grokking step, the last);
- :func:`write_confusion_figures`: both, as ``plots/confusion.png`` and
  ``plots/confusion_steps.png`` (beside the run's other end-of-run figures; written by
  :func:`grokjax.viz.write_report`).

Every panel shows the **sum over the method's members** (each member's validation rows
counted once: the pooled matrix, not a median member) normalised per true class,

.. math::

    \tilde M_{ij} = \frac{\sum_m M^{(m)}_{ij}}{\sum_m \sum_k M^{(m)}_{ik}},

so each row sums to 1 (a class with no validation row stays 0) and the diagonal is the
per-class recall; cells are annotated with the summed counts when there are at most
:data:`ANNOTATE_MAX` classes. Tick labels are the data kind's ``class_names`` when it
declares them, else the class indices.

References:
  Stehman 1997, "Selecting and interpreting measures of thematic classification
  accuracy", Remote Sensing of Environment 62(1).
  scikit-learn, ``ConfusionMatrixDisplay`` and ``confusion_matrix(normalize="true")``
  (rows normalised over the true class).
"""

from __future__ import annotations

import pathlib
import zipfile
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from grokjax.errors import RunFolderError
from grokjax.viz.records import MethodCurves, RunRecord, load_run

__all__ = [
    "ANNOTATE_MAX",
    "confusion_arrays",
    "default_steps",
    "normalize_rows",
    "plot_confusion",
    "plot_confusion_steps",
    "write_confusion_figures",
]

RunLike = str | pathlib.Path | RunRecord
KEY = "confusion"  # the probe's output name; saved as <method>/confusion
ANNOTATE_MAX = 20  # more classes: the cells are too small to print counts in


def normalize_rows(counts_CC: np.ndarray) -> np.ndarray:
    r"""``counts`` divided by their row sums (rows with no count stay 0), float64.

    .. math:: \tilde M_{ij} = M_{ij} / \textstyle\sum_k M_{ik}

    >>> normalize_rows(np.array([[3, 1], [0, 0]])).tolist()
    [[0.75, 0.25], [0.0, 0.0]]
    """
    counts = np.asarray(counts_CC, np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def _record(run: RunLike) -> RunRecord | None:
    if isinstance(run, RunRecord):
        return run
    try:
        return load_run(run)
    except (RunFolderError, FileNotFoundError):
        return None


def _inputs(run: RunLike) -> tuple[RunRecord | None, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The run's record and its confusion arrays (read once)."""
    record = _record(run)
    return record, confusion_arrays(record) if record is not None else {}


def confusion_arrays(run: RunLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method label, ``(steps (S,), counts (S, M, C, C))`` of the ``confusion``
    probe, from every ``analysis/step_<step>.npz`` that holds it (damaged files are
    skipped); an empty dict when the run has none."""
    run_dir = run.run_dir if isinstance(run, RunRecord) else pathlib.Path(run)
    files = []
    folder = pathlib.Path(run_dir) / "analysis"
    for path in folder.glob("step_*.npz") if folder.is_dir() else ():
        number = path.stem.removeprefix("step_")
        if number.isdigit():
            files.append((int(number), path))
    found: dict[str, list[tuple[int, np.ndarray]]] = {}
    for step, path in sorted(files):
        try:
            with np.load(path) as saved:
                for key in saved.files:
                    label, _, name = key.rpartition("/")
                    if name == KEY and label:
                        found.setdefault(label, []).append((step, np.asarray(saved[key])))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # cut off by a crash
            continue
    return {
        label: (np.array([s for s, _ in rows], np.int64), np.stack([a for _, a in rows]))
        for label, rows in found.items()
    }


def default_steps(method: MethodCurves, steps: np.ndarray) -> list[int]:
    """The evaluations :func:`plot_confusion_steps` shows for ``method`` by default,
    among ``steps`` (those with a confusion matrix, ascending): the first, the first at
    or after the median grokking step of the members that generalised (left out when
    none did), and the last; repeats dropped.

    >>> m = MethodCurves("adamw", [0, 1], np.array([0]), {}, [300, 500], [100, 100])
    >>> default_steps(m, np.array([0, 100, 200, 400, 600, 800]))
    [0, 400, 800]
    """
    steps = np.asarray(steps)
    if steps.size == 0:
        return []
    chosen = [int(steps[0])]
    grokked = [g for g in method.generalised if g is not None]
    if grokked:
        median = float(np.median(grokked))
        after = steps[steps >= median]
        if after.size:
            chosen.append(int(after[0]))
    chosen.append(int(steps[-1]))
    return sorted(set(chosen))


def _class_names(record: RunRecord, num_classes: int) -> list[str] | None:
    """The data kind's ``class_names`` when it declares ``num_classes`` of them."""
    from grokjax.data.kinds import DATA_KINDS

    kind = DATA_KINDS.get(record.config.get("data", {}).get("kind"))
    names = getattr(kind, "class_names", None)
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return None


def _draw(
    ax, counts_CC: np.ndarray, title: str, names: Sequence[str] | None, annotate: bool
) -> matplotlib.image.AxesImage:
    """One normalised confusion matrix on ``ax``, counts printed in the cells."""
    C = counts_CC.shape[-1]
    shares = normalize_rows(counts_CC)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if annotate:
        for i in range(C):
            for j in range(C):
                ax.text(
                    j,
                    i,
                    f"{int(counts_CC[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7 if C > 8 else 9,
                    color="white" if shares[i, j] > 0.5 else "black",
                )
    ticks = np.arange(C) if C <= ANNOTATE_MAX else np.arange(0, C, max(1, C // 10))
    labels = [names[t] for t in ticks] if names is not None else [str(t) for t in ticks]
    ax.set_xticks(ticks, labels, fontsize=7, rotation=90 if names is not None else 0)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = counts_CC.sum()
    accuracy = np.trace(counts_CC) / total if total else float("nan")
    ax.set_title(f"{title}\nacc {accuracy:.3f}, {int(total)} rows", fontsize=8)
    return image


def _at_or_after(steps: np.ndarray, step: int) -> int:
    """Index of the first of ``steps`` at or after ``step`` (the last if none is)."""
    index = int(np.searchsorted(steps, step, side="left"))
    return min(index, steps.size - 1)


def _panel_size(num_classes: int) -> float:
    return float(np.clip(0.3 * num_classes + 1.5, 3.2, 9.0))


def plot_confusion(
    run: RunLike, step: int | None = None, class_names: Sequence[str] | None = None
) -> plt.Figure | None:
    """One panel per method: its members' summed validation confusion matrix at the
    evaluation ``step`` (the first at or after it; default each method's last),
    normalised per true class and annotated with counts. ``class_names`` overrides the
    data kind's. ``None`` when the run has no ``confusion`` arrays."""
    record, found = _inputs(run)
    if record is None or not found:
        return None
    return _confusion_figure(record, found, step, class_names)


def _confusion_figure(
    record: RunRecord,
    found: dict[str, tuple[np.ndarray, np.ndarray]],
    step: int | None,
    class_names: Sequence[str] | None,
) -> plt.Figure:
    labels = [m.label for m in record.methods if m.label in found]
    C = found[labels[0]][1].shape[-1]
    names = list(class_names) if class_names is not None else _class_names(record, C)
    size = _panel_size(C)
    fig, axes = plt.subplots(
        1,
        len(labels),
        figsize=(size * len(labels) + 1.0, size + 0.8),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, label in zip(axes[0], labels, strict=True):
        steps, counts = found[label]
        i = steps.size - 1 if step is None else _at_or_after(steps, step)
        summed = counts[i].sum(axis=0)
        title = f"{label}: step {int(steps[i])}, sum of {counts.shape[1]} members"
        image = _draw(ax, summed, title, names, summed.shape[-1] <= ANNOTATE_MAX)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of the true class")
    return fig


def plot_confusion_steps(
    run: RunLike,
    steps: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> plt.Figure | None:
    """One row per method, one column per step: its members' summed confusion matrix
    at each of ``steps`` (each the first evaluation at or after it), normalised per true
    class. By default each method's own :func:`default_steps` (first evaluation, first
    at or after its median grokking step, last). ``None`` when the run has no
    ``confusion`` arrays."""
    record, found = _inputs(run)
    if record is None or not found:
        return None
    return _steps_figure(record, found, steps, class_names)


def _steps_figure(
    record: RunRecord,
    found: dict[str, tuple[np.ndarray, np.ndarray]],
    steps: Sequence[int] | None,
    class_names: Sequence[str] | None,
) -> plt.Figure:
    methods = [m for m in record.methods if m.label in found]
    chosen = {}
    for m in methods:
        have = found[m.label][0]
        if steps is None:
            picks = default_steps(m, have)
        else:
            picks = sorted({int(have[_at_or_after(have, s)]) for s in steps})
        chosen[m.label] = picks
    cols = max(len(v) for v in chosen.values())
    C = found[methods[0].label][1].shape[-1]
    names = list(class_names) if class_names is not None else _class_names(record, C)
    size = _panel_size(C)
    fig, axes = plt.subplots(
        len(methods),
        cols,
        figsize=(size * cols + 1.0, (size + 0.8) * len(methods)),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for row, m in zip(axes, methods, strict=True):
        have, counts = found[m.label]
        for ax in row[len(chosen[m.label]) :]:
            ax.axis("off")
        for ax, s in zip(row, chosen[m.label], strict=False):
            summed = counts[int(np.searchsorted(have, s))].sum(axis=0)
            title = f"{m.label}: step {s}, sum of {counts.shape[1]} members"
            image = _draw(ax, summed, title, names, summed.shape[-1] <= ANNOTATE_MAX)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of the true class")
    return fig


def write_confusion_figures(run: RunLike) -> list[pathlib.Path]:
    """Write ``plots/confusion.png`` (:func:`plot_confusion`, the last evaluation) and
    ``plots/confusion_steps.png`` (:func:`plot_confusion_steps`, default steps) when the
    run has ``confusion`` arrays; the paths written (none without them)."""
    record, found = _inputs(run)
    if record is None or not found:
        return []
    paths = []
    out = pathlib.Path(record.run_dir) / "plots"
    out.mkdir(exist_ok=True)
    for name, fig in (
        ("confusion.png", _confusion_figure(record, found, None, None)),
        ("confusion_steps.png", _steps_figure(record, found, None, None)),
    ):
        fig.savefig(out / name, dpi=120, bbox_inches="tight")  # titles stay inside
        plt.close(fig)
        paths.append(out / name)
    return paths
