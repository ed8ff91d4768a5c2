"""The Grokfast paper's metrics for its MNIST, IMDb and QM9 experiments, from a run's
curves.

Lee et al. (2024) compare methods by different numbers per data set: MNIST by the
steps to 95% validation accuracy, IMDb by the best validation accuracy and the minimum
validation loss, QM9 by the minimum validation loss. A data split smaller than the
paper's may never see the baseline reach 95%; so every method is also timed to the
*baseline's best*: the lowest of the baseline members' best validation accuracies (for
regression, the highest of their minimum validation losses), a level every baseline
member reaches, and each member's first evaluation that reaches it. That is a
like-for-like speed-up whatever the split.

References:
    Lee, Kang, Kim, Lee (2024). Grokfast: Accelerated Grokking by Amplifying Slow
    Gradients. arXiv:2405.20233.
"""

from __future__ import annotations

import numpy as np

from grokjax.viz.records import MethodCurves, RunRecord

__all__ = ["PAPER_KINDS", "first_reaching", "paper_metrics_section"]

#: Data kinds whose report gets the paper's metrics.
PAPER_KINDS = ("mnist", "imdb", "qm9")


def first_reaching(
    steps_S: np.ndarray, values_SM: np.ndarray, target: float, below: bool = False
) -> list[int | None]:
    """Per member, the first step whose value is ``≥ target`` (``≤`` with ``below``);
    ``None`` when it never is.

    >>> first_reaching(np.array([10, 20, 30]), np.array([[0.1, 0.5], [0.6, 0.5], [0.9, 0.7]]),
    ...                0.6)
    [20, 30]
    """
    values = np.nan_to_num(values_SM, nan=np.inf if below else -np.inf)
    hit_SM = values <= target if below else values >= target
    return [int(steps_S[np.argmax(h)]) if h.any() else None for h in hit_SM.T]


def _spread(values: list[float] | np.ndarray, fmt: str) -> str:
    values = np.asarray(values, float)
    return f"{np.median(values):{fmt}} [{values.min():{fmt}}–{values.max():{fmt}}]"


def _steps(values: list[int | None], budget: int) -> str:
    hit = [v for v in values if v is not None]
    if len(hit) < len(values):
        return f">{budget} ({len(hit)}/{len(values)} reached)"
    return _spread(hit, ".0f")


def _best(m: MethodCurves, regression: bool) -> np.ndarray:
    if regression:
        return np.nanmin(m.metrics["val_loss"], axis=0)
    return np.nanmax(m.metrics["val_acc"], axis=0)


def paper_metrics_section(record: RunRecord) -> str:
    """``## The paper's metrics`` for a run of an MNIST, IMDb or QM9 data kind ('' for
    other data): per method, best validation accuracy, minimum validation loss, steps
    to the validation threshold and steps to the baseline's best (the first method is
    the baseline), each as median [min–max] over members."""
    data = record.config.get("data", {})
    if data.get("kind") not in PAPER_KINDS or not all(m.steps.size for m in record.methods):
        return ""
    regression = data["kind"] == "qm9"
    base = record.methods[0]
    best = _best(base, regression)
    target = float(np.max(best) if regression else np.min(best))
    budget = record.budget
    threshold = record.config.get("val_threshold", 0.95)
    what = "minimum validation loss" if regression else "best validation accuracy"
    lines = [
        "## The paper's metrics",
        "",
        f"Medians [min–max] over members. The baseline's best is the "
        f"{'highest' if regression else 'lowest'} of {base.label}'s members' {what} (every "
        f"member reaches it): {target:.4g}. Steps are evaluation steps "
        f"(every {int(base.steps[1] - base.steps[0]) if base.steps.size > 1 else budget}).",
        "",
    ]
    if regression:
        lines += [
            f"| method | minimum validation loss | at step | steps to {base.label}'s "
            f"best ({target:.4g}) | speed-up to it |",
            "|---|---|---|---|---|",
        ]
    else:
        lines += [
            f"| method | best validation accuracy | minimum validation loss | steps to "
            f"{threshold:.0%} val | steps to {base.label}'s best ({target:.3f}) | speed-up "
            "to it |",
            "|---|---|---|---|---|---|",
        ]
    base_steps = first_reaching(
        base.steps, base.metrics["val_loss" if regression else "val_acc"], target, regression
    )
    base_hit = [s for s in base_steps if s is not None]
    for m in record.methods:
        curve = m.metrics["val_loss" if regression else "val_acc"]
        reach = first_reaching(m.steps, curve, target, regression)
        hit = [s for s in reach if s is not None]
        speedup = (
            f"×{np.median(base_hit) / np.median(hit):.1f}"
            if hit and len(hit) == len(reach) and base_hit
            else "—"
        )
        losses = np.where(np.isfinite(m.metrics["val_loss"]), m.metrics["val_loss"], np.inf)
        min_loss = np.min(losses, axis=0)  # inf for a member with no finite loss
        if regression:
            at = m.steps[np.argmin(losses, axis=0)]
            lines.append(
                f"| {m.label} | {_spread(min_loss, '.4g')} | {_spread(at, '.0f')} | "
                f"{_steps(reach, budget)} | {speedup} |"
            )
        else:
            to_threshold = first_reaching(m.steps, curve, threshold)
            lines.append(
                f"| {m.label} | {_spread(_best(m, False), '.3f')} | {_spread(min_loss, '.4f')} "
                f"| {_steps(to_threshold, budget)} | {_steps(reach, budget)} | {speedup} |"
            )
    return "\n".join(lines)
