"""The host loop: run an experiment, write its run directory, resume it.

The compiled interval function (:mod:`grokjax.train.step`) is called once per
evaluation interval with the state donated; calls are dispatched asynchronously and
the host reads metrics back every ``evals_per_sync`` intervals, to update the
progress bar, write ``metrics.jsonl``, detect grokking, stop early, stop on NaN and
save checkpoints. Python never runs per step.

A run directory ``runs/<name>_<YYYYmmdd_HHMMSS>/`` holds ``config.json``,
``metrics.jsonl`` (one row per evaluation per member), ``grokking.json`` (steps to
memorise and to generalise per member), ``checkpoints/`` (orbax), ``analysis/``
(the probes' array outputs, ``step_<step>.npz``) and, from
:mod:`grokjax.viz`, ``plots/`` and ``report.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import pathlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from grokjax.errors import ConfigError
from grokjax.train.checkpoint import RunCheckpointer
from grokjax.train.config import ExperimentConfig
from grokjax.train.detect import GrokDetector
from grokjax.train.loading import from_dict, to_dict
from grokjax.train.mesh import group_shardings, member_mesh, place
from grokjax.train.state import Group, init_groups
from grokjax.train.step import make_interval_fn, metric_names, resolve_member_axis

__all__ = ["RunResult", "TrainingDiverged", "load_config", "resume_experiment", "run_experiment"]


class TrainingDiverged(RuntimeError):
    """A member's loss or parameters became NaN/Inf; the message names member and step."""


@dataclass
class RunResult:
    """What a run produced: per-group metric histories and grokking steps."""

    config: ExperimentConfig
    groups: list[Group]
    steps: list[int] = field(default_factory=list)  # the evaluated steps
    history: list[dict[str, list[np.ndarray]]] = field(default_factory=list)
    detector: GrokDetector | None = None
    run_dir: pathlib.Path | None = None
    seconds: float = 0.0
    compilations: int = 0
    final_states: Any = None

    def metric(self, g: int, name: str) -> np.ndarray:
        """``(evaluations, members)`` array of metric ``name`` for group ``g``."""
        return np.stack(self.history[g][name]) if self.history[g][name] else np.zeros((0, 0))


class _RunFiles:
    """A run directory's files: ``config.json``, ``metrics.jsonl``, ``analysis/*.npz``,
    ``grokking.json`` and the orbax checkpoints."""

    def __init__(self, run_dir: pathlib.Path, groups: list[Group]):
        self.dir, self.groups, self.metrics = run_dir, groups, None
        run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpointer = RunCheckpointer(run_dir / "checkpoints")

    def open(self, config: ExperimentConfig, resume_step: int | None) -> list[dict[str, Any]]:
        """Start writing: ``config.json`` (a resume may have changed ``steps``), and for
        a resumed run, drop the rows written after ``resume_step`` (its checkpoint) and
        return those it keeps."""
        (self.dir / "config.json").write_text(json.dumps(to_dict(config), indent=1) + "\n")
        path, rows = self.dir / "metrics.jsonl", []
        if resume_step is not None and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line]
            rows = [row for row in rows if row["step"] <= resume_step]
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        self.metrics = path.open("a")
        return rows

    def write(self, step: int, host: list[dict[str, np.ndarray]], names, array_names) -> None:
        """One evaluation: a row per member, and the probes' arrays of every group."""
        for g, (group, m) in enumerate(zip(self.groups, host, strict=True)):
            for i, (seed, hps) in enumerate(group.members):
                row = {"step": step, "method": group.method.label, "group": g, "member": i}
                row.update(seed=seed, **hps)
                row.update({k: float(m[k][i]) for k in names[g] if k != "finite"})
                self.metrics.write(json.dumps(row) + "\n")
        arrays = {
            f"{group.method.label}/{k}": np.asarray(m[k])
            for group, m, keys in zip(self.groups, host, array_names, strict=True)
            for k in keys
        }
        if arrays:
            (self.dir / "analysis").mkdir(exist_ok=True)
            np.savez(self.dir / "analysis" / f"step_{step:08d}.npz", **arrays)

    def close(self, detector: GrokDetector) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.checkpointer.close()
        rows = [
            {"method": g.method.label, "member": i, "seed": seed, **hps, **detector.member(gi, i)}
            for gi, g in enumerate(self.groups)
            for i, (seed, hps) in enumerate(g.members)
        ]
        (self.dir / "grokking.json").write_text(json.dumps(rows, indent=1) + "\n")


def new_run_dir(config: ExperimentConfig, root: str | pathlib.Path = "runs") -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    run_dir = pathlib.Path(root) / f"{config.name}_{stamp}"
    suffix = 1
    while run_dir.exists():
        run_dir = pathlib.Path(root) / f"{config.name}_{stamp}_{suffix}"
        suffix += 1
    return run_dir


def load_config(run_dir: str | pathlib.Path) -> ExperimentConfig:
    path = pathlib.Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a grokjax run directory?")
    data = json.loads(path.read_text())
    if any(isinstance(m.get("optimizer"), dict) for m in data.get("methods", [])):
        raise ConfigError(
            f"{path} was written by an older grokjax (an optimizer given as one table, "
            "before optimizers became lists of transforms): this version cannot resume it. "
            "Its metrics.jsonl and report stay readable (`grokjax report`); to continue, "
            "start the experiment again."
        )
    return from_dict(ExperimentConfig, data)


def run_experiment(
    config: ExperimentConfig,
    *,
    run_dir: str | pathlib.Path | None = None,
    resume: bool = False,
    progress: bool = True,
    devices: list[Any] | None = None,
    warn: bool = True,
) -> RunResult:
    """Train every member of every method of ``config``; see the module docstring.

    Args:
        config: the experiment.
        run_dir: where to write outputs; ``None`` writes nothing (no checkpoints).
        resume: continue from the latest checkpoint in ``run_dir``.
        progress: show a progress bar.
        devices: devices to lay members out on (default: all, when
            ``config.shard_members``; otherwise the first device only).
        warn: issue :meth:`ExperimentConfig.precision_warnings` as ``RuntimeWarning``
            (the command line prints them itself).

    Raises:
        TrainingDiverged: a member's loss or parameters became non-finite. Metrics up
            to that evaluation and earlier checkpoints stay on disk.

    Numerically hazardous settings (:meth:`ExperimentConfig.precision_warnings`) are
    reported with ``warnings.warn(..., RuntimeWarning)``. A config with ``dtype`` or any
    ``loss_dtype`` ``"float64"`` runs inside ``jax.enable_x64(True)`` (set before
    anything is traced; the caller's setting is restored afterwards).
    """
    for message in config.precision_warnings() if warn else []:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    with jax.enable_x64(True) if config.needs_x64 else contextlib.nullcontext():
        return _run(config, run_dir, resume, progress, devices)


def _token_budget(config: ExperimentConfig, task, states) -> ExperimentConfig:
    """``steps`` from ``tokens_per_param``: ⌈tokens_per_param · params / (batch · seq_len)⌉
    (parameters of one member of the first method; Chinchilla is 20, LLaMA-style 100)."""
    if not config.tokens_per_param:
        return config
    params = sum(x[0].size for x in jax.tree.leaves(states[0].params))
    tokens = config.tokens_per_param * params
    steps = max(1, math.ceil(tokens / (config.batch_size * task.window)))
    return dataclasses.replace(config, steps=steps)


def _run(config, run_dir, resume, progress, devices) -> RunResult:
    start_time = time.perf_counter()
    task, groups, states = init_groups(config)
    config = _token_budget(config, task, states)
    interval = config.eval_interval(task.num_train)
    total_evals = math.ceil(config.steps / interval)

    if devices is None:
        devices = jax.devices() if config.shard_members else jax.devices()[:1]
    mesh = member_mesh(devices)
    state_shardings = [
        group_shardings(s, g.size, mesh) for s, g in zip(states, groups, strict=True)
    ]
    # per group: methods may train model variants with their own activation shapes
    probes = config.probe_functions()
    names, array_names = zip(
        *(metric_names(g, task, probes, s) for g, s in zip(groups, states, strict=True)),
        strict=True,
    )
    metric_shardings = [
        {k: group_shardings(jnp.zeros(g.size), g.size, mesh) for k in (*n, *a)}
        for g, n, a in zip(groups, names, array_names, strict=True)
    ]
    states = place(states, state_shardings)
    member_axis = resolve_member_axis(config.member_axis, len(devices))
    fn = make_interval_fn(groups, task, interval, member_axis, probes=probes, unroll=config.unroll)
    jitted = jax.jit(
        fn,
        donate_argnums=0,
        in_shardings=(state_shardings, None),
        out_shardings=(state_shardings, metric_shardings),
    )

    detector = GrokDetector(
        [g.size for g in groups], config.train_threshold, config.val_threshold, task.watch
    )
    result = RunResult(config, groups, history=[{k: [] for k in n} for n in names])
    result.detector = detector
    files, start_eval = None, 0
    if run_dir is not None:
        result.run_dir = run_dir = pathlib.Path(run_dir)
        files = _RunFiles(run_dir, groups)
        resume_step = None
        if resume:
            states, meta = files.checkpointer.restore(states)
            resume_step, start_eval = meta["step"], meta["step"] // interval
            detector.load_state_dict(meta["detector"])
        for row in files.open(config, resume_step):
            _replay_row(result, row)

    def checkpoint(step: int) -> None:
        files.checkpointer.save(step, states, {"step": step, "detector": detector.state_dict()})

    last_ckpt_step = step = start_eval * interval
    bar = tqdm(
        total=total_evals * interval,
        initial=step,
        disable=not progress,
        desc=config.name,
        unit="step",
        dynamic_ncols=True,
    )
    pending: list[tuple[int, Any]] = []
    try:
        for e in range(start_eval, total_evals):
            states, metrics = jitted(states, jnp.asarray(e * interval, jnp.int32))
            pending.append(((e + 1) * interval, metrics))
            last = e == total_evals - 1
            if len(pending) < config.evals_per_sync and not last:
                continue
            for step, host in zip(
                (p[0] for p in pending), jax.device_get([p[1] for p in pending]), strict=True
            ):
                _check_finite(groups, host, step, run_dir)
                result.steps.append(step)
                for g, m in enumerate(host):
                    for k in names[g]:
                        result.history[g][k].append(np.asarray(m[k]))
                detector.update(step, host)
                if files is not None:
                    files.write(step, host, names, array_names)
            pending.clear()
            bar.update(step - bar.n)
            bar.set_postfix_str(_postfix(result))
            done = config.stop_when_grokked and detector.all_generalised()
            if files is not None:
                files.metrics.flush()
                every = config.checkpoint_every
                if every and step - last_ckpt_step >= every and not (done or last):
                    checkpoint(step)
                    last_ckpt_step = step
            if done:
                break
        if files is not None and (
            step > last_ckpt_step or files.checkpointer.latest_step() is None
        ):
            checkpoint(step)
    finally:
        bar.close()
        if files is not None:
            files.close(detector)
    result.seconds = time.perf_counter() - start_time
    result.compilations = jitted._cache_size()
    result.final_states = states
    return result


def resume_experiment(
    run_dir: str | pathlib.Path,
    *,
    steps: int | None = None,
    progress: bool = True,
    devices: list[Any] | None = None,
    warn: bool = True,
) -> RunResult:
    """Continue the run in ``run_dir`` from its latest checkpoint, with its own config.

    ``steps`` extends (or shortens) the budget; it is the only thing a resume may
    change, and ``config.json`` records it.
    """
    config = load_config(run_dir)
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    return run_experiment(
        config, run_dir=run_dir, resume=True, progress=progress, devices=devices, warn=warn
    )


def _replay_row(result: RunResult, row: dict[str, Any]) -> None:
    """Rebuild the in-memory history from metrics.jsonl rows (on resume)."""
    g, i = row["group"], row["member"]
    if not result.steps or result.steps[-1] != row["step"]:
        result.steps.append(row["step"])
        for hist, group in zip(result.history, result.groups, strict=True):
            for k in hist:
                hist[k].append(np.full(group.size, np.nan if k != "finite" else True))
    for k in result.history[g]:
        if k != "finite":
            result.history[g][k][-1][i] = row[k]


def _postfix(result: RunResult) -> str:
    return " | ".join(
        f"{group.method.label} val {np.median(result.history[g]['val_acc'][-1]):.2f} "
        f"({int(np.sum(result.detector.generalised[g] >= 0))}/{group.size})"
        for g, group in enumerate(result.groups)
    )


def _check_finite(groups, host_metrics, step: int, run_dir) -> None:
    for group, m in zip(groups, host_metrics, strict=True):
        bad = np.flatnonzero(~np.asarray(m["finite"], bool))
        kept = f" Metrics up to the previous evaluation are in {run_dir}/metrics.jsonl and "
        if bad.size:
            raise TrainingDiverged(
                f"{group.member_name(int(bad[0]))}: loss or parameters became NaN/Inf in the "
                f"evaluation interval ending at step {step}."
                f"{kept + 'earlier checkpoints are kept.' if run_dir else ''} Lower the "
                "learning rate or the filter's lamb, or check the data."
            )
