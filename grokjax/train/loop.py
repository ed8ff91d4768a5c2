"""The host loop: run an experiment, write its run directory, resume it.

The compiled interval function (:mod:`grokjax.train.step`) is called once per
evaluation interval with the state donated; calls are dispatched asynchronously and
the host reads metrics back every ``evals_per_sync`` intervals, to update the
progress bar, write ``metrics.jsonl``, detect grokking, stop on NaN and save
checkpoints. Python never runs per step. With ``stop_when_grokked`` the stop is
decided on the device (:class:`~grokjax.train.step.StopRule`): the intervals dispatched
after the one in which the last member crossed are skipped there, so the run's
metrics, its final state and its last checkpoint end at that evaluation, and the
skipped intervals cost nothing. Where the wall time went is in ``RunResult.times``.

A streamed task (:attr:`~grokjax.data.task.Task.streamed`) gets its training batches
from the host: before each interval's call the loop takes the next ``(interval, B,
window + 1)`` array from the task's feed (:meth:`~grokjax.data.task.Task.open_feed`,
prefetched on a background thread) and passes it in ``data``; the stream's position
after each interval is kept with it, so a checkpoint at step ``s`` stores the position
after exactly the batches of steps ``< s`` (``meta["stream"]``) and ``--resume``
continues the same token stream.

What a run writes is in :mod:`grokjax.runs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from grokjax.errors import ConfigError, RunFolderError
from grokjax.optim.specs import describe
from grokjax.runs import RunFiles, checkpoint_due
from grokjax.runs.compile_cache import CompileWatch
from grokjax.runs.timing import RunTimes
from grokjax.train.config import ExperimentConfig
from grokjax.train.detect import GrokDetector
from grokjax.train.loading import load_config, to_dict
from grokjax.train.mesh import (
    agree,
    anyone,
    batch_sharding,
    group_shardings,
    is_primary,
    member_mesh,
    pad_members,
    padded_size,
    place,
)
from grokjax.train.state import Group, init_groups
from grokjax.train.step import (
    StopRule,
    make_interval_fn,
    metric_names,
    resolve_member_axis,
    task_data,
)

__all__ = [
    "RunResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "resume_experiment",
    "run_experiment",
]


class TrainingDiverged(RuntimeError):
    """A member's loss or parameters became NaN/Inf, or its training loss exploded; the
    message names the member, its hyperparameters and the step."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after the intervals already dispatched; the
    metrics so far and a checkpoint at ``step`` are written (with a run directory)."""

    def __init__(self, run_dir: pathlib.Path | None, step: int):
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step = run_dir, step


class _StopOnSignal:
    """The first SIGINT or SIGTERM asks the loop to stop at its next sync (a dispatched
    interval's input state is donated, so it must finish); a second one exits at once.
    Signals the process ignores (a background job's SIGINT) stay ignored."""

    def __init__(self) -> None:
        self.requested, self.previous = False, {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        # os.write: print() may be in use by the progress bar when the signal lands
        os.write(
            2,
            b"\ngrokjax: stopping after the intervals already dispatched, then saving a "
            b"checkpoint (press Ctrl-C again to exit at once, without one)\n",
        )

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


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
    compile: CompileWatch | None = None  # XLA compile time and persistent-cache hits
    times: RunTimes = field(default_factory=RunTimes)  # where the wall time went

    def metric(self, g: int, name: str) -> np.ndarray:
        """``(evaluations, members)`` array of metric ``name`` for group ``g``."""
        return np.stack(self.history[g][name]) if self.history[g][name] else np.zeros((0, 0))


def run_experiment(
    config: ExperimentConfig,
    *,
    run_dir: str | pathlib.Path | None = None,
    resume: bool = False,
    progress: bool = True,
    devices: list[Any] | None = None,
    warn: bool = True,
    from_step: int | None = None,
    start_params: Sequence[Any] | None = None,
) -> RunResult:
    """Train every member of every method of ``config``; see the module docstring.

    Args:
        config: the experiment.
        run_dir: where to write outputs; ``None`` writes nothing (no checkpoints).
        resume: continue from the latest checkpoint in ``run_dir`` (or ``from_step``'s).
        progress: show a progress bar.
        devices: devices to lay members out on (default: all, when
            ``config.shard_members``; otherwise the first device only).
        warn: issue :meth:`ExperimentConfig.precision_warnings` as ``RuntimeWarning``
            (the command line prints them itself).
        start_params: per method, its members' stacked parameters to start from
            instead of the initialisation (fine-tuning a trained run); the optimizer
            state starts fresh.

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
    with (
        jax.enable_x64(True) if config.needs_x64 else contextlib.nullcontext(),
        CompileWatch() as watch,
    ):
        result = _run(config, run_dir, resume, progress, devices, from_step, start_params)
    result.compile = watch
    return result


def _token_budget(config: ExperimentConfig, task, states) -> ExperimentConfig:
    """``steps`` from ``tokens_per_param``: ⌈tokens_per_param · params / (batch · seq_len)⌉
    (parameters of one member of the first method; Chinchilla is 20, LLaMA-style 100)."""
    if not config.tokens_per_param:
        return config
    params = sum(x[0].size for x in jax.tree.leaves(states[0].params))
    tokens = config.tokens_per_param * params
    steps = max(1, math.ceil(tokens / (config.batch_size * task.window)))
    return dataclasses.replace(config, steps=steps)


def _start_from(states, groups, start_params):
    """``states`` with the given parameters (and optimizer states re-initialised on them)."""
    if len(start_params) != len(states):
        raise ConfigError(
            f"start_params: {len(start_params)} groups given, the run has {len(states)}."
        )
    out = []
    for group, state, params in zip(groups, states, start_params, strict=True):
        want = jax.tree.map(lambda x: (x.shape, x.dtype), state.params)
        got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
        if want != got:
            raise ConfigError(
                f"start_params of method {group.method.label!r} do not fit its model: a "
                "fine-tune may change the data and evaluation settings, not the model's shapes."
            )
        params = jax.tree.map(jnp.copy, params)  # the run donates its state: keep the caller's
        keep = state.init_params is not None
        out.append(state._replace(params=params, init_params=params if keep else None))
    return out


def _run(config, run_dir, resume, progress, devices, from_step, start_params=None) -> RunResult:
    start_time = time.perf_counter()
    times = RunTimes()
    setup = times.part("setup")
    setup.__enter__()  # left before the first dispatch
    task, groups, states = init_groups(config)
    if start_params is not None:
        states = _start_from(states, groups, start_params)
    config = _token_budget(config, task, states)
    interval = config.eval_interval(task.num_train)
    total_evals = math.ceil(config.steps / interval)

    if devices is None:
        devices = jax.devices() if config.shard_members else jax.devices()[:1]
    mesh = member_mesh(devices, config.data_parallel)
    replicated = NamedSharding(mesh, PartitionSpec())
    # The real members as checkpoints hold them; padded copies (mesh.pad_members) fill
    # each group up to a multiple of the member slots for training.
    sizes = [g.size for g in groups]
    padded = [padded_size(m, mesh.shape["members"]) for m in sizes]
    real_shardings = [group_shardings(s, m, mesh) for s, m in zip(states, sizes, strict=True)]
    states = place(states, real_shardings)
    state_shardings = [
        group_shardings(jax.eval_shape(lambda s, m=m, p=p: pad_members(s, m, p), s), p, mesh)
        for s, m, p in zip(states, sizes, padded, strict=True)
    ]
    pad = jax.jit(
        lambda states: [pad_members(*a) for a in zip(states, sizes, padded, strict=True)],
        out_shardings=state_shardings,
    )
    unpad = jax.jit(
        lambda states: [
            jax.tree.map(lambda x, m=m: x[:m], s) for s, m in zip(states, sizes, strict=True)
        ],
        out_shardings=real_shardings,
    )
    # per group: methods may train model variants with their own activation shapes
    probes = config.probe_functions()
    names, array_names = zip(
        *(metric_names(g, task, probes, s) for g, s in zip(groups, states, strict=True)),
        strict=True,
    )
    member_axis = resolve_member_axis(config.member_axis, len(devices))
    stop_rule = (
        StopRule(
            task.watch[1],
            config.val_threshold,
            task.watch_below,
            skip_diverged=config.on_divergence == "continue",
        )
        if config.stop_when_grokked
        else None
    )
    fn = make_interval_fn(
        groups,
        task,
        interval,
        member_axis,
        probes=probes,
        unroll=config.unroll,
        batch_sharding=batch_sharding(mesh),
        stop=stop_rule,
    )
    flags = () if stop_rule is None else (replicated,)  # the members' `crossed` flags
    jitted = jax.jit(
        fn,
        donate_argnums=0,
        in_shardings=(state_shardings, None, None, *flags),
        # metrics replicated: every process reads them and takes the same decisions
        out_shardings=(state_shardings, replicated, *flags),
    )
    data = place(task_data(task), replicated)
    stream_state = None  # a streamed task's position at the start step

    detector = GrokDetector(
        [g.size for g in groups],
        config.train_threshold,
        config.val_threshold,
        task.watch,
        below=task.watch_below,
    )
    result = RunResult(config, groups, history=[{k: [] for k in n} for n in names], times=times)
    result.detector = detector
    files, start_eval = None, 0
    if run_dir is not None:
        result.run_dir = run_dir = pathlib.Path(run_dir)
        files = RunFiles(run_dir, groups, config.keep_checkpoints)
        try:  # a refused resume leaves the folder as it was
            resume_step, kept = None, []
            if resume:
                states, meta = files.checkpointer.restore(states, from_step)  # real members
                resume_step, start_eval = meta["step"], meta["step"] // interval
                stream_state = meta.get("stream")
                if task.streamed and stream_state is None and resume_step:
                    raise ConfigError(
                        f"the checkpoint at step {resume_step} holds no stream position: it "
                        "was saved by a run that did not stream (data.stream = false)."
                    )
                if resume_step > config.steps:
                    raise ConfigError(
                        f"steps = {config.steps}: this run has already trained {resume_step} "
                        f"steps; give steps >= {resume_step} to continue it."
                    )
                detector.load_state_dict(meta["detector"])
                kept = files.kept_rows(resume_step)
                files.checkpointer.delete_after(resume_step)  # from an earlier step
            elif jax.process_count() > 1:  # all refuse a taken folder, not process 0 alone
                (taken,) = agree((run_dir / "metrics.jsonl").exists())
                if taken:
                    raise RunFolderError(
                        f"{run_dir} already holds a run (metrics.jsonl): resume it, or write "
                        "the new run to another folder."
                    )
            files.start(to_dict(config), resume_step, kept)
            for row in kept:
                _replay_row(result, row)
        except BaseException:
            files.close(None)
            raise

    states = pad(states) if padded != sizes else states
    # a resumed run's members that crossed (or diverged, with on_divergence = "continue")
    # already; padded copies never hold a stop up
    gone = config.on_divergence == "continue"
    crossed = [
        place(np.concatenate([(g >= 0) | (gone & (d >= 0)), np.ones(p - m, bool)]), replicated)
        for g, d, m, p in zip(detector.generalised, detector.diverged, sizes, padded, strict=True)
    ]

    def checkpoint(step: int) -> None:
        meta = {"step": step, "detector": detector.state_dict()}
        if task.streamed:  # the position after the batches of the steps before `step`
            meta["stream"] = stream_states[step]
        with times.part("writing"):
            files.checkpointer.save(step, unpad(states) if padded != sizes else states, meta)

    last_ckpt_step = step = start_eval * interval
    last_ckpt_time = time.perf_counter()
    bar = tqdm(
        total=total_evals * interval,
        initial=step,
        disable=not (progress and is_primary()),
        desc=config.name,
        unit="step",
        dynamic_ncols=True,
    )
    pending: list[tuple[int, Any]] = []
    done = last = False
    # a streamed task's feed, and its position after each dispatched interval, by step
    feed = None
    stream_states = {step: stream_state}
    stop = _StopOnSignal()  # active until the files are closed
    stop.__enter__()
    try:
        if task.streamed:  # opened here: a missing shard still closes the run's files
            feed = task.open_feed(interval, stream_state, _replicated_put(replicated))
        setup.__exit__(None, None, None)
        for e in range(start_eval, total_evals):
            if feed is not None:  # the interval's batches; a reading error surfaces here
                with times.part("host"):
                    batches, stream_states[(e + 1) * interval] = feed.next()
                data = {**data, "batches_IBT": batches}
            with times.part("program" if e == start_eval else "device"):
                states, metrics, *crossed = jitted(
                    states, np.int32(e * interval), data, *([crossed] if stop_rule else [])
                )
            crossed = crossed[0] if crossed else []
            pending.append(((e + 1) * interval, metrics, crossed))
            last = e == total_evals - 1
            # several processes: a signal waits for the regular sync, which all reach
            alone = jax.process_count() == 1
            if len(pending) < config.evals_per_sync and not (last or (stop.requested and alone)):
                continue
            with times.part("device"):
                fetched = jax.device_get([p[1:] for p in pending])
            for step, (host, flags) in zip((p[0] for p in pending), fetched, strict=True):
                with times.part("host"):
                    host = [
                        {k: v[:m] for k, v in h.items()} for h, m in zip(host, sizes, strict=True)
                    ]
                    _check_finite(result, host, step, math.log(task.num_classes))
                    result.steps.append(step)
                    for g, m in enumerate(host):
                        for k in names[g]:
                            result.history[g][k].append(np.asarray(m[k]))
                    detector.update(step, host)
                if files is not None:
                    with times.part("writing"):
                        files.write(step, host, names, array_names)
                # the device skipped the intervals after this one: their metrics are void
                done = bool(flags) and all(bool(np.all(f)) for f in flags)
                if done:
                    break
            pending.clear()
            with times.part("host"):
                bar.update(step - bar.n)
                bar.set_postfix_str(_postfix(result))
            due = checkpoint_due(
                config.checkpoint_every,
                config.steps,
                step - last_ckpt_step,
                time.perf_counter() - last_ckpt_time,
            )
            (due,) = agree(due)
            stop.requested = anyone(stop.requested)
            final = done or last or stop.requested  # saved after the loop
            if files is not None and not final and due:
                checkpoint(step)
                last_ckpt_step, last_ckpt_time = step, time.perf_counter()
            if done or stop.requested:
                break
            stream_states = {s: v for s, v in stream_states.items() if s >= step}
        if files is not None and (
            step > last_ckpt_step or files.checkpointer.latest_step() is None
        ):
            checkpoint(step)
        if stop.requested and not (done or last):
            raise TrainingInterrupted(run_dir, step)
    finally:
        if feed is not None:
            feed.close()
        bar.close()
        try:
            if files is not None:
                with times.part("writing"):
                    files.close(detector)
        finally:
            stop.__exit__()
    result.seconds = times.total = time.perf_counter() - start_time
    result.compilations = jitted._cache_size()
    result.final_states = unpad(states) if padded != sizes else states
    return result


def _replicated_put(sharding: NamedSharding):
    """``put(x)``: the host array ``x`` as a global array replicated with ``sharding``,
    built from this process's copy alone (every process holds the same ``x``), so the
    feed's thread starts no collective."""

    def put(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return put


def resume_experiment(
    run_dir: str | pathlib.Path,
    *,
    steps: int | None = None,
    progress: bool = True,
    devices: list[Any] | None = None,
    warn: bool = True,
    from_step: int | None = None,
) -> RunResult:
    """Continue the run in ``run_dir`` from its latest checkpoint (or ``from_step``'s),
    with its own config.

    ``steps`` extends (or shortens) the budget; it is the only thing a resume may
    change, and ``config.json`` records it.
    """
    config = load_config(run_dir)
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    return run_experiment(
        config,
        run_dir=run_dir,
        resume=True,
        progress=progress,
        devices=devices,
        warn=warn,
        from_step=from_step,
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


def _check_finite(result: RunResult, host_metrics, step: int, floor: float = 1.0) -> None:
    """Find members whose loss or parameters are NaN/Inf, or whose training loss exceeds
    ``divergence_factor`` × its first evaluation's (at least ``floor``, the loss of a
    uniform guess, so a first loss near 0 does not make every later blip a stop). With
    ``on_divergence = "stop"`` the first one ends the run; with ``"continue"`` each is
    named in a warning, once. Either way the detector records ``step`` as the member's
    ``diverged``."""
    factor = result.config.divergence_factor
    carry_on = result.config.on_divergence == "continue"
    for g, (group, m) in enumerate(zip(result.groups, host_metrics, strict=True)):
        first = result.history[g]["train_loss"]
        first = np.asarray(first[0] if first else m["train_loss"])
        first = np.maximum(np.nan_to_num(first, nan=floor), floor)
        exploded = factor * first < np.asarray(m["train_loss"]) if factor else False
        bad = ~np.asarray(m["finite"], bool) | exploded
        if carry_on:
            bad &= result.detector.diverged[g] < 0  # named once
        for i in np.flatnonzero(bad):
            what = (
                "loss or parameters became NaN/Inf"
                if not m["finite"][i]
                else f"training loss {float(m['train_loss'][i]):.3g} exceeds divergence_factor "
                f"({factor:g}) × its first evaluation's ({float(first[i]):.3g})"
            )
            where = (
                f"{group.member_name(int(i))}: {what} in the evaluation interval ending at "
                f"step {step}."
            )
            if result.detector is not None:  # grokking.json names it
                result.detector.diverged[g][i] = step
            if carry_on:
                warnings.warn(
                    f'{where} The other members train on (on_divergence = "continue").',
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            kept = (
                f" Metrics up to the previous evaluation are in {result.run_dir}/metrics.jsonl "
                "and earlier checkpoints are kept."
                if result.run_dir
                else ""
            )
            raise TrainingDiverged(
                f"{where}{kept} Its optimizer: {describe(group.method.optimizer)}. Lower the "
                "learning rate or the filter's lamb, or check the data; or train the other "
                'members on with on_divergence = "continue".'
            )
