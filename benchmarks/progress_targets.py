"""Nanda et al.'s qualitative results, checked per member on a run of
``progress_measures`` (or any run with the progress-measures probe) after
``grokjax analyze RUN_DIR``:

1. the restricted loss (final key frequencies, ``analysis/checkpoints.jsonl``) falls
   below ``--level`` (0.1) at least 10% of the run's steps before the test loss does;
2. the excluded loss rises between memorisation (train acc ≥ 0.99) and cleanup
   (val acc ≥ 0.95): its maximum in that span exceeds its value at memorisation;
3. after grokking the top-k key frequencies (k = 3 … 7) hold ≥ 90% of the
   embedding's squared Fourier norm (``analysis/checkpoint_<last>.npz``), and the Gini
   coefficient of its Fourier norms is higher at the end than at the first evaluation.

Prints one line per member and a summary; exits 1 if a member misses a target.

    python benchmarks/progress_targets.py RUN_DIR [--level 0.1]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from grokjax.analysis.statistics import grokking_phases


def _jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x]


def _first_below(steps: np.ndarray, values: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(values < level)
    return int(steps[hit[0]]) if hit.size else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--level", type=float, default=0.1)
    args = parser.parse_args()
    run = args.run_dir
    metrics = _jsonl(run / "metrics.jsonl")
    analysed = _jsonl(run / "analysis" / "checkpoints.jsonl")
    budget = max(r["step"] for r in metrics)
    last = max(r["step"] for r in analysed)
    ok = True
    with np.load(run / "analysis" / f"checkpoint_{last:08d}.npz") as final:
        spectra = {k: final[k] for k in final.files if k.endswith("embed_fourier_norms")}
    for method, member in sorted({(r["method"], r["member"]) for r in metrics}):
        rows = [r for r in metrics if (r["method"], r["member"]) == (method, member)]
        steps = np.array([r["step"] for r in rows])
        test = np.array([r["progress/test_loss"] for r in rows])
        excluded = np.array([r["progress/excluded_loss_online"] for r in rows])
        phases = grokking_phases(
            steps,
            np.array([r["train_acc"] for r in rows]),
            np.array([r["val_acc"] for r in rows]),
            excluded,
        )
        ck = [r for r in analysed if (r["method"], r["member"]) == (method, member)]
        ck_steps = np.array([r["step"] for r in ck])
        restricted = np.array([r["progress/restricted_loss"] for r in ck])
        ck_excluded = np.array([r["progress/excluded_loss"] for r in ck])
        r_step = _first_below(ck_steps, restricted, args.level)
        t_step = _first_below(steps, test, args.level)
        lead = None if r_step is None or t_step is None else (t_step - r_step) / budget
        m_step, c_step = phases.memorised, phases.cleaned_up
        rise = None
        if m_step is not None and c_step is not None and c_step > m_step:
            span = (ck_steps >= m_step) & (ck_steps <= c_step)
            at_m = ck_excluded[np.argmin(np.abs(ck_steps - m_step))]
            rise = (float(ck_excluded[span].max()) / float(at_m)) if span.any() else None
        norms = spectra[f"{method}/progress/embed_fourier_norms"][member]
        sq = np.sort(norms[1:] ** 2)[::-1]
        mass = {k: float(sq[:k].sum() / (norms**2).sum()) for k in range(3, 8)}
        best_k = next((k for k, m in mass.items() if m >= 0.9), None)
        gini = [r["progress/gini_embed"] for r in rows]
        targets = {
            "restricted_leads_10pct": lead is not None and lead >= 0.1,
            "excluded_rises": rise is not None and rise > 1.0,
            "few_key_frequencies": best_k is not None,
            "gini_rises": gini[-1] > gini[0],
        }
        ok &= all(targets.values())
        print(
            f"{method}[{member}] seed {rows[0]['seed']}: M={m_step} C={c_step} "
            f"circuit={phases.circuit}; restricted<{args.level:g} at {r_step}, "
            f"test<{args.level:g} at {t_step} (lead {lead if lead is None else f'{lead:.0%}'} of "
            f"{budget}); excluded max/at-M {rise if rise is None else f'{rise:.2f}'}; "
            f"top-k mass {', '.join(f'{k}:{m:.2f}' for k, m in mass.items())}; "
            f"Gini {gini[0]:.3f} -> {gini[-1]:.3f}; "
            + " ".join(f"{k}={'yes' if v else 'NO'}" for k, v in targets.items())
        )
    print("all targets met" if ok else "some targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
