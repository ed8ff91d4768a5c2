"""Time Prieto et al.'s MLP training step with one-hot rows vs the indices of their ones.

The one-hot MLP (``2p → 200 → 200 → p``, ReLU, no biases) reads ``onehot(x) ⊕
onehot(y)``. Given the rows, the first layer is a ``(B, 2p) × (2p, 200)`` matmul and its
gradient another; given the indices ``(x, p + y)`` (:class:`grokjax.nn.MLP` reads integer
inputs that way, and the trainer feeds them), it is a gather of two weight rows and a
scatter-add. One step is forward + backward + an ``optax.adam`` update on the full
training split (40% of p², as in Prieto et al.), with ``M`` members under ``lax.map``
(as the trainer runs them on one CPU device) or ``vmap``. Steps run inside one jitted
``lax.scan``; the time is the best of a few repeats, compile excluded.
(``tests/test_nn_mlp.py`` checks that both give the same logits and gradients.)

    python benchmarks/onehot_gather.py [--p 113] [--members 1] [--member-axis map|vmap]
        [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from grokjax.nn import MLP


def make_run(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, steps: int, axis: str):
    """A jitted ``run(params_M, opt_state_M, inputs_B…, labels_B)`` of ``steps`` steps."""

    def loss_fn(params, inputs, labels_B):
        ids = jnp.issubdtype(inputs.dtype, jnp.integer)
        logits_BV = nnx.merge(graphdef, params)(inputs, one_hot_ids=ids)
        return optax.softmax_cross_entropy_with_integer_labels(logits_BV, labels_B).mean()

    def step(carry, _, inputs, labels_B):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params, inputs, labels_B)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def run(params_M, opt_state_M, inputs, labels_B):
        def member(params, opt_state):
            body = lambda c, t: step(c, t, inputs, labels_B)  # noqa: E731
            return lax.scan(body, (params, opt_state), None, length=steps)[0]

        if axis == "map":
            return lax.map(lambda args: member(*args), (params_M, opt_state_M))
        return jax.vmap(member)(params_M, opt_state_M)

    return jax.jit(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--member-axis", choices=["map", "vmap"], default="map")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    p = args.p
    rng = np.random.default_rng(0)
    pairs = rng.permutation(p * p)[: int(0.4 * p * p)]
    ids_B2 = np.stack([pairs // p, p + pairs % p], axis=1).astype(np.int32)
    labels_B = jnp.asarray((pairs // p + pairs % p) % p, jnp.int32)
    rows_B2p = np.zeros((len(pairs), 2 * p), np.float32)
    rows_B2p[np.arange(len(pairs))[:, None], ids_B2] = 1.0

    graphdef, _ = nnx.split(MLP([2 * p, 200, 200, p], rngs=nnx.Rngs(0)))
    members = [
        nnx.split(MLP([2 * p, 200, 200, p], rngs=nnx.Rngs(s)))[1] for s in range(args.members)
    ]
    params_M = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    tx = optax.adam(1e-3)
    opt_state_M = jax.vmap(tx.init)(params_M)
    run = make_run(graphdef, tx, args.steps, args.member_axis)
    print(
        f"MLP {2 * p}-200-200-{p}, batch {len(pairs)}, {args.members} member(s) "
        f"({args.member_axis}), "
        f"{args.steps} steps per call, best of {args.repeats}, {jax.devices()[0].platform}"
    )
    times = {}
    for name, inputs in [("one-hot rows", jnp.asarray(rows_B2p)), ("indices", jnp.asarray(ids_B2))]:
        jax.block_until_ready(run(params_M, opt_state_M, inputs, labels_B))  # compile
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(run(params_M, opt_state_M, inputs, labels_B))
            best = min(best, time.perf_counter() - start)
        times[name] = best / args.steps
        print(f"{name:>13}: {times[name] * 1e3:7.2f} ms/step")
    print(f"speed-up of indices over one-hot rows: {times['one-hot rows'] / times['indices']:.2f}x")


if __name__ == "__main__":
    main()
