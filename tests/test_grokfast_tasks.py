"""The Grokfast paper's MNIST, IMDb and QM9 objectives, splits and tokenisation, each
against a straightforward numpy reference."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.data.supervised import (
    BinaryTask,
    GraphTask,
    MSETask,
    RegressionTask,
    pad_graphs,
    stratified_split,
    tokenize_reviews,
)
from grokjax.errors import ConfigError
from grokjax.train.detect import GrokDetector


def _task(cls, inputs, labels, **kw):
    n = labels.shape[0]
    return cls(inputs, labels, n, 0, 10, 1, 1, n, "epoch", **kw)


def test_mse_task_is_the_mean_squared_error_to_one_hot_targets():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(16, 10)) * 8
    y = rng.integers(0, 10, 16)
    want = np.mean((z - np.eye(10)[y]) ** 2, axis=1)
    task = _task(MSETask, jnp.zeros((16, 3)), jnp.asarray(y))
    got = task.losses(jnp.asarray(z, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    hits = task.hits(jnp.asarray(z, jnp.float32), jnp.asarray(y))
    np.testing.assert_array_equal(hits, np.argmax(z, 1) == y)


def test_binary_task_is_exact_binary_cross_entropy_even_where_sigmoid_saturates():
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(size=30) * 5, [-60.0, 60.0, 0.0]])
    y = np.concatenate([rng.integers(0, 2, 30), [1, 0, 1]])
    # float64 reference: −y log σ(z) − (1 − y) log(1 − σ(z)), in the stable log form
    want = np.logaddexp(0, z) - y * z
    task = _task(BinaryTask, jnp.zeros((33, 3), jnp.int32), jnp.asarray(y))
    logits = jnp.asarray(z, jnp.float32)[:, None]
    got = task.losses(logits, jnp.asarray(y))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # the gradient is σ(z) − y: 1 for a confidently wrong row (the reference's clamped
    # BCELoss would send 0 there)
    grad = jax.grad(lambda lg: jnp.sum(task.losses(lg, jnp.asarray(y))))(logits)[:, 0]
    np.testing.assert_allclose(grad, 1 / (1 + np.exp(-z)) - y, atol=1e-6)
    assert float(grad[-3]) == pytest.approx(-1.0) and float(grad[-2]) == pytest.approx(1.0)
    np.testing.assert_array_equal(task.hits(logits, jnp.asarray(y)), (z > 0) == (y == 1))


def test_regression_task_squared_error_and_within_tolerance_hits():
    rng = np.random.default_rng(2)
    y_hat, y = rng.normal(size=20) * 3, rng.normal(size=20) * 3
    task = _task(RegressionTask, jnp.zeros((20, 1)), jnp.asarray(y, jnp.float32), tolerance=0.7)
    pred = jnp.asarray(y_hat, jnp.float32)[:, None]
    np.testing.assert_allclose(task.losses(pred, task.labels_N), (y_hat - y) ** 2, rtol=1e-5)
    want = np.abs(y_hat - y) <= 0.7
    np.testing.assert_array_equal(task.hits(pred, task.labels_N), want)
    assert task.watch == ("train_loss", "val_loss") and task.watch_below


def test_graph_task_rows_index_every_graph_array():
    rng = np.random.default_rng(3)
    sizes = [3, 5, 2]
    graphs = pad_graphs(
        [rng.normal(size=(a, 11)) for a in sizes],
        [np.stack([np.arange(a), np.roll(np.arange(a), 1)], 1) for a in sizes],
        [np.eye(4)[rng.integers(0, 4, a)] for a in sizes],
    )
    task = _task(GraphTask, jax.tree.map(jnp.asarray, graphs), jnp.arange(3.0))
    x, y = task.rows(jnp.array([2, 0]))
    assert x["nodes"].shape == (2, 5, 11) and x["edges"].shape == (2, 5, 2)
    np.testing.assert_array_equal(x["node_mask"][0], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(x["nodes"][1], graphs["nodes"][0])
    np.testing.assert_array_equal(y, [2.0, 0.0])
    assert (task.node_features, task.edge_features) == (11, 4)


def test_stratified_split_keeps_each_label_share_and_varies_with_the_seed():
    labels = np.repeat([0, 1], [500, 500])
    train, val = stratified_split(labels, 0.75, seed=4)
    assert (len(train), len(val)) == (750, 250)
    assert np.bincount(labels[train]).tolist() == [375, 375]
    assert np.bincount(labels[val]).tolist() == [125, 125]
    assert sorted([*train, *val]) == list(range(1000))
    again, _ = stratified_split(labels, 0.75, seed=4)
    other, _ = stratified_split(labels, 0.75, seed=5)
    np.testing.assert_array_equal(train, again)
    assert set(train) != set(other)


def test_tokenizer_follows_the_reference_preprocessing():
    vocab_texts = ["Film film FILM! plot, plot 1990s acting", "the acting is fine"]
    # counts (stop words and empty words dropped): film 3, plot 2, acting 2, s 0 (the
    # digits of "1990s" go, leaving the stop word "s"), fine 1; ties keep first-seen order
    texts = ["A film's plot... 42 acting!", "unknown words only", "plot " * 10]
    got = tokenize_reviews(texts, vocab_texts, vocab=3, seq_len=4)
    # "film's" -> "films" (not in the vocabulary); "42" -> "" (dropped)
    assert got.tolist() == [[0, 0, 2, 3], [0, 0, 0, 0], [2, 2, 2, 2]]
    assert got.dtype == np.int32


def test_detector_on_losses_records_the_first_evaluation_at_or_below_the_threshold():
    det = GrokDetector([2], 0.5, 0.1, ("train_loss", "val_loss"), below=True)
    for step, (tr, va) in enumerate([([3.0, 1.0], [5.0, 2.0]), ([0.5, 0.2], [0.3, 0.1])]):
        det.update(step + 1, [{"train_loss": np.array(tr), "val_loss": np.array(va)}])
    assert det.member(0, 0) == {"memorised": 2, "generalised": None, "delay": None}
    assert det.member(0, 1) == {"memorised": 2, "generalised": 2, "delay": 0}


def test_thresholds_are_losses_for_regression_data_and_accuracies_otherwise():
    from grokjax.train.experiments import resolve
    from grokjax.train.loading import apply_overrides

    mnist = resolve("grokfast_mnist")
    with pytest.raises(ConfigError, match="val_threshold"):
        apply_overrides(mnist, ["val_threshold=2.0"])
    qm9 = apply_overrides(resolve("grokfast_qm9"), ["val_threshold=2.0"])
    assert qm9.val_threshold == 2.0
    with pytest.raises(ConfigError, match="val_threshold"):
        apply_overrides(resolve("grokfast_qm9"), ["val_threshold=0"])


def test_imdb_chain_clips_the_gradient_before_the_filter_sees_it():
    """The reference clips the global norm to 5.0, then filters: the EMA state holds
    clipped gradients, and the update is Adam's of the clipped-then-amplified ones."""
    from grokjax.optim.grokfast import GrokfastEmaState
    from grokjax.train.experiments import resolve

    for name in ("grokfast_imdb", "grokfast_imdb_paper"):
        method = next(m for m in resolve(name).methods if m.label == "grokfast_ema")
        tx = method.build_optimizer()()
        params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
        grads = {"w": jnp.array([30.0, -40.0, 0.0]), "b": jnp.array([0.0, 120.0])}  # norm 130
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        (mu,) = [
            s.mu
            for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, GrokfastEmaState))
            if isinstance(s, GrokfastEmaState)
        ]
        clipped = jax.tree.map(lambda g: g * (5.0 / 130.0), grads)
        chex.assert_trees_all_close(mu, clipped, rtol=1e-6)


def test_stratified_split_sizes_add_up_for_uneven_classes():
    labels = np.repeat(np.arange(3), [7, 11, 13])  # 31 rows
    for fraction in (0.1, 0.33, 0.5, 0.9):
        train, val = stratified_split(labels, fraction, seed=0)
        assert len(train) == round(fraction * 31) and len(train) + len(val) == 31
        # each class within one row of its exact share
        share = fraction * np.bincount(labels)
        assert np.all(np.abs(np.bincount(labels[train], minlength=3) - share) < 1)


def test_single_output_objectives_refuse_a_wider_head_and_another_normalizer():
    task = _task(BinaryTask, jnp.zeros((2, 3), jnp.int32), jnp.array([0, 1]))
    with pytest.raises(ConfigError, match="one output per row, but the model gives 2"):
        task.losses(jnp.zeros((2, 2)), task.labels_N)
    from grokjax.train.experiments import resolve
    from grokjax.train.loading import apply_overrides

    for name in ("grokfast_imdb", "grokfast_qm9", "grokfast_mnist"):
        with pytest.raises(ConfigError, match="no normalizer to replace"):
            apply_overrides(resolve(name), ["loss=stablemax"])
    # MNIST with the usual classifier loss may use StableMax
    apply_overrides(resolve("grokfast_mnist"), ["data.objective=cross_entropy", "loss=stablemax"])
