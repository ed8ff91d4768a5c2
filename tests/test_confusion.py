"""The confusion_matrix probe against numpy, and its figures from a run directory."""

from __future__ import annotations

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
from test_stability import small  # (a + b) mod 11, a small MLP: runs in seconds

from grokjax.analysis import ProbeContext, confusion_counts, confusion_matrix
from grokjax.data.task import IGNORE
from grokjax.errors import ConfigError
from grokjax.train import run_experiment
from grokjax.viz import plot_confusion, plot_confusion_steps, write_confusion_figures, write_report


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def np_confusion(predicted: np.ndarray, labels: np.ndarray, C: int) -> np.ndarray:
    """sklearn's convention in numpy: counts[true, predicted]."""
    counts = np.zeros((C, C), np.int64)
    np.add.at(counts, (labels.ravel(), predicted.ravel()), 1)
    return counts


def _ctx(params, x, y) -> ProbeContext:
    """A member's context whose model is a linear map ``x @ W``."""
    return ProbeContext(
        params=params,
        opt_state=None,
        logits_fn=lambda w, v: v @ w,
        loss_fn=None,
        normalizer="softmax",
        loss_dtype="float32",
        train=(x, y),
        val=(x, y),
    )


@pytest.mark.parametrize("C", [1, 2, 7])  # 1: a single logit, binary (logit > 0)
def test_probe_matches_numpy_vmapped_over_members(C, rng):
    """Three members, each its own weights: the jitted, vmapped probe gives numpy's
    matrix per member; rows sum to the class supports and all to the validation size."""
    M, N, F = 3, 200, 5
    x = rng.standard_normal((N, F)).astype(np.float32)
    classes = max(C, 2)
    y = rng.integers(0, classes, N).astype(np.int32)
    W = rng.standard_normal((M, F, C)).astype(np.float32)

    probe = jax.jit(jax.vmap(lambda w: confusion_matrix(_ctx(w, jnp.asarray(x), jnp.asarray(y)))))
    got = probe(jnp.asarray(W))

    logits = np.einsum("nf,mfc->mnc", x, W)
    predicted = (logits[..., 0] > 0).astype(np.int64) if C == 1 else logits.argmax(-1)
    want = {"confusion": np.stack([np_confusion(p, y, classes) for p in predicted])}
    assert got["confusion"].dtype == jnp.int32 and got["confusion"].shape == (M, classes, classes)
    chex.assert_trees_all_close(got, want)
    counts = np.asarray(got["confusion"])
    np.testing.assert_array_equal(counts.sum(axis=(1, 2)), N)
    np.testing.assert_array_equal(
        counts.sum(axis=2), np.broadcast_to(np.bincount(y, minlength=classes), (M, classes))
    )


def test_ignored_labels_masked_rows_and_sequences(rng):
    """Sequence logits (N, T, C): IGNORE positions and masked rows are not counted."""
    N, T, C = 6, 4, 3
    logits = rng.standard_normal((N, T, C)).astype(np.float32)
    labels = rng.integers(0, C, (N, T)).astype(np.int32)
    labels[:, :2] = IGNORE  # a span task grades only the answer positions
    weights = (np.arange(N) < 4).astype(np.float32)[:, None] * np.ones((N, T), np.float32)
    got = jax.jit(confusion_counts)(logits, labels, weights)
    keep = (labels >= 0) & (weights > 0)
    want = np_confusion(logits.argmax(-1)[keep], labels[keep], C)
    chex.assert_trees_all_close({"counts": got}, {"counts": want})
    assert int(got.sum()) == 4 * 2


def test_probe_refuses_regression_labels_and_a_vocabulary():
    x = jnp.ones((4, 2))
    with pytest.raises(ConfigError, match="integer class labels"):
        confusion_matrix(_ctx(jnp.ones((2, 1)), x, jnp.zeros(4, jnp.float32)))
    with pytest.raises(ConfigError, match="max_classes=3"):
        confusion_matrix(_ctx(jnp.ones((2, 5)), x, jnp.zeros(4, jnp.int32)), max_classes=3)
    with pytest.raises(AssertionError, match="labels must have the shape"):
        confusion_counts(jnp.ones((4, 3)), jnp.zeros(5, jnp.int32))


# ----------------------------------------------------------------------------------
# figures from a hand-built run directory

STEPS = [0, 100, 200, 300, 400, 500]
C = 3


def _counts(e: int, g: int, m: int) -> np.ndarray:
    """A planted (C, C) matrix: more on the diagonal as training goes on."""
    base = np.full((C, C), 1 + g + m, np.int32)
    base[np.diag_indices(C)] += 3 * e
    base[2] = 0  # class 2 has no validation row: its normalised row stays 0
    return base


def _build(root: pathlib.Path) -> pathlib.Path:
    run = root / "run"
    (run / "analysis").mkdir(parents=True)
    methods = {"adamw": [0, 1], "grokfast": [5, 6]}
    config = {
        "name": "synthetic_confusion",
        "steps": 500,
        "train_threshold": 0.99,
        "val_threshold": 0.95,
        "data": {"kind": "modular", "op": "x+y", "p": C},
        "methods": [{"label": k, "seeds": v} for k, v in methods.items()],
        "probes": [{"probe": "grokjax.analysis.confusion_matrix"}],
    }
    (run / "config.json").write_text(json.dumps(config))
    rows = []
    for e, step in enumerate(STEPS):
        for g, (label, seeds) in enumerate(methods.items()):
            for m, seed in enumerate(seeds):
                # adamw's members cross 0.95 at steps 200 and 400 (median 300); grokfast never
                grok = (200, 400)[m] if g == 0 else None
                val = 0.97 if grok is not None and step >= grok else 0.1
                row = {"step": step, "method": label, "group": g, "member": m, "seed": seed}
                row |= {"train_loss": 0.1, "train_acc": 1.0, "val_loss": 1.0, "val_acc": val}
                rows.append(row)
        arrays = {
            f"{label}/confusion": np.stack([_counts(e, g, m) for m in range(2)])
            for g, label in enumerate(methods)
        }
        np.savez(run / "analysis" / f"step_{step:08d}.npz", **arrays)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_final_panel_is_the_members_sum_normalised_per_true_class(tmp_path):
    run = _build(tmp_path)
    fig = plot_confusion(run)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 2  # one panel per method
    for g, ax in enumerate(axes):
        summed = _counts(5, g, 0) + _counts(5, g, 1)
        shares = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(shares[:2].sum(axis=1), 1.0)
        np.testing.assert_allclose(shares[2], 0.0)
        np.testing.assert_allclose(shares[:2], summed[:2] / summed[:2].sum(1, keepdims=True))
        assert {t.get_text() for t in ax.texts} == {str(int(v)) for v in summed.ravel()}
        assert "step 500" in ax.get_title() and "sum of 2 members" in ax.get_title()


def test_steps_default_to_first_median_grokking_and_last(tmp_path):
    run = _build(tmp_path)
    fig = plot_confusion_steps(run)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.images]
    assert titles == [
        "adamw: step 0, sum of 2 members",
        "adamw: step 300, sum of 2 members",  # median of 200 and 400
        "adamw: step 500, sum of 2 members",
        "grokfast: step 0, sum of 2 members",  # never grokked: first and last only
        "grokfast: step 500, sum of 2 members",
    ]
    chosen = plot_confusion_steps(run, steps=[150, 1000])  # the evaluation at/after each
    titles = [ax.get_title().split("\n")[0] for ax in chosen.axes if ax.images]
    assert [t.split(",")[0] for t in titles] == [
        "adamw: step 200",
        "adamw: step 500",
        "grokfast: step 200",
        "grokfast: step 500",
    ]
    paths = write_confusion_figures(run)
    assert [p.name for p in paths] == ["confusion.png", "confusion_steps.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_ticks_are_the_data_kinds_class_names(tmp_path):
    run = _build(tmp_path)
    assert [t.get_text() for t in plot_confusion(run).axes[0].get_yticklabels()] == ["0", "1", "2"]
    named = plot_confusion(run, class_names=["a", "b", "c"])
    assert [t.get_text() for t in named.axes[0].get_xticklabels()] == ["a", "b", "c"]
    config = json.loads((run / "config.json").read_text())
    config["data"] = {"kind": "imdb"}  # declares class_names ("negative", "positive")
    (run / "config.json").write_text(json.dumps(config))
    for path in (run / "analysis").glob("*.npz"):
        with np.load(path) as saved:
            arrays = {k: saved[k][:, :2, :2] for k in saved.files}
        np.savez(path, **arrays)
    ticks = plot_confusion(run).axes[0].get_yticklabels()
    assert [t.get_text() for t in ticks] == ["negative", "positive"]


def test_a_run_without_the_probe_gets_no_confusion_figure(tmp_path):
    run = _build(tmp_path)
    for path in (run / "analysis").glob("*.npz"):
        path.unlink()
    assert plot_confusion(run) is None and write_confusion_figures(run) == []


# ----------------------------------------------------------------------------------
# a real run


@pytest.mark.filterwarnings("ignore:methods.0.optimizer.0.eps")  # the preset's Adam eps
def test_a_run_with_the_probe_saves_counts_and_draws_them(tmp_path):
    config = small(
        "probes=[{probe='grokjax.analysis.confusion_matrix'}]", "steps=10", "member_axis='vmap'"
    )
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    num_val = int(result.final_states[0].val_idx.shape[-1])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for step in (5, 10):
        with np.load(run / "analysis" / f"step_{step:08d}.npz") as saved:
            counts = saved["adamw/confusion"]
        assert counts.shape == (2, 11, 11) and counts.dtype == np.int32
        np.testing.assert_array_equal(counts.sum(axis=(1, 2)), num_val)
        for m in range(2):  # the diagonal's share is the evaluation's accuracy
            val_acc = next(r["val_acc"] for r in rows if r["step"] == step and r["member"] == m)
            np.testing.assert_allclose(np.trace(counts[m]) / num_val, val_acc, rtol=1e-6)
    report = write_report(run).read_text()
    assert (run / "plots" / "confusion.png").exists()
    assert (run / "plots" / "confusion_steps.png").exists()
    assert "(plots/confusion.png)" in report and "(plots/confusion_steps.png)" in report
