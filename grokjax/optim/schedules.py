"""Schedules (``count -> value``) that optax lacks, for seed 003's "adaptive optimisation".

Each returns an ``optax.Schedule``: pass it wherever optax takes a schedule (a learning
rate, ``optax.adamw``'s ``weight_decay``), or name it in an experiment's optimizer
list as ``{ schedule = "grokjax.<name>", … }``. Reduce-on-plateau needs the loss, so it
is not a schedule but a transform: ``optax.contrib.reduce_on_plateau`` (the trainer
passes every step's mean training loss as the extra argument ``value``).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

__all__ = ["cyclic_schedule", "weight_decay_ramp"]


def weight_decay_ramp(
    weight_decay: ArrayLike, factor: ArrayLike = 10.0, ramp_steps: int = 5000
) -> optax.Schedule:
    """Weight decay rising linearly from ``weight_decay`` to ``factor · weight_decay``
    over ``ramp_steps`` updates, then constant:

        wd(t) = wd · (1 + (factor − 1) · min(t / ramp_steps, 1))

    (seed 003's weight-decay ramp, which its source computed and never applied).

    >>> ramp = weight_decay_ramp(1.0, factor=10.0, ramp_steps=100)
    >>> [float(ramp(t)) for t in (0, 50, 100, 1000)]
    [1.0, 5.5, 10.0, 10.0]

    References:
      Seed 003, "Grokking Transformer Analysis" (adaptive optimisation).
    """
    if ramp_steps <= 0:
        raise ValueError(f"ramp_steps = {ramp_steps}: must be a positive number of steps.")

    def schedule(count: ArrayLike) -> jnp.ndarray:
        progress = jnp.minimum(jnp.asarray(count, jnp.float32) / ramp_steps, 1.0)
        return weight_decay * (1.0 + (factor - 1.0) * progress)

    return schedule


def cyclic_schedule(
    base_value: ArrayLike, max_value: ArrayLike, step_size: int, mode: str = "triangular"
) -> optax.Schedule:
    """A cyclic schedule (Smith 2017, as ``torch.optim.lr_scheduler.CyclicLR``): the value
    climbs linearly from ``base_value`` to the cycle's peak in ``step_size`` updates and
    back in as many. With ``c = ⌊1 + t/(2·step_size)⌋`` and
    ``x = |t/step_size − 2c + 1|``:

        value(t) = base + (max − base) · max(0, 1 − x) · a(c)

    with ``a(c) = 1`` (``"triangular"``) or ``1/2^(c−1)`` (``"triangular2"``: each cycle's
    amplitude half the last one's).

    >>> lr = cyclic_schedule(0.0, 1.0, step_size=2)
    >>> [float(lr(t)) for t in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]
    >>> [float(cyclic_schedule(0.0, 1.0, 2, "triangular2")(t)) for t in (2, 6)]
    [1.0, 0.5]

    References:
      Smith 2017, "Cyclical Learning Rates for Training Neural Networks".
    """
    if step_size <= 0:
        raise ValueError(f"step_size = {step_size}: must be a positive number of steps.")
    if mode not in ("triangular", "triangular2"):
        raise ValueError(f"mode = {mode!r}: use 'triangular' or 'triangular2'.")

    def schedule(count: ArrayLike) -> jnp.ndarray:
        t = jnp.asarray(count, jnp.float32)
        cycle = jnp.floor(1.0 + t / (2.0 * step_size))
        x = jnp.abs(t / step_size - 2.0 * cycle + 1.0)
        amplitude = 1.0 if mode == "triangular" else 0.5 ** (cycle - 1.0)
        return base_value + (max_value - base_value) * jnp.maximum(0.0, 1.0 - x) * amplitude

    return schedule
