"""Trainer throughput: member scaling (steps/s and peak memory, 1 to 256 members), time to grok.

Uses the real trainer program (:func:`grokjax.train.step.make_interval_fn`, jitted with
the states donated and the task's arrays passed as an argument, as
:func:`grokjax.train.run_experiment` does) on the main job's model and data (x·y mod 97,
decoder width 128, batch 512, evaluation on the full validation split every
``--eval-every`` steps), for Grokfast-EMA members and/or Grokfast-MA members (``--filter
ema ma``). Each (recipe, member count) runs in a fresh child process, which compiles the
interval program once (the compile time is reported, not timed), calls it once as a
warm-up, then times further calls (up to ``--steps`` steps, stopping after ``--budget-s``
seconds; when the warm-up call alone took longer than that, it is the measurement) and
reads its own peak memory:

- on a device that reports ``memory_stats()`` (a GPU): ``peak_bytes_in_use``;
- otherwise (jax's CPU device): the process's peak resident set (``VmHWM``).

The parent prints, per recipe, a table of program steps/s, member-steps/s, their ratio
to the 1-member run, the same per second of the child's CPU time (all its threads: on a
CPU shared with other work this moves less with the load than wall time does; it means
little on a GPU, where the host mostly waits), the peak, and the memory per member:
``(peak(M) - peak(1)) / (M - 1)``, the cost of each member beyond the first (the
1-member child is the baseline: the interpreter, jax, the data and the program).
"XLA MB/member" is the compiled program's own memory (arguments + outputs + temporaries
- donated aliases, from ``compiled.memory_analysis()``) divided by M. From the largest
count's cost per member it computes the largest count that fits: in the device's memory
limit on a GPU; in the machine's total memory and in the memory available at the start
on a CPU.

On a CPU the children share the machine's RAM: a count is not launched when its predicted
peak exceeds 70% of the available memory (1.25 × (the 1-member peak + (M - 1) × the
larger of the measured cost per member and the compiled program's memory per member at
the largest count run so far)), and a child whose resident set passes 75% of the memory
available at its launch is killed.

``--flops`` adds achieved FLOP/s (XLA's cost analysis of one unscanned step and one
evaluation / time) against a 2048³ float32 matmul timed in the 1-member child.
``--time-to-grok`` also runs the EMA recipe alone (one seed) through
:func:`grokjax.train.run_experiment` and reports the wall time from the call
(compilation included) to the first evaluation with 95% validation accuracy.

    python benchmarks/train_throughput.py [--members 1 4 16 64] [--filter ema ma]
        [--eval-every 10] [--steps 60] [--budget-s 30] [--member-axis auto|vmap|map]
        [--flops] [--time-to-grok]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp

from grokjax.train import apply_overrides, resolve, run_experiment, select_methods
from grokjax.train.state import init_groups
from grokjax.train.step import (
    _member_eval,
    _member_step,
    make_interval_fn,
    resolve_member_axis,
    task_data,
)

MB = 2**20
LAUNCH_FRACTION = 0.70  # of the available memory: the most a child is predicted to use
KILL_FRACTION = 0.75  # of the memory available at its launch: a child past it is killed
PREDICTION_MARGIN = 1.25


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def ema_config(members: int, eval_every: int, filter: str = "ema"):
    """The main job's data and model; ``members`` seeds of the Grokfast-EMA recipe
    (``filter="ma"``: the MA recipe, w 100, λ 5, wd 0.01)."""
    seeds = list(range(members))
    # the main job's methods are [baseline, grokfast_ema, grokfast_ma]
    method = resolve("grokfast_modmul").methods[2 if filter == "ma" else 1]
    return apply_overrides(
        select_methods(resolve("grokfast_modmul"), [method.label]),
        [f"methods.0.seeds={seeds}", f"eval_every={eval_every}"],
    )


def _flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def interval_flops(groups, task, states, interval: int) -> float:
    """FLOP of one interval: ``interval`` train steps plus one evaluation.

    XLA's cost analysis counts a while loop's body once, not once per trip, so the
    scanned interval function is not costed directly: one vmapped step and one
    vmapped evaluation are, unscanned.
    """
    total = 0.0
    for group, state in zip(groups, states, strict=True):
        step = jax.vmap(functools.partial(_member_step, group, task), in_axes=(0, None))
        evaluate = jax.vmap(functools.partial(_member_eval, group, task, ()))
        total += interval * _flops(step, state, jnp.int32(0)) + _flops(evaluate, state)
    return total


# --- memory readers ---------------------------------------------------------------------


def _proc_kib(path: str, key: str) -> int | None:
    """The ``key:  N kB`` line of a /proc file, in bytes; ``None`` where there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set: ``VmHWM`` (Linux), else ``ru_maxrss``."""
    hwm = _proc_kib("/proc/self/status", "VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS: bytes; Linux: KiB


def rss_bytes(pid: int) -> int | None:
    """The current resident set of process ``pid`` (``None`` once it has gone)."""
    return _proc_kib(f"/proc/{pid}/status", "VmRSS")


def available_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo (``None`` off Linux)."""
    return _proc_kib("/proc/meminfo", "MemAvailable")


def total_bytes() -> int | None:
    return _proc_kib("/proc/meminfo", "MemTotal")


def device_memory(device) -> tuple[int | None, int | None]:
    """(``peak_bytes_in_use``, ``bytes_limit``) of ``device``; ``None`` where it reports
    no ``memory_stats()`` (jax's CPU device)."""
    try:
        stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if not stats:
        return None, None
    return stats.get("peak_bytes_in_use"), stats.get("bytes_limit")


def per_member_bytes(peak_1: float, peak_m: float, members: int) -> float | None:
    """Memory of each member beyond the first: ``(peak(M) - peak(1)) / (M - 1)``.

    >>> per_member_bytes(100.0, 400.0, 4)
    100.0
    >>> per_member_bytes(100.0, 100.0, 1) is None
    True
    """
    return (peak_m - peak_1) / (members - 1) if members > 1 else None


def largest_fitting(peak_1: float, per_member: float, capacity: float) -> int:
    """The most members whose predicted peak ``peak_1 + (M - 1) * per_member`` is at most
    ``capacity`` (0 when even one member does not fit).

    >>> largest_fitting(100.0, 50.0, 300.0)
    5
    >>> largest_fitting(100.0, 50.0, 99.0)
    0
    """
    if capacity < peak_1:
        return 0
    if per_member <= 0:
        return sys.maxsize
    return 1 + math.floor((capacity - peak_1) / per_member)


# --- timing -----------------------------------------------------------------------------


@dataclasses.dataclass
class ProgramTiming:
    """One member count's measurement of the trainer's interval program."""

    members: int
    seconds_per_step: float
    compile_seconds: float
    timed_steps: int
    warmup_only: bool  # the warm-up call is the measurement (it alone took > budget_s)
    program_bytes: int  # compiled.memory_analysis(): arguments + outputs + temps - aliases
    flops_per_step: float | None = None
    cpu_seconds_per_step: float | None = None  # this process's CPU time (all its threads)


def measure_program(
    members: int,
    eval_every: int,
    calls: int,
    member_axis: str = "auto",
    filter: str = "ema",
    *,
    budget_s: float | None = None,
    flops: bool = True,
) -> ProgramTiming:
    """Compile the trainer's interval program for ``members`` (timed apart), call it once
    (warm-up), then time up to ``calls`` calls; with ``budget_s``, stop timing after the
    call that passes it, and use the warm-up call when it alone took longer than that.

    ``member_axis="auto"`` resolves as the trainer does (``lax.map`` on one CPU device).
    """
    config = ema_config(members, eval_every, filter)
    task, groups, states = init_groups(config)
    interval = config.eval_interval(task.num_train)
    axis = resolve_member_axis(member_axis, 1)
    data = task_data(task)
    fn = jax.jit(make_interval_fn(groups, task, interval, axis), donate_argnums=0)
    start = time.perf_counter()
    compiled = fn.lower(states, jnp.int32(0), data).compile()
    compile_seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    program_bytes = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
        if mem is not None
        else 0
    )
    flops_per_step = interval_flops(groups, task, states, interval) / interval if flops else None
    start, cpu = time.perf_counter(), time.process_time()
    states, metrics = compiled(states, jnp.int32(0), data)
    jax.block_until_ready(metrics)
    warmup = time.perf_counter() - start
    if budget_s is not None and warmup > budget_s:
        return ProgramTiming(
            members, warmup / interval, compile_seconds, interval, True, program_bytes,
            flops_per_step, (time.process_time() - cpu) / interval,
        )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    done = 0
    for e in range(1, calls + 1):
        states, metrics = compiled(states, jnp.int32(e * interval), data)
        done += 1
        if budget_s is not None:
            jax.block_until_ready(metrics)
            if time.perf_counter() - start > budget_s:
                break
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / (done * interval)
    cpu_seconds = (time.process_time() - cpu) / (done * interval)
    return ProgramTiming(
        members, seconds, compile_seconds, done * interval, False, program_bytes,
        flops_per_step, cpu_seconds,
    )  # fmt: skip


def time_program(
    members: int, eval_every: int, calls: int, member_axis: str = "auto", filter: str = "ema"
) -> tuple[float, float]:
    """(seconds per train step of the whole program, FLOP per step) for ``members``:
    one warm-up call, then ``calls`` timed calls (compile excluded)."""
    timing = measure_program(members, eval_every, calls, member_axis, filter)
    return timing.seconds_per_step, timing.flops_per_step


def time_to_grok(max_steps: int = 4000, seed: int = 0) -> tuple[float, int | None]:
    """Seconds from calling ``run_experiment`` (EMA recipe, one seed) to its stop, and the
    first evaluated step with 95% validation accuracy (``None`` if not within ``max_steps``).

    The run stops at the first host sync after every member has grokked, so the time
    includes compilation and up to ``evals_per_sync`` evaluations after the crossing.
    """
    config = apply_overrides(
        ema_config(1, 0),
        [f"steps={max_steps}", "stop_when_grokked=true", f"methods.0.seeds=[{seed}]"],
    )
    start = time.perf_counter()
    result = run_experiment(config, progress=False)
    seconds = time.perf_counter() - start
    step = int(result.detector.generalised[0][0])
    return seconds, (step if step >= 0 else None)


# --- one member count per child process -------------------------------------------------

RESULT = "RESULT "


def child(args) -> None:
    """Measure one (recipe, member count) and print it as one ``RESULT {json}`` line."""
    calls = max(1, math.ceil(args.steps / args.eval_every))
    t = measure_program(
        args.child, args.eval_every, calls, args.member_axis, args.filter[0],
        budget_s=args.budget_s, flops=args.flops,
    )  # fmt: skip
    device = jax.devices()[0]
    device_peak, device_limit = device_memory(device)
    out = dataclasses.asdict(t) | {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "peak_rss": peak_rss_bytes(),  # before the matmul below
        "device_peak": device_peak,
        "device_limit": device_limit,
    }
    if args.flops:
        out["matmul_flops"] = matmul_flops()
    print(RESULT + json.dumps(out), flush=True)


def run_child(argv: list[str], kill_at: int | None) -> tuple[dict | None, str]:
    """Run this script with ``argv``; kill it when its resident set passes ``kill_at``
    bytes. Returns (its result, or None; a note on how it ended)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *argv], stdout=subprocess.PIPE, text=True
    )
    killed = []

    def watch() -> None:
        while proc.poll() is None:
            rss = rss_bytes(proc.pid)
            if kill_at is not None and rss is not None and rss > kill_at:
                killed.append(rss)
                proc.kill()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = None
    for line in proc.stdout:
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT) :])
        else:
            print(line, end="")
    rc = proc.wait()
    watcher.join()
    if killed:
        return None, f"killed: resident set {killed[0] / MB:.0f} MB > {kill_at / MB:.0f} MB"
    if rc != 0 or result is None:
        return None, f"failed (exit {rc})"
    return result, "ok"


def _mb(x: float | None) -> str:
    return "—" if x is None else f"{x / MB:,.1f}"


def scale_members(args, recipe: str) -> None:
    """Children for each member count of ``recipe``; the table and the largest fit."""
    counts = sorted(set([1, *args.members]))
    common = ["--eval-every", str(args.eval_every), "--steps", str(args.steps)]
    common += ["--member-axis", args.member_axis, "--filter", recipe]
    common += ["--budget-s", str(args.budget_s)] + (["--flops"] if args.flops else [])
    start_available = available_bytes()
    print(
        f"\n### {recipe.upper()} recipe (eval every {args.eval_every} steps, member axis "
        f"{args.member_axis}); memory available at the start: {_mb(start_available)} MB"
    )
    header = (
        "| members | program steps/s | member-steps/s | vs 1 member | member-steps/CPU-s "
        "| vs 1 member | peak MB | MB/member | XLA MB/member | compile s | timed steps |"
    )
    if args.flops:
        header += " GFLOP/s | of the matmul |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows: dict[int, dict] = {}
    base = cpu_base = None
    for m in counts:
        r1 = rows.get(1)
        available = available_bytes()
        on_device = r1 is not None and r1["device_peak"] is not None
        if r1 is not None and m > 1:
            peak_1 = r1["device_peak"] if on_device else r1["peak_rss"]
            # the larger of the measured cost per member and the compiled program's own
            # memory per member at the largest count run so far
            measured = max([row["slope"] or 0 for row in rows.values()], default=0)
            last = max(rows)
            slope = max(measured, rows[last]["program_bytes"] / last)
            predicted = PREDICTION_MARGIN * (peak_1 + (m - 1) * slope)
            capacity = (
                r1["device_limit"]
                if on_device
                else (LAUNCH_FRACTION * available if available else None)
            )
            if capacity is not None and predicted > capacity:
                print(
                    f"| {m} | not run: predicted peak {_mb(predicted)} MB > {_mb(capacity)} MB "
                    f"({'the device limit' if on_device else '70% of the available memory'}) |"
                )
                continue
        kill_at = int(KILL_FRACTION * available) if available else None
        r, note = run_child([*common, "--child", str(m)], kill_at)
        if r is None:
            print(f"| {m} | {note} |")
            continue
        on_device = r["device_peak"] is not None
        peak = r["device_peak"] if on_device else r["peak_rss"]
        if m == 1:
            rows[1] = r | {"slope": None}
        r1 = rows.get(1)
        peak_1 = None if r1 is None else (r1["device_peak"] if on_device else r1["peak_rss"])
        slope = None if peak_1 is None else per_member_bytes(peak_1, peak, m)
        rows[m] = r | {"slope": slope, "peak": peak}
        steps_s = 1 / r["seconds_per_step"]
        member_steps = m * steps_s
        base = base or member_steps
        cpu_steps = m / r["cpu_seconds_per_step"]
        cpu_base = cpu_base or cpu_steps
        timed = f"{r['timed_steps']}" + (" (warm-up call)" if r["warmup_only"] else "")
        line = (
            f"| {m} | {steps_s:.3g} | {member_steps:.1f} | {member_steps / base:.2f}× "
            f"| {cpu_steps:.1f} | {cpu_steps / cpu_base:.2f}× "
            f"| {_mb(peak)} | {_mb(slope)} | {_mb(r['program_bytes'] / m)} "
            f"| {r['compile_seconds']:.1f} | {timed} |"
        )
        if args.flops:
            gflops = r["flops_per_step"] / r["seconds_per_step"]
            peak_flops = rows[1].get("matmul_flops") or float("nan")
            line += f" {gflops / 1e9:.1f} | {gflops / peak_flops:.0%} |"
        print(line, flush=True)
    measured = [k for k in rows if k > 1 and rows[k]["slope"]]
    if 1 not in rows or not measured:
        return
    r1, top = rows[1], rows[max(measured)]
    on_device = r1["device_peak"] is not None
    peak_1 = r1["device_peak"] if on_device else r1["peak_rss"]
    slope = top["slope"]
    where = (
        [("the device limit", r1["device_limit"])]
        if on_device
        else [("total memory", total_bytes()), ("memory available at the start", start_available)]
    )
    platform = f"{r1['platform']} ({r1['device_kind']})"
    print(
        f"\nLargest {recipe.upper()} count that fits on {platform}, from peak(1) = "
        f"{_mb(peak_1)} MB and {_mb(slope)} MB per member (measured at {max(measured)} "
        "members): 1 + floor((capacity - peak(1)) / per member)"
    )
    if slope <= 0:
        print("- no per-member cost above the measurement's noise: measure a larger count")
        return
    for name, capacity in where:
        if capacity:
            print(
                f"- {name} ({_mb(capacity)} MB): {largest_fitting(peak_1, slope, capacity)} members"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--eval-every", type=int, default=10, help="steps per evaluation")
    parser.add_argument(
        "--steps", type=int, default=60, help="the most timed steps per member count"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=30.0,
        help="stop timing a member count after the call that passes this many seconds",
    )
    parser.add_argument("--time-to-grok", action="store_true")
    parser.add_argument("--member-axis", default="auto", choices=["auto", "vmap", "map"])
    parser.add_argument(
        "--filter", nargs="+", default=["ema"], choices=["ema", "ma"], help="members' recipes"
    )
    parser.add_argument("--flops", action="store_true", help="also FLOP/s against a matmul")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one count, in a child
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return

    print(f"jax {jax.__version__}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    for recipe in args.filter:
        scale_members(args, recipe)
    if args.time_to_grok:
        seconds, step = time_to_grok()
        print(
            f"EMA recipe, seed 0: 95% validation accuracy at step {step}; run_experiment took "
            f"{seconds:.1f} s from call to stop (compile included)"
        )


if __name__ == "__main__":
    main()
