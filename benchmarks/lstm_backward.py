"""Time the LSTM recursion's hand-written backward pass against autodiff through a scan.

:func:`grokjax.nn.lstm.lstm_recurrence` writes the backward pass out: the reverse scan
emits the gate gradients and ``∂W_hh`` is one ``(H, T·B) @ (T·B, 4H)`` matmul after
it. The reference is JAX's autodiff of the same recursion written as a plain
``lax.scan`` (which accumulates ``∂W_hh`` inside the loop). Both are jitted gradients
of ``Σ sin(h) ⊙ r`` with respect to ``W_hh`` and the input projections, for one layer
and ``M`` members under ``lax.map`` (as the trainer runs them on one CPU device) or
``vmap``; the time is the best of ``repeats`` calls, compile excluded. The script
first checks that both give the same gradients.

    python benchmarks/lstm_backward.py [--batch 50] [--length 100] [--hidden 64]
        [--members 1] [--member-axis map|vmap] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from grokjax.nn.lstm import lstm_recurrence


def plain(w_HG: jax.Array, zx_TBG: jax.Array) -> jax.Array:
    H = w_HG.shape[0]

    def step(carry, z_BG):
        h, c = carry
        i, f, g, o = jnp.split(z_BG + h @ w_HG, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((zx_TBG.shape[1], H), zx_TBG.dtype)
    return jax.lax.scan(step, (zeros, zeros), zx_TBG)[1]


def best_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--member-axis", choices=["map", "vmap"], default="map")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    B, T, H, M = args.batch, args.length, args.hidden, args.members
    keys = jax.random.split(jax.random.key(0), 3)
    w_MHG = jax.random.normal(keys[0], (M, H, 4 * H)) / np.sqrt(H)
    zx_TBG = jax.random.normal(keys[1], (T, B, 4 * H))
    r_TBH = jax.random.normal(keys[2], (T, B, H))

    def gradient(recurrence):
        grad = jax.grad(lambda w, z: jnp.sum(jnp.sin(recurrence(w, z)) * r_TBH), argnums=(0, 1))
        if args.member_axis == "vmap":
            return jax.jit(jax.vmap(grad, in_axes=(0, None)))
        return jax.jit(lambda w, z: jax.lax.map(lambda wm: grad(wm, z), w))

    written, autodiff = gradient(lstm_recurrence), gradient(plain)
    for a, b in zip(written(w_MHG, zx_TBG), autodiff(w_MHG, zx_TBG), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    t_written = best_ms(written, w_MHG, zx_TBG, repeats=args.repeats)
    t_autodiff = best_ms(autodiff, w_MHG, zx_TBG, repeats=args.repeats)
    print(
        f"B {B} T {T} H {H}, {M} member(s) ({args.member_axis}): hand-written backward "
        f"{t_written:.2f} ms, autodiff through lax.scan {t_autodiff:.2f} ms, "
        f"ratio {t_autodiff / t_written:.2f}x"
    )


if __name__ == "__main__":
    main()
