"""The ``grokjax`` console script.

- ``grokjax run [CONFIG] [--set key=value …]``: train an experiment (default: the
  Grokfast comparison ``grokfast_modmul``), write ``runs/<name>_<timestamp>/``.
- ``grokjax run --resume RUN_DIR``: continue a run from its latest checkpoint.
- ``grokjax list``: built-in configs and ``experiments/*.toml``.
- ``grokjax report RUN_DIR``: redraw the figures and rewrite ``report.md``.
- ``grokjax analyze RUN_DIR [--steps S …]``: recompute the probes from the run's
  checkpoints (:mod:`grokjax.analyze`), then redraw the figures and the report.
- ``grokjax evaluate RUN_DIR [--only LABEL …]``: (re)run the config's evaluations on
  the run's latest checkpoint (:mod:`grokjax.evaluate`); ``grokjax run`` runs them after
  training.

Exit codes: 0 done; 2 bad input (config, data, arguments); 3 training diverged; 4 a
damaged run folder or checkpoint, or a file that cannot be written; 5 a process of a
multi-process run failed (the others are stopped); 130 interrupted
(Ctrl-C or SIGTERM: the run saves a checkpoint and prints the command that resumes
it). ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import grokjax


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokjax", description=grokjax.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"grokjax {grokjax.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show the traceback of an error")
    run = commands.add_parser(
        "run", parents=[debug], help="train an experiment (default: grokfast_modmul)"
    )
    run.add_argument(
        "config", nargs="?", help="an experiment name (see `grokjax list`) or a .toml path"
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set steps=500 --set data.p=23 (repeatable)",
    )
    run.add_argument(
        "--only",
        dest="only",
        action="append",
        default=[],
        metavar="LABEL",
        help="run only the method labelled LABEL (repeatable; after any --set)",
    )
    run.add_argument(
        "--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint"
    )
    run.add_argument(
        "--from-step",
        type=int,
        metavar="STEP",
        help="with --resume: continue from this checkpoint step instead of the latest",
    )
    run.add_argument("--runs-dir", default="runs", help="where new runs go (default: runs/)")
    run.add_argument("--run-dir", help="write the new run exactly here (default: under --runs-dir)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="the persistent compilation cache (default: $GROKJAX_COMPILE_CACHE, "
        "$JAX_COMPILATION_CACHE_DIR or ~/.cache/grokjax/xla): a rerun of the same config "
        "shape reuses the compiled program",
    )
    run.add_argument(
        "--no-compile-cache", action="store_true", help="compile without the persistent cache"
    )
    spread = run.add_argument_group(
        "multi-process runs (jax.distributed; members are sharded over all processes' devices)"
    )
    spread.add_argument(
        "--processes", type=int, metavar="N", help="start N processes on this machine"
    )
    spread.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    spread.add_argument("--process-id", type=int, metavar="I", help="this process's index")
    spread.add_argument("--num-processes", type=int, metavar="N", help="how many processes")
    spread.add_argument(
        "--slurm", action="store_true", help="join the processes of this SLURM job (srun)"
    )

    commands.add_parser("list", parents=[debug], help="list the experiments `grokjax run` accepts")

    report = commands.add_parser(
        "report", parents=[debug], help="redraw a run's figures and rewrite its report.md"
    )
    report.add_argument("run_dir")

    analyze = commands.add_parser(
        "analyze",
        parents=[debug],
        help="recompute a run's probes from its checkpoints, redraw its figures and report",
    )
    analyze.add_argument("run_dir")
    analyze.add_argument(
        "--steps", type=int, nargs="+", metavar="STEP", help="checkpoint steps (default: all)"
    )
    analyze.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        parents=[debug],
        help="run a trained run's evaluations (other lengths, RoPE scalings, fine-tunes)",
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--only", action="append", default=[], metavar="LABEL", help="only this evaluation"
    )
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _run(args: argparse.Namespace) -> int:
    from grokjax.errors import ConfigError
    from grokjax.train import (
        apply_overrides,
        new_run_dir,
        resolve,
        resume_experiment,
        run_experiment,
        select_methods,
    )
    from grokjax.viz import write_report

    if args.from_step is not None and not args.resume:
        raise ConfigError("--from-step needs --resume RUN_DIR.")
    if args.run_dir and args.resume:
        raise ConfigError("--run-dir names a new run's folder; --resume continues RUN_DIR.")
    if args.compile_cache and args.no_compile_cache:
        raise ConfigError("--compile-cache DIR and --no-compile-cache: choose one.")
    if args.processes is not None:
        return _launch(args)
    if not args.no_compile_cache:
        from grokjax.runs import compile_cache

        compile_cache.enable(args.compile_cache or compile_cache.default_dir())
    spread = (args.coordinator, args.process_id, args.num_processes)
    joined = args.slurm or any(x is not None for x in spread)
    if joined:
        from grokjax.launch import initialize

        initialize(args.coordinator, args.num_processes, args.process_id, slurm=args.slurm)
    if args.resume:
        steps = None
        for item in args.overrides:
            key, _, value = item.partition("=")
            if key.strip() != "steps" or not value.strip().isdigit():
                raise ConfigError(f"--resume: only --set steps=N may change a run, got {item!r}.")
            steps = int(value)
        if args.config or args.only:
            raise ConfigError("--resume: the run keeps its own config; drop CONFIG and --only.")
        from grokjax.train import load_config

        _print_warnings(load_config(args.resume))
        result = resume_experiment(
            args.resume,
            steps=steps,
            progress=not args.no_progress,
            warn=False,
            from_step=args.from_step,
        )
    else:
        config = apply_overrides(resolve(args.config), args.overrides)
        if args.only:
            config = select_methods(config, args.only)
        run_dir = args.run_dir or new_run_dir(config, args.runs_dir)
        if joined:
            from grokjax.launch import broadcast_text

            run_dir = broadcast_text(str(run_dir))
        if _primary():
            print(f"{config.name}: writing {run_dir}")
            _print_warnings(config)
        result = run_experiment(config, run_dir=run_dir, progress=not args.no_progress, warn=False)
    if not _primary():
        return 0
    if joined and result.config.evaluations:
        print(
            "grokjax run: the config's evaluations run in one process: "
            f"grokjax evaluate {result.run_dir}",
            file=sys.stderr,
        )
    elif result.config.evaluations:
        from grokjax.evaluate import evaluate_run

        evaluate_run(result.run_dir, progress=not args.no_progress, report=False)
    report = write_report(result.run_dir, extra=_timing(result))
    print(report.read_text().split("## Figures")[0].rstrip())
    print(f"\nreport: {report}")
    return 0


def _primary() -> bool:
    import jax

    return jax.process_index() == 0


def _launch(args: argparse.Namespace) -> int:
    """``--processes N``: this process starts N workers and waits for them."""
    from grokjax.errors import ConfigError
    from grokjax.launch import launch_local
    from grokjax.train import apply_overrides, new_run_dir, resolve

    spread = (args.coordinator, args.process_id, args.num_processes)
    if args.slurm or any(x is not None for x in spread):
        raise ConfigError(
            "--processes starts local processes: drop --coordinator, --process-id, "
            "--num-processes and --slurm."
        )
    argv = ["run"] + ([args.config] if args.config else [])
    argv += [f"--set={o}" for o in args.overrides] + [f"--only={o}" for o in args.only]
    argv += ["--no-progress"] * args.no_progress + ["--debug"] * args.debug
    argv += ["--no-compile-cache"] * args.no_compile_cache
    argv += ["--compile-cache", args.compile_cache] if args.compile_cache else []
    if args.resume:
        run_dir = args.resume
        argv += ["--resume", args.resume]
        argv += ["--from-step", str(args.from_step)] if args.from_step is not None else []
    else:
        config = apply_overrides(resolve(args.config), args.overrides)
        run_dir = str(args.run_dir or new_run_dir(config, args.runs_dir))
    return launch_local(argv, args.processes, run_dir=run_dir, resume=bool(args.resume))


def _print_warnings(config) -> None:
    for message in config.precision_warnings():
        print(f"grokjax run: warning: {message}", file=sys.stderr)


def _timing(result) -> str:
    text = (
        f"Wall time {result.seconds:.1f} s on {result.config.name} (compilation included); "
        f"{result.compilations} compilation(s) of the training program"
        + (f"; {result.compile.summary()}." if result.compile is not None else ".")
        + f" Where it went: {result.times.summary()}."
    )
    cfg = result.config
    if cfg.data.kind == "lm" and result.steps and result.seconds > 0:
        members = sum(g.size for g in result.groups)
        tokens = result.steps[-1] * cfg.batch_size * cfg.data.seq_len * members
        text += (
            f" {tokens:,} training tokens over {members} members: "
            f"{tokens / result.seconds:,.0f} tokens/s (all members together, compilation and "
            "evaluation included)."
        )
    return text


def _exit_code(err: BaseException) -> int | None:
    """The documented exit code of an expected failure (``None``: a bug, re-raised)."""
    from grokjax.data.text import MalformedRecord
    from grokjax.errors import ConfigError, DataError, RunFolderError
    from grokjax.launch import LaunchFailed
    from grokjax.train import TrainingDiverged

    if isinstance(err, (ConfigError, DataError, MalformedRecord, FileNotFoundError)):
        return 2
    if isinstance(err, TrainingDiverged):
        return 3
    if isinstance(err, (RunFolderError, OSError)):  # OSError: disk full, permissions, …
        return 4
    if isinstance(err, LaunchFailed):
        return 5
    if isinstance(err, KeyboardInterrupt):
        return 130
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "list":
            from grokjax.train import available

            for name, description in available().items():
                print(f"{name:<28} {description}")
            return 0
        if args.command == "report":
            from grokjax.viz import write_report

            print(write_report(pathlib.Path(args.run_dir)))
            return 0
        if args.command == "analyze":
            from grokjax.analyze import analyze_run

            run_dir = pathlib.Path(args.run_dir)
            steps = analyze_run(run_dir, steps=args.steps, progress=not args.no_progress)
            print(f"analysed {len(steps)} checkpoint(s) {steps}: {run_dir / 'analysis'}")
            return 0
        if args.command == "evaluate":
            from grokjax.evaluate import evaluate_run

            run_dir = pathlib.Path(args.run_dir)
            rows = evaluate_run(run_dir, args.only or None, progress=not args.no_progress)
            print(f"{len(rows)} evaluation row(s): {run_dir / 'evaluations.jsonl'}")
            return 0
    except (Exception, KeyboardInterrupt) as err:
        code = _exit_code(err)
        if code is None or args.debug:
            raise
        from grokjax.train import TrainingInterrupted

        if isinstance(err, TrainingInterrupted):
            saved = (
                f"; metrics and a checkpoint are saved. Resume with:\n  grokjax run --resume "
                f"{err.run_dir}"
                if err.run_dir
                else ""
            )
            message = f"interrupted at step {err.step}{saved}"
        elif isinstance(err, KeyboardInterrupt):
            message = "interrupted (no checkpoint written since the last one)"
        else:
            message = str(err)
        print(f"grokjax {args.command}: error: {message}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
