"""Seed 003's training recipe: the curriculum (a sampling option of the task) and the
schedules of its adaptive optimisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import grokjax as gj
from grokjax.data.kinds import ModularData
from grokjax.optim.specs import Optimizer
from grokjax.train import ConfigError, apply_overrides, resolve

SEED003 = ((1000, 0.3), (5000, 0.6))


def _difficulty(p: int) -> np.ndarray:
    a, b = np.divmod(np.arange(p * p), p)
    return (a + b) / 2.0 / (p - 1)


@pytest.mark.parametrize("sampling", ["epoch", "iid"])
def test_the_curriculum_admits_exactly_the_rows_its_threshold_says(sampling):
    p = 13
    data = ModularData(op="x+y", p=p, train_fraction=0.5, encoding="tokens_no_op")
    task, splits = data.build(10_000, sampling, "float32", [0])
    train_idx = jnp.asarray(splits[0].train_idx)
    key = jax.random.key(0)
    difficulty = _difficulty(p)
    for epoch, threshold in [(0, 0.3), (999, 0.3), (1000, 0.6), (4999, 0.6), (5000, 1.0)]:
        step = jnp.asarray(epoch * task.steps_per_epoch, jnp.int32)
        rows, mask = task.batch_rows(key, step, train_idx, curriculum=SEED003)
        rows, mask = np.asarray(rows), np.asarray(mask)
        expected = difficulty[rows] <= threshold
        if sampling == "epoch":  # one full batch: every training row once
            assert sorted(rows[: task.num_train]) == sorted(np.asarray(train_idx))
            expected &= np.arange(rows.size) < task.num_train
        np.testing.assert_array_equal(mask, expected.astype(np.float32), err_msg=f"epoch {epoch}")
        assert 0 < mask.sum() < mask.size or threshold == 1.0


@pytest.mark.parametrize(
    ("curriculum", "message"),
    [
        ("[[1000, 0.3], [500, 0.6]]", "methods.1.curriculum.*increasing"),
        ("[[0, 0.3]]", "methods.1.curriculum.*positive"),
        ("[[1000, 1.5]]", r"methods.1.curriculum.0.*\(0, 1\]"),
    ],
)
def test_bad_curricula_name_the_key(curriculum, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(resolve("grokfast_modmul"), [f"methods.1.curriculum={curriculum}"])


def test_a_curriculum_needs_data_with_a_difficulty():
    with pytest.raises(ConfigError, match=r"methods.0.curriculum.*'sparse_parity' defines no row"):
        apply_overrides(resolve("stability_fig4_parity"), ["methods.0.curriculum=[[10, 0.5]]"])


def test_methods_with_and_without_a_curriculum_in_one_program():
    """Each method trains with its own curriculum: at step 0 the curriculum method's
    loss averages over the admitted rows only (and counts them), the other method's
    over every training row."""
    from grokjax.train.state import init_groups
    from grokjax.train.step import _member_grads

    config = apply_overrides(
        resolve("seed003"), ["data.p=11", "model.width=16", "model.mlp_width=32"]
    )
    assert [m.curriculum for m in config.methods] == [SEED003, ()]
    task, groups, states = init_groups(config)
    for group, state, limit in zip(groups, states, (0.3, 1.0), strict=True):
        state = jax.tree.map(lambda x: x[0], state)
        member = (state.params, state.key, state.train_idx, None, 0.0)
        grads_fn = jax.jit(lambda m, group=group: _member_grads(group, task, m, jnp.asarray(0)))
        _, stats, extra = grads_fn(member)
        rows = np.asarray(state.train_idx)
        admitted = rows[_difficulty(11)[rows] <= limit]
        assert 0 < admitted.size <= task.num_train
        assert float(stats[2]) == admitted.size  # the step's count of examples
        x, y = task.rows(jnp.asarray(admitted))
        losses = np.asarray(task.losses(group.logits_fn(state.params, x), y), np.float64)
        np.testing.assert_allclose(float(extra["value"]), losses.mean(), rtol=1e-5)
    assert _difficulty(11)[rows].max() > 0.3  # the curriculum leaves some rows out


def test_weight_decay_ramp_matches_the_formula():
    ramp = gj.weight_decay_ramp(0.5, factor=10.0, ramp_steps=5000)
    t = np.array([0, 1, 2500, 4999, 5000, 7000])
    expected = 0.5 * (1 + 9 * np.minimum(t / 5000.0, 1.0))
    np.testing.assert_allclose(np.asarray(jax.vmap(ramp)(jnp.asarray(t))), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_cyclic_schedule_matches_torch_cycliclr(mode):
    """Against the formula of ``torch.optim.lr_scheduler.CyclicLR`` written out in numpy."""
    base, peak, size = 1e-4, 1e-3, 7
    t = np.arange(60, dtype=np.float64)
    cycle = np.floor(1 + t / (2 * size))
    x = np.abs(t / size - 2 * cycle + 1)
    scale = 1.0 if mode == "triangular" else 1 / 2.0 ** (cycle - 1)
    expected = base + (peak - base) * np.maximum(0, 1 - x) * scale
    schedule = gj.cyclic_schedule(base, peak, size, mode)
    got = np.asarray(jax.vmap(schedule)(jnp.asarray(t, jnp.int32)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_the_ramp_as_adamw_weight_decay_from_specs():
    """Named in an optimizer list, the ramp drives AdamW's decoupled decay: with zero
    gradients the update at step t is −lr·wd(t)·w."""
    specs = [
        {
            "transform": "optax.adamw",
            "learning_rate": 0.1,
            "weight_decay": {
                "schedule": "grokjax.weight_decay_ramp",
                "weight_decay": 1.0,
                "ramp_steps": 4,
            },
        }
    ]
    tx = Optimizer(specs)()
    w = {"w": jnp.asarray([1.0, -2.0])}
    state = tx.init(w)
    for t in range(6):
        updates, state = tx.update(jax.tree.map(jnp.zeros_like, w), state, w)
        wd = 1.0 + 9.0 * min(t / 4, 1.0)
        np.testing.assert_allclose(updates["w"], -0.1 * wd * np.asarray(w["w"]), rtol=1e-6)


def test_cyclic_and_ramp_refuse_bad_settings():
    with pytest.raises(ValueError, match="step_size"):
        gj.cyclic_schedule(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="mode"):
        gj.cyclic_schedule(0.0, 1.0, 2, "exp")
    with pytest.raises(ValueError, match="ramp_steps"):
        gj.weight_decay_ramp(1.0, ramp_steps=0)
    assert isinstance(gj.cyclic_schedule(0.0, 1.0, 2)(0), jax.Array)
    assert optax.scale_by_schedule(gj.cyclic_schedule(0.0, 1.0, 2))
