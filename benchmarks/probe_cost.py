"""What the analysis probes cost: training throughput with every probe on against the
same run with probes off, side by side in one process.

Runs ``progress_measures`` (3 members, evaluation every 100 steps; ``--set`` to
change it) twice through :func:`grokjax.train.run_experiment` without a run folder:
once with its probes (progress measures, attention, activation statistics,
gradient flow, weight evolution), once with ``probes = []``. A first, short call of
each compiles the program (``compilations`` is checked to stay 1); the timed calls
run ``--steps`` steps and report steps/s and the ratio probes-on / probes-off.

    python benchmarks/probe_cost.py [--steps 2000] [--repeats 2] [--set KEY=VALUE …]
"""

from __future__ import annotations

import argparse
import time

from grokjax.train import apply_overrides, resolve, run_experiment


def timed(config, repeats: int) -> tuple[float, int]:
    """Best seconds per run of ``config`` over ``repeats`` (each compiles once: the
    compile time is measured by a 1-interval run first and subtracted)."""
    warm = apply_overrides(config, [f"steps={config.eval_every}"])
    start = time.perf_counter()
    run_experiment(warm, progress=False)
    compile_and_one = time.perf_counter() - start
    best, compilations = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_experiment(config, progress=False)
        best = min(best, time.perf_counter() - start)
        compilations = max(compilations, result.compilations)
    # a run = its compilation + its intervals; the warm run = compilation + 1 interval
    intervals = config.steps // config.eval_every
    per_interval = (best - compile_and_one) / (intervals - 1)
    return per_interval / config.eval_every, compilations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    base = apply_overrides(
        resolve("progress_measures"),
        [f"steps={args.steps}", "checkpoint_every=0", "stop_when_grokked=false", *args.overrides],
    )
    on, on_compiles = timed(base, args.repeats)
    off, off_compiles = timed(apply_overrides(base, ["probes=[]"]), args.repeats)
    members = sum(len(m.seeds) for m in base.methods)
    print(
        f"progress_measures, {members} members, eval every {base.eval_every} steps, "
        f"{args.steps} steps, best of {args.repeats}"
    )
    print(f"probes on : {1 / on:8.1f} steps/s  ({on_compiles} compilation per run)")
    print(f"probes off: {1 / off:8.1f} steps/s  ({off_compiles} compilation per run)")
    print(f"throughput with probes / without: {off / on:.3f}")


if __name__ == "__main__":
    main()
