"""Read a run directory back: config, per-method metric curves, grokking steps."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import numpy as np

from grokjax.errors import RunFolderError
from grokjax.runs import read_json, read_metrics

__all__ = ["MethodCurves", "RunRecord", "load_run"]


@dataclass
class MethodCurves:
    """One method's members: ``steps`` (E,) and each metric as an (E, M) array."""

    label: str
    seeds: list[int]
    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    generalised: list[int | None]  # first step with val acc >= threshold, per member
    memorised: list[int | None]
    # the evaluation at which a member diverged (None: never, or not recorded)
    diverged: list[int | None] = field(default_factory=list)


@dataclass
class RunRecord:
    run_dir: pathlib.Path
    config: dict
    methods: list[MethodCurves]

    @property
    def budget(self) -> int:
        return int(self.config["steps"])


def _first_steps(steps: np.ndarray, acc_SM: np.ndarray, threshold: float) -> list[int | None]:
    """Per member, the first logged step with ``acc >= threshold`` (``None``: never)."""
    hits_SM = np.nan_to_num(acc_SM, nan=-1.0) >= threshold
    return [int(steps[h.argmax()]) if h.any() else None for h in hits_SM.T]


def load_run(run_dir: str | pathlib.Path) -> RunRecord:
    """Load ``config.json``, ``metrics.jsonl`` and ``grokking.json`` of a run."""
    run_dir = pathlib.Path(run_dir)
    config = read_json(run_dir / "config.json")
    if not (run_dir / "metrics.jsonl").exists():
        raise RunFolderError(f"{run_dir / 'metrics.jsonl'} not found: the run wrote no metrics.")
    rows, _ = read_metrics(run_dir / "metrics.jsonl")  # a cut-off last row is left out
    grok_path = run_dir / "grokking.json"
    grok = read_json(grok_path) if grok_path.exists() else []
    methods = []
    for g, method in enumerate(config["methods"]):
        mine = [r for r in rows if r["group"] == g]
        steps = np.array(sorted({r["step"] for r in mine}), np.int64)
        members = sorted({r["member"] for r in mine})
        index = {s: i for i, s in enumerate(steps)}
        metrics = {}
        names = {k for r in mine for k, v in r.items() if isinstance(v, float)}
        for key in sorted(names | {"train_loss", "train_acc", "val_loss", "val_acc"}):
            arr = np.full((len(steps), len(members)), np.nan)
            for r in mine:
                arr[index[r["step"]], r["member"]] = r.get(key, np.nan)
            metrics[key] = arr
        gr = sorted((r for r in grok if r["method"] == method["label"]), key=lambda r: r["member"])
        seeds = [r["seed"] for r in gr] or [
            next(r["seed"] for r in mine if r["member"] == m) for m in members
        ]
        if gr:
            generalised = [r["generalised"] for r in gr]
            memorised = [r["memorised"] for r in gr]
        elif config.get("data", {}).get("kind") == "qm9":  # a regression watches its losses
            generalised = _first_steps(
                steps, -metrics["val_loss"], -config.get("val_threshold", 0.95)
            )
            memorised = _first_steps(
                steps, -metrics["train_loss"], -config.get("train_threshold", 0.99)
            )
        else:  # an interrupted run wrote no grokking.json: read the crossings off the curves
            generalised = _first_steps(steps, metrics["val_acc"], config.get("val_threshold", 0.95))
            memorised = _first_steps(
                steps, metrics["train_acc"], config.get("train_threshold", 0.99)
            )
        methods.append(
            MethodCurves(
                label=method["label"],
                seeds=seeds,
                steps=steps,
                metrics=metrics,
                generalised=generalised,
                memorised=memorised,
                diverged=[r.get("diverged") for r in gr] or [None] * len(generalised),
            )
        )
    return RunRecord(run_dir, config, methods)
