"""The interim main job: ⊥AdamW groks modular addition where AdamW cannot.

Prieto et al.'s setting: all pairs (a, b) mod p as one-hot(a) ⊕ one-hot(b), label
(a + b) mod p, 40% for training, full batch, a bias-free ReLU MLP 2p → 200 → 200 → p,
softmax cross entropy in float32, lr 0.01, β2 0.99, eps 1e-25, no weight decay.
Plain AdamW overfits and its logits grow into Softmax Collapse; ⊥AdamW generalises
(the paper: ≈100% test accuracy by epoch ≈150 of 300).

The trainer of the next milestone replaces this module; it already follows its
rules: ``nnx.split`` once, then a jitted ``lax.scan`` over chunks of steps, with the
data on the device.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import grokjax as gj


def modular_addition_onehot(p: int, train_fraction: float, seed: int = 0):
    """All (a, b) pairs mod ``p`` as one-hot(a) ⊕ one-hot(b) inputs, split by ``seed``.

    Returns ``(x_train, y_train, x_test, y_test)`` as device arrays.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}.")
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    eye = np.eye(p, dtype=np.float32)
    x_N2P = np.concatenate([eye[a], eye[b]], axis=1)
    y_N = (a + b) % p
    perm = np.random.default_rng(seed).permutation(len(y_N))
    n_train = round(train_fraction * len(y_N))
    train, test = perm[:n_train], perm[n_train:]
    return tuple(jnp.asarray(v) for v in (x_N2P[train], y_N[train], x_N2P[test], y_N[test]))


class BiasFreeMLP(nnx.Module):
    """ReLU MLP without biases, PyTorch's default ``Linear`` init (U(±1/√fan_in))."""

    def __init__(self, sizes: list[int], *, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
        self.layers = nnx.List(
            [
                nnx.Linear(d_in, d_out, use_bias=False, kernel_init=init, rngs=rngs)
                for d_in, d_out in itertools.pairwise(sizes)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


@dataclass(frozen=True)
class DemoResult:
    name: str
    test_acc: np.ndarray  # per step
    train_loss: np.ndarray  # per step
    collapse: np.ndarray  # softmax-collapse fraction on the training set, per step
    weight_norm: np.ndarray  # per step
    seconds: float

    def first_step(self, threshold: float = 0.95) -> int | None:
        hit = np.nonzero(self.test_acc >= threshold)[0]
        return int(hit[0]) + 1 if hit.size else None


def train(
    name: str,
    tx: optax.GradientTransformation,
    data: tuple[jax.Array, ...],
    *,
    steps: int,
    chunk: int = 25,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """Full-batch training; one compiled ``lax.scan`` runs ``chunk`` steps."""
    x_tr, y_tr, x_te, y_te = data
    p = x_te.shape[1] // 2
    graphdef, params = nnx.split(BiasFreeMLP([2 * p, 200, 200, p], rngs=nnx.Rngs(seed)))
    apply: Callable = lambda prm, x: nnx.merge(graphdef, prm)(x)  # noqa: E731

    def loss_fn(prm):
        logits = apply(prm, x_tr)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_tr).mean(), logits

    def step(carry, _):
        prm, opt_state = carry
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(prm)
        updates, opt_state = tx.update(grads, opt_state, prm)
        prm = optax.apply_updates(prm, updates)
        metrics = (
            jnp.mean(jnp.argmax(apply(prm, x_te), -1) == y_te),
            loss,
            gj.softmax_collapse_fraction(logits),
            gj.global_weight_norm(prm),
        )
        return (prm, opt_state), metrics

    run_chunk = jax.jit(lambda c, n: jax.lax.scan(step, c, None, length=n), static_argnums=1)
    carry, history = (params, tx.init(params)), []
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"{name:>8}", disable=not progress, leave=True) as bar:
        for done in range(0, steps, chunk):
            carry, metrics = run_chunk(carry, min(chunk, steps - done))
            history.append(jax.device_get(metrics))
            bar.update(min(chunk, steps - done))
            bar.set_postfix(test_acc=f"{history[-1][0][-1]:.3f}")
    columns = [np.concatenate(col) for col in zip(*history, strict=True)]
    return DemoResult(name, *columns, seconds=time.perf_counter() - start)


def run(p: int = 113, steps: int = 300, seed: int = 0, progress: bool = True) -> list[DemoResult]:
    """Train AdamW and ⊥AdamW on the same split and print a results table."""
    data = modular_addition_onehot(p, 0.4, seed)
    adam = dict(b1=0.9, b2=0.99, eps=1e-25)
    runs = {
        "AdamW": optax.adamw(0.01, weight_decay=0.0, **adam),
        "⊥AdamW": gj.ortho_adamw(0.01, weight_decay=0.0, **adam),
    }
    print(f"(a + b) mod {p}, one-hot MLP, 40% train, full batch, {steps} steps, seed {seed}")
    results = [
        train(name, tx, data, steps=steps, seed=seed, progress=progress)
        for name, tx in runs.items()
    ]
    header = ("optimizer", "test acc", "step to 95%", "train loss", "SC frac", "|w|", "sec")
    widths = (10, 10, 13, 12, 9, 8, 7)
    print(
        "\n"
        + "".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for r in results:
        first = r.first_step()
        print(
            f"{r.name:<10}{r.test_acc[-1]:>10.3f}{first if first else f'>{steps}':>13}"
            f"{r.train_loss[-1]:>12.3g}{r.collapse[-1]:>9.3f}{r.weight_norm[-1]:>8.1f}{r.seconds:>7.1f}"
        )
    return results
