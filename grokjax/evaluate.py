"""``grokjax evaluate``: a trained run's final members under other evaluation settings.

An experiment lists its evaluations after training, each a table of settings::

    [[evaluations]]
    label = "2L yarn"
    methods = ["rope1d"]                  # default: every method
    finetune_steps = 0                    # > 0: train that long first, from the run's end
    attempts = 1                          # 2: also decode two attempts (ARC tasks)
    [evaluations.set]                     # dotted keys of the config, as --set takes them
    "data.max_len" = 512
    "model.eval_rope_scaling" = { kind = "yarn", factor = 2.0, original_max_position = 256 }

Each evaluation restores the run's latest checkpoint, builds the task and the model
from the run's config with ``set`` applied (so a model trained at one length is
evaluated at another, with another RoPE scaling, without retraining), optionally
fine-tunes the restored members for ``finetune_steps`` (a run of its own in
``evaluations/<label>/``, optimizer state fresh), and evaluates every member once with
the run's probes. Rows go to ``evaluations.jsonl`` (one per evaluation and member,
like ``metrics.jsonl`` plus ``evaluation`` and ``finetune_steps``); the report gets
an "## Evaluations" table. ``grokjax run`` runs a config's evaluations after training;
``grokjax evaluate RUN_DIR`` (re)runs them on a finished run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grokjax.analysis.probes import probe_reads
from grokjax.errors import ConfigError, check
from grokjax.runs import RunCheckpointer, write_atomic
from grokjax.train.config import ExperimentConfig
from grokjax.train.loading import apply_overrides, load_config, select_methods
from grokjax.train.loop import run_experiment
from grokjax.train.state import init_groups
from grokjax.train.step import _member_eval, _over_members, resolve_member_axis

__all__ = ["Evaluation", "evaluate_run", "evaluations_of"]


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a trained run (see the module docstring)."""

    label: str
    set: Mapping[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    finetune_steps: int = 0
    attempts: int = 1

    def validate(self, path: str, config: ExperimentConfig) -> None:
        check(f"{path}.label", bool(self.label), "a non-empty string", self.label)
        check(f"{path}.finetune_steps", self.finetune_steps >= 0, ">= 0", self.finetune_steps)
        check(f"{path}.attempts", self.attempts in (1, 2), "1 or 2", self.attempts)
        labels = [m.label for m in config.methods]
        for i, label in enumerate(self.methods):
            check(f"{path}.methods.{i}", label in labels, f"one of {labels}", label)
        try:
            self.config(config)
        except ConfigError as err:
            raise ConfigError(f"{path}.set: {err}") from None

    def config(self, config: ExperimentConfig) -> ExperimentConfig:
        """The run's config with this evaluation's settings and methods."""
        # without the evaluations: validating them builds this config again
        base = dataclasses.replace(config, evaluations=())
        if self.methods:  # first: the settings may hold only for these methods' models
            base = select_methods(base, list(self.methods))
        return apply_overrides(base, list(self.set.items()))

    @property
    def slug(self) -> str:
        """The label as a folder name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("_") or "evaluation"


def evaluations_of(config: ExperimentConfig) -> list[Evaluation]:
    """The config's ``evaluations``, checked (a ``ConfigError`` names the bad key)."""
    from grokjax.train.loading import from_dict

    out = []
    for i, spec in enumerate(config.evaluations):
        evaluation = from_dict(Evaluation, spec, f"evaluations.{i}")
        evaluation.validate(f"evaluations.{i}", config)
        out.append(evaluation)
    labels = [e.label for e in out]
    check("evaluations", len(set(labels)) == len(labels), "distinct labels", labels)
    return out


def evaluate_run(
    run_dir: str | pathlib.Path,
    labels: Sequence[str] | None = None,
    *,
    progress: bool = True,
    report: bool = True,
) -> list[dict[str, Any]]:
    """Run the evaluations of the run in ``run_dir`` (all, or those labelled
    ``labels``) on its latest checkpoint; write and return their rows."""
    run_dir = pathlib.Path(run_dir)
    config = load_config(run_dir)
    chosen = evaluations_of(config)
    if labels:
        unknown = sorted(set(labels) - {e.label for e in chosen})
        if unknown:
            raise ConfigError(
                f"evaluation(s) {unknown} not in {run_dir}'s config; it has "
                f"{[e.label for e in chosen]}."
            )
        chosen = [e for e in chosen if e.label in labels]
    path = run_dir / "evaluations.jsonl"
    rows = [r for r in _read_rows(path) if r["evaluation"] not in {e.label for e in chosen}]
    with jax.enable_x64(True) if config.needs_x64 else contextlib.nullcontext():
        trained = _restore(run_dir, config)
        for evaluation in chosen:
            rows += _evaluate(run_dir, config, trained, evaluation, progress)
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    if report:
        from grokjax.viz import write_report

        write_report(run_dir)
    return rows


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _restore(run_dir: pathlib.Path, config: ExperimentConfig) -> tuple[dict[str, Any], int]:
    """The latest checkpoint's parameters by method label, and its step."""
    _, groups, template = init_groups(config)
    checkpointer = RunCheckpointer(run_dir / "checkpoints", latest=0)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise ConfigError(f"{run_dir} has no checkpoint to evaluate; train it first.")
        states, _ = checkpointer.restore(template, step)
    finally:
        checkpointer.close()
    return {g.method.label: s.params for g, s in zip(groups, states, strict=True)}, step


def _evaluate(run_dir, config, trained, evaluation: Evaluation, progress) -> list[dict]:
    params_by_label, step = trained
    eval_config = evaluation.config(config)
    start = [params_by_label[m.label] for m in eval_config.methods]
    if evaluation.finetune_steps:
        tune = dataclasses.replace(
            eval_config,
            steps=evaluation.finetune_steps,
            eval_every=evaluation.finetune_steps,
            stop_when_grokked=False,
            name=f"{config.name}-{evaluation.slug}",
        )
        result = run_experiment(
            tune,
            run_dir=run_dir / "evaluations" / evaluation.slug,
            progress=progress,
            start_params=start,
        )
        start = [s.params for s in result.final_states]
    task, groups, states = init_groups(eval_config)
    states = [s._replace(params=p) for s, p in zip(states, start, strict=True)]
    probes = tuple(p for p in eval_config.probe_functions() if not probe_reads(p))
    axis = resolve_member_axis(eval_config.member_axis, 1)
    evaluate = jax.jit(
        lambda states: [
            _over_members(functools.partial(_member_eval, g, task, probes), axis)(s)
            for g, s in zip(groups, states, strict=True)
        ]
    )
    values = jax.device_get(evaluate(states))
    rows = []
    for g, (group, state, metrics) in enumerate(zip(groups, states, values, strict=True)):
        if evaluation.attempts == 2:
            metrics = {**metrics, **_two_attempts(eval_config, group, state, task)}
        for i, (seed, hps) in enumerate(group.members):
            row = {"evaluation": evaluation.label, "step": step, "method": group.method.label}
            row.update(group=g, member=i, seed=seed, **hps)
            row["finetune_steps"] = evaluation.finetune_steps
            row.update({k: float(v[i]) for k, v in metrics.items() if not np.ndim(v[i])})
            row.pop("finite", None)
            rows.append(row)
    return rows


def _two_attempts(config, group, state, task) -> dict[str, np.ndarray]:
    """Per member, ARC exact match with two attempts (beam search, width 2), per
    validation group: of the test outputs (``…/exact@2``) and of the tasks
    (``…/task_exact@2``), with greedy decoding's for comparison (``@1``)."""
    from grokjax.data.arc_decode import task_attempts

    facts = task.facts
    if "val_groups" not in facts:
        raise ConfigError("attempts = 2 decodes ARC test outputs: it needs data.kind = 'arc'.")
    model = config.method_model(group.method)
    task_N = np.asarray(facts["val_task_of_row"])
    group_K = np.asarray(facts["val_task_group"])
    complete_K = np.asarray(facts["val_task_complete"])
    out: dict[str, list[float]] = {}
    for m in range(group.size):
        params = jax.tree.map(lambda x, m=m: x[m], state.params)
        attempts = task_attempts(model, group.graphdef, params, task)
        for at, exact_N in (("1", attempts.exact_at_1_N), ("2", attempts.exact_at_2_N)):
            exact_N = np.asarray(exact_N)
            wrong_K = np.bincount(task_N, ~exact_N, minlength=group_K.size) > 0
            rows_K = np.bincount(task_N, minlength=group_K.size)
            solved_K = ~wrong_K & (rows_K > 0) & complete_K
            for g, name in enumerate(facts["val_groups"]):
                in_N = group_K[task_N] == g
                out.setdefault(f"arc/{name}/exact@{at}", []).append(
                    float(exact_N[in_N].mean()) if in_N.any() else 0.0
                )
                out.setdefault(f"arc/{name}/task_exact@{at}", []).append(
                    float(solved_K[group_K == g].mean()) if (group_K == g).any() else 0.0
                )
    return {k: jnp.asarray(v) for k, v in out.items()}
