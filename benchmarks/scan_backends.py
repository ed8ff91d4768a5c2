"""Time the selective-scan backends on this machine: forward and forward+backward.

Compares, in one process and on the same inputs, ``"reference"`` (``lax.scan``) and
``"associative"`` (``lax.associative_scan``); prints ms per call and the ratio to the
reference. The Triton backend needs a CUDA GPU.

Usage: ``python benchmarks/scan_backends.py [--shape B L D N] [--repeats 10]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from grokjax.ops import selective_scan


def timed(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 128, 128, 16])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    b, length, d, n = args.shape
    keys = jax.random.split(jax.random.key(0), 5)
    inputs = (
        jax.random.normal(keys[0], (b, length, d)),
        jax.random.normal(keys[1], (b, length, d)),
        -jnp.exp(jax.random.normal(keys[2], (d, n))),
        jax.random.normal(keys[3], (b, length, n)),
        jax.random.normal(keys[4], (b, length, n)),
    )
    candidates = {
        "reference": lambda *a: selective_scan(
            *a, gate="none", delta_softplus=True, backend="reference"
        ),
        "associative": lambda *a: selective_scan(
            *a, gate="none", delta_softplus=True, backend="associative"
        ),
    }
    print(f"(B, L, D, N) = {tuple(args.shape)}, {jax.devices()[0].platform}, ms per call")
    results = {}
    for name, fn in candidates.items():
        forward = jax.jit(fn)
        loss = lambda *a, fn=fn: jnp.sum(fn(*a) ** 2)  # noqa: E731
        both = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))
        results[name] = (timed(forward, inputs, args.repeats), timed(both, inputs, args.repeats))
        print(
            f"{name:30s} forward {results[name][0]:8.2f}   forward+backward {results[name][1]:8.2f}"
        )
    ref = results["reference"][1]
    for name, (_, both) in results.items():
        print(f"forward+backward of {name!r} / 'reference': {both / ref:.2f}x")


if __name__ == "__main__":
    main()
