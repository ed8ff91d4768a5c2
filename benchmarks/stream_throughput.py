"""Streamed vs in-memory LM training: training tokens per second of each, and the ratio.

Writes a small SlimPajama-layout shard directory to a temporary folder (the standard
library's pydoc topics, ``--copies`` times over, as zstd shards; no download), then
trains the same config — ``mamba_swelu`` at its sizes unless overridden with
``--set`` — twice in this process: the whole corpus on the device (``data.stream =
false``, windows drawn inside the program) and streamed from the shards
(``data.stream = true``, one ``(interval, B, seq_len + 1)`` array per interval from the
background feed).

Each mode runs ``--steps`` S₁ and S₂ steps (same compilation, same evaluations per
step), and its throughput is the difference, which cancels compilation and start-up:

    tokens/s = (S₂ − S₁) · batch_size · seq_len / (t₂ − t₁)

(tokens of one member's stream; every member trains on them.)

    python benchmarks/stream_throughput.py [--steps 50 250] [--copies 6]
        [--set KEY=VALUE ...] [--only LABEL ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

from grokjax.data import write_shard
from grokjax.train import apply_overrides, resolve, run_experiment, select_methods


def write_corpus(root: pathlib.Path, copies: int, shards: int = 8) -> int:
    """The pydoc topics ``copies`` times as ``shards`` zstd training shards and one
    validation shard (every tenth topic of the first copy); returns the text's bytes."""
    from pydoc_data.topics import topics

    texts = list(dict.fromkeys(topics[k] for k in sorted(topics)))
    train = [t for i, t in enumerate(texts) if i % 10] * copies
    records = [{"text": t} for t in train]
    for s in range(shards):
        write_shard(root / f"train/chunk1/{s}.jsonl.zst", records[s::shards])
    write_shard(root / "validation/chunk1/0.jsonl.zst", [{"text": t} for t in texts[::10]])
    return sum(len(t.encode()) for t in train)


def timed(config, steps: int) -> float:
    cfg = apply_overrides(config, [f"steps={steps}", "tokens_per_param=0"])
    start = time.perf_counter()
    result = run_experiment(cfg, progress=False, warn=False)
    seconds = time.perf_counter() - start
    assert result.compilations == 1 and result.steps[-1] >= steps
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=[50, 250])
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "shards"
        size = write_corpus(root, args.copies)
        base = apply_overrides(resolve("mamba-swelu"), [f"data.text_path={root}", *args.overrides])
        if args.only:
            base = select_methods(base, args.only)
        members = sum(len(list(m.members())) for m in base.methods)
        per_step = base.batch_size * base.data.seq_len
        print(
            f"corpus {size / 1e6:.1f} MB of training text in 8 zstd shards; {members} members, "
            f"batch {base.batch_size} × seq_len {base.data.seq_len}, eval_every "
            f"{base.eval_every}; steps {args.steps[0]} and {args.steps[1]}"
        )
        rates = {}
        for mode in ("in-memory", "streamed"):
            cfg = apply_overrides(base, [f"data.stream={str(mode == 'streamed').lower()}"])
            t1, t2 = (timed(cfg, s) for s in args.steps)
            rates[mode] = (args.steps[1] - args.steps[0]) * per_step / (t2 - t1)
            print(
                f"{mode:>9}: {t1:.1f} s for {args.steps[0]} steps, {t2:.1f} s for "
                f"{args.steps[1]}: {rates[mode]:,.0f} tokens/s per member stream "
                f"({rates[mode] * members:,.0f} member-tokens/s)"
            )
        ratio = rates["streamed"] / rates["in-memory"]
        print(f"streamed / in-memory: {ratio:.3f} (target >= 0.95)")
        print(json.dumps({"tokens_per_s": rates, "ratio": ratio}))


if __name__ == "__main__":
    main()
