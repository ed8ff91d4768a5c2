"""The trainer: vmapped members, sharding, resume, NaN stops, one compilation, configs."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_MODULAR

from grokjax.train import (
    ConfigError,
    ExperimentConfig,
    TrainingDiverged,
    apply_overrides,
    from_dict,
    load_toml,
    resolve,
    resume_experiment,
    run_experiment,
    select_methods,
    to_dict,
)

# A tiny decoder on x+y mod 11: every run here takes seconds.
TINY = [*TINY_MODULAR, "evals_per_sync=3"]


def tiny(*overrides: str, preset: str = "grokfast_modmul"):
    return apply_overrides(resolve(preset), [*TINY, *overrides])


def params_of(result, g):
    return jax.tree.map(np.asarray, result.final_states[g].params)


def test_runs_all_methods_in_one_compiled_program(tmp_path):
    result = run_experiment(tiny("steps=40"), run_dir=tmp_path / "run", progress=False)
    assert result.compilations == 1
    assert [g.method.label for g in result.groups] == ["baseline", "grokfast_ema", "grokfast_ma"]
    interval = result.steps[0]
    assert interval == -(-60 // 16)  # one epoch: 60 of the 121 pairs are training rows
    assert result.steps[-1] >= 40 and result.steps[-1] - 40 < interval
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(rows) == len(result.steps) * 6  # 3 methods x 2 seeds
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "seed", "method"} <= rows[0].keys()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["p"] == 11 and config["steps"] == 40
    grok = json.loads((tmp_path / "run" / "grokking.json").read_text())
    assert len(grok) == 6 and {"memorised", "generalised", "delay"} <= grok[0].keys()


MLP_TINY = [
    "data.p=11",
    "model.hidden=[16, 16]",
    "batch_size=48",
    "steps=30",
    "eval_every=5",
    "evals_per_sync=3",
]


def test_vmapped_members_equal_separately_trained_ones():
    # Decoder: metrics. Its parameters are not compared: entries whose exact gradient
    # is zero (the attention key bias: softmax ignores a constant added to a row of
    # scores) carry only rounding noise, which Adam turns into ±lr·sign steps, and the
    # rounding differs between a batch of 3 members and of 1.
    def ema(*overrides):  # the Grokfast-EMA group alone (its filter state is per member)
        return select_methods(tiny("steps=30", *overrides), ["grokfast_ema"])

    together = run_experiment(ema("methods.1.seeds=[0, 1, 2]"), progress=False)
    alone = run_experiment(ema("methods.1.seeds=[1]"), progress=False)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        np.testing.assert_allclose(
            together.metric(0, key)[:, 1], alone.metric(0, key)[:, 0], rtol=2e-5, atol=1e-6
        )
    # MLP (⊥AdamW and AdamW): metrics and every parameter.
    together = run_experiment(
        apply_overrides(resolve("orthograd_quick"), [*MLP_TINY, "methods.1.seeds=[0, 1, 2]"]),
        progress=False,
    )
    alone = run_experiment(
        apply_overrides(resolve("orthograd_quick"), [*MLP_TINY, "methods.1.seeds=[1]"]),
        progress=False,
    )
    np.testing.assert_allclose(
        together.metric(1, "val_loss")[:, 1], alone.metric(1, "val_loss")[:, 0], rtol=1e-5
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a[1], b[0], rtol=1e-5, atol=1e-6),
        params_of(together, 1),
        params_of(alone, 1),
    )


def test_swept_hyperparameters_reach_their_members():
    result = run_experiment(
        tiny(
            "steps=8",
            "methods=[{label='ema', seeds=[0], sweep={'optimizer.0.lamb'=[0.0, 5.0]}, "
            "optimizer=[{transform='grokjax.grokfast_ema'}, "
            "{transform='optax.adam', learning_rate=1e-3}]}]",
        ),
        progress=False,
    )
    lambs = np.asarray(result.final_states[0].opt_state.hyperparams["optimizer_0_lamb"])
    np.testing.assert_array_equal(lambs, [0.0, 5.0])
    assert result.groups[0].member_name(1) == "ema[member 1: seed 0, optimizer.0.lamb=5]"
    assert not np.allclose(
        result.metric(0, "train_loss")[:, 0], result.metric(0, "train_loss")[:, 1]
    )


def test_resume_continues_bit_for_bit(tmp_path):
    def config(*overrides):  # Grokfast-MA: the largest optimizer state
        return select_methods(tiny(*overrides), ["grokfast_ma"])

    uninterrupted = run_experiment(config("steps=40"), progress=False)
    run_dir = tmp_path / "run"
    run_experiment(config("steps=20", "checkpoint_every=8"), run_dir=run_dir, progress=False)
    resumed = resume_experiment(run_dir, steps=40, progress=False)
    assert resumed.steps == uninterrupted.steps
    for key in ("train_loss", "val_loss", "val_acc"):
        np.testing.assert_array_equal(resumed.metric(0, key), uninterrupted.metric(0, key))
    jax.tree.map(np.testing.assert_array_equal, params_of(resumed, 0), params_of(uninterrupted, 0))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)  # no duplicated tail
    assert len(rows) == 2 * len(uninterrupted.steps)  # 2 members
    assert json.loads((run_dir / "config.json").read_text())["steps"] == 40


def test_a_nan_member_stops_the_run_naming_member_and_step(tmp_path):
    config = tiny(
        "steps=60",
        "methods=[{label='adam', seeds=[3], sweep={'optimizer.0.learning_rate'=[1e-3, 1e30]}, "
        "optimizer=[{transform='optax.adam', learning_rate=1e-3}]}]",
    )
    with pytest.raises(
        TrainingDiverged,
        match=r"adam\[member 1: seed 3, optimizer.0.learning_rate=1e\+30\].*step \d+",
    ):
        run_experiment(config, run_dir=tmp_path / "run", progress=False)
    # what was written before the divergence is kept
    assert (tmp_path / "run" / "config.json").exists()
    assert (tmp_path / "run" / "grokking.json").exists()


def test_bad_configs_name_the_key_and_the_allowed_values(tmp_path):
    with pytest.raises(
        ConfigError, match=r"data.op = 'x\^y' is not allowed; choose one of \['x\+y'"
    ):
        tiny("data.op=x^y")
    with pytest.raises(ConfigError, match=r"unknown key 'widht'; allowed keys: \[.*'width'"):
        tiny("model.widht=3")
    with pytest.raises(
        ConfigError, match=r"methods.1.optimizer.0.filter: grokjax.grokfast_ema has no keyword"
    ):
        tiny("methods.1.optimizer.0.filter=fir")
    with pytest.raises(ConfigError, match=r"model.width = 30: must be divisible by heads \(4\)"):
        tiny("model.width=30", "model.heads=4")
    with pytest.raises(ConfigError, match=r"steps = 'many': must be an integer"):
        tiny("steps=many")
    with pytest.raises(ConfigError, match="expected key=value"):
        tiny("steps")
    with pytest.raises(ConfigError, match=r"batch_size = True: must be an integer"):
        tiny("batch_size=true")  # a bool is not an integer (Python says it is)
    with pytest.raises(
        ConfigError, match=r"methods.0.seeds = \[0, 'a'\]: must be a list of integers"
    ):
        tiny("methods.0.seeds=[0, 'a']")
    with pytest.raises(ConfigError, match=r"methods.1: missing required key 'label'"):
        from_dict(
            ExperimentConfig,
            {
                **to_dict(tiny()),
                "methods": [
                    to_dict(tiny().methods[0]),
                    {"optimizer": [{"transform": "optax.sgd", "learning_rate": 0.1}]},
                ],
            },
        )
    loaded = tiny("model.rope_base=100", "methods.0.seeds=[4, 5]")
    assert loaded.model.rope_base == 100.0 and type(loaded.model.rope_base) is float
    assert loaded.methods[0].seeds == (4, 5)  # lists become tuples: configs hash
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        resolve("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "x"\n[[methods]]\nlabel = "a"\nseeds = [0]\n'
        'optimizer = [{ transform = "optax.adam", lr = 0.1 }]\n'
    )
    with pytest.raises(
        ConfigError, match=r"bad.toml: methods.0.optimizer.0.lr: optax.adam has no keyword 'lr'"
    ):
        load_toml(str(bad))


def test_every_experiment_file_is_a_valid_config():
    files = sorted((pathlib.Path(__file__).parents[1] / "experiments").glob("*.toml"))
    assert files, "experiments/ has no configs"
    for path in files:
        assert load_toml(str(path)).name == path.stem


SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from grokjax.train import apply_overrides, resolve, run_experiment
    assert len(jax.devices()) == 8, jax.devices()
    # grokfast_ma: 8 members with the largest state; grokfast_ema: 3 members, padded to 8
    cfg = apply_overrides(resolve("grokfast_modmul"), {overrides!r})
    sharded = run_experiment(cfg, progress=False)
    single = run_experiment(cfg, progress=False, devices=jax.devices()[:1])
    for g, members in ((1, 3), (2, 8)):
        leaf = jax.tree.leaves(sharded.final_states[g].params)[0]
        assert leaf.shape[0] == members, leaf.shape  # the padding is dropped
        for k in ("train_loss", "val_loss", "val_acc"):
            a, b = sharded.metric(g, k), single.metric(g, k)
            assert a.shape == (2, members), a.shape
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # data_parallel = 4: a (2 members × 4 data) mesh; each member's batch over 4 devices
    dp = run_experiment(apply_overrides(cfg, ["data_parallel=4"]), progress=False)
    for g, members in ((1, 3), (2, 8)):
        for k in ("train_loss", "val_loss", "val_acc"):
            np.testing.assert_allclose(dp.metric(g, k), single.metric(g, k), rtol=1e-5, atol=1e-6)
    # the compiler reduces the gradients across the data axis (and only then)

    from grokjax.train.mesh import batch_sharding, group_shardings, member_mesh, pad_members
    from grokjax.train.state import init_groups
    from grokjax.train.step import make_interval_fn, task_data
    task, groups, states = init_groups(cfg)
    for data, reductions in ((1, 0), (4, 1)):
        mesh = member_mesh(jax.devices(), data)
        st = [pad_members(s, g.size, 8) for s, g in zip(states, groups)]
        sh = [group_shardings(s, 8, mesh) for s in st]
        fn = make_interval_fn(groups, task, 2, "vmap", batch_sharding=batch_sharding(mesh))
        lowered = jax.jit(fn, in_shardings=(sh, None, None)).lower(st, np.int32(0), task_data(task))
        found = lowered.compile().as_text().count("all-reduce(")
        assert (found > 0) == (reductions > 0), (data, found)
    print("SHARDED_OK", sharded.compilations, single.compilations, dp.compilations)
    """
)


@pytest.mark.slow  # 85 s in a subprocess of 8 CPU devices; gates in CI's slow part
def test_sharded_over_eight_devices_equals_one_device():
    """Members over 8 devices compute what one device computes, a group of 3 members
    (padded with copies to 8) included, and so does a (members 2 × data 4) mesh."""
    overrides = [
        *TINY,
        "steps=20",
        "eval_every=10",
        "methods.2.seeds=[0,1,2,3,4,5,6,7]",
        "methods.1.seeds=[0,1,2]",
        "methods.0.seeds=[0]",
    ]
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT.format(overrides=overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED_OK 1 1 1" in proc.stdout


def test_member_axis_map_equals_vmap():
    """lax.map over members (CPU default) and vmap compute the same training."""

    def config(axis):  # the Grokfast-MA filter: the largest state
        return select_methods(tiny("steps=12", f"member_axis={axis}"), ["grokfast_ma"])

    runs = {axis: run_experiment(config(axis), progress=False) for axis in ("map", "vmap")}
    for key in ("train_loss", "val_loss", "val_acc"):
        np.testing.assert_allclose(
            runs["map"].metric(0, key), runs["vmap"].metric(0, key), rtol=2e-5, atol=1e-6
        )
    assert runs["map"].compilations == runs["vmap"].compilations == 1


@pytest.mark.parametrize("interval", [1, 4, 7, 9])
def test_interval_shuffles_give_the_per_step_batches(interval):
    """Shuffles computed once per interval give the rows a per-step shuffle gives."""
    from grokjax.train.state import init_groups

    task, _, states = init_groups(tiny("batch_size=25"))  # 60 rows: 3 steps per epoch
    assert task.steps_per_epoch == 3
    key, train_idx = states[0].key[0], states[0].train_idx[0]
    spans = task.epochs_spanned(interval)
    for start in range(0, 12):
        first = start // 3
        perms = task.epoch_permutations(key, jnp.int32(first), spans)
        for step in range(start, start + interval):
            want_rows, want_mask = task.batch_rows(key, jnp.int32(step), train_idx)
            rows, mask = task.batch_rows(key, jnp.int32(step), train_idx, perms, first)
            np.testing.assert_array_equal(rows, want_rows)
            np.testing.assert_array_equal(mask, want_mask)
    # every row once per epoch, the last batch padded and masked
    epoch = [task.batch_rows(key, jnp.int32(s), train_idx) for s in range(3)]
    real = np.concatenate([np.asarray(r)[np.asarray(m) > 0] for r, m in epoch])
    assert sorted(real.tolist()) == sorted(np.asarray(train_idx).tolist())


def test_decoder_dropout_masks_training_steps_only():
    """``model.dropout``: the trainer's step gradient uses masks (it differs from the
    unmasked one, repeats for the same member key and step, changes with the step), and
    evaluation is unmasked (equal to the same group's without dropout)."""
    import dataclasses

    from grokjax.train.state import init_groups
    from grokjax.train.step import _member_eval, _member_grads

    config = select_methods(tiny("model.dropout=0.5"), ["baseline"])
    task, groups, states = init_groups(config)
    assert groups[0].dropout
    first = jax.tree.map(lambda x: x[0], states[0])
    member = (first.params, first.key, first.train_idx, None, first.input_noise)
    variant = {d: dataclasses.replace(groups[0], dropout=d) for d in (True, False)}

    @functools.partial(jax.jit, static_argnums=0)
    def member_grads(dropout, step):
        group = variant[dropout]
        return _member_grads(group, task, member, step)[0]

    def grads(dropout, step=3):
        return jax.tree.leaves(member_grads(dropout, jnp.int32(step)))

    masked, unmasked = grads(True), grads(False)
    assert not all(np.allclose(a, b) for a, b in zip(masked, unmasked, strict=True))
    for a, b in zip(masked, grads(True), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.allclose(a, b) for a, b in zip(masked, grads(True, 4), strict=True))
    evals = {d: _member_eval(g, task, (), first) for d, g in variant.items()}
    np.testing.assert_array_equal(evals[True]["val_loss"], evals[False]["val_loss"])
    with pytest.raises(ConfigError, match=r"model: unknown key 'dropout'"):
        tiny("model.kind=mlp", "model.dropout=0.1")
