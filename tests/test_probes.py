"""Probes: measurements added by naming a function in the config, no trainer edits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_stability import (  # (a + b) mod 11, a small MLP: runs in seconds
    _input_rows,
    _kernels,
    _np_softmax_ce_and_grad,
    small,
)

from grokjax.analysis import ProbeContext, last_step_geometry, probe_reads, reads
from grokjax.train import ConfigError, run_experiment
from grokjax.train.state import init_groups


def squared_norm_and_val_margin(ctx, scale=1.0):
    """A probe written outside grokjax: ``scale·‖w‖²`` and the mean top-1 logit margin
    on the validation split."""
    x, _ = ctx.val
    top2 = jax.lax.top_k(ctx.logits_fn(ctx.params, x), 2)[0]
    return {
        "probe/sq_norm": scale
        * sum(jnp.sum(p.astype(jnp.float32) ** 2) for p in jax.tree.leaves(ctx.params)),
        "probe/margin": jnp.mean(top2[..., 0] - top2[..., 1]),
    }


def test_a_probe_from_a_test_module_appears_in_metrics_jsonl(tmp_path):
    config = small(
        "probes=[{probe='test_probes.squared_norm_and_val_margin', scale=2.0}]", "steps=10"
    )
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 and all({"probe/sq_norm", "probe/margin"} <= r.keys() for r in rows)
    assert result.compilations == 1
    # against numpy on the final parameters of each member
    final = result.final_states[0].params
    for m in range(2):
        want = 2.0 * sum(np.sum(np.asarray(p[m], np.float64) ** 2) for p in jax.tree.leaves(final))
        got = [r for r in rows if r["member"] == m][-1]["probe/sq_norm"]
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert all(r["probe/margin"] >= 0 for r in rows)


def test_default_probes_and_an_empty_list():
    config = small("steps=5", "eval_every=5")
    assert config.probes == ({"probe": "grokjax.analysis.activation_shapes"},)
    bare = run_experiment(small("steps=5", "eval_every=5", "probes=[]"), progress=False)
    assert set(bare.history[0]) == {"train_loss", "train_acc", "val_loss", "val_acc", "finite"}


@pytest.mark.parametrize(
    "probe, message",
    [
        (
            "{probe='grokjax.analysis.no_such_probe'}",
            r"probes.0: .*has no function 'no_such_probe'",
        ),
        ("{probe='no_module_here.f'}", r"probes.0: .*cannot import 'no_module_here'"),
        (
            "{probe='test_probes.squared_norm_and_val_margin', scal=2.0}",
            r"probes.0.scal: probe .* has no keyword 'scal'; its keywords are \['scale'\]",
        ),
    ],
)
def test_bad_probes_name_the_thing(probe, message):
    with pytest.raises(ConfigError, match=message):
        small(f"probes=[{probe}]")


def leaf_norms(ctx):
    """An array-valued probe: the L2 norm of every parameter leaf, in tree order."""
    leaves = jax.tree.leaves(ctx.params)
    return {"leaf_norms": jnp.stack([jnp.linalg.norm(leaf.astype(jnp.float32)) for leaf in leaves])}


def test_array_outputs_of_a_probe_go_to_analysis_npz(tmp_path):
    config = small("probes=[{probe='test_probes.leaf_norms'}]", "steps=10")
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    files = sorted((tmp_path / "run" / "analysis").glob("step_*.npz"))
    assert [f.name for f in files] == ["step_00000005.npz", "step_00000010.npz"]
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "leaf_norms" not in rows and "leaf_norms" not in result.history[0]
    with np.load(files[-1]) as saved:
        norms = saved["adamw/leaf_norms"]  # (members, leaves)
    final = result.final_states[0].params
    want = [
        [np.linalg.norm(np.asarray(leaf[m], np.float64)) for leaf in jax.tree.leaves(final)]
        for m in range(2)
    ]
    np.testing.assert_allclose(norms, want, rtol=1e-5)


def clashing(ctx):
    return {"val_acc": jnp.zeros([]), "step": jnp.zeros([])}


def test_a_probe_may_not_overwrite_a_metric_or_a_column():
    with pytest.raises(ConfigError, match=r"probe clashing returns \['step', 'val_acc'\]"):
        run_experiment(small("probes=[{probe='test_probes.clashing'}]"), progress=False)


@reads("last_step")
def last_step_arrays(ctx):
    """The last step's gradient and update, flattened (saved to analysis/)."""
    flat = [
        jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])
        for t in (ctx.last_grads, ctx.last_updates)
    ]
    return {"last_g": flat[0], "last_u": flat[1]}


@pytest.mark.parametrize("member_axis", ["map", "vmap"])
def test_probes_read_the_last_steps_gradient_and_update(member_axis, tmp_path):
    """One full-batch SGD step: the gradient a probe sees is the float64 numpy gradient
    at the initial weights, the update is −lr·g and what the weights moved by."""
    lr = 0.5
    config = small(
        "probes=[{probe='test_probes.last_step_arrays'}, "
        "{probe='grokjax.analysis.last_step_geometry'}]",
        "steps=1",
        "eval_every=1",
        f"member_axis='{member_axis}'",
        f"methods.0.optimizer=[{{transform='optax.sgd', learning_rate={lr}}}]",
    )
    task, _, (initial,) = init_groups(config)
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    with np.load(tmp_path / "run" / "analysis" / "step_00000001.npz") as saved:
        g, u = saved["adamw/last_g"], saved["adamw/last_u"]  # (members, weights)
    final = result.final_states[0].params
    inputs, labels = _input_rows(task), np.asarray(task.labels_N)
    for m in range(2):
        rows = np.asarray(initial.train_idx[m])
        _, _, grads = _np_softmax_ce_and_grad(
            _kernels(initial.params, m), inputs[rows], labels[rows]
        )
        want = np.concatenate([x.ravel() for x in grads])
        np.testing.assert_allclose(g[m], want, rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(u[m], -lr * g[m], rtol=1e-6)
        moved = np.concatenate(
            [
                np.ravel(np.asarray(b[m], np.float64) - np.asarray(a[m], np.float64))
                for a, b in zip(
                    jax.tree.leaves(initial.params), jax.tree.leaves(final), strict=True
                )
            ]
        )
        np.testing.assert_allclose(moved, u[m], rtol=1e-5, atol=1e-7)
    # SGD moves against the gradient: cos(u, −g) = 1 and ‖u‖ = lr·‖g‖
    np.testing.assert_allclose(result.metric(0, "last_update_cos"), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        result.metric(0, "last_grad_norm")[0],
        np.linalg.norm(g.astype(np.float64), axis=1),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        result.metric(0, "last_update_norm"), lr * result.metric(0, "last_grad_norm"), rtol=1e-6
    )


def test_last_step_geometry_of_sign_descent():
    """cos(u, −g) of signSGD is ‖g‖₁ / (‖g‖₂·√n) for n non-zero entries (numpy)."""
    rng = np.random.default_rng(0)
    g = {"a": rng.normal(size=(5, 3)), "b": rng.normal(size=(7,))}
    u = jax.tree.map(lambda x: -0.01 * np.sign(x), g)
    ctx = ProbeContext(
        params=None,
        opt_state=None,
        logits_fn=None,
        loss_fn=None,
        normalizer="softmax",
        loss_dtype="float32",
        train=None,
        val=None,
        last_grads=jax.tree.map(jnp.float32, g),
        last_updates=jax.tree.map(jnp.float32, u),
    )
    out = last_step_geometry(ctx)
    flat = np.concatenate([g["a"].ravel(), g["b"]])
    want_cos = np.abs(flat).sum() / (np.linalg.norm(flat) * np.sqrt(flat.size))
    np.testing.assert_allclose(out["last_update_cos"], want_cos, rtol=1e-6)
    np.testing.assert_allclose(out["last_grad_norm"], np.linalg.norm(flat), rtol=1e-6)
    np.testing.assert_allclose(out["last_update_norm"], 0.01 * np.sqrt(flat.size), rtol=1e-6)


def test_a_probe_reading_unmeasured_step_means_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match=r"probes.0: grokjax.analysis.training_entropy reads the training steps' "
        r"\['act_entropy', .*set track_entropy = true",
    ):
        small("probes=[{probe='grokjax.analysis.training_entropy'}]")
    assert probe_reads(last_step_arrays) == {"last_step"}
    assert probe_reads(squared_norm_and_val_margin) == frozenset()
