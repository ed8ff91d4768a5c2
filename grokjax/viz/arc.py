"""Report sections for ARC runs and for a run's evaluations (:mod:`grokjax.evaluate`).

- :func:`arc_section`: per method, the final exact match (per test output and per
  task), token accuracy and loss of every validation group (medians over seeds); the
  steps each method took to reach levels of task exact match on the generated tasks;
  and the ratio of the first method's training loss to each method's at 25%, 50% and
  100% of the budget (seed 002's claim: fast grokking makes the loss "100× better").
- :func:`evaluations_section`: ``evaluations.jsonl`` as a table (medians over seeds).
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from grokjax.viz.records import RunRecord

__all__ = ["arc_groups", "arc_section", "evaluations_section", "loss_ratios"]

LEVELS = (0.25, 0.5, 0.9)
FRACTIONS = (0.25, 0.5, 1.0)
_GROUP = re.compile(r"^arc/(.+)/exact$")


def arc_groups(record: RunRecord) -> list[str]:
    """The validation groups an ARC run's probe measured (``arc/<group>/exact``)."""
    names = record.methods[0].metrics if record.methods else {}
    return [m.group(1) for name in names if (m := _GROUP.match(name))]


def _final(values_EM: np.ndarray) -> float:
    return float(np.median(values_EM[-1])) if values_EM.size else float("nan")


def _first_at(steps: np.ndarray, values_EM: np.ndarray, level: float) -> str:
    """Median over members of the first step at which ``values ≥ level`` (``>budget``
    when a member never gets there)."""
    firsts = []
    for column in values_EM.T:
        hit = np.flatnonzero(column >= level)
        firsts.append(int(steps[hit[0]]) if hit.size else None)
    reached = [f for f in firsts if f is not None]
    if len(reached) < len(firsts):
        return f">{int(steps[-1])} ({len(reached)}/{len(firsts)})"
    return f"{int(np.median(reached))}"


def loss_ratios(record: RunRecord) -> dict[str, list[float]]:
    """Per method, the first method's median training loss divided by the method's at
    :data:`FRACTIONS` of the budget (the evaluation nearest each)."""
    base = record.methods[0]
    out = {}
    for m in record.methods:
        ratios = []
        for fraction in FRACTIONS:
            target = fraction * record.budget
            i = int(np.argmin(np.abs(m.steps - target)))
            j = int(np.argmin(np.abs(base.steps - target)))
            ratios.append(
                float(
                    np.median(base.metrics["train_loss"][j]) / np.median(m.metrics["train_loss"][i])
                )
            )
        out[m.label] = ratios
    return out


def arc_section(record: RunRecord) -> str:
    """The "## ARC" section of an ARC run's report ("" for other runs)."""
    groups = arc_groups(record)
    if not groups:
        return ""
    lines = [
        "## ARC",
        "",
        "Final evaluation, medians over seeds. *exact*: test outputs produced exactly "
        "(greedy decoding, graded by teacher forcing); *task*: tasks with every test "
        "output exact (a task whose sequence does not fit the length counts as unsolved); "
        "'generated' are the unseen generated tasks (the CPU-scale stand-in for neoneye's "
        "synthetic ARC sets).",
        "",
        "| method | group | tasks (fit) | exact | task | token acc | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in record.methods:
        for g in groups:
            size = m.metrics.get(f"arc/{g}/tasks")
            fit = m.metrics.get(f"arc/{g}/tasks_fit")
            count = f"{_final(size):.0f} ({_final(fit):.0f})" if size is not None else "?"
            if fit is not None and _final(fit) == 0:
                lines.append(f"| {m.label} | {g} | {count} | — | — | — | — |")
                continue
            keys = ("exact", "task_exact", "token_acc", "loss")
            values = [_final(m.metrics[f"arc/{g}/{k}"]) for k in keys]
            lines.append(
                f"| {m.label} | {g} | {count} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
            )
    if "generated" in groups:
        lines += [
            "",
            "Steps to task exact match on the generated tasks (median over seeds):",
            "",
            "| method | " + " | ".join(f"≥ {level:.0%}" for level in LEVELS) + " |",
            "|---|" + "---|" * len(LEVELS),
        ]
        for m in record.methods:
            values = m.metrics["arc/generated/task_exact"]
            cells = [_first_at(m.steps, values, level) for level in LEVELS]
            lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
    ratios = loss_ratios(record)
    base = record.methods[0].label
    lines += [
        "",
        f"Training loss of {base} ÷ each method's, at 25%, 50% and 100% of the budget "
        "(medians over seeds; seed 002 claims fast grokking gives a 100× lower loss):",
        "",
        "| method | 25% | 50% | 100% |",
        "|---|---|---|---|",
    ]
    for label, values in ratios.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}×" for v in values) + " |")
    best = max((v for label, vs in ratios.items() if label != base for v in vs), default=0.0)
    verdict = "holds" if best >= 100 else "does not hold"
    lines += ["", f"The 100× claim {verdict} here: the largest ratio is {best:.2f}×.", ""]
    return "\n".join(lines)


def evaluations_section(run_dir: str | pathlib.Path) -> str:
    """The "## Evaluations" section from ``evaluations.jsonl`` ("" without one)."""
    path = pathlib.Path(run_dir) / "evaluations.jsonl"
    if not path.exists():
        return ""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return ""
    extra = sorted(
        {
            k
            for r in rows
            for k in r
            if k.startswith("arc/") and ("task_exact" in k or k.endswith("/loss"))
        }
    )
    columns = ["val_loss", "val_acc", *extra]
    lines = [
        "## Evaluations",
        "",
        "The trained members under other settings (`grokjax evaluate`; medians over seeds; "
        "val_acc is exact match for ARC).",
        "",
        "| evaluation | method | fine-tune steps | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    keys = list(dict.fromkeys((r["evaluation"], r["method"]) for r in rows))
    for evaluation, method in keys:
        mine = [r for r in rows if (r["evaluation"], r["method"]) == (evaluation, method)]
        cells = []
        for c in columns:
            values = [r[c] for r in mine if c in r]
            cells.append(f"{np.median(values):.3f}" if values else "—")
        steps = mine[0].get("finetune_steps", 0)
        lines.append(f"| {evaluation} | {method} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])
