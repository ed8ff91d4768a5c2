"""Time one Grokfast-MA filter step against two straightforward ways to write it.

All three compute g + λ·mean(window) over a ring buffer of raw gradients, inside a
jitted ``lax.scan`` (as a training loop runs them):

- ``grokjax``: :func:`grokjax.grokfast_ma` (compensated running sum; the slot that
  leaves the window is read right after each write).
- ``resum``: re-sum the whole window every step, like the reference's ``sum(deque)``.
- ``read-then-write``: a running sum that reads the leaving slot, then overwrites it;
  XLA then copies the whole buffer every step.

The default size is the Grokfast decoder's (≈0.42M parameters) with the paper's
window of 100. Prints ms per step and each variant's time relative to grokjax, all
measured in this process. EMA is timed too, as the cheapest filter.

    python benchmarks/grokfast_ma_state.py [--params 420000] [--window 100] [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from jax import lax

import grokjax as gj


def resum_filter(window: int, lamb: float):
    def init(g):
        return jnp.zeros((window, *g.shape), g.dtype), jnp.zeros([], jnp.int32)

    def update(g, state):
        buf, count = state
        buf = lax.dynamic_update_index_in_dim(buf, g, count % window, 0)
        avg = jnp.sum(buf, axis=0) / jnp.minimum(count + 1, window)
        return g + lamb * avg, (buf, count + 1)

    return init, update


def read_then_write_filter(window: int, lamb: float):
    def init(g):
        return jnp.zeros((window, *g.shape), g.dtype), jnp.zeros_like(g), jnp.zeros([], jnp.int32)

    def update(g, state):
        buf, total, count = state
        slot = count % window
        total = total + g - lax.dynamic_index_in_dim(buf, slot, 0, keepdims=False)
        buf = lax.dynamic_update_index_in_dim(buf, g, slot, 0)
        return g + lamb * total / jnp.minimum(count + 1, window), (buf, total, count + 1)

    return init, update


def optax_filter(tx):
    return tx.init, lambda g, state: tx.update(g, state)


def time_filter(init, update, grads_SP, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds per step of the filter scanned over the gradients."""

    def run(state, grads):
        def body(state, g):
            out, state = update(g, state)
            return state, out[0]

        return lax.scan(body, state, grads)

    fn = jax.jit(run, donate_argnums=0)
    jax.block_until_ready(fn(init(grads_SP[0]), grads_SP))  # compile
    best = float("inf")
    for _ in range(repeats):
        state = init(grads_SP[0])
        jax.block_until_ready(state)
        start = time.perf_counter()
        jax.block_until_ready(fn(state, grads_SP))
        best = min(best, time.perf_counter() - start)
    return best / grads_SP.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=420_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    grads_SP = jax.random.normal(jax.random.key(0), (args.steps, args.params))
    variants = {
        "grokjax": optax_filter(gj.grokfast_ma(args.window, 5.0, warmup=False)),
        "resum": resum_filter(args.window, 5.0),
        "read-then-write": read_then_write_filter(args.window, 5.0),
        "grokfast_ema": optax_filter(gj.grokfast_ema(0.98, 2.0)),
    }
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.params:,} params, "
        f"window {args.window}, {args.steps} steps per scan"
    )
    times = {name: time_filter(*fns, grads_SP) for name, fns in variants.items()}
    for name, seconds in times.items():
        print(
            f"{name:>16}: {seconds * 1e3:8.3f} ms/step   {seconds / times['grokjax']:7.1f}x grokjax"
        )


if __name__ == "__main__":
    main()
