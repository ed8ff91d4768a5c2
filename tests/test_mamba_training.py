"""The Mamba-SWELU experiment in the trainer: LM windows, model variants per method,
k trajectories, the token budget and the report."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import nnx

from grokjax.nn import ActivationShape
from grokjax.train import ConfigError, apply_overrides, resolve, run_experiment
from grokjax.train.state import init_groups
from grokjax.viz.report import write_report

TINY = [
    "data.max_tokens=30000",
    "data.seq_len=32",
    "data.val_windows=8",
    "model.width=16",
    "batch_size=8",
    "eval_every=25",
    "tokens_per_param=0",
    "unroll=1",
    "steps=75",
    "methods.0.optimizer.0.learning_rate=2e-3",
    "methods.1.optimizer.0.learning_rate=2e-3",
    "methods.2.optimizer.0.learning_rate=2e-3",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_experiment(
        apply_overrides(resolve("mamba-swelu"), TINY),
        run_dir=tmp_path_factory.mktemp("runs") / "mamba",
        progress=False,
    )


def test_activations_train_side_by_side_in_one_program(run):
    """SiLU, SWELU and swish_k members (2 seeds each) share one compiled program; the
    byte-level loss starts near ln 257 and falls; SiLU has no k, the others log one per
    activation site (2 sites × 2 layers) and learn it away from its initial 1."""
    assert run.compilations == 1 and [g.size for g in run.groups] == [2, 2, 2]
    for g in range(3):
        loss = run.metric(g, "train_loss")
        assert np.all(loss[0] < 1.05 * math.log(257)) and np.all(loss[-1] < 0.8 * loss[0])
        assert np.all(np.isfinite(run.metric(g, "val_loss")))
    assert not [k for k in run.history[0] if k.startswith("k/")]
    for g in (1, 2):
        sites = sorted(k for k in run.history[g] if k.startswith("k/"))
        assert sites == [f"k/blocks/{i}/{s}_act" for i in (0, 1) for s in ("conv", "gate")]
        final = np.stack([run.metric(g, k)[-1] for k in sites])
        assert np.all(final > 0) and np.all(final != 1.0)


def test_same_seed_starts_from_the_same_non_activation_weights():
    """The trainer's initial parameters (nothing trained): a seed gives every activation
    variant the same weights apart from the activations' own ``log_k`` leaves, and the
    two seeds give different random weights (so a shared key would fail here)."""
    _, groups, states = init_groups(apply_overrides(resolve("mamba-swelu"), TINY))
    assert [g.method.activation for g in groups] == ["silu", "swelu", "swish_k"]
    assert all([seed for seed, _ in g.members] == [0, 1] for g in groups)
    weights = []  # per method: path -> (members, ...) array of the non-activation weights
    for g, state in enumerate(states):
        flat = list(nnx.to_flat_state(state.params))
        shapes = [path for path, v in flat if isinstance(v, ActivationShape)]
        assert len(shapes) == (0 if g == 0 else 4)  # log_k at 2 sites × 2 layers; none for SiLU
        weights.append(
            {path: np.asarray(v[...]) for path, v in flat if not isinstance(v, ActivationShape)}
        )
    silu = weights[0]
    for other in weights[1:]:
        assert other.keys() == silu.keys()
        for path, x in silu.items():
            np.testing.assert_array_equal(other[path], x, err_msg=str(path))
    random = [path for path in silu if path[-1] in ("kernel", "embedding")]
    assert len(random) == 11  # 5 projections × 2 layers and the embedding
    for path in random:
        assert not np.array_equal(silu[path][0], silu[path][1]), path


def test_report_compares_convergence_and_draws_k(run):
    text = write_report(run.run_dir).read_text()
    assert "## Language-model convergence" in text and "relative to silu" in text
    assert "| swelu | " in text.split("a quarter, half")[1]  # the convergence-levels table
    # next-token accuracy has no grokking threshold: no grokking table or figure
    assert "## Results" not in text and "steps_to_grok" not in text
    assert "swelu: final k blocks/0/conv_act" in text
    assert (run.run_dir / "plots" / "activation_shapes.png").exists()


@pytest.mark.slow
def test_token_budget_sets_the_steps():
    cfg = apply_overrides(resolve("mamba-swelu"), [*TINY, "tokens_per_param=2", "steps=1"])
    cfg = cfg.__class__(**{**cfg.__dict__, "methods": cfg.methods[:1]})
    r = run_experiment(cfg, progress=False)
    params = sum(x[0].size for x in jax.tree.leaves(r.final_states[0].params))
    assert r.config.steps == math.ceil(2 * params / (8 * 32))
    assert r.steps[-1] >= r.config.steps


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampling=epoch", "sampling"),
        ("model.kind=decoder", "model.kind"),
        ("methods.1.activation=gelu", "methods.1.activation"),
        ("data.tokenizer=sentencepiece", "data.tokenizer"),
        ("model.d_state=12", "model.d_state"),
    ],
)
def test_bad_lm_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        apply_overrides(resolve("mamba-swelu"), [override])


@pytest.mark.slow
def test_cli_report_states_tokens_per_second(tmp_path, capsys):
    from grokjax import cli

    overrides = [x for o in [*TINY, "steps=10", "eval_every=10"] for x in ("--set", o)]
    assert (
        cli.main(["run", "mamba-swelu", *overrides, "--runs-dir", str(tmp_path), "--no-progress"])
        == 0
    )
    report = next(tmp_path.glob("*/report.md")).read_text()
    assert "15,360 training tokens over 6 members" in report and "tokens/s" in report


DATA_PARALLEL_SCRIPT = """
import jax, numpy as np
from grokjax.train import apply_overrides, resolve, run_experiment
assert len(jax.devices()) == 4, jax.devices()
cfg = apply_overrides(resolve("mamba-swelu"), {overrides!r})
single = run_experiment(cfg, progress=False, devices=jax.devices()[:1])
split = run_experiment(apply_overrides(cfg, ["data_parallel=4"]), progress=False)
for g in range(len(cfg.methods)):
    for k in ("train_loss", "val_loss"):
        np.testing.assert_allclose(split.metric(g, k), single.metric(g, k), rtol=1e-5)
print("DATA_PARALLEL_OK", split.compilations)
"""


@pytest.mark.slow
def test_the_lm_trains_data_parallel_as_on_one_device():
    """One Mamba member per method, its batch split over 4 (fake CPU) devices: the same
    losses as on one device."""
    import os
    import subprocess
    import sys

    overrides = [*TINY, "steps=20", "eval_every=10", *(f"methods.{i}.seeds=[0]" for i in range(3))]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL_SCRIPT.format(overrides=overrides)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DATA_PARALLEL_OK 1" in proc.stdout
