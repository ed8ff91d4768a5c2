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
from grokjax.analysis.probes import uses_init_params
from grokjax.data.task import Task
from grokjax.errors import ConfigError
from grokjax.optim import has_state
from grokjax.train.config import ExperimentConfig
from grokjax.train.method import MethodConfig

__all__ = [
    "Group",
    "GroupState",
    "init_groups",
    "member_splits",
]


class GroupState(NamedTuple):
    """Everything a group's members carry, each leaf with a leading member axis."""

    params: Any
    opt_state: Any
    key: jax.Array  # (M, 2) uint32 batch-sampling keys
    train_idx: jax.Array  # (M, num_train) int32 rows of the table
    val_idx: jax.Array  # (M, num_val) int32
    input_noise: jax.Array  # (M,) float32 σ of the Gaussian noise added to batch inputs
    init_params: Any = None  # the parameters at step 0, kept when a probe reads them


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
    # (params, inputs_B…) -> (logits, {site: activation}): the model's internal activations
    intermediates_fn: Callable[[Any, jax.Array], tuple[jax.Array, dict]] | None = None
    noisy: bool = False  # some member adds input noise (or may pump it)
    dropout: bool = False  # training steps pass logits_fn a dropout_key
    curriculum: tuple[tuple[int, float], ...] = ()  # the method's (see Task.admitted)
    # (params, inputs_B…) -> logits in evaluation, where it differs from training
    # (another RoPE scaling); None: logits_fn
    eval_logits_fn: Callable[[Any, jax.Array], jax.Array] | None = None

    @property
    def evaluate_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
        """The model's logits in evaluation: ``eval_logits_fn``, else ``logits_fn``."""
        return self.eval_logits_fn or self.logits_fn

    @property
    def size(self) -> int:
        return len(self.members)

    def member_name(self, m: int) -> str:
        seed, hps = self.members[m]
        swept = "".join(f", {k}={v:g}" for k, v in hps.items())
        return f"{self.method.label}[member {m}: seed {seed}{swept}]"


def optimizer_key(seed: jax.Array, index: int) -> jax.Array:
    """The key of a member's ``index``-th keyed transform (Surge-Collapse's surges):
    ``fold_in(PRNGKey(seed), 2)`` (salt 2 keeps it apart from the parameters' 0 and the
    batch sampling's 1), then the index folded in for later ones."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
    return key if index == 0 else jax.random.fold_in(key, index)


def member_splits(
    config: ExperimentConfig,
) -> tuple[Task, list[list[tuple[np.ndarray, np.ndarray]]]]:
    """The task, and per method each member's ``(train_idx, val_idx)`` rows.

    A member's split is its seed's. A method sweeping ``data.train_fraction`` gives each
    member the split of its own fraction ``f``; the task is built at the largest
    fraction ``f_max`` of all members, and every member

    - trains on its seed's split at ``f``, padded with ``-1`` to ``num_train(f_max)``
      rows (:meth:`Task.batch_rows <grokjax.data.task.Task.batch_rows>` masks them out);
    - validates on its seed's validation rows at ``f_max``: the same rows for every
      fraction, a uniform subset of each member's own held-out rows when the splits
      are nested (a seed's permutation cut at ``n_train(f)``, as
      :func:`grokjax.data.split.random_split` does; checked here).
    """
    all_seeds = [seed for method in config.methods for seed, _ in method.members()]
    build = lambda data: data.build(config.batch_size, config.sampling, config.dtype, all_seeds)  # noqa: E731
    if not any("data.train_fraction" in m.sweep for m in config.methods):
        task, splits = build(config.data)
        rows = [
            [(splits[s].train_idx, splits[s].val_idx) for s, _ in m.members()]
            for m in config.methods
        ]
        return task, rows
    default = config.data.train_fraction
    fractions = [
        [m.member_train_fraction(h, default) for _, h in m.members()] for m in config.methods
    ]
    splits = {
        f: build(dataclasses.replace(config.data, train_fraction=f))[1]
        for f in sorted({f for group in fractions for f in group})
    }
    largest = max(splits)
    task, _ = build(dataclasses.replace(config.data, train_fraction=largest))
    rows = []
    for i, (method, group) in enumerate(zip(config.methods, fractions, strict=True)):
        rows.append([])
        for (seed, _), f in zip(method.members(), group, strict=True):
            train, held_out = splits[f][seed].train_idx, splits[largest][seed]
            if not np.isin(train, held_out.train_idx).all():
                raise ConfigError(
                    f"methods.{i}.sweep.data.train_fraction: data kind {config.data.kind!r} "
                    f"does not nest its splits (seed {seed}'s training rows at {f:g} are not "
                    f"all among those at {largest:g}), so the members cannot share "
                    "validation rows."
                )
            padded = np.full(task.num_train, -1, np.int32)
            padded[: len(train)] = train
            rows[-1].append((padded, held_out.val_idx))
    return task, rows


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
    task, member_rows = member_splits(config)
    # Methods may train different variants of the model (a Mamba model's activation).
    models = [config.method_model(method) for method in config.methods]
    variants = list(dict.fromkeys(models))
    graphdefs = {
        v: nnx.split(nnx.eval_shape(lambda v=v: v.build(task, 0, config.dtype)))[0]
        for v in variants
    }
    optimizers = [method.build_optimizer() for method in config.methods]
    members = [tuple(method.members()) for method in config.methods]

    unique = sorted(set(all_seeds))

    @jax.jit
    def init_all(rows_per_group, values_per_group, keys_per_group):
        # each distinct (model, seed) once, then every group gathers its members' rows
        seeds_S = jnp.asarray(unique, jnp.uint32)
        params_S = {
            v: jax.vmap(lambda seed, v=v: nnx.split(v.build(task, seed, config.dtype))[1])(seeds_S)
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
    keep_init = uses_init_params(config.probe_functions())
    groups, states = [], []
    for method, model, opt, group_members, (params, opt_state), rows in zip(
        config.methods, models, optimizers, members, initial, member_rows, strict=True
    ):
        graphdef = graphdefs[model]
        features = model.features_fn(graphdef) if config.track_entropy else None
        intermediates = getattr(model, "intermediates_fn", None)
        evaluate = getattr(model, "eval_logits_fn", None)
        seeds = [seed for seed, _ in group_members]
        # the update reads swept values from the state: the first member's build serves all
        tx = opt({p: group_members[0][1][f"optimizer.{p}"] for p in opt.swept})
        groups.append(
            Group(
                method,
                group_members,
                tx,
                graphdef,
                model.logits_fn(graphdef, task),
                config.method_loss(method),
                features,
                intermediates(graphdef) if intermediates else None,
                noisy=has_state(opt_state, gj.optim.INPUT_NOISE_STATES)
                or any(method.member_input_noise(h) > 0 for _, h in group_members),
                dropout=model.dropout > 0,
                curriculum=tuple((int(e), float(t)) for e, t in method.curriculum),
                eval_logits_fn=evaluate(graphdef, task) if evaluate else None,
            )
        )
        states.append(
            GroupState(
                params=params,
                opt_state=opt_state,
                key=jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(
                    jnp.asarray(seeds, jnp.uint32)
                ),
                train_idx=jnp.asarray(np.stack([t for t, _ in rows]), jnp.int32),
                val_idx=jnp.asarray(np.stack([v for _, v in rows]), jnp.int32),
                input_noise=jnp.asarray(
                    [method.member_input_noise(h) for _, h in group_members], jnp.float32
                ),
                # a copy: the state is donated, and a buffer cannot be donated twice
                init_params=jax.tree.map(jnp.copy, params) if keep_init else None,
            )
        )
    return task, groups, states
