"""Experiment configs: frozen dataclasses, validated field by field.

A config names its data, model, training budget and one or more *methods*. A method
is an optimizer recipe trained for several seeds and, optionally, a grid of swept
hyperparameters; its members (seeds × grid points) share one optimizer structure and
run vmapped. All methods of an experiment run in one compiled program.

Configs load from TOML files (``experiments/*.toml``) and accept dotted overrides
(:mod:`grokjax.train.loading`); the data and model sections are kinds of
:mod:`grokjax.data.kinds` and :mod:`grokjax.nn.kinds`; methods are
:class:`~grokjax.train.method.MethodConfig`. Every error names the offending key and
what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grokjax.analysis.probes import ENTROPY_MEANS, probe_reads, resolve_probe
from grokjax.data.kinds import ModularData
from grokjax.errors import ConfigError, check, choice
from grokjax.nn.kinds import MODEL_KINDS, DecoderModel
from grokjax.train.method import MethodConfig, _eps_settings, check_update

__all__ = ["DTYPES", "LOSS_DTYPES", "ExperimentConfig"]


# Parameter/activation dtypes, and the loss precisions each normalizer supports
# (StableMax in half precision is not a setting of Prieto et al.'s and is refused).
DTYPES = ("float32", "bfloat16", "float16", "float64")
_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
LOSS_DTYPES = {
    "softmax": ("float16", "float32", "float64"),
    "stablemax": ("float32", "float64"),
}


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, model, budget, evaluation, and the methods compared."""

    name: str
    methods: tuple[MethodConfig, ...]
    data: Any = field(default_factory=ModularData)  # a kind of grokjax.data.kinds
    model: Any = field(default_factory=DecoderModel)  # a kind of grokjax.nn.kinds
    steps: int = 300_000
    batch_size: int = 512
    sampling: str = "epoch"
    eval_every: int = 0
    evals_per_sync: int = 10
    loss: str = "softmax"
    dtype: str = "float32"
    loss_dtype: str = "float32"
    # measurements at every evaluation (grokjax.analysis.probes), by dotted name
    probes: tuple[dict[str, Any], ...] = ({"probe": "grokjax.analysis.activation_shapes"},)
    # measure the activation entropy of the MLP's last hidden layer at every step: passed
    # to the optimizer as ``activation_entropy``, and to probes (``training_entropy``)
    track_entropy: bool = False
    tokens_per_param: float = 0.0  # > 0 (language models): steps from a token budget
    train_threshold: float = 0.99
    val_threshold: float = 0.95
    stop_when_grokked: bool = True
    # steps between checkpoints; 0: after a minute of training and 10% of the steps
    checkpoint_every: int = 0
    # checkpoints kept: the latest this many plus the first of every octave of steps
    # (log-spaced); 0 keeps every checkpoint (for ``grokjax analyze`` over a whole run)
    keep_checkpoints: int = 3
    # stop a member whose training loss exceeds this × its first evaluation's (0: never)
    divergence_factor: float = 1e4
    # what a diverged member does to the run: "stop" it (TrainingDiverged), or "continue"
    # without it (a sweep's divergent corner is a result, not a failure): the member is
    # recorded as diverged, a warning names it, and it no longer holds up the stop
    on_divergence: str = "stop"
    shard_members: bool = True
    member_axis: str = "auto"
    # devices that share one member's batch (the mesh's "data" axis): a larger model
    # trains data-parallel, its gradients reduced by the compiler; 1: members only
    data_parallel: int = 1
    # evaluations of the trained members under other settings, run after training
    # (grokjax.evaluate): [{label, set = {dotted key = value}, methods, finetune_steps}]
    evaluations: tuple[dict[str, Any], ...] = ()
    # Steps unrolled into straight-line code per loop iteration of an interval. Costs
    # compile time and memory (every unrolled step's buffers); helps only where XLA
    # compiles an op worse inside a loop.
    unroll: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check("name", bool(self.name) and "/" not in self.name, "a non-empty name", self.name)
        check("methods", len(self.methods) >= 1, "at least one method", self.methods)
        labels = [m.label for m in self.methods]
        check("methods", len(set(labels)) == len(labels), "distinct labels", labels)
        for i, method in enumerate(self.methods):
            method.validate(f"methods.{i}")
        self.data.validate()
        self.model.validate()
        check("steps", self.steps >= 1, "a positive integer", self.steps)
        check("batch_size", self.batch_size >= 1, "a positive integer", self.batch_size)
        choice("sampling", self.sampling, ["epoch", "iid"])
        check("eval_every", self.eval_every >= 0, ">= 0 (0: once per epoch)", self.eval_every)
        check("evals_per_sync", self.evals_per_sync >= 1, ">= 1", self.evals_per_sync)
        choice("loss", self.loss, ["softmax", "stablemax"])
        choice("dtype", self.dtype, list(DTYPES))
        choice("loss_dtype", self.loss_dtype, list(LOSS_DTYPES[self.loss]))
        for i, method in enumerate(self.methods):
            check(
                f"methods.{i}.curriculum",
                not method.curriculum or getattr(self.data, "has_difficulty", False),
                f"empty: data kind {self.data.kind!r} defines no row difficulty",
                method.curriculum,
            )
            choice(f"methods.{i}.loss", method.loss, ["", *LOSS_DTYPES])
            kind, dtype = self.method_loss(method)
            # MSE, binary cross entropy and regression take no softmax to replace
            objective = getattr(self.data, "objective_name", "")
            check(
                f"methods.{i}.loss" if method.loss else f"loss (methods.{i})",
                not objective or kind == "softmax",
                f"'softmax' (the default): data kind {self.data.kind!r} trains with "
                f"{objective}, which has no normalizer to replace",
                kind,
            )
            key = f"methods.{i}.loss_dtype" if method.loss_dtype else f"loss_dtype (methods.{i})"
            choice(f"{key} for loss {kind!r}", dtype, list(LOSS_DTYPES[kind]))
            for path, spec in method.build_optimizer().transforms():
                state = spec.get("dtype")
                check(
                    f"methods.{i}.optimizer.{path}.dtype",
                    state is None or _BYTES.get(state, 0) >= _BYTES[self.dtype],
                    f"a float dtype at least as wide as the parameters' ({self.dtype!r})",
                    state,
                )
        extra = {"value": 1.0, **({"activation_entropy": 0.5} if self.track_entropy else {})}
        for i, method in enumerate(self.methods):
            with jax.enable_x64(True) if method.float64_state else contextlib.nullcontext():
                check_update(method.build_optimizer(), extra, f"methods.{i}.optimizer")
        self.probe_functions()
        choice("member_axis", self.member_axis, ["auto", "vmap", "map"])
        check("unroll", self.unroll >= 1, ">= 1", self.unroll)
        check("data_parallel", self.data_parallel >= 1, ">= 1", self.data_parallel)
        check(
            "member_axis",
            self.data_parallel == 1 or self.member_axis != "map",
            "'auto' or 'vmap' with data_parallel > 1 (a split batch needs the vmapped step)",
            self.member_axis,
        )
        check(
            "data_parallel",
            self.batch_size % self.data_parallel == 0,
            f"a divisor of batch_size ({self.batch_size})",
            self.data_parallel,
        )
        # a regression task's detector watches losses (a crossing is at or below them)
        losses = getattr(self.data, "regression", False)
        for name in ("train_threshold", "val_threshold"):
            value = getattr(self, name)
            if losses:
                check(name, value > 0, "> 0 (a loss the detector waits for)", value)
            else:
                check(name, 0 < value <= 1, "in (0, 1] (an accuracy)", value)
        choice("on_divergence", self.on_divergence, ["stop", "continue"])
        check("checkpoint_every", self.checkpoint_every >= 0, ">= 0", self.checkpoint_every)
        check(
            "keep_checkpoints", self.keep_checkpoints >= 0, ">= 0 (0: all)", self.keep_checkpoints
        )
        check(
            "divergence_factor",
            self.divergence_factor == 0 or self.divergence_factor > 1,
            "0 (off) or > 1",
            self.divergence_factor,
        )
        if self.dtype in ("float16", "bfloat16"):
            tiny = float(jnp.finfo(self.dtype).smallest_normal)
            for i, method in enumerate(self.methods):
                for path, eps in _eps_settings(method):
                    check(
                        f"methods.{i}.optimizer.{path}",
                        eps == 0 or eps >= tiny,
                        f"0 or >= {tiny:.3g}, the smallest normal {self.dtype} (a smaller eps "
                        "underflows and Adam divides by zero)",
                        eps,
                    )
        inputs, model = self.data.input_kind, self.model
        readers = [k for k, cls in MODEL_KINDS.items() if inputs in cls.input_kinds]
        check(
            "model.kind",
            inputs in model.input_kinds,
            f"one of {readers} for {inputs} "
            f"inputs (data.kind = {self.data.kind!r}, encoding {self.data.encoding!r})",
            model.kind,
        )
        check("tokens_per_param", self.tokens_per_param >= 0, ">= 0", self.tokens_per_param)
        if self.tokens_per_param:
            check(
                "tokens_per_param",
                inputs == "stream",
                "0 unless the data is a token stream (data.kind = 'lm')",
                self.tokens_per_param,
            )
        if inputs == "stream":
            choice("sampling (language-model windows)", self.sampling, ["iid"])
        for i, method in enumerate(self.methods):
            if method.activation:
                check(
                    f"methods.{i}.activation",
                    hasattr(model, "activation"),
                    f"'' for a {model.kind} model",
                    method.activation,
                )
                self.method_model(method).validate(f"methods.{i}")
            if method.model:
                self.method_model(method).validate(f"methods.{i}.model")
        if self.evaluations:
            from grokjax.evaluate import evaluations_of  # it builds on the engine

            evaluations_of(self)
        if self.track_entropy:
            check(
                "model.kind",
                model.has_features,
                "'mlp' to track activation entropy (track_entropy); the entropy is of its "
                "last hidden layer",
                model.kind,
            )
        for i, method in enumerate(self.methods):
            if "data.train_fraction" in method.sweep:
                self._check_swept_fraction(i, method.sweep["data.train_fraction"])
        if inputs != "vector":
            for i, method in enumerate(self.methods):
                noisy = method.input_noise > 0 or "input_noise" in method.sweep
                check(
                    f"methods.{i}.input_noise",
                    not noisy,
                    "0 for token inputs (input noise and the entropy pump need vector inputs)",
                    method.input_noise,
                )

    def _check_swept_fraction(self, i: int, values: tuple[float, ...]) -> None:
        """A swept ``data.train_fraction``: the data kind has one, each value is valid
        for it, and nothing reads a member's (padded) training rows but the batches."""
        key = f"methods.{i}.sweep.data.train_fraction"
        check(
            key,
            hasattr(self.data, "train_fraction") and self.data.input_kind != "stream",
            f"absent: data kind {self.data.kind!r} has no table split to sweep",
            list(values),
        )
        for value in values:
            try:
                dataclasses.replace(self.data, train_fraction=float(value)).validate()
            except ConfigError as err:
                raise ConfigError(f"{key} = {value:g}: {err}") from err
        check(
            key,
            not self.probes and not self.evaluations,
            "absent with probes or evaluations (they read a member's training rows, "
            "which a swept fraction pads): set probes = [] and no [[evaluations]]",
            list(values),
        )

    def probe_functions(self) -> list[Any]:
        """The configured probes, resolved and bound to their keyword arguments."""
        out = []
        available = {"last_step", "init_params", "train_loss", "train_acc"}
        available |= set(ENTROPY_MEANS) if self.track_entropy else set()
        for i, spec in enumerate(self.probes):
            try:
                out.append(resolve_probe(spec))
            except ValueError as err:
                sep = ": " if str(err).startswith("probe = ") else "."
                raise ConfigError(f"probes.{i}{sep}{err}") from err
            missing = sorted(probe_reads(out[-1]) - available)
            if missing:
                hint = " (set track_entropy = true)" if set(missing) <= set(ENTROPY_MEANS) else ""
                raise ConfigError(
                    f"probes.{i}: {spec['probe']} reads the training steps' {missing}, which "
                    f"this experiment does not measure{hint}; available: {sorted(available)}."
                )
        return out

    def method_model(self, method: MethodConfig) -> Any:
        """The model ``method`` trains: the experiment's, with the method's activation
        and its ``model`` values."""
        model = self.model
        if method.activation:
            model = dataclasses.replace(model, activation=method.activation)
        if method.model:
            from grokjax.train.loading import from_dict, to_dict  # loading imports config

            i = self.methods.index(method) if method in self.methods else "?"
            check(
                f"methods.{i}.model.kind",
                "kind" not in method.model,
                "left out (the experiment's model kind; a method changes its settings)",
                method.model.get("kind"),
            )
            model = from_dict(type(model), {**to_dict(model), **method.model}, f"methods.{i}.model")
        return model

    def method_loss(self, method: MethodConfig) -> tuple[str, str]:
        """``(normalizer, loss dtype)`` of ``method``: its own, else the experiment's."""
        return (method.loss or self.loss, method.loss_dtype or self.loss_dtype)

    @property
    def needs_x64(self) -> bool:
        """Whether parameters, any loss or any optimizer state are float64 (the run then
        enables ``jax_enable_x64``)."""
        dtypes = {self.dtype, self.loss_dtype} | {self.method_loss(m)[1] for m in self.methods}
        dtypes |= {"float64" for m in self.methods if m.float64_state}
        return "float64" in dtypes

    def precision_warnings(self) -> list[str]:
        """Settings that are valid but numerically hazardous, one message per hazard.

        Adam with float32 state and ``0 < eps < √(smallest normal float32) ≈ 1.1e-19``:
        XLA flushes subnormal floats to zero, so once a weight's gradient falls below
        ~1e-19 its second moment ``v`` is exactly 0 while its first moment ``m`` is not,
        and the weight steps by up to ``lr·|m|/eps`` (a jump of ``1e-19/eps`` in the
        step size). Prieto et al.'s ``eps = 1e-25`` is such a setting. A transform inside
        ``grokjax.with_state_dtype`` with ``dtype = "float64"`` is safe.

        >>> from grokjax.train import resolve
        >>> print(resolve("stability-quick").precision_warnings()[0][:68])
        methods.0.optimizer.0.eps = 1e-25, methods.1.optimizer.1.eps = 1e-25
        >>> resolve("grokfast_modmul").precision_warnings()
        []
        """
        if self.dtype != "float32":
            return []  # float64 state is far from underflow; half precision is validated
        floor = math.sqrt(float(np.finfo(np.float32).tiny))
        tiny_eps = [
            f"methods.{i}.optimizer.{path} = {eps:g}"
            for i, m in enumerate(self.methods)
            for path, eps in _eps_settings(m, skip_float64=True)
            if 0 < eps < floor
        ]
        if not tiny_eps:
            return []
        return [
            f"{', '.join(tiny_eps)} with float32 parameters: below √(smallest normal float32) "
            f"≈ {floor:.2g}. XLA flushes subnormals to zero, so once a gradient falls below "
            "~1e-19 Adam's second moment is exactly 0 while the first is not, and the weight "
            "steps by up to lr·|m|/eps. Wrap the optimizer in { transform = "
            '"grokjax.with_state_dtype", dtype = "float64", inner = [...] } (its state in '
            f"float64), set dtype = 'float64' or eps >= {floor:.2g} to avoid it."
        ]

    def steps_per_epoch(self, num_train: int) -> int:
        return math.ceil(num_train / self.batch_size)

    def eval_interval(self, num_train: int) -> int:
        """Steps between evaluations: ``eval_every`` or, when 0, one epoch."""
        return self.eval_every or self.steps_per_epoch(num_train)
