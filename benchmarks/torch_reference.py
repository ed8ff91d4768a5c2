"""grokjax against the authors' own Grokfast code (``ironjr/grokfast``), run unmodified.

The reference is Lee et al.'s ``main.py`` and ``grokfast.py`` from a local checkout
(``--reference-dir``; nothing of it is copied into this repository). Each reference run
is a child process that imports torch, matplotlib and tqdm, puts the checkout on
``sys.path``, changes into an empty temporary directory with a ``results/`` folder (the
script saves its plots and metrics there every 100 epochs) and runs ``main.py`` with
``runpy`` as ``__main__`` under the recipe's command line:

- EMA: ``--filter ema --alpha 0.98 --lamb 2.0 --weight_decay 0.005``
- MA: ``--filter ma --window_size 100 --lamb 5.0 --weight_decay 0.01``

plus ``--seed N --budget B`` (x·y mod 97 on the 97×96 table, 50% train drawn per seed
with ``torch.randperm``, Adam (0.9, 0.98) lr 1e-3 with the ``LambdaLR`` warm-up, batches
of 512 by ``torch.split``, a train and a validation pass after every epoch of 10 steps).
The only thing added, at run time, is a stop at the first evaluation with ≥ 95%
validation accuracy: ``torch.nn.Module.train`` is wrapped so that when ``main()`` puts
its model back into training mode at the start of an epoch, the wrapper reads ``its``
and ``val_acc`` from ``main``'s frame and ends the run with the step ``its[-1]``. tqdm is
silenced (``TQDM_DISABLE``) and the script's prints are discarded.

The grokjax side is ``experiments/grokfast_fidelity.toml`` (the same recipes, each
member with its own seed's split) with the seeds replaced, every member of both recipes
in one ``grokjax.train.run_experiment`` program; a member's step is its first
evaluation with ≥ 95% validation accuracy (``result.detector.generalised``).

It prints

1. steps to 95% validation accuracy per seed on both sides, median [min–max] per
   recipe and side, and the two-sided Mann–Whitney U p-value of the two samples
   (a member that never gets there within the budget counts as larger than any step);
2. unless ``--skip-timing``: seconds per training step from start to stop,
   compilation and evaluation included, for the EMA recipe seed 0 on both sides: the
   reference's time from ``runpy`` to the stop / its step, and grokjax's
   ``run_experiment`` wall time / the step it stopped at (the first host sync after
   the crossing), once with an empty persistent compilation cache and once warm (same
   cache directory, a new process); and the ratios.

Needs PyTorch, matplotlib, tqdm and scipy (not grokjax dependencies); on the project's
CPU machine ``pip install torch==2.13.0`` takes the CPU wheel on its disk. Get the
reference with ``git clone https://github.com/ironjr/grokfast``.

    python benchmarks/torch_reference.py --reference-dir PATH [--seeds 0-15]
        [--recipes ema ma] [--jobs 2] [--threads 1] [--budget 4000] [--skip-timing]
        [--sides reference grokjax] [--json OUT]
    python benchmarks/torch_reference.py --merge A.json B.json  # print saved runs together
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

RECIPES = {
    "ema": ["--filter", "ema", "--alpha", "0.98", "--lamb", "2.0", "--weight_decay", "0.005"],
    "ma": ["--filter", "ma", "--window_size", "100", "--lamb", "5.0", "--weight_decay", "0.01"],
}
LABELS = {"ema": "grokfast_ema", "ma": "grokfast_ma"}  # grokfast_fidelity's methods
THRESHOLD = 0.95


# --- the reference, in a child process ---------------------------------------------------


class _Grokked(Exception):
    """Raised inside the reference's ``main()`` to stop it; carries the step."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


def install_stop(main_path: pathlib.Path, threshold: float = THRESHOLD) -> dict:
    """Wrap ``torch.nn.Module.train`` to stop ``main_path``'s ``main()`` at its first
    evaluation with ``val_acc[-1] >= threshold`` (raising :class:`_Grokked`).

    Only a call made from a function named ``main`` in ``main_path`` is looked at (a
    module's own recursive ``train`` of its children is not). Returns a dict that keeps
    ``main``'s ``its`` and ``val_acc`` lists (the same objects), so a run that ends
    without stopping can be read afterwards (:func:`final_step`). Returns the original
    method under ``"original"`` for :func:`remove_stop`.
    """
    import torch

    original = torch.nn.Module.train
    seen: dict = {"original": original}
    target = str(main_path.resolve())

    def train(self, mode: bool = True):
        frame = sys._getframe(1)
        code = frame.f_code
        if mode and code.co_name == "main" and os.path.realpath(code.co_filename) == target:
            local = frame.f_locals
            its, val_acc = local.get("its"), local.get("val_acc")
            if its is not None and val_acc is not None:
                seen["its"], seen["val_acc"] = its, val_acc
                if val_acc and val_acc[-1] >= threshold:
                    raise _Grokked(int(its[-1]))
        return original(self, mode)

    torch.nn.Module.train = train
    return seen


def remove_stop(seen: dict) -> None:
    import torch

    torch.nn.Module.train = seen["original"]


def final_step(seen: dict, threshold: float = THRESHOLD) -> int | None:
    """The step of a run that ended on its budget: its last evaluation's, if that one
    reached ``threshold`` (the wrapper sees it only at the next epoch's start)."""
    its, val_acc = seen.get("its"), seen.get("val_acc")
    if its and val_acc and len(val_acc) == len(its) and val_acc[-1] >= threshold:
        return int(its[-1])
    return None


def run_reference(
    reference_dir: pathlib.Path, argv: list[str], threshold: float = THRESHOLD
) -> tuple[int | None, float, int]:
    """Run ``reference_dir/main.py`` as ``__main__`` with ``argv`` in a temporary
    directory, stopping at ``threshold``; ``(step or None, seconds, steps trained)``,
    timed from just before ``runpy``. Changes this process while it runs (``sys.path``,
    ``sys.argv``, the cwd, the wrapped ``train``): meant for a child process."""
    import contextlib
    import runpy

    main_path = reference_dir / "main.py"
    sys.path.insert(0, str(reference_dir))
    old_cwd, old_argv = os.getcwd(), sys.argv
    seen = install_stop(main_path, threshold)
    step = None
    try:
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
            os.chdir(tmp)
            (pathlib.Path(tmp) / "results").mkdir()
            sys.argv = [str(main_path), *argv]
            with contextlib.redirect_stdout(null):
                start = time.perf_counter()
                try:
                    runpy.run_path(str(main_path), run_name="__main__")
                except _Grokked as stop:
                    step = stop.step
                else:
                    step = final_step(seen, threshold)
                seconds = time.perf_counter() - start
            os.chdir(old_cwd)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        remove_stop(seen)
        sys.path.remove(str(reference_dir))
    trained = step if step is not None else int(seen["its"][-1]) if seen.get("its") else 0
    return step, seconds, trained


def _reference_child(args: argparse.Namespace) -> None:
    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its environment when imported
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot  # noqa: F401  (imported before the clock starts)
    import torch
    import tqdm  # noqa: F401

    torch.set_num_threads(args.threads)
    argv = [*RECIPES[args.recipe], "--seed", str(args.seed), "--budget", str(args.budget)]
    step, seconds, trained = run_reference(pathlib.Path(args.reference_dir).resolve(), argv)
    row = {
        "recipe": args.recipe,
        "seed": args.seed,
        "step": step,
        "seconds": seconds,
        "steps_trained": trained,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(row), flush=True)


def _child(argv: list[str], threads: int) -> dict:
    """Run this file with ``argv`` in a new process; its last stdout line as JSON."""
    env = {**os.environ, "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, __file__, *argv], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_steps(args: argparse.Namespace) -> dict[str, dict[int, int | None]]:
    """Every (recipe, seed) of the reference, ``--jobs`` children at a time."""
    jobs = [(r, s) for r in args.recipes for s in args.seeds]
    out: dict[str, dict[int, int | None]] = {r: {} for r in args.recipes}

    def one(job):
        recipe, seed = job
        argv = ["--_child", "reference", "--recipe", recipe, "--seed", str(seed)]
        argv += ["--reference-dir", str(args.reference_dir), "--budget", str(args.budget)]
        return _child([*argv, "--threads", str(args.threads)], args.threads)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(one, jobs):
            out[row["recipe"]][row["seed"]] = row["step"]
            print(
                f"  reference {row['recipe']} seed {row['seed']}: step {row['step']} "
                f"({row['seconds']:.0f} s, {row['threads']} threads)",
                flush=True,
            )
    return out


# --- grokjax ----------------------------------------------------------------------------


def grokjax_config(recipes: list[str], seeds: list[int], budget: int):
    """``grokfast_fidelity`` with ``recipes``' methods, each with ``seeds``."""
    from grokjax.train import apply_overrides, resolve, select_methods

    config = select_methods(resolve("grokfast_fidelity"), [LABELS[r] for r in recipes])
    sets = [f"methods.{i}.seeds={list(seeds)}" for i in range(len(recipes))]
    return apply_overrides(config, [*sets, f"steps={budget}", "stop_when_grokked=true"])


def grokjax_steps(args: argparse.Namespace) -> tuple[dict[str, dict[int, int | None]], float]:
    """Every member of every recipe in one ``run_experiment``; (steps, wall seconds)."""
    from grokjax.train import run_experiment

    config = grokjax_config(args.recipes, args.seeds, args.budget)
    start = time.perf_counter()
    result = run_experiment(config, progress=False)
    seconds = time.perf_counter() - start
    out: dict[str, dict[int, int | None]] = {}
    for g, recipe in enumerate(args.recipes):
        assert result.groups[g].method.label == LABELS[recipe]
        seeds = [seed for seed, _ in result.groups[g].members]
        steps = [int(s) for s in result.detector.generalised[g]]
        out[recipe] = {seed: (s if s >= 0 else None) for seed, s in zip(seeds, steps, strict=True)}
    return out, seconds


def _grokjax_time_child(args: argparse.Namespace) -> None:
    import jax

    from grokjax.runs.compile_cache import enable
    from grokjax.train import run_experiment

    enable(args.cache)
    config = grokjax_config(["ema"], [0], args.budget)
    start = time.perf_counter()
    result = run_experiment(config, progress=False)
    seconds = time.perf_counter() - start
    step = int(result.detector.generalised[0][0])
    row = {
        "seconds": seconds,
        "stop_step": result.steps[-1],
        "step": step if step >= 0 else None,
        "compile": result.compile.summary() if result.compile else "",
        "cache_hits": result.compile.cache_hits if result.compile else 0,
        "jax": jax.__version__,
    }
    print(json.dumps(row), flush=True)


def timing(args: argparse.Namespace) -> dict:
    """Seconds per step, start to stop, EMA seed 0: the reference and grokjax (cold and
    warm persistent compilation cache), each in its own process, one after another."""
    argv = ["--_child", "reference", "--recipe", "ema", "--seed", "0", "--budget"]
    argv += [str(args.budget), "--reference-dir", str(args.reference_dir)]
    ref = _child([*argv, "--threads", str(args.timing_threads)], args.timing_threads)
    out = {"reference": ref}
    with tempfile.TemporaryDirectory() as cache:
        for run in ("cold", "warm"):
            argv = ["--_child", "grokjax-time", "--cache", cache, "--budget", str(args.budget)]
            out[run] = _child(argv, args.timing_threads)
    return out


# --- reporting ---------------------------------------------------------------------------


def summary(steps: list[int | None]) -> str:
    done = [s for s in steps if s is not None]
    if not done:
        return "none reached 95%"
    text = f"{statistics.median(done):g} [{min(done)}–{max(done)}]"
    return text + (f", {len(steps) - len(done)} never" if len(done) < len(steps) else "")


def mann_whitney(a: list[int | None], b: list[int | None], budget: int) -> float:
    """Two-sided Mann–Whitney U p-value; a run that never reached 95% ranks last."""
    from scipy.stats import mannwhitneyu

    never = budget + 1
    a = [never if s is None else s for s in a]
    b = [never if s is None else s for s in b]
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def report(data: dict) -> None:
    budget = data.get("budget", 4000)
    ref, ours = data.get("reference", {}), data.get("grokjax", {})
    for recipe in sorted(set(ref) | set(ours), key=list(RECIPES).index):
        print(f"\n{recipe.upper()} recipe, steps to 95% validation accuracy:")
        sides = {}
        for name, side in (("reference (authors' code)", ref), ("grokjax", ours)):
            if recipe in side:
                seeds = sorted(side[recipe], key=int)
                sides[name] = [side[recipe][s] for s in seeds]
                listed = ", ".join(f"{s}:{side[recipe][s]}" for s in seeds)
                print(f"  {name}: {summary(sides[name])}\n    seed:step {listed}")
        if len(sides) == 2:
            a, b = sides.values()
            p = mann_whitney(a, b, budget)
            print(f"  Mann–Whitney U, two-sided: p = {p:.3g} (n = {len(a)}, {len(b)})")
    t = data.get("timing")
    if t:
        ref = t["reference"]
        print("\nEMA seed 0, start to stop (compile and evaluation included):")
        trained = ref.get("steps_trained", ref["step"])
        ref_per = ref["seconds"] / trained if trained else float("nan")
        print(
            f"  reference: {ref['seconds']:.1f} s to its stop at step {trained} (95% at "
            f"{ref['step']}) = {1e3 * ref_per:.1f} ms/step ({ref['threads']} torch threads)"
        )
        for run in ("cold", "warm"):
            r = t[run]
            per = r["seconds"] / r["stop_step"]
            print(
                f"  grokjax, {run} compilation cache: {r['seconds']:.1f} s to its stop at step "
                f"{r['stop_step']} (95% at {r['step']}) = {1e3 * per:.1f} ms/step; "
                f"reference / grokjax = {ref_per / per:.2f}x; {r['compile']}"
            )


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=pathlib.Path, help="ironjr/grokfast checkout")
    parser.add_argument("--seeds", type=_seeds, default=_seeds("0-7"), help="e.g. 0-15 or 0,3")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--sides", nargs="+", choices=["reference", "grokjax"])
    parser.add_argument("--jobs", type=int, default=1, help="reference runs in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--timing-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget", type=int, default=4000, help="most steps per run")
    parser.add_argument("--skip-steps", action="store_true", help="only the timing")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    parser.add_argument("--merge", type=pathlib.Path, nargs="+", help="print saved --json runs")
    # a child process's own arguments
    parser.add_argument("--_child", choices=["reference", "grokjax-time"], help=argparse.SUPPRESS)
    parser.add_argument("--recipe", choices=list(RECIPES), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child == "reference":
        return _reference_child(args)
    if args._child == "grokjax-time":
        return _grokjax_time_child(args)
    if args.merge:
        data: dict = {}
        for path in args.merge:
            saved = json.loads(path.read_text())
            for key, value in saved.items():
                if isinstance(value, dict) and isinstance(data.get(key), dict):
                    for recipe, steps in value.items():
                        data[key].setdefault(recipe, {}).update(steps)
                else:
                    data[key] = value
        return report(data)
    sides = args.sides or ["reference", "grokjax"]
    if "reference" in sides or not args.skip_timing:
        if args.reference_dir is None or not (args.reference_dir / "main.py").is_file():
            parser.error("--reference-dir must name a checkout of ironjr/grokfast (main.py)")
        args.reference_dir = args.reference_dir.resolve()

    import jax

    data = {"budget": args.budget, "seeds": args.seeds, "recipes": args.recipes}
    data["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    data["jax"] = jax.__version__
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs")

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(data, indent=1))

    if not args.skip_steps:
        if "reference" in sides:
            print(f"reference runs, {args.jobs} at a time, {args.threads} torch threads each:")
            start = time.perf_counter()
            data["reference"] = reference_steps(args)
            data["reference_wall_s"] = time.perf_counter() - start
            save()
        if "grokjax" in sides:
            print(f"grokjax: {len(args.recipes) * len(args.seeds)} members in one program ...")
            data["grokjax"], data["grokjax_wall_s"] = grokjax_steps(args)
            print(f"  {data['grokjax_wall_s']:.0f} s")
            save()
    if not args.skip_timing:
        print("timing EMA seed 0 (reference, then grokjax cold and warm cache) ...")
        data["timing"] = timing(args)
        save()
    report(data)


if __name__ == "__main__":
    main()
