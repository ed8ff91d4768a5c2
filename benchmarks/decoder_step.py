"""Time one training step of the Grokfast decoder, full logits vs ``last_only=True``.

One step is forward + backward + an ``optax.adam`` update, with the loss the softmax
cross entropy of the *last* position's logits (as in Lee et al.'s modular arithmetic).
Both variants compute the same loss; ``last_only=True`` skips the last block's query
side, ``ln_f`` and the head for the first ``T − 1`` positions. Steps run inside one
jitted ``lax.scan`` over a fresh random batch per step; the time is the best of a few
repeats, compile excluded. Default: the reference model (vocab 99 = p + 2 for p = 97,
width 128, depth 2, 4 heads), batch 512, sequence length 4.

    python benchmarks/decoder_step.py [--batch 512] [--seq 4] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from grokjax.nn import Decoder


def make_run(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, last_only: bool):
    """A jitted ``run(params, opt_state, tokens_SBT, labels_SB)`` scanning the steps."""

    def loss_fn(params, tokens_BT, labels_B):
        model = nnx.merge(graphdef, params)
        if last_only:
            logits_BV = model(tokens_BT, last_only=True)
        else:
            logits_BV = model(tokens_BT)[:, -1]
        return optax.softmax_cross_entropy_with_integer_labels(logits_BV, labels_B).mean()

    def step(carry, batch):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def run(params, opt_state, tokens_SBT, labels_SB):
        return lax.scan(step, (params, opt_state), (tokens_SBT, labels_SB))

    return jax.jit(run)


def time_variant(last_only: bool, args: argparse.Namespace) -> tuple[float, float]:
    """Best-of-``repeats`` steps/s, and the mean loss of the last run (a sanity check)."""
    model = Decoder(args.vocab, seq_len=args.seq, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    key_tok, key_lab = jax.random.split(jax.random.key(1))
    tokens_SBT = jax.random.randint(key_tok, (args.steps, args.batch, args.seq), 0, args.vocab)
    labels_SB = jax.random.randint(key_lab, (args.steps, args.batch), 0, args.vocab)
    run = make_run(graphdef, tx, last_only)
    jax.block_until_ready(run(params, opt_state, tokens_SBT, labels_SB))  # compile
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, losses = jax.block_until_ready(run(params, opt_state, tokens_SBT, labels_SB))
        best = min(best, time.perf_counter() - start)
    return args.steps / best, float(jnp.mean(losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=99)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seq", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(
        f"jax {jax.__version__}, device: {jax.devices()[0].device_kind} ({jax.default_backend()})"
    )
    print(f"vocab {args.vocab}, batch {args.batch}, seq {args.seq}, {args.steps} steps per scan")
    full, loss_full = time_variant(False, args)
    last, loss_last = time_variant(True, args)
    print(
        f"full logits     : {full:8.1f} steps/s  ({1e3 / full:6.2f} ms/step, loss {loss_full:.4f})"
    )
    print(
        f"last_only=True  : {last:8.1f} steps/s  ({1e3 / last:6.2f} ms/step, loss {loss_last:.4f})"
    )
    print(f"ratio last_only / full: {last / full:.2f}x")


if __name__ == "__main__":
    main()
