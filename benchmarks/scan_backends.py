"""Time the selective-scan backends on this machine: forward and forward+backward.

Compares, in one process and on the same inputs, ``"reference"`` (``lax.scan`` with its
written-out backward scan), the same forward scan differentiated by JAX itself
(``reference, JAX autodiff``: what ``"reference"`` was before it had a custom VJP) and
``"associative"`` (``lax.associative_scan``); prints ms per call and the ratio to the
reference. ``--members M`` runs every candidate under ``jax.vmap`` over M members with
their own inputs, as the trainer runs seeds. The Triton backend needs a CUDA GPU.

Usage: ``python benchmarks/scan_backends.py [--shape B L D N] [--repeats 10] [--members M]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from grokjax.ops import selective_scan
from grokjax.ops.selective_scan import _discretise, _scan_states


def autodiff_reference(u, delta, A, B, C):
    """The reference forward scan, differentiated by JAX (no custom VJP)."""
    dt, A32, dtu, B32 = _discretise(u, delta, A, B, None, True)
    return _scan_states(dt, A32, dtu, B32, C)[0]


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
    parser.add_argument("--members", type=int, default=0, help="vmap over M members (0: none)")
    args = parser.parse_args()
    b, length, d, n = args.shape
    m = (args.members,) if args.members else ()
    keys = jax.random.split(jax.random.key(0), 5)
    inputs = (
        jax.random.normal(keys[0], (*m, b, length, d)),
        jax.random.normal(keys[1], (*m, b, length, d)),
        -jnp.exp(jax.random.normal(keys[2], (*m, d, n))),
        jax.random.normal(keys[3], (*m, b, length, n)),
        jax.random.normal(keys[4], (*m, b, length, n)),
    )
    candidates = {
        "reference": lambda *a: selective_scan(
            *a, gate="none", delta_softplus=True, backend="reference"
        ),
        "reference, JAX autodiff": autodiff_reference,
        "associative": lambda *a: selective_scan(
            *a, gate="none", delta_softplus=True, backend="associative"
        ),
    }
    if args.members:
        candidates = {k: jax.vmap(f) for k, f in candidates.items()}
    members = f", vmap over {args.members} members" if args.members else ""
    print(f"(B, L, D, N) = {tuple(args.shape)}{members}, {jax.devices()[0].platform}, ms per call")
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
