"""Evaluations of a trained run (grokjax.evaluate), per-method model settings, and
fine-tuning from a run's parameters."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from grokjax.cli import main
from grokjax.errors import ConfigError
from grokjax.evaluate import evaluate_run
from grokjax.train import ExperimentConfig, from_dict, run_experiment

YARN = {"kind": "yarn", "factor": 2.0, "original_max_position": 112}
LONG = {
    "data.max_len": 224,
    "data.generated.min_side": 4,
    "data.generated.max_side": 4,
    "data.generated.train_tasks": 64,
}


def _config(evaluations=(), **changes):
    base = {
        "name": "arc_eval_tiny",
        "steps": 60,
        "batch_size": 16,
        "eval_every": 30,
        "stop_when_grokked": False,
        "data": {
            "kind": "arc",
            "generated": {
                "families": ["colour_permutation"],
                "train_tasks": 256,
                "val_tasks": 16,
                "min_side": 3,
                "max_side": 3,
                "shared_rule": True,
            },
            "max_len": 112,
        },
        "model": {"kind": "decoder", "depth": 1, "width": 32, "heads": 2, "positions": "rope"},
        "methods": [
            {
                "label": "rope1d",
                "seeds": [0, 1],
                "optimizer": [{"transform": "optax.adamw", "learning_rate": 3e-3}],
            },
            {
                "label": "rope2d",
                "seeds": [0],
                "model": {"positions": "rope2d"},
                "optimizer": [{"transform": "optax.adamw", "learning_rate": 3e-3}],
            },
        ],
        "probes": [{"probe": "grokjax.analysis.arc_exact_match"}],
        "evaluations": list(evaluations),
    }
    base.update(changes)
    return from_dict(ExperimentConfig, base)


EVALUATIONS = [
    {"label": "L"},
    {"label": "2L", "set": LONG},
    {"label": "2L yarn", "methods": ["rope1d"], "set": {**LONG, "model.eval_rope_scaling": YARN}},
    {"label": "2L tuned", "methods": ["rope2d"], "finetune_steps": 4, "set": LONG},
    {"label": "L, 2 attempts", "attempts": 2},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("arc_eval") / "run"
    result = run_experiment(_config(EVALUATIONS), run_dir=run_dir, progress=False)
    return run_dir, result


def test_methods_train_their_own_model_settings_in_one_program(trained):
    _, result = trained
    assert result.compilations == 1
    positions = [g.graphdef for g in result.groups]
    assert positions[0] != positions[1]
    leaves = [jax.tree.leaves(s.params) for s in result.final_states]
    assert [x.shape[0] for x in (leaves[0][0], leaves[1][0])] == [2, 1]


def test_evaluations_reproduce_the_run_and_vary_what_they_set(trained):
    run_dir, _ = trained
    rows = evaluate_run(run_dir, progress=False)
    by = {(r["evaluation"], r["method"], r["member"]): r for r in rows}
    # "L" changes nothing that matters: the run's own last validation metrics, exactly
    last = {
        (json.loads(line)["method"], json.loads(line)["member"]): json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    }
    for (method, member), row in last.items():
        mine = by[("L", method, member)]
        assert mine["val_loss"] == pytest.approx(row["val_loss"], rel=1e-6)
        assert mine["arc/generated/task_exact"] == row["arc/generated/task_exact"]
    # longer sequences give other losses; YaRN at evaluation changes the 1-D model's
    for member in (0, 1):
        plain, yarn = by[("2L", "rope1d", member)], by[("2L yarn", "rope1d", member)]
        assert plain["val_loss"] != pytest.approx(by[("L", "rope1d", member)]["val_loss"])
        assert yarn["val_loss"] != pytest.approx(plain["val_loss"], rel=1e-4)
    assert ("2L yarn", "rope2d", 0) not in by  # a 1-D-only evaluation
    # the fine-tune is a run of its own, from the trained parameters
    tuned = run_dir / "evaluations" / "2L_tuned"
    assert (tuned / "metrics.jsonl").exists() and by[("2L tuned", "rope2d", 0)][
        "finetune_steps"
    ] == 4
    # two attempts can only add solved outputs
    two = by[("L, 2 attempts", "rope1d", 0)]
    assert two["arc/generated/exact@2"] >= two["arc/generated/exact@1"]
    assert 0 <= two["arc/generated/task_exact@2"] <= 1
    report = (run_dir / "report.md").read_text()
    assert "## Evaluations" in report and "| 2L yarn | rope1d | 0 |" in report


def test_evaluate_command_runs_one_evaluation_and_names_unknown_ones(trained, capsys):
    run_dir, _ = trained
    assert main(["evaluate", str(run_dir), "--only", "2L", "--no-progress"]) == 0
    assert "evaluation row(s)" in capsys.readouterr().out
    labels = {json.loads(line)["evaluation"] for line in (run_dir / "evaluations.jsonl").open()}
    assert "2L" in labels
    assert main(["evaluate", str(run_dir), "--only", "9L"]) == 2
    assert "9L" in capsys.readouterr().err


def test_fine_tuning_starts_from_the_given_parameters(trained):
    _, result = trained
    config = _config(
        steps=2,
        eval_every=2,
        methods=[
            {
                "label": "rope1d",
                "seeds": [0, 1],
                "optimizer": [{"transform": "optax.sgd", "learning_rate": 0.0}],
            },
        ],
    )
    tuned = run_experiment(config, progress=False, start_params=[result.final_states[0].params])
    for a, b in zip(
        jax.tree.leaves(tuned.final_states[0].params),
        jax.tree.leaves(result.final_states[0].params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ConfigError, match="do not fit"):
        run_experiment(config, progress=False, start_params=[result.final_states[1].params])


@pytest.mark.parametrize(
    "evaluation, match",
    [
        ({"label": "x", "methods": ["adam"]}, "evaluations.0.methods.0"),
        ({"label": "x", "set": {"data.generated.max_sid": 4}}, "evaluations.0.set"),
        ({"label": "x", "set": {"model.eval_rope_scaling": YARN}}, "positions = 'rope'"),
        ({"label": "x", "attempts": 3}, "evaluations.0.attempts"),
    ],
)
def test_bad_evaluations_name_the_key(evaluation, match):
    with pytest.raises(ConfigError, match=match):
        _config([evaluation])


def test_a_method_cannot_change_the_model_kind():
    methods = [
        {
            "label": "a",
            "model": {"kind": "mlp"},
            "optimizer": [{"transform": "optax.sgd", "learning_rate": 0.1}],
        }
    ]
    with pytest.raises(ConfigError, match=r"methods\.0\.model\.kind"):
        _config(methods=methods)
