"""What the analysis probes cost: training throughput with every probe on against the
same program with probes off, side by side in one process.

Builds the trainer's compiled interval function (:func:`grokjax.train.step.
make_interval_fn`, as ``run_experiment`` does) for ``progress_measures`` (3 members,
evaluation every 100 steps; ``--set`` to change it) twice: with its probes (progress
measures, attention, activation statistics, gradient flow, weight evolution) and with
none. Each is compiled once, ahead of the timing; then the two are timed in
alternation, ``--repeats`` rounds of ``--intervals`` intervals each, and the best
round of each is compared. Prints steps/s and the ratio probes-on / probes-off.

    python benchmarks/probe_cost.py [--intervals 10] [--repeats 3] [--set KEY=VALUE …]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from grokjax.train import apply_overrides, resolve
from grokjax.train.state import init_groups
from grokjax.train.step import make_interval_fn, resolve_member_axis


def compiled_program(config):
    """The compiled interval function of ``config``, its states and interval length."""
    task, groups, states = init_groups(config)
    interval = config.eval_interval(task.num_train)
    fn = make_interval_fn(
        groups,
        task,
        interval,
        resolve_member_axis(config.member_axis, 1),
        probes=config.probe_functions(),
    )
    compiled = jax.jit(fn, donate_argnums=0).lower(states, jnp.int32(0)).compile()
    states, metrics = compiled(states, jnp.int32(0))
    jax.block_until_ready(metrics)
    return compiled, states, interval


def time_round(program, intervals: int) -> tuple[float, object]:
    compiled, states, interval = program
    start = time.perf_counter()
    for e in range(1, intervals + 1):
        states, metrics = compiled(states, jnp.int32(e * interval))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / (intervals * interval), (compiled, states, interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    on_config = apply_overrides(resolve("progress_measures"), args.overrides)
    off_config = apply_overrides(on_config, ["probes=[]"])
    programs = {"on": compiled_program(on_config), "off": compiled_program(off_config)}
    best = {"on": float("inf"), "off": float("inf")}
    for _ in range(args.repeats):
        for name in ("on", "off"):
            seconds, programs[name] = time_round(programs[name], args.intervals)
            best[name] = min(best[name], seconds)
    members = sum(len(m.seeds) for m in on_config.methods)
    interval = programs["on"][2]
    print(
        f"progress_measures, {members} members, evaluation every {interval} steps, "
        f"{args.intervals * interval} steps per round, best of {args.repeats} rounds"
    )
    print(f"probes on : {1 / best['on']:8.1f} steps/s")
    print(f"probes off: {1 / best['off']:8.1f} steps/s")
    print(f"throughput with probes / without: {best['off'] / best['on']:.3f}")


if __name__ == "__main__":
    main()
