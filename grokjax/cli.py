"""The ``grokjax`` console script.

``grokjax run`` runs the main job on its built-in defaults. For now that is the
⊥AdamW-vs-AdamW demonstration of :mod:`grokjax.demo`; the experiment trainer with
configs, sweeps and reports replaces it.
"""

from __future__ import annotations

import argparse
import sys

import grokjax


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _modulus(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"the modulus must be at least 2, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokjax", description=grokjax.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"grokjax {grokjax.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the main job: ⊥AdamW groks (a + b) mod p where AdamW does not"
    )
    run.add_argument("--p", type=_modulus, default=113, help="the modulus (default 113)")
    run.add_argument(
        "--steps", type=_positive_int, default=300, help="full-batch steps (default 300)"
    )
    run.add_argument("--seed", type=int, default=0, help="data split and init seed (default 0)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from grokjax import demo  # imports flax and compiles: only when asked

        demo.run(p=args.p, steps=args.steps, seed=args.seed, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
