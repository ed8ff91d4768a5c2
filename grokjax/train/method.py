"""A method of an experiment: one optimizer, trained for every seed × sweep point."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from grokjax.data.task import check_curriculum
from grokjax.errors import ConfigError
from grokjax.errors import check as _check
from grokjax.optim.specs import Optimizer, walk_specs

__all__ = ["MethodConfig", "check_update"]


@dataclass(frozen=True)
class MethodConfig:
    """One optimizer, trained for every seed × every point of ``sweep``.

    ``optimizer`` is a list of transform specs (:mod:`grokjax.optim.specs`). ``sweep``
    maps ``"optimizer.<path>"`` (a float keyword, e.g. ``"optimizer.0.lamb"``),
    ``"input_noise"`` or ``"data.train_fraction"`` (each member its own split; see
    :func:`grokjax.train.state.member_splits`) to the values its members take.
    ``curriculum``: stages ``[[end_epoch, threshold], …]``: before ``end_epoch`` only
    training rows whose difficulty (defined by the data kind) is ≤ ``threshold`` enter
    the loss, after the last stage all do (:meth:`Task.admitted <grokjax.data.task.Task.admitted>`).
    ``model``: the method's own values of ``[model]`` keys (e.g. ``{ positions =
    "rope2d" }``), so methods may compare model variants in one program.
    """

    label: str
    optimizer: tuple[dict[str, Any], ...]
    seeds: tuple[int, ...] = (0,)
    sweep: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    loss: str = ""  # "" = the experiment's loss
    loss_dtype: str = ""  # "" = the experiment's loss_dtype
    input_noise: float = 0.0  # σ of Gaussian noise added to each batch's inputs
    activation: str = ""  # "" = the model's; a Mamba model's activation for this method
    curriculum: tuple[tuple[int, float], ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        _check(f"{path}.label", bool(self.label), "a non-empty string", self.label)
        _check(f"{path}.optimizer", len(self.optimizer) >= 1, "a non-empty list", self.optimizer)
        _check(f"{path}.seeds", len(self.seeds) >= 1, "a non-empty list of ints", self.seeds)
        _check(f"{path}.seeds", len(set(self.seeds)) == len(self.seeds), "distinct", self.seeds)
        _check(f"{path}.input_noise", self.input_noise >= 0, ">= 0", self.input_noise)
        check_curriculum(f"{path}.curriculum", self.curriculum)
        for name, values in self.sweep.items():
            _check(f"{path}.sweep.{name}", len(values) >= 1, "a non-empty list", values)
            if name == "input_noise":
                _check(f"{path}.sweep.{name}", min(values) >= 0, "a list of values >= 0", values)
                continue
            if name == "data.train_fraction":
                _check(
                    f"{path}.sweep.{name}",
                    all(0 < v < 1 for v in values),
                    "a list of fractions strictly between 0 and 1",
                    list(values),
                )
                continue
            _check(
                f"{path}.sweep key",
                name.startswith("optimizer."),
                "'input_noise', 'data.train_fraction' or 'optimizer.<index>.<keyword>'",
                name,
            )
            current = self.build_optimizer().lookup(name.removeprefix("optimizer."))
            _check(
                f"{path}.sweep.{name}",
                current is None or isinstance(current, float),
                f"a float keyword (it is {current!r} here or by default)",
                list(values),
            )
            for value in values:  # each swept value must itself be a valid setting
                with _at(f"{path}.sweep"):
                    self.build_optimizer()(self.swept_values(name, value))
        with _at(path):
            self.build_optimizer()(self.swept_values())  # the transforms' own checks

    def build_optimizer(self) -> Optimizer:
        """The method's :class:`~grokjax.optim.specs.Optimizer`: swept keywords injected,
        in float64 when a transform keeps its state in float64 (then e.g. Adam's bias
        corrections 1 − β^t are float64 too; a float32 β2 is off by ~1e-8)."""
        swept = tuple(
            n.removeprefix("optimizer.") for n in sorted(self.sweep) if n.startswith("optimizer.")
        )
        dtype = jnp.float64 if self.float64_state else jnp.float32
        return Optimizer(self.optimizer, swept, dtype)

    def swept_values(self, name: str = "", value: float = 0.0) -> dict[str, float]:
        """Static values of the swept optimizer keywords (each its first value; ``name``
        set to ``value``), keyed by their paths inside ``optimizer``."""
        values = {n: (value if n == name else v[0]) for n, v in self.sweep.items()}
        return {
            n.removeprefix("optimizer."): v for n, v in values.items() if n.startswith("optimizer.")
        }

    def members(self) -> list[tuple[int, dict[str, float]]]:
        """``(seed, swept values)`` for every member, grid-major then seed."""
        names = sorted(self.sweep)
        grid = itertools.product(*(self.sweep[n] for n in names))
        return [
            (seed, dict(zip(names, point, strict=True))) for point in grid for seed in self.seeds
        ]

    def member_train_fraction(self, hps: Mapping[str, float], default: float) -> float:
        """A member's training fraction: its swept value, else ``default`` (the data's)."""
        return float(hps.get("data.train_fraction", default))

    def member_input_noise(self, hps: Mapping[str, float]) -> float:
        """A member's input-noise σ: its swept value, else the method's."""
        return float(hps.get("input_noise", self.input_noise))

    @property
    def float64_state(self) -> bool:
        """Whether a transform keeps state in float64 (a ``*dtype = "float64"`` keyword,
        e.g. ``grokjax.with_state_dtype``'s ``dtype`` or ``optax.adam``'s ``mu_dtype``)."""
        return any(
            k.endswith("dtype") and v == "float64"
            for _, spec in walk_specs(self.optimizer)
            for k, v in spec.items()
        )


@contextlib.contextmanager
def _at(path: str) -> Iterator[None]:
    """Prefix ConfigErrors raised inside with ``path``."""
    try:
        yield
    except ConfigError as err:
        if str(err).startswith(path):
            raise
        raise ConfigError(f"{path}.{err}") from err


def _eps_settings(method: MethodConfig, skip_float64: bool = False) -> list[tuple[str, float]]:
    """``(path, eps)`` of every transform that sets ``eps`` (optionally skipping those
    inside a float64-state wrapper)."""
    transforms = method.build_optimizer().transforms()
    wide = [p for p, spec in transforms if spec.get("dtype") == "float64"]
    return [
        (f"{path}.eps", float(spec["eps"]))
        for path, spec in transforms
        if isinstance(spec.get("eps"), (int, float))
        and not (skip_float64 and any(path.startswith(w + ".") for w in wide))
    ]


def check_update(optimizer: Optimizer, extra_args: Mapping[str, Any], path: str) -> None:
    """Trace one init and update on a small parameter tree, with the extra arguments the
    trainer passes (``value``, …), so a transform that needs another one fails here, in
    words, instead of inside the compiled run."""
    params = {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32)}
    values = {p: jax.ShapeDtypeStruct((), optimizer.hyperparam_dtype) for p in optimizer.swept}
    # keys as the trainer passes them: raw uint32[2] arrays, one per keyed transform
    keys = [jax.ShapeDtypeStruct((2,), jnp.uint32)] * optimizer.num_keys

    def step(params, values, keys):
        tx = optimizer(values, keys)
        return tx.update(params, tx.init(params), params, **extra_args)

    try:
        jax.eval_shape(step, params, values, keys)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        given = ", ".join(extra_args) or "none"
        raise ConfigError(
            f"{path}: the optimizer's init or update failed as the trainer calls it (extra "
            f"arguments: {given}, track_entropy = true adds activation_entropy; a transform "
            f"taking `key` gets a raw uint32[2] PRNG key): {err}"
        ) from err
