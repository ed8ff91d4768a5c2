"""Probes: measurements added by naming a function in the config, no trainer edits."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_stability import small  # (a + b) mod 11, a small MLP: runs in seconds

from grokjax.train import ConfigError, run_experiment


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
