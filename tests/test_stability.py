"""Precision control and numerical-stability diagnostics in the trainer (Prieto et al.)."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.analysis import numerical_stability
from grokjax.train import apply_overrides, resolve, run_experiment
from grokjax.train.state import init_groups
from grokjax.train.step import member_probe_context

# A one-hidden-layer MLP on (a + b) mod 11, full batch: runs take a second or two.
SMALL = [
    "data.p=11",
    "data.train_fraction=0.5",
    "model.hidden=[8]",
    "batch_size=1000",
    "eval_every=5",
    "steps=10",
    "methods=[{label='adamw', seeds=[0, 1], optimizer=[{transform='optax.adamw', "
    "learning_rate=0.01, b2=0.99, eps=1e-25, weight_decay=0.0}]}]",
]


def small(*overrides: str):
    return apply_overrides(resolve("orthograd_quick"), [*SMALL, *overrides])


def _np_forward(kernels, x):
    """The bias-free ReLU MLP in float64 numpy: hidden activations and logits."""
    hs = [x]
    for w in kernels[:-1]:
        hs.append(np.maximum(hs[-1] @ w, 0.0))
    return hs, hs[-1] @ kernels[-1]


def _np_stablemax_ce(logits, labels):
    s = np.where(logits >= 0, logits + 1, 1 / (1 - logits))
    return -np.log(s[np.arange(len(labels)), labels] / s.sum(-1))


def _np_softmax_ce_and_grad(kernels, x, y):
    """Mean softmax CE and its gradient w.r.t. every kernel (float64 backprop)."""
    hs, logits = _np_forward(kernels, x)
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):  # a collapsed wrong row has p = 0, loss inf
        losses = -np.log(p[np.arange(len(y)), y])
    d = p.copy()
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    grads = [None] * len(kernels)
    for i in range(len(kernels) - 1, -1, -1):
        grads[i] = hs[i].T @ d
        if i:
            d = (d @ kernels[i].T) * (hs[i] > 0)
    return logits, losses, grads


def _input_rows(task):
    """The table's model inputs as dense float64 rows: the one-hot rows written out in
    numpy from the ids the task stores (slot k's id i at column k·V + i)."""
    ids = np.asarray(task.inputs_N)
    if not task.onehot_vocab:
        return ids.astype(np.float64)
    n, slots = ids.shape
    rows = np.zeros((n, slots * task.onehot_vocab))
    for k in range(slots):
        rows[np.arange(n), k * task.onehot_vocab + ids[:, k]] = 1.0
    return rows


def _kernels(params, member=None):
    """The MLP's kernels (its only leaves, in layer order) as float64 numpy arrays."""
    leaves = jax.tree.leaves(params)
    return [np.asarray(x if member is None else x[member], np.float64) for x in leaves]


def _scale_logits(params, scale):
    """Multiply the last layer's kernel (the last leaf) by ``scale``."""
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [*leaves[:-1], leaves[-1] * scale])


def test_float64_training_runs_in_float64_and_restores_x64():
    config = small("dtype='float64'", "loss='stablemax'", "loss_dtype='float64'")
    assert not jax.config.jax_enable_x64
    result = run_experiment(config, progress=False)
    assert not jax.config.jax_enable_x64  # the caller's setting is back
    state = result.final_states[0]
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float64")}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} >= {jnp.dtype("float64")}
    val_loss = result.history[0]["val_loss"][-1]
    assert val_loss.dtype == np.float64
    # The reported loss is the float64 StableMax CE of the final weights, to float64
    # rounding (a float32 computation would be off by ~1e-7 relative).
    with pytest.raises(ValueError, match="64-bit JAX"):
        init_groups(config)  # outside run_experiment, x64 is the caller's to enable
    with jax.enable_x64(True):
        task, _, _ = init_groups(config)
    inputs, labels = _input_rows(task), np.asarray(task.labels_N)
    for m in range(2):
        val = np.asarray(state.val_idx[m])
        _, logits = _np_forward(_kernels(state.params, m), inputs[val])
        want = _np_stablemax_ce(logits, labels[val]).mean()
        np.testing.assert_allclose(val_loss[m], want, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_parameters(dtype):
    config = small(f"dtype='{dtype}'", "methods.0.optimizer.0.eps=1e-3")
    result = run_experiment(config, progress=False)
    leaves = jax.tree.leaves(result.final_states[0].params)
    assert {x.dtype for x in leaves} == {jnp.dtype(dtype)}
    assert np.all(np.isfinite(result.history[0]["train_loss"][-1]))


def _gaps(task, state):
    """Top-1 minus top-2 logit per training row, the argmax and the label (numpy)."""
    rows = np.asarray(state.train_idx)
    _, logits = _np_forward(_kernels(state.params), _input_rows(task)[rows])
    top = np.sort(logits, axis=-1)
    return top[:, -1] - top[:, -2], logits.argmax(-1), np.asarray(task.labels_N)[rows]


def test_task_feeds_one_hot_slots_as_positions_and_writes_them_out_densely():
    task, _, _ = init_groups(small())
    assert task.onehot_vocab == 11 and task.inputs_N.shape[1] == 2 and task.input_width == 22
    positions = np.asarray(task.encode(task.inputs_N))
    np.testing.assert_array_equal(positions, np.asarray(task.inputs_N) + np.array([0, 11]))
    dense = task.dense(jnp.asarray(positions))
    assert dense.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(dense, np.float64), _input_rows(task))


def _diagnostics(group, task, loss, state):
    group = dataclasses.replace(group, loss=loss)
    return numerical_stability(member_probe_context(group, task, state))


def test_float16_softmax_loss_is_computed_in_float16():
    """Scale the logits so that correctly classified rows lead by ~12: exp(-12) is
    below float16's half-ulp of 1 but not float32's, so those losses are exactly 0 in
    float16 and positive in float32."""
    task, groups, states = init_groups(small())
    state = jax.tree.map(lambda x: x[0], states[0])
    gap, argmax, labels = _gaps(task, state)
    right = argmax == labels
    assert right.any()
    scale = 12.0 / np.median(gap[right])
    state = state._replace(params=_scale_logits(state.params, scale))
    half = _diagnostics(groups[0], task, ("softmax", "float16"), state)
    single = _diagnostics(groups[0], task, ("softmax", "float32"), state)
    assert float(half["zero_loss_fraction"]) >= 0.5 * right.mean()
    assert float(half["zero_loss_fraction"]) > float(single["zero_loss_fraction"])
    assert float(half["sc_fraction"]) > float(single["sc_fraction"])


def test_diagnostics_match_a_float64_reference_and_collapse():
    """SC fraction 0 at initialisation and 1 after scaling the logits up; every
    diagnostic equals an independent numpy computation on the training split."""
    config = small("probes=[{probe='grokjax.analysis.numerical_stability'}]")
    task, groups, states = init_groups(config)
    inputs, labels = _input_rows(task), np.asarray(task.labels_N)
    loss = ("softmax", "float32")
    fresh = jax.tree.map(lambda x: x[0], states[0])
    gap, _, _ = _gaps(task, fresh)
    # every row's runner-up ends up >= 200 below the top: exp(-200) is 0 in float32
    for scale, want_sc in [(1.0, 0.0), (200.0 / gap.min(), 1.0)]:
        state = fresh._replace(params=_scale_logits(fresh.params, scale))
        got = _diagnostics(groups[0], task, loss, state)
        assert float(got["sc_fraction"]) == want_sc

        kernels = _kernels(state.params)
        rows = np.asarray(state.train_idx)
        logits, losses, grads = _np_softmax_ce_and_grad(kernels, inputs[rows], labels[rows])
        np.testing.assert_allclose(
            got["logit_norm"], np.linalg.norm(logits, axis=-1).mean(), rtol=1e-5
        )
        weight_norm = np.sqrt(sum(np.sum(k**2) for k in kernels))
        np.testing.assert_allclose(got["weight_norm"], weight_norm, rtol=1e-6)
        np.testing.assert_allclose(got["zero_loss_fraction"], np.mean(losses == 0), atol=0)
        cosines = [
            np.sum(k * -g) / (np.linalg.norm(k) * np.linalg.norm(g))
            for k, g in zip(kernels, grads, strict=True)
        ]
        for i, c in enumerate(cosines):
            np.testing.assert_allclose(got[f"nlm_cos/layers/{i}/kernel"], c, atol=2e-5)
        np.testing.assert_allclose(got["nlm_cos_mean"], np.mean(cosines), atol=2e-5)


def test_diagnostics_are_logged_per_member(tmp_path):
    import json

    config = small("probes=[{probe='grokjax.analysis.numerical_stability'}]")
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2  # 2 evaluations x 2 members
    want = {"sc_fraction", "zero_loss_fraction", "logit_norm", "weight_norm", "nlm_cos_mean"}
    assert want | {"nlm_cos/layers/0/kernel", "nlm_cos/layers/1/kernel"} <= rows[0].keys()
    assert result.compilations == 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dtype"], config["loss_dtype"], config["probes"]) == (
        "float32",
        "float32",
        [{"probe": "grokjax.analysis.numerical_stability"}],
    )


def test_trainer_runs_sparse_parity():
    config = small(
        "data.kind='sparse_parity'",
        "data.encoding='bits'",
        "data.num_samples=64",
        "data.noise_bits=5",
    )
    task, _, _ = init_groups(config)
    assert task.inputs_N.shape == (64, 8) and task.num_classes == 2
    result = run_experiment(config, progress=False)
    assert result.metric(0, "val_acc").shape == (2, 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dtype='float8'", "dtype"),
        ("loss_dtype='float16'", "loss_dtype"),  # StableMax in float16 is refused
        ("data.encoding='bits'", "data.encoding"),  # bits belong to sparse parity
        ("dtype='float16'", "eps"),  # eps 1e-25 is 0 in float16
    ],
)
def test_bad_precision_and_data_settings_name_the_key(override, message):
    from grokjax.train import ConfigError

    with pytest.raises(ConfigError, match=message):
        small("loss='stablemax'", override)


def test_quick_orthograd_contrast_at_reduced_size():
    """`stability-quick` at p = 59: ⊥AdamW generalises for every seed, AdamW (wd 0)
    memorises the training split and stays near 0% test accuracy."""
    config = apply_overrides(resolve("stability-quick"), ["data.p=59", "batch_size=1392"])
    assert [m.label for m in config.methods] == ["adamw", "ortho_adamw"]
    result = run_experiment(config, progress=False)
    assert result.compilations == 1
    at_200 = result.steps.index(200)
    adamw, ortho = 0, 1
    assert np.all(result.metric(ortho, "val_acc")[at_200] >= 0.95)
    assert np.all(result.metric(ortho, "val_acc")[-1] >= 0.99)
    assert np.all(result.metric(adamw, "train_acc")[-1] == 1.0)
    assert np.all(result.metric(adamw, "val_acc")[-1] < 0.05)
    assert result.metric(adamw, "sc_fraction").shape == (30, 3)


def test_methods_can_use_their_own_loss_and_precision():
    """One program, two groups: softmax CE in float32 and StableMax CE in float64."""
    opt = (
        "optimizer=[{transform='optax.adamw', learning_rate=0.01, b2=0.99, eps=1e-25, "
        "weight_decay=0.0}]"
    )
    config = small(
        f"methods=[{{label='softmax32', {opt}, seeds=[0]}}, "
        f"{{label='stablemax64', loss='stablemax', loss_dtype='float64', {opt}, seeds=[0]}}]"
    )
    assert config.needs_x64
    result = run_experiment(config, progress=False)
    assert result.compilations == 1
    assert [g.loss for g in result.groups] == [("softmax", "float32"), ("stablemax", "float64")]
    assert result.history[0]["val_loss"][-1].dtype == np.float32
    assert result.history[1]["val_loss"][-1].dtype == np.float64
    state = result.final_states[1]
    with jax.enable_x64(True):
        task, _, _ = init_groups(config)
    val = np.asarray(state.val_idx[0])
    inputs, labels = _input_rows(task), np.asarray(task.labels_N)
    # float32 parameters, float64 loss: the reference casts the float32 logits up
    _, logits = _np_forward(_kernels(state.params, 0), inputs[val])
    want = _np_stablemax_ce(logits, labels[val]).mean()
    np.testing.assert_allclose(result.history[1]["val_loss"][-1][0], want, rtol=1e-5)
    with pytest.raises(Exception, match=r"methods.1.loss_dtype"):
        small(
            f"methods=[{{label='a', {opt}}}, "
            f"{{label='b', loss='stablemax', loss_dtype='float16', {opt}}}]"
        )


@pytest.mark.parametrize(
    "name",
    sorted(
        p.stem for p in (pathlib.Path(__file__).parents[1] / "experiments").glob("stability_*.toml")
    ),
)
def test_stability_experiments_run(name, tmp_path):
    """Every figure-set config compiles once and trains two steps, writing its report
    with the stability figure."""
    from grokjax.viz import write_report

    config = apply_overrides(resolve(name), ["steps=2", "eval_every=2", "checkpoint_every=0"])
    assert {"probe": "grokjax.analysis.numerical_stability"} in config.probes
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    assert result.compilations == 1 and result.steps == [2]
    write_report(tmp_path / "run")
    assert (tmp_path / "run" / "plots" / "stability.png").exists()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "stability.png" in report
    mixed = len({config.method_loss(m) for m in config.methods}) > 1
    assert ("loss per method" in report) == mixed


def test_tiny_adam_eps_in_float32_is_warned_about_and_the_hazard_is_real():
    """XLA flushes subnormals to zero: Adam's v of a 1e-19 gradient is exactly 0 and the
    step is lr·m/eps, ~1e6 times lr for eps 1e-25. The trainer warns about such configs."""
    import optax

    assert float(jax.jit(lambda x: x * x)(jnp.float32(1e-20))) == 0.0  # numpy gives 1e-40
    tx = optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-25)
    grads = jnp.array([1e-19, 1e-17], jnp.float32)
    updates, state = jax.jit(tx.update)(grads, tx.init(jnp.zeros(2)), jnp.zeros(2))
    assert float(state[0].nu[0]) == 0.0 and abs(float(updates[0])) > 1e3
    assert abs(float(updates[1])) < 0.011  # a normal v: a step of ~lr

    config = small()
    (message,) = config.precision_warnings()
    assert (
        message.startswith("methods.0.optimizer.0.eps = 1e-25") and "dtype = 'float64'" in message
    )
    with pytest.warns(RuntimeWarning, match="XLA flushes subnormals to zero"):
        run_experiment(config, progress=False)
    assert small("dtype='float64'").precision_warnings() == []
    assert small("methods.0.optimizer.0.eps=1.1e-19").precision_warnings() == []
    assert small("methods.0.optimizer.0.eps=1e-19").precision_warnings() != []
