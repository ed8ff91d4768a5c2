"""Calibrate the adaptive Surge-Collapse controller on measured entropy ranges.

Trains the ``surge-collapse`` preset's baseline (no Surge-Collapse) at every input-noise
level, records the normalised activation entropy e_t = H / ln(256) of the hidden
layer at every step (an evaluation interval of 1 step), smooths it exactly as the
controller does (s_t = β s_{t−1} + (1 − β) e_t, β 0.9) and prints its range and the
thresholds derived from it:

- ``high`` = the ``--high-q`` quantile of s over the run (after the first epoch):
  entropy above what plain training shows most of the time → collapse and re-expand;
- ``low`` = the ``--low-q`` quantile: below → pump input noise;
- ``plateau_tolerance`` = the ``--flat-q`` quantile of the span (max − min) of s over
  100-step windows: a window flatter than the baseline's almost ever are is a plateau.

Usage: ``python benchmarks/surge_collapse_calibration.py [--steps 3000]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from grokjax.train import run_experiment
from grokjax.train.experiments import resolve
from grokjax.train.loading import apply_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--smoothing", type=float, default=0.9)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--high-q", type=float, default=0.9)
    parser.add_argument("--low-q", type=float, default=0.1)
    parser.add_argument("--flat-q", type=float, default=0.1)
    args = parser.parse_args()

    config = apply_overrides(
        resolve("surge-collapse"),
        [f"steps={args.steps}", f"eval_every={args.eval_every}", "evals_per_sync=200"],
    )
    config = dataclasses.replace(config, methods=config.methods[:1])  # the baseline
    start = time.perf_counter()
    result = run_experiment(config, progress=False)
    seconds = time.perf_counter() - start
    steps = np.asarray(result.steps)
    e = result.metric(0, "act_entropy_norm")  # (evals, members)
    smoothed = np.empty_like(e)
    smoothed[0] = e[0]
    for t in range(1, len(e)):
        smoothed[t] = args.smoothing * smoothed[t - 1] + (1 - args.smoothing) * e[t]
    noise = [h.get("input_noise", 0.0) for _, h in result.groups[0].members]
    after_epoch = steps > 125
    w = max(2, args.window // args.eval_every)
    windows = np.lib.stride_tricks.sliding_window_view(smoothed, w, axis=0)  # (E-w+1, M, w)
    spans = (windows.max(-1) - windows.min(-1))[after_epoch[w - 1 :]]
    print(f"baseline, {args.steps} steps, {len(noise)} members, {seconds:.1f} s")
    print(f"smoothed normalised activation entropy s_t (β {args.smoothing}):")
    print("sigma  e(first)  e(last)   min      p10      p50      p90      max")
    for m, sigma in enumerate(noise):
        v = smoothed[after_epoch, m]
        q = np.quantile(v, [0.1, 0.5, 0.9])
        print(
            f"{sigma:<5g}  {e[0, m]:.4f}    {e[-1, m]:.4f}    {v.min():.4f}   "
            + "   ".join(f"{x:.4f}" for x in q)
            + f"   {v.max():.4f}"
        )
    pooled = smoothed[after_epoch].reshape(-1)
    print(
        f"\nsuggested: high = {np.quantile(pooled, args.high_q):.4f} (q{args.high_q:g}), "
        f"low = {np.quantile(pooled, args.low_q):.4f} (q{args.low_q:g}), "
        f"plateau_tolerance = {np.quantile(spans, args.flat_q):.2e} "
        f"(q{args.flat_q:g} of the {args.window}-step span of s; median {np.median(spans):.2e})"
    )


if __name__ == "__main__":
    main()
