"""Run state: the data on the device, the model, and each method's stacked members.

A *group* is one method of the config. Its members (seeds × swept hyperparameters)
share a model and an optimizer structure, so their parameters, optimizer states,
keys and data splits are stacked along a leading member axis ``M`` and trained by one
vmapped step. All groups advance together in one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grokjax.data import modular_arithmetic, sparse_parity
from grokjax.nn import MLP, Decoder
from grokjax.train.config import ExperimentConfig, MethodConfig
from grokjax.train.optimizers import initial_hyperparams, optimizer_factory

__all__ = ["Group", "GroupState", "Task", "build_model", "build_task", "init_groups"]


@dataclass(frozen=True)
class Task:
    """The whole data set on the device, plus the static facts the step needs."""

    inputs_N: jax.Array  # (N, T) int32 tokens or (N, 2p) float32 one-hot
    labels_N: jax.Array  # (N,) int32
    num_train: int
    num_val: int
    num_classes: int
    vocab_size: int
    seq_len: int
    batch_size: int
    sampling: str

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_train // self.batch_size)


class GroupState(NamedTuple):
    """Everything a group's members carry, each leaf with a leading member axis."""

    params: Any
    opt_state: Any
    key: jax.Array  # (M, 2) uint32 batch-sampling keys
    train_idx: jax.Array  # (M, num_train) int32 rows of the table
    val_idx: jax.Array  # (M, num_val) int32


@dataclass(frozen=True)
class Group:
    """The static side of a group: its method, members and the functions it runs."""

    method: MethodConfig
    members: tuple[tuple[int, dict[str, float]], ...]  # (seed, swept hyperparameters)
    tx: optax.GradientTransformation
    graphdef: Any
    logits_fn: Callable[[Any, jax.Array], jax.Array]  # (params, inputs_B…) -> logits_BC
    loss: tuple[str, str] = ("softmax", "float32")  # (normalizer, dtype of the losses)

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
    if d.kind == "sparse_parity":
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
    inputs = table.inputs(d.encoding)
    if d.encoding in ("onehot", "bits"):  # the MLP's input, in the model's precision
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
    )
    return task, splits


def build_model(config: ExperimentConfig, task: Task, seed: int) -> nnx.Module:
    m = config.model
    rngs = nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(seed), 0))
    dtypes = {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.dtype)}
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
            **dtypes,
            rngs=rngs,
        )
    sizes = [task.inputs_N.shape[1], *m.hidden, task.num_classes]
    return MLP(sizes, activation=m.activation, use_bias=m.use_bias, **dtypes, rngs=rngs)


def _logits_fn(kind: str, graphdef: Any) -> Callable[[Any, jax.Array], jax.Array]:
    if kind == "decoder":
        # The loss and accuracy use the answer position only: skip the rest of the last block.
        return lambda params, x: nnx.merge(graphdef, params)(x, last_only=True)
    return lambda params, x: nnx.merge(graphdef, params)(x)


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
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(config, task, 0)))
    factories = [optimizer_factory(method.optimizer) for method in config.methods]
    members = [tuple(method.members()) for method in config.methods]

    unique = sorted(set(all_seeds))

    @jax.jit
    def init_all(rows_per_group, hps_per_group):
        # each distinct seed's model once, then every group gathers its members' rows
        params_S = jax.vmap(lambda seed: nnx.split(build_model(config, task, seed))[1])(
            jnp.asarray(unique, jnp.uint32)
        )
        out = []
        for factory, rows, hps in zip(factories, rows_per_group, hps_per_group, strict=True):
            params = jax.tree.map(lambda x, rows=rows: x[rows], params_S)
            out.append((params, jax.vmap(lambda p, h, f=factory: f(**h).init(p))(params, hps)))
        return out

    rows_per_group, hps_per_group = [], []
    for method, group_members in zip(config.methods, members, strict=True):
        rows_per_group.append(jnp.asarray([unique.index(seed) for seed, _ in group_members]))
        per_member = [initial_hyperparams(method.optimizer, hps) for _, hps in group_members]
        hps_per_group.append(
            {k: jnp.asarray([h[k] for h in per_member], jnp.float32) for k in per_member[0]}
        )
    initial = init_all(rows_per_group, hps_per_group)

    groups, states = [], []
    for method, factory, group_members, (params, opt_state) in zip(
        config.methods, factories, members, initial, strict=True
    ):
        seeds = [seed for seed, _ in group_members]
        tx = factory(**initial_hyperparams(method.optimizer))  # reads hyperparams from state
        groups.append(
            Group(
                method,
                group_members,
                tx,
                graphdef,
                _logits_fn(config.model.kind, graphdef),
                config.method_loss(method),
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
            )
        )
    return task, groups, states
