"""The MNIST, IMDb and QM9 experiments through the engine: the data kinds' tables, tiny
runs of each, and Grokfast ahead of the baseline on MNIST at equal steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grokjax.data.kinds import ImdbData, MnistData, Qm9Data
from grokjax.data.supervised import BinaryTask, GraphTask, MSETask
from grokjax.train import run_experiment
from grokjax.train.experiments import resolve
from grokjax.train.loading import apply_overrides


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One TFDS data directory for the module: each set builds once, from the shipped
    sources (never the user's ~/tensorflow_datasets)."""
    return str(tmp_path_factory.mktemp("tfds"))


def test_mnist_kind_trains_on_a_fixed_stratified_sample(data_dir):
    task, splits = MnistData(data_dir=data_dir, val_size=1000).build(
        200, "epoch", "float32", [0, 3]
    )
    assert isinstance(task, MSETask) and task.input_width == 784 and task.num_classes == 10
    labels = np.asarray(task.labels_N)
    for split in splits.values():  # the same sample for every seed
        assert np.bincount(labels[split.train_idx]).tolist() == [100] * 10
        assert len(split.val_idx) == 1000
        assert not set(split.train_idx) & set(split.val_idx)
    np.testing.assert_array_equal(splits[0].train_idx, splits[3].train_idx)
    assert float(task.inputs_N.min()) >= 0.0 and float(task.inputs_N.max()) == 1.0


def test_imdb_kind_samples_balanced_reviews_and_counts_words_elsewhere(data_dir, monkeypatch):
    import grokjax.data.supervised as supervised

    seen = {}
    tokenize = supervised.tokenize_reviews

    def spy(texts, vocab_texts, vocab, seq_len):
        seen["sample"], seen["vocab"] = list(texts), list(vocab_texts)
        return tokenize(seen["sample"], seen["vocab"], vocab, seq_len)

    monkeypatch.setattr(supervised, "tokenize_reviews", spy)
    kind = ImdbData(data_dir=data_dir, num_reviews=200, vocab_reviews=400, seq_len=50)
    task, splits = kind.build(50, "epoch", "float32", [0, 1])
    assert isinstance(task, BinaryTask) and task.inputs_N.shape == (200, 50)
    assert task.vocab_size == 1001 and int(task.inputs_N.max()) <= 1000
    labels = np.asarray(task.labels_N)
    assert np.bincount(labels).tolist() == [100, 100]
    for split in splits.values():  # 75/25, each label's share kept
        assert np.bincount(labels[split.train_idx]).tolist() == [75, 75]
        assert np.bincount(labels[split.val_idx]).tolist() == [25, 25]
    assert set(splits[0].train_idx) != set(splits[1].train_idx)
    # the vocabulary is counted on other reviews than the sampled ones
    assert len(seen["vocab"]) == 400 and not set(seen["vocab"]) & set(seen["sample"])


def test_qm9_kind_pads_molecules_into_a_graph_task(data_dir):
    task, splits = Qm9Data(data_dir=data_dir, num_molecules=20).build(8, "epoch", "float32", [0])
    assert isinstance(task, GraphTask) and (task.node_features, task.edge_features) == (11, 4)
    graphs = task.inputs_N
    atoms = np.asarray(graphs["node_mask"]).sum(1)
    assert atoms[0] == 5  # methane, hydrogens included
    assert np.asarray(graphs["edge_mask"]).sum(1)[0] == 8  # 4 bonds, both directions
    assert splits[0].num_train == splits[0].num_val == 10
    assert float(task.labels_N[0]) == pytest.approx(13.21)  # methane's α, bohr³


def _tiny(name: str, data_dir: str, *overrides: str):
    return apply_overrides(resolve(name), [f"data.data_dir={data_dir}", *overrides])


@pytest.mark.parametrize(
    "name, overrides",
    [
        (
            "grokfast_imdb",
            ["data.num_reviews=40", "data.vocab_reviews=80", "data.seq_len=12", "model.hidden=8"],
        ),
        ("grokfast_qm9", ["data.num_molecules=16", "batch_size=4", "model.widths=[8, 4]"]),
    ],
)
def test_tiny_runs_train_and_report(name, overrides, data_dir, tmp_path):
    config = _tiny(name, data_dir, *overrides, "steps=20", "eval_every=10")
    config = apply_overrides(config, ["methods.0.seeds=[0]", "methods.1.seeds=[0]"])
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    assert result.compilations == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {r["step"] for r in rows} == {10, 20}
    assert all(np.isfinite(r["val_loss"]) for r in rows)
    from grokjax.viz.report import write_report

    report = write_report(tmp_path / "run").read_text()
    assert "## The paper's metrics" in report
    if name == "grokfast_imdb":  # a classifier: the confusion matrices are drawn
        assert (tmp_path / "run" / "plots" / "confusion.png").exists()


@pytest.mark.slow  # trains to an accuracy; CI's slow part runs it
def test_tiny_mnist_run_shows_grokfast_ahead_of_the_baseline(data_dir, tmp_path):
    """The paper's MNIST recipe (×8 init, MSE, wd 0.01 vs Grokfast-EMA with wd 2.0) on
    1,000 training digits: at equal steps Grokfast-EMA's validation accuracy is far
    ahead (the baseline is still memorising)."""
    config = _tiny(
        "grokfast_mnist",
        data_dir,
        "steps=1000",
        "eval_every=500",
        "data.val_size=1000",
        "methods.0.seeds=[0, 1]",
        "methods.1.seeds=[0, 1]",
    )
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    base, ema = (np.asarray(h["val_acc"][-1]) for h in result.history)
    assert np.all(ema > 0.5) and np.all(base < 0.3), (base, ema)
    # the baseline fits its training digits well before it generalises
    assert np.all(np.asarray(result.history[0]["train_acc"][-1]) > base + 0.2)


def test_a_catalog_mnist_with_image_tensors_reads_as_784_pixel_rows(monkeypatch):
    """A prepared catalog set (``tfds:mnist``) holds (N, 28, 28, 1) images."""
    import grokjax.data.kinds as kinds

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 5)
    monkeypatch.setattr(kinds, "_load", lambda source, data_dir: {"image": images, "label": labels})
    task, splits = MnistData(source="tfds:mnist", train_size=20).build(10, "epoch", "float32", [0])
    assert task.inputs_N.shape == (50, 784)
    np.testing.assert_allclose(task.inputs_N[7], images[7].reshape(-1) / 255.0, rtol=1e-6)
    assert np.bincount(labels[splits[0].train_idx]).tolist() == [2] * 10
