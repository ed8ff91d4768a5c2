"""Run state: the data on the device, the model, and each method's stacked members.

A *group* is one method of the config. Its members (seeds × swept hyperparameters)
share a model and an optimizer structure, so their parameters, optimizer states,
keys and data splits are stacked along a leading member axis ``M`` and trained by one
vmapped step. All groups advance together in one compiled program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import grokjax as gj
from grokjax.data import (
    byte_windows,
    gaussian_classification,
    modular_arithmetic,
    offline_text,
    sparse_parity,
)
from grokjax.data.lm import token_corpus
from grokjax.nn import MLP, Decoder, MambaLM
from grokjax.train.chain import Optimizer, has_state
from grokjax.train.config import ExperimentConfig, MethodConfig, ModelConfig

__all__ = [
    "Group",
    "GroupState",
    "Task",
    "build_model",
    "build_task",
    "init_groups",
    "method_model",
]


@dataclass(frozen=True)
class Task:
    """The whole data set on the device, plus the static facts the step needs."""

    # (N, T) int32 tokens, (N, F) float vectors, or (N, K) int32 one-hot slot ids (the
    # operands x, y of modular "onehot"; the bytes of a window)
    inputs_N: jax.Array
    labels_N: jax.Array  # (N,) int32
    num_train: int
    num_val: int
    num_classes: int
    vocab_size: int
    seq_len: int
    batch_size: int
    sampling: str
    # > 0: row slots are ids in [0, onehot_vocab), the model input their concatenated
    # one-hot rows (modular "onehot" operands, byte windows), given to the model as the
    # positions of the ones (the MLP gathers weight rows); see encode and dense
    onehot_vocab: int = 0
    dtype: str = "float32"  # the model's input dtype for vector inputs
    window: int = 0  # > 0: a token stream; row i is the window inputs_N[i : i + window + 1]

    def rows(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Model inputs and labels of rows ``idx``: table rows, or for a token stream the
        windows starting at ``idx`` (inputs ``(…, window)``, next-token labels)."""
        if self.window:
            positions = idx[..., None] + _trailing(jnp.arange(self.window), idx.ndim + 1)
            return self.inputs_N[positions], self.inputs_N[positions + 1]
        return self.encode(self.inputs_N[idx]), self.labels_N[idx]

    def encode(self, inputs: jax.Array) -> jax.Array:
        """A batch of rows as the model reads them.

        For one-hot slots, slot ``k``'s id ``i`` becomes position ``k·V + i`` of the
        flattened one-hot row (``V = onehot_vocab``): int32 ``(…, K)``, which
        :class:`grokjax.nn.MLP` reads as that row; :meth:`dense` writes it out.
        """
        if not self.onehot_vocab:
            return inputs
        offsets = self.onehot_vocab * jnp.arange(inputs.shape[-1], dtype=inputs.dtype)
        return inputs + _trailing(offsets, inputs.ndim)

    def dense(self, x: jax.Array) -> jax.Array:
        """Encoded rows as dense vectors ``(…, input_width)`` in the model's dtype (the
        one-hot rows written out; other inputs unchanged)."""
        if not self.onehot_vocab:
            return x
        ids = x - _trailing(self.onehot_vocab * jnp.arange(x.shape[-1], dtype=x.dtype), x.ndim)
        onehot = jax.nn.one_hot(ids, self.onehot_vocab, dtype=jnp.dtype(self.dtype))
        return onehot.reshape(*x.shape[:-1], -1)

    @property
    def input_width(self) -> int:
        """Width of a vector input row as the model reads it (after :meth:`encode`)."""
        return self.inputs_N.shape[1] * (self.onehot_vocab or 1)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_train // self.batch_size)


def _trailing(v: jax.Array, ndim: int) -> jax.Array:
    """``v`` (1-D) with leading unit axes up to ``ndim``: an explicit broadcast along the
    last axis (the tests make implicit rank promotion an error)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


class GroupState(NamedTuple):
    """Everything a group's members carry, each leaf with a leading member axis."""

    params: Any
    opt_state: Any
    key: jax.Array  # (M, 2) uint32 batch-sampling keys
    train_idx: jax.Array  # (M, num_train) int32 rows of the table
    val_idx: jax.Array  # (M, num_val) int32
    input_noise: jax.Array  # (M,) float32 σ of the Gaussian noise added to batch inputs


@dataclass(frozen=True)
class Group:
    """The static side of a group: its method, members and the functions it runs."""

    method: MethodConfig
    members: tuple[tuple[int, dict[str, float]], ...]  # (seed, swept hyperparameters)
    tx: optax.GradientTransformation
    graphdef: Any
    logits_fn: Callable[[Any, jax.Array], jax.Array]  # (params, inputs_B…) -> logits_BC
    loss: tuple[str, str] = ("softmax", "float32")  # (normalizer, dtype of the losses)
    # (params, inputs_B…) -> (logits_BC, hidden_BH): the MLP's last hidden layer
    features_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]] | None = None
    noisy: bool = False  # some member adds input noise (or may pump it)
    dropout: bool = False  # training steps pass logits_fn a dropout_key

    @property
    def size(self) -> int:
        return len(self.members)

    def member_name(self, m: int) -> str:
        seed, hps = self.members[m]
        swept = "".join(f", {k}={v:g}" for k, v in hps.items())
        return f"{self.method.label}[member {m}: seed {seed}{swept}]"


def build_task(config: ExperimentConfig, seeds: list[int]) -> tuple[Task, dict[int, Any]]:
    """The table on the device and every seed's split (each seed splits its own way)."""
    d = config.data
    if d.kind == "lm":
        corpus = token_corpus(
            d.text_path,
            seq_len=d.seq_len,
            train_fraction=d.train_fraction,
            val_windows=d.val_windows,
            max_tokens=d.max_tokens,
            tokenizer=d.tokenizer,
            vocab_dir=d.vocab_dir,
        )
        tokens = jnp.asarray(corpus.tokens_T)
        task = Task(
            inputs_N=tokens,
            labels_N=tokens,
            num_train=corpus.num_train,
            num_val=corpus.num_val,
            num_classes=corpus.vocab_size,
            vocab_size=corpus.vocab_size,
            seq_len=d.seq_len,
            batch_size=config.batch_size,
            sampling=config.sampling,
            window=d.seq_len,
        )
        return task, {seed: corpus for seed in sorted(set(seeds))}
    if d.kind == "gaussian":
        splits = {
            seed: gaussian_classification(
                d.num_samples,
                d.features,
                d.classes,
                d.train_fraction,
                seed,
                sample_seed=d.sample_seed,
            )
            for seed in sorted(set(seeds))
        }
    elif d.kind == "text":
        text = offline_text(d.text_path or None)
        splits = {
            seed: byte_windows(
                text, d.context, d.num_samples, d.train_fraction, seed, sample_seed=d.sample_seed
            )
            for seed in sorted(set(seeds))
        }
    elif d.kind == "sparse_parity":
        splits = {
            seed: sparse_parity(
                d.parity_bits,
                d.noise_bits,
                d.num_samples,
                d.train_fraction,
                seed,
                sample_seed=d.sample_seed,
            )
            for seed in sorted(set(seeds))
        }
    else:
        splits = {
            seed: modular_arithmetic(d.op, d.p, d.train_fraction, seed, y_min=d.y_min)
            for seed in sorted(set(seeds))
        }
    table = next(iter(splits.values()))
    onehot_vocab = 0
    if d.kind == "text":
        inputs, onehot_vocab = table.inputs(d.encoding), 256
    elif d.kind == "modular" and d.encoding == "onehot":  # onehot(x) ⊕ onehot(y) as (x, y)
        inputs, onehot_vocab = np.stack([table.x_N, table.y_N], axis=1), d.p
    else:
        inputs = table.inputs(d.encoding)
        if d.encoding in ("bits", "dense"):  # in the model's precision
            inputs = inputs.astype(jnp.dtype(config.dtype))
    task = Task(
        inputs_N=jnp.asarray(inputs),
        labels_N=jnp.asarray(table.labels_N, jnp.int32),
        num_train=table.num_train,
        num_val=table.num_val,
        num_classes=d.num_classes,
        vocab_size=table.vocab_size(d.encoding),
        seq_len=inputs.shape[1],
        batch_size=config.batch_size,
        sampling=config.sampling,
        onehot_vocab=onehot_vocab,
        dtype=config.dtype,
    )
    return task, splits


def method_optimizer(method: MethodConfig) -> Optimizer:
    """A method's optimizer; swept values in float64 when its state is float64 (then
    e.g. Adam's bias corrections 1 − β^t are float64 too; a float32 β2 is off by ~1e-8)."""
    dtype = jnp.float64 if method.float64_state else jnp.float32
    return method.build_optimizer(dtype)


def optimizer_key(seed: jax.Array, index: int) -> jax.Array:
    """The key of a member's ``index``-th keyed transform (Surge-Collapse's surges):
    ``fold_in(PRNGKey(seed), 2)``, then the index folded in for later ones (0 is the
    sampling stream's salt 1 and the parameters' 0 apart)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
    return key if index == 0 else jax.random.fold_in(key, index)


def method_model(config: ExperimentConfig, method) -> ModelConfig:
    """The model a method trains: the experiment's, with the method's activation if set."""
    if method.activation:
        return dataclasses.replace(config.model, activation=method.activation)
    return config.model


def build_model(
    config: ExperimentConfig, task: Task, seed: int, model: ModelConfig | None = None
) -> nnx.Module:
    m = model or config.model
    rngs = nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(seed), 0))
    dtypes = {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.dtype)}
    if m.kind == "mamba":
        return MambaLM(
            task.vocab_size,
            m.width,
            m.depth,
            conv_activation=m.activation,
            gate_activation=m.activation,
            d_state=m.d_state,
            expand=m.expand,
            rngs=rngs,
        )
    if m.kind == "decoder":
        return Decoder(
            task.vocab_size,
            seq_len=task.seq_len,
            depth=m.depth,
            width=m.width,
            heads=m.heads,
            mlp_ratio=m.mlp_ratio,
            activation=m.activation,
            positions=m.positions,
            rope_base=m.rope_base,
            dropout=m.dropout,
            **dtypes,
            rngs=rngs,
        )
    sizes = [task.input_width, *m.hidden, task.num_classes]
    return MLP(sizes, activation=m.activation, use_bias=m.use_bias, **dtypes, rngs=rngs)


def _logits_fn(kind: str, graphdef: Any) -> Callable[[Any, jax.Array], jax.Array]:
    if kind == "decoder":
        # The loss and accuracy use the answer position only: skip the rest of the last block.
        # ``dropout_key``: training steps of a model with dropout (evaluation passes none).
        return lambda params, x, dropout_key=None: nnx.merge(graphdef, params)(
            x, last_only=True, dropout_key=dropout_key
        )
    if kind == "mlp":  # integer inputs: one-hot slots as the positions of their ones
        return lambda params, x: nnx.merge(graphdef, params)(x, one_hot_ids=_is_ids(x))
    return lambda params, x: nnx.merge(graphdef, params)(x)


def _is_ids(x: jax.Array) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.integer))


def _features_fn(graphdef: Any) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
    """``(logits, last hidden activation)`` of an MLP, read with ``nnx.capture``."""

    def features(params, x):
        model = nnx.merge(graphdef, params)
        logits, inter = nnx.capture(model, nnx.Intermediate)(x, one_hot_ids=_is_ids(x))
        return logits, inter[f"hidden_{len(model.layers) - 2}"][0]

    return features


def init_groups(config: ExperimentConfig) -> tuple[Task, list[Group], list[GroupState]]:
    """Build the task, and each method's group with its stacked initial member state.

    Every group's models and optimizer states are initialised by one jitted function
    (vmapped over each group's seeds and hyperparameters): one compilation, where eager
    initialisation compiled ~120 small kernels (6.6 s of 9.9 s, profiled).
    """
    if config.needs_x64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"config {config.name!r} trains or computes a loss in float64 (dtype="
            f"{config.dtype!r}), which needs 64-bit JAX: use run_experiment (it enables x64 "
            "for the run) or call this inside `with jax.enable_x64(True):`."
        )
    all_seeds = [seed for method in config.methods for seed, _ in method.members()]
    task, splits = build_task(config, all_seeds)
    # Methods may train different variants of the model (a Mamba model's activation).
    models = [method_model(config, method) for method in config.methods]
    variants = list(dict.fromkeys(models))
    graphdefs = {
        v: nnx.split(nnx.eval_shape(lambda v=v: build_model(config, task, 0, v)))[0]
        for v in variants
    }
    optimizers = [method_optimizer(method) for method in config.methods]
    members = [tuple(method.members()) for method in config.methods]

    unique = sorted(set(all_seeds))

    @jax.jit
    def init_all(rows_per_group, values_per_group, keys_per_group):
        # each distinct (model, seed) once, then every group gathers its members' rows
        seeds_S = jnp.asarray(unique, jnp.uint32)
        params_S = {
            v: jax.vmap(lambda seed, v=v: nnx.split(build_model(config, task, seed, v))[1])(seeds_S)
            for v in variants
        }
        out = []
        for model, opt, rows, values, keys in zip(
            models, optimizers, rows_per_group, values_per_group, keys_per_group, strict=True
        ):
            params = jax.tree.map(lambda x, rows=rows: x[rows], params_S[model])
            opt_state = jax.vmap(lambda p, v, k, opt=opt: opt(v, k).init(p))(params, values, keys)
            out.append((params, opt_state))
        return out

    rows_per_group, values_per_group, keys_per_group = [], [], []
    for opt, group_members in zip(optimizers, members, strict=True):
        rows_per_group.append(jnp.asarray([unique.index(seed) for seed, _ in group_members]))
        values_per_group.append(
            {
                path: jnp.asarray(
                    [hps[f"optimizer.{path}"] for _, hps in group_members], opt.hyperparam_dtype
                )
                for path in opt.swept
            }
        )
        seeds = jnp.asarray([seed for seed, _ in group_members], jnp.uint32)
        keys_per_group.append(
            [jax.vmap(lambda s, i=i: optimizer_key(s, i))(seeds) for i in range(opt.num_keys)]
        )
    initial = init_all(rows_per_group, values_per_group, keys_per_group)
    groups, states = [], []
    for method, model, opt, group_members, (params, opt_state) in zip(
        config.methods, models, optimizers, members, initial, strict=True
    ):
        graphdef = graphdefs[model]
        features = _features_fn(graphdef) if config.tracks_entropy else None
        seeds = [seed for seed, _ in group_members]
        # the update reads swept values from the state: the first member's build serves all
        tx = opt({p: group_members[0][1][f"optimizer.{p}"] for p in opt.swept})
        groups.append(
            Group(
                method,
                group_members,
                tx,
                graphdef,
                _logits_fn(config.model.kind, graphdef),
                config.method_loss(method),
                features,
                noisy=has_state(opt_state, gj.optim.INPUT_NOISE_STATES)
                or any(method.member_input_noise(h) > 0 for _, h in group_members),
                dropout=model.dropout > 0,
            )
        )
        states.append(
            GroupState(
                params=params,
                opt_state=opt_state,
                key=jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(
                    jnp.asarray(seeds, jnp.uint32)
                ),
                train_idx=jnp.asarray(np.stack([splits[s].train_idx for s in seeds]), jnp.int32),
                val_idx=jnp.asarray(np.stack([splits[s].val_idx for s in seeds]), jnp.int32),
                input_noise=jnp.asarray(
                    [method.member_input_noise(h) for _, h in group_members], jnp.float32
                ),
            )
        )
    return task, groups, states
