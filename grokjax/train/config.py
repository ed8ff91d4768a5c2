"""Experiment configs: frozen dataclasses, validated field by field.

A config names its data, model, training budget and one or more *methods*. A method
is an optimizer recipe trained for several seeds and, optionally, a grid of swept
hyperparameters; its members (seeds × grid points) share one optimizer structure and
run vmapped. All methods of an experiment run in one compiled program.

Configs load from TOML files (``experiments/*.toml``) and accept
dotted overrides such as ``steps=2000``, ``data.p=23`` or ``methods.0.seeds=[0, 1]``.
Every error names the offending key and what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tomli

from grokjax.train.chain import Optimizer, check_update
from grokjax.train.errors import ConfigError

__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "apply_overrides",
    "from_dict",
    "load_toml",
    "select_methods",
    "to_dict",
]


def _choice(path: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{path} = {value!r} is not allowed; choose one of {list(allowed)}.")


def _check(path: str, ok: bool, requirement: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{path} = {value!r}: must be {requirement}.")


@dataclass(frozen=True)
class DataConfig:
    """The task and its split (see :mod:`grokjax.data`).

    ``kind = "modular"``: the table of ``x op y mod p`` (``op``, ``p``, ``y_min``) as
    ``encoding`` ``"tokens"``, ``"tokens_no_op"`` or ``"onehot"``. ``kind =
    "sparse_parity"``: ``num_samples`` distinct vectors of ``parity_bits`` +
    ``noise_bits`` bits drawn with ``sample_seed``, labelled by the parity of the first
    ``parity_bits`` (``encoding = "bits"``). Each member's seed splits its own way.
    """

    kind: str = "modular"
    op: str = "x*y"
    p: int = 97
    train_fraction: float = 0.5
    y_min: int = 0
    encoding: str = "tokens"
    parity_bits: int = 3
    noise_bits: int = 40
    num_samples: int = 2000
    sample_seed: int = 0
    features: int = 128
    classes: int = 128
    context: int = 8
    text_path: str = ""
    seq_len: int = 128
    val_windows: int = 64
    max_tokens: int = 0
    tokenizer: str = "bytes"
    vocab_dir: str = ""

    def validate(self, path: str = "data") -> None:
        from grokjax.data import OPERATIONS

        _choice(f"{path}.kind", self.kind, ["modular", "sparse_parity", "gaussian", "text", "lm"])
        _check(
            f"{path}.train_fraction",
            0.0 < self.train_fraction < 1.0,
            "strictly between 0 and 1",
            self.train_fraction,
        )
        if self.kind == "sparse_parity":
            _choice(f"{path}.encoding", self.encoding, ["bits"])
            _check(f"{path}.parity_bits", self.parity_bits >= 1, ">= 1", self.parity_bits)
            _check(f"{path}.noise_bits", self.noise_bits >= 0, ">= 0", self.noise_bits)
            _check(
                f"{path}.num_samples",
                2 <= self.num_samples <= 2 ** (self.parity_bits + self.noise_bits),
                "in [2, 2**(parity_bits + noise_bits)]",
                self.num_samples,
            )
            return
        if self.kind == "lm":
            _choice(f"{path}.encoding", self.encoding, ["tokens"])
            _check(f"{path}.seq_len", self.seq_len >= 1, ">= 1", self.seq_len)
            _check(f"{path}.val_windows", self.val_windows >= 1, ">= 1", self.val_windows)
            _check(f"{path}.max_tokens", self.max_tokens >= 0, ">= 0 (0: all)", self.max_tokens)
            _choice(f"{path}.tokenizer", self.tokenizer, ["bytes", "gpt2"])
            return
        if self.kind in ("gaussian", "text"):
            _choice(
                f"{path}.encoding",
                self.encoding,
                ["dense" if self.kind == "gaussian" else "onehot"],
            )
            _check(f"{path}.num_samples", self.num_samples >= 2, ">= 2", self.num_samples)
            _check(f"{path}.features", self.features >= 1, ">= 1", self.features)
            _check(f"{path}.classes", self.classes >= 2, ">= 2", self.classes)
            _check(f"{path}.context", self.context >= 1, ">= 1", self.context)
            return
        _choice(f"{path}.op", self.op, list(OPERATIONS))
        _check(f"{path}.p", self.p >= 2, "an integer >= 2", self.p)
        _check(f"{path}.y_min", 0 <= self.y_min < self.p, "in [0, p)", self.y_min)
        _choice(f"{path}.encoding", self.encoding, ["tokens", "tokens_no_op", "onehot"])

    @property
    def num_classes(self) -> int:
        lm = 257 if self.tokenizer == "bytes" else 50257
        classes = {"sparse_parity": 2, "gaussian": self.classes, "text": 256, "lm": lm}
        return classes.get(self.kind, self.p)


@dataclass(frozen=True)
class ModelConfig:
    """``kind = "decoder"`` (the Grokfast transformer), ``"mlp"`` (Prieto's MLP) or
    ``"mamba"`` (a Mamba LM: ``width`` = d_model, ``depth`` = layers, ``activation`` at
    both sites: silu | swelu | swish_k, ``d_state``, ``expand``)."""

    kind: str = "decoder"
    depth: int = 2
    width: int = 128
    heads: int = 4
    mlp_ratio: int = 4
    activation: str = "gelu"
    positions: str = "learned"
    rope_base: float = 10000.0
    hidden: tuple[int, ...] = (200, 200)
    use_bias: bool = False
    d_state: int = 16
    expand: int = 2
    # decoder only: in training steps, as torch's TransformerEncoderLayer (so the logged
    # training loss/accuracy are those of the masked forward; evaluation is unmasked)
    dropout: float = 0.0

    def validate(self, path: str = "model") -> None:
        _choice(f"{path}.kind", self.kind, ["decoder", "mlp", "mamba"])
        for name in ("depth", "width", "heads", "mlp_ratio"):
            value = getattr(self, name)
            _check(f"{path}.{name}", value >= 1, "a positive integer", value)
        _check(
            f"{path}.width",
            self.width % self.heads == 0,
            f"divisible by heads ({self.heads})",
            self.width,
        )
        if self.kind == "mamba":
            _choice(f"{path}.activation", self.activation, ["silu", "swelu", "swish_k"])
            _check(
                f"{path}.d_state",
                self.d_state >= 1 and not self.d_state & (self.d_state - 1),
                "a power of two",
                self.d_state,
            )
            _check(f"{path}.expand", self.expand >= 1, ">= 1", self.expand)
        else:
            _choice(f"{path}.activation", self.activation, ["gelu", "relu", "silu"])
        _choice(f"{path}.positions", self.positions, ["learned", "rope"])
        _check(f"{path}.rope_base", self.rope_base > 1.0, "> 1", self.rope_base)
        _check(
            f"{path}.dropout",
            0.0 <= self.dropout < 1.0 and (self.dropout == 0.0 or self.kind == "decoder"),
            "in [0, 1), and 0 unless model.kind = 'decoder'",
            self.dropout,
        )
        _check(
            f"{path}.hidden",
            len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
            "a non-empty list of positive widths",
            self.hidden,
        )


# Parameter/activation dtypes, and the loss precisions each normalizer supports
# (StableMax in half precision is not a setting of Prieto et al.'s and is refused).
DTYPES = ("float32", "bfloat16", "float16", "float64")
_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
LOSS_DTYPES = {
    "softmax": ("float16", "float32", "float64"),
    "stablemax": ("float32", "float64"),
}


@dataclass(frozen=True)
class MethodConfig:
    """One optimizer, trained for every seed × every point of ``sweep``.

    ``optimizer`` is a list of transform specs (:mod:`grokjax.train.chain`). ``sweep``
    maps ``"optimizer.<path>"`` (a float keyword, e.g. ``"optimizer.0.lamb"``) or
    ``"input_noise"`` to the values its members take.
    """

    label: str
    optimizer: tuple[dict[str, Any], ...]
    seeds: tuple[int, ...] = (0,)
    sweep: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    loss: str = ""  # "" = the experiment's loss
    loss_dtype: str = ""  # "" = the experiment's loss_dtype
    input_noise: float = 0.0  # σ of Gaussian noise added to each batch's inputs
    activation: str = ""  # "" = the model's; a Mamba model's activation for this method

    def validate(self, path: str) -> None:
        _check(f"{path}.label", bool(self.label), "a non-empty string", self.label)
        _check(f"{path}.optimizer", len(self.optimizer) >= 1, "a non-empty list", self.optimizer)
        _check(f"{path}.seeds", len(self.seeds) >= 1, "a non-empty list of ints", self.seeds)
        _check(f"{path}.seeds", len(set(self.seeds)) == len(self.seeds), "distinct", self.seeds)
        _check(f"{path}.input_noise", self.input_noise >= 0, ">= 0", self.input_noise)
        for name, values in self.sweep.items():
            _check(f"{path}.sweep.{name}", len(values) >= 1, "a non-empty list", values)
            if name == "input_noise":
                _check(f"{path}.sweep.{name}", min(values) >= 0, "a list of values >= 0", values)
                continue
            _check(
                f"{path}.sweep key",
                name.startswith("optimizer."),
                "'input_noise' or 'optimizer.<index>.<keyword>'",
                name,
            )
            current = self.build_optimizer().lookup(name.removeprefix("optimizer."))
            _check(
                f"{path}.sweep.{name}",
                current is None or isinstance(current, float),
                f"a float keyword (it is set to {current!r})",
                list(values),
            )
            for value in values:  # each swept value must itself be a valid setting
                with _at(f"{path}.sweep"):
                    self.build_optimizer()(self.swept_values(name, value))
        with _at(path):
            self.build_optimizer()(self.swept_values())  # the transforms' own checks

    def build_optimizer(self, hyperparam_dtype: Any = jnp.float32) -> Optimizer:
        """The method's :class:`~grokjax.train.chain.Optimizer` (swept keywords injected)."""
        swept = tuple(
            n.removeprefix("optimizer.") for n in sorted(self.sweep) if n.startswith("optimizer.")
        )
        return Optimizer(self.optimizer, swept, hyperparam_dtype)

    def swept_values(self, name: str = "", value: float = 0.0) -> dict[str, float]:
        """Static values of the swept optimizer keywords (each its first value; ``name``
        set to ``value``), keyed by their paths inside ``optimizer``."""
        values = {n: (value if n == name else v[0]) for n, v in self.sweep.items()}
        return {n.removeprefix("optimizer."): v for n, v in values.items() if n != "input_noise"}

    def members(self) -> list[tuple[int, dict[str, float]]]:
        """``(seed, swept values)`` for every member, grid-major then seed."""
        names = sorted(self.sweep)
        grid = itertools.product(*(self.sweep[n] for n in names))
        return [
            (seed, dict(zip(names, point, strict=True))) for point in grid for seed in self.seeds
        ]

    def member_input_noise(self, hps: Mapping[str, float]) -> float:
        """A member's input-noise σ: its swept value, else the method's."""
        return float(hps.get("input_noise", self.input_noise))

    @property
    def float64_state(self) -> bool:
        """Whether a transform keeps its state in float64 (a ``dtype = "float64"``)."""
        return any(
            spec.get("dtype") == "float64" for _, spec in self.build_optimizer().transforms()
        )


class _at:
    """Prefix ConfigErrors raised inside with ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> None:
        if isinstance(err, ConfigError) and not str(err).startswith(self.path):
            raise ConfigError(f"{self.path}.{err}") from err


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, model, budget, evaluation, and the methods compared."""

    name: str
    methods: tuple[MethodConfig, ...]
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 300_000
    batch_size: int = 512
    sampling: str = "epoch"
    eval_every: int = 0
    evals_per_sync: int = 10
    loss: str = "softmax"
    dtype: str = "float32"
    loss_dtype: str = "float32"
    diagnostics: bool = False
    track_entropy: bool = False
    tokens_per_param: float = 0.0  # > 0 (language models): steps from a token budget
    train_threshold: float = 0.99
    val_threshold: float = 0.95
    stop_when_grokked: bool = True
    checkpoint_every: int = 0
    shard_members: bool = True
    member_axis: str = "auto"
    # Steps unrolled into straight-line code per loop iteration of an interval. Costs
    # compile time and memory (every unrolled step's buffers); helps only where XLA
    # compiles an op worse inside a loop (it did for the grouped convolution Mamba used
    # before session 5: 10x slower per step; the shifted multiply-adds replacing it don't).
    unroll: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check("name", bool(self.name) and "/" not in self.name, "a non-empty name", self.name)
        _check("methods", len(self.methods) >= 1, "at least one method", self.methods)
        labels = [m.label for m in self.methods]
        _check("methods", len(set(labels)) == len(labels), "distinct labels", labels)
        for i, method in enumerate(self.methods):
            method.validate(f"methods.{i}")
        self.data.validate()
        self.model.validate()
        _check("steps", self.steps >= 1, "a positive integer", self.steps)
        _check("batch_size", self.batch_size >= 1, "a positive integer", self.batch_size)
        _choice("sampling", self.sampling, ["epoch", "iid"])
        _check("eval_every", self.eval_every >= 0, ">= 0 (0: once per epoch)", self.eval_every)
        _check("evals_per_sync", self.evals_per_sync >= 1, ">= 1", self.evals_per_sync)
        _choice("loss", self.loss, ["softmax", "stablemax"])
        _choice("dtype", self.dtype, list(DTYPES))
        _choice("loss_dtype", self.loss_dtype, list(LOSS_DTYPES[self.loss]))
        for i, method in enumerate(self.methods):
            _choice(f"methods.{i}.loss", method.loss, ["", *LOSS_DTYPES])
            kind, dtype = self.method_loss(method)
            key = f"methods.{i}.loss_dtype" if method.loss_dtype else f"loss_dtype (methods.{i})"
            _choice(f"{key} for loss {kind!r}", dtype, list(LOSS_DTYPES[kind]))
            for path, spec in method.build_optimizer().transforms():
                state = spec.get("dtype")
                _check(
                    f"methods.{i}.optimizer.{path}.dtype",
                    state is None or _BYTES.get(state, 0) >= _BYTES[self.dtype],
                    f"a float dtype at least as wide as the parameters' ({self.dtype!r})",
                    state,
                )
        extra = {"value": 1.0, **({"activation_entropy": 0.5} if self.tracks_entropy else {})}
        for i, method in enumerate(self.methods):
            with jax.enable_x64(True) if method.float64_state else contextlib.nullcontext():
                check_update(method.build_optimizer(), extra, f"methods.{i}.optimizer")
        _choice("member_axis", self.member_axis, ["auto", "vmap", "map"])
        _check("unroll", self.unroll >= 1, ">= 1", self.unroll)
        _check("train_threshold", 0 < self.train_threshold <= 1, "in (0, 1]", self.train_threshold)
        _check("val_threshold", 0 < self.val_threshold <= 1, "in (0, 1]", self.val_threshold)
        _check("checkpoint_every", self.checkpoint_every >= 0, ">= 0", self.checkpoint_every)
        if self.dtype in ("float16", "bfloat16"):
            import ml_dtypes
            import numpy as np

            tiny = float(ml_dtypes.finfo(self.dtype).smallest_normal)
            for i, method in enumerate(self.methods):
                for path, eps in _eps_settings(method):
                    _check(
                        f"methods.{i}.optimizer.{path}",
                        eps == 0 or eps >= tiny,
                        f"0 or >= {np.float32(tiny):.3g}, the smallest normal {self.dtype} (a "
                        "smaller eps underflows and Adam divides by zero)",
                        eps,
                    )
        lm, mamba = self.data.kind == "lm", self.model.kind == "mamba"
        _check("tokens_per_param", self.tokens_per_param >= 0, ">= 0", self.tokens_per_param)
        if self.tokens_per_param:
            _check("tokens_per_param", lm, "0 unless data.kind = 'lm'", self.tokens_per_param)
        _check("model.kind", lm == mamba, "'mamba' exactly when data.kind = 'lm'", self.model.kind)
        if lm:
            _choice("sampling (language-model windows)", self.sampling, ["iid"])
        for i, method in enumerate(self.methods):
            if method.activation:
                _check(
                    f"methods.{i}.activation",
                    mamba,
                    "'' unless model.kind = 'mamba'",
                    method.activation,
                )
                _choice(f"methods.{i}.activation", method.activation, ["silu", "swelu", "swish_k"])
        vector = self.data.encoding in ("onehot", "bits", "dense")
        if self.tracks_entropy:
            _check(
                "model.kind",
                self.model.kind == "mlp",
                "'mlp' to track activation entropy (track_entropy); the entropy is of its "
                "last hidden layer",
                self.model.kind,
            )
        if not vector:
            for i, method in enumerate(self.methods):
                noisy = method.input_noise > 0 or "input_noise" in method.sweep
                _check(
                    f"methods.{i}.input_noise",
                    not noisy,
                    "0 for token inputs (input noise and the entropy pump need vector inputs)",
                    method.input_noise,
                )
        if vector:
            _check(
                "model.kind",
                self.model.kind == "mlp",
                f"'mlp' for {self.data.encoding} data",
                self.model.kind,
            )
        elif self.model.kind == "mlp":
            allowed = "'onehot', 'bits' or 'dense' for an mlp model"
            _check("data.encoding", False, allowed, self.data.encoding)

    @property
    def tracks_entropy(self) -> bool:
        """Log activation/target entropy and Surge-Collapse events, and pass the batch's
        normalised activation entropy to the optimizer (``activation_entropy``)."""
        return self.track_entropy

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
            f"{', '.join(tiny_eps)} with float32 parameters: below √(smallest normal "
            f"float32) ≈ {floor:.2g}. XLA flushes subnormals to zero, so once a weight's "
            "gradient falls below ~1e-19 Adam's second moment is exactly 0 while the first "
            "is not, and the weight steps by up to lr·|m|/eps (Prieto et al.'s StableMax "
            "runs blow up this way once the loss nears 1e-13). Wrap the optimizer in "
            '{ transform = "grokjax.with_state_dtype", dtype = "float64", inner = [...] } '
            f"(its state in float64, parameters unchanged), set dtype = 'float64' or "
            f"eps >= {floor:.2g} to avoid it."
        ]

    def steps_per_epoch(self, num_train: int) -> int:
        return math.ceil(num_train / self.batch_size)

    def eval_interval(self, num_train: int) -> int:
        """Steps between evaluations: ``eval_every`` or, when 0, one epoch."""
        return self.eval_every or self.steps_per_epoch(num_train)


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


# --- dict / TOML conversion -----------------------------------------------------------


def to_dict(config: Any) -> Any:
    """A JSON-ready dict of a config (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    return config


def _convert(path: str, value: Any, hint: Any) -> Any:
    """Check and convert ``value`` to the annotated type ``hint``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} = {value!r}: must be a number.")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} = {value!r}: must be an integer.")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r}: must be true or false.")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} = {value!r}: must be a string.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} = {value!r}: must be a list.")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_convert(f"{path}.{i}", v, item) for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} = {value!r}: must be a table of key = [values].")
        _, item = typing.get_args(hint)
        return {k: _convert(f"{path}.{k}", v, item) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config annotation {hint!r} at {path}")
    return value


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build config dataclass ``cls`` from a (parsed TOML/JSON) dict, validating keys."""
    where = path or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {sorted(fields)}.")
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        if name == "methods":
            if not isinstance(value, list):
                raise ConfigError(f"{key}: must be a list of [[methods]] tables.")
            kwargs[name] = tuple(
                from_dict(MethodConfig, m, f"{key}.{i}") for i, m in enumerate(value)
            )
        else:
            kwargs[name] = _convert(key, value, hints[name])
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}.")
    return cls(**kwargs)


def load_toml(path: str) -> ExperimentConfig:
    """Read and validate an experiment config file."""
    with open(path, "rb") as f:
        try:
            data = tomli.load(f)
        except tomli.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from err
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def _parse_value(text: str) -> Any:
    try:
        return tomli.loads(f"v = {text}")["v"]
    except tomli.TOMLDecodeError:
        return text  # a bare word is a string: --set data.op=x+y


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Apply ``key=value`` overrides (dotted keys, TOML values) and re-validate."""
    data = json.loads(json.dumps(to_dict(config)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. steps=2000.")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {key!r}: {'.'.join(parts[: depth + 1])} is not an index "
                        f"of a list of {len(node)}."
                    )
                node = node[int(part)]
            elif isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
                node = node[part]
            elif isinstance(node, dict) and part not in node and depth > 0:
                node = node.setdefault(part, {})  # a table the config leaves out
            else:
                raise ConfigError(f"override {key!r}: no table {'.'.join(parts[: depth + 1])!r}.")
        if isinstance(node, list):
            raise ConfigError(
                f"override {key!r}: give a field of a list entry, e.g. methods.0.seeds."
            )
        node[parts[-1]] = _parse_value(text.strip())
    return from_dict(ExperimentConfig, data)


def select_methods(config: ExperimentConfig, labels: Sequence[str]) -> ExperimentConfig:
    """``config`` with only the methods labelled ``labels`` (in the config's order).

    Useful to run one member group of a figure's config on its own, e.g. its long run.
    The selected members train as they would in the whole config, except that dropping
    every float64 member also turns 64-bit JAX off, which changes the draws of
    ``sampling = "iid"`` batches (epoch permutations are unaffected).

    >>> from grokjax.train import resolve
    >>> config = select_methods(resolve("stability-quick"), ["ortho_adamw"])
    >>> [m.label for m in config.methods]
    ['ortho_adamw']
    """
    if isinstance(labels, str):
        labels = [labels]
    known = [m.label for m in config.methods]
    unknown = [label for label in labels if label not in known]
    if unknown or not labels:
        raise ConfigError(
            f"method label(s) {unknown or list(labels)!r} not in {config.name!r}; "
            f"its methods are {known!r}."
        )
    methods = tuple(m for m in config.methods if m.label in labels)
    return from_dict(
        ExperimentConfig, {**to_dict(config), "methods": [to_dict(m) for m in methods]}
    )
