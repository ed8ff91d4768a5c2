"""Trainer throughput: steps/s at 1, 8, 32, 128 members, FLOP/s, time to grok.

Uses the real trainer program (:func:`grokjax.train.step.make_interval_fn`) on the
main job's model and data (x·y mod 97, decoder width 128, batch 512), Grokfast-EMA
members (``--filter ma``: Grokfast-MA). For each member count it compiles the
interval function once, then times several calls (compile excluded) and prints

- train steps per second of the whole program and member-steps per second,
- the ratio of member-steps/s to the 1-member run (all in this process),
- achieved FLOP/s (XLA's cost analysis of the compiled interval / time) against a
  2048³ float32 matmul timed in this process.

``--time-to-grok`` also runs the EMA recipe alone (one seed) through
:func:`grokjax.train.run_experiment` and reports the wall time from the call
(compilation included) to the first evaluation with 95% validation accuracy.

    python benchmarks/train_throughput.py [--members 1 8 32 128] [--eval-every 10]
        [--member-axis auto|vmap|map] [--filter ema|ma] [--time-to-grok]
"""

from __future__ import annotations

import argparse
import functools
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
)


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


def time_program(
    members: int, eval_every: int, calls: int, member_axis: str = "auto", filter: str = "ema"
) -> tuple[float, float]:
    """(seconds per train step of the whole program, FLOP per step) for ``members``.

    ``member_axis="auto"`` resolves as the trainer does (``lax.map`` on one CPU device).
    """
    config = ema_config(members, eval_every, filter)
    task, groups, states = init_groups(config)
    interval = config.eval_interval(task.num_train)
    axis = resolve_member_axis(member_axis, 1)
    fn = jax.jit(make_interval_fn(groups, task, interval, axis), donate_argnums=0)
    compiled = fn.lower(states, jnp.int32(0)).compile()
    flops = interval_flops(groups, task, states, interval) / interval
    states, metrics = compiled(states, jnp.int32(0))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for e in range(1, calls + 1):
        states, metrics = compiled(states, jnp.int32(e * interval))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / (calls * interval), flops


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--eval-every", type=int, default=10, help="steps per evaluation")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per member count")
    parser.add_argument("--time-to-grok", action="store_true")
    parser.add_argument("--member-axis", default="auto", choices=["auto", "vmap", "map"])
    parser.add_argument("--filter", default="ema", choices=["ema", "ma"], help="members' recipe")
    args = parser.parse_args()

    peak = matmul_flops()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"2048^3 matmul: {peak / 1e9:.0f} GFLOP/s"
    )
    base = None
    for m in args.members:
        calls = max(1, args.steps // args.eval_every // max(1, m // 8))
        seconds, flops = time_program(m, args.eval_every, calls, args.member_axis, args.filter)
        member_steps = m / seconds
        base = base or member_steps
        print(
            f"{m:>4} members: {1 / seconds:7.2f} steps/s, {member_steps:7.1f} member-steps/s "
            f"({member_steps / base:4.2f}x of 1 member), {flops / seconds / 1e9:6.1f} GFLOP/s "
            f"({flops / seconds / peak:4.0%} of the matmul)"
        )
    if args.time_to_grok:
        seconds, step = time_to_grok()
        print(
            f"EMA recipe, seed 0: 95% validation accuracy at step {step}; run_experiment took "
            f"{seconds:.1f} s from call to stop (compile included)"
        )


if __name__ == "__main__":
    main()
