"""What the stop decision on the device costs: the interval program with and without it.

The trainer's interval program (:func:`grokjax.train.step.make_interval_fn`) on the
``grokfast_fidelity`` EMA recipe (x·y mod 97, decoder width 128, batch 512, one
evaluation per epoch of 10 steps), ``--members`` members, jitted as ``run_experiment``
does. Three programs are compiled in one process and timed in alternation, ``--rounds``
rounds of ``--calls`` calls each (the median round counts):

- ``plain``: no stop rule (``stop_when_grokked = false``);
- ``stop, training``: with the rule, members not yet crossed (every interval trains);
- ``stop, skipped``: with the rule, every member crossed (the ``lax.cond`` skips the
  interval: what an interval dispatched after the last crossing costs).

It prints ms per interval and the ratios to ``plain``.

    python benchmarks/stop_on_device.py [--members 1] [--calls 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from grokjax.train import apply_overrides, resolve, select_methods
from grokjax.train.state import init_groups
from grokjax.train.step import StopRule, make_interval_fn, resolve_member_axis, task_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    config = select_methods(resolve("grokfast_fidelity"), ["grokfast_ema"])
    config = apply_overrides(config, [f"methods.0.seeds={list(range(args.members))}"])
    task, groups, states = init_groups(config)
    interval = config.eval_interval(task.num_train)
    axis = resolve_member_axis(config.member_axis, 1)
    data = task_data(task)
    plain = jax.jit(make_interval_fn(groups, task, interval, axis), donate_argnums=0)
    rule = StopRule(task.watch[1], config.val_threshold, task.watch_below)
    stopping = jax.jit(make_interval_fn(groups, task, interval, axis, stop=rule), donate_argnums=0)
    no = [jax.numpy.zeros(args.members, bool)]
    yes = [jax.numpy.ones(args.members, bool)]
    copies = {k: jax.tree.map(jax.numpy.copy, states) for k in ("plain", "train", "skip")}

    def call(kind: str, step: int):
        if kind == "plain":
            copies[kind], out = plain(copies[kind], np.int32(step), data)
        else:
            copies[kind], out, _ = stopping(
                copies[kind], np.int32(step), data, no if kind == "train" else yes
            )
        return out

    for kind in copies:  # compile and warm up
        jax.block_until_ready(call(kind, 0))
    times = {k: [] for k in copies}
    for r in range(args.rounds):
        for kind in copies:
            start = time.perf_counter()
            for c in range(args.calls):
                out = call(kind, (1 + r * args.calls + c) * interval)
            jax.block_until_ready(out)
            times[kind].append((time.perf_counter() - start) / args.calls)
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{args.members} member(s), {interval} steps + 1 evaluation per interval")
    names = {"plain": "plain", "train": "stop, training", "skip": "stop, skipped"}
    for kind, ms in median.items():
        print(f"{names[kind]:>15}: {ms:8.1f} ms/interval  ({ms / median['plain']:.3f}x plain)")


if __name__ == "__main__":
    main()
