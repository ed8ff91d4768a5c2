"""The Grokfast paper's non-algorithmic tasks: MNIST, IMDb and QM9 as tables and tasks.

Lee et al. (2024) show Grokfast beyond modular arithmetic on three data sets, each with
its own objective; each is a :class:`~grokjax.data.task.Task` subclass here:

- :class:`MSETask` (MNIST): a classifier trained with the mean squared error against
  one-hot targets, ``ℓ = (1/C) Σ_c (z_c − [c = y])²`` (``torch.nn.MSELoss`` of the
  reference); accuracy is top-1.
- :class:`BinaryTask` (IMDb): one logit ``z`` per row, the binary cross entropy
  ``ℓ = softplus(z) − y·z`` (the reference's sigmoid then ``BCELoss``, written on the
  logit so it neither overflows nor clamps); a hit is ``[z > 0] = y``.
- :class:`RegressionTask` (QM9): one output ``ŷ`` per row, ``ℓ = (ŷ − y)²``. There is
  no class to be right about: its "accuracy" is the fraction of rows within
  ``tolerance`` of the target, and its grokking detector watches the losses (a
  crossing is a loss at or *below* the threshold).
- :class:`GraphTask` (QM9) holds molecules as padded dense graphs (a dict of arrays,
  see :func:`pad_graphs`).

The tables: :func:`mnist_table` (a fixed stratified sample of ``train_size`` digits
trains, the rest validate, for every seed, as the reference's fixed ``Subset``),
:func:`imdb_table` (reviews tokenised as the reference does, split per seed with
stratification) and
:func:`qm9_table` (the first molecules, split per seed in halves).

References:
    Lee, Kang, Kim, Lee (2024). Grokfast: Accelerated Grokking by Amplifying Slow
    Gradients. arXiv:2405.20233 (and the authors' ``main_mnist.py``, ``main_imdb.py``,
    ``main_qm9.py``).
    Gilmer et al. (2017). Neural Message Passing for Quantum Chemistry. ICML.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grokjax.data.split import SplitSizes
from grokjax.data.task import Task
from grokjax.errors import ConfigError

__all__ = [
    "STOP_WORDS",
    "BinaryTask",
    "GraphTask",
    "MSETask",
    "RegressionTask",
    "SupervisedTable",
    "imdb_table",
    "mnist_table",
    "pad_graphs",
    "qm9_table",
    "stratified_split",
    "tokenize_reviews",
]


def _one_output(task: Task, logits: jax.Array) -> None:
    """A ``ConfigError`` unless ``logits`` has one column (checked when traced)."""
    if logits.shape[-1] != 1:
        raise ConfigError(
            f"model: a {type(task).__name__} reads one output per row, but the model gives "
            f"{logits.shape[-1]}: use a model kind with a single-output head ('lstm' for "
            "IMDb, 'nnconv' for QM9)."
        )


@dataclass(frozen=True)
class MSETask(Task):
    """Classification trained with the mean squared error against one-hot targets.

    ``ℓ_i = (1/C) Σ_c (z_ic − [c = y_i])²``: ``torch.nn.MSELoss()(z, onehot(y))`` is
    the batch mean of these. Accuracy is top-1, as :class:`Task`'s.

    >>> task = MSETask(jnp.zeros((1, 2)), jnp.array([1]), 1, 0, 2, 2, 2, 1, "epoch")
    >>> task.losses(jnp.array([[1.0, 0.0]]), jnp.array([1])).tolist()
    [1.0]
    """

    def losses(
        self, logits: jax.Array, labels: jax.Array, normalizer: str = "softmax", dtype="float32"
    ) -> jax.Array:
        """Per-example mean squared error to the one-hot label, in ``dtype``
        (``normalizer`` does not apply: no softmax is taken)."""
        z = logits.astype(dtype)
        target = jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)
        return jnp.mean(jnp.square(z - target), axis=-1)


@dataclass(frozen=True)
class BinaryTask(Task):
    """Binary classification from one logit per row (``logits (…, 1)``).

    ``ℓ = softplus(z) − y·z`` is ``−y log σ(z) − (1 − y) log(1 − σ(z))`` without
    forming ``σ(z)``: the reference's ``sigmoid`` + ``BCELoss`` clamps each log at
    −100, so a confidently wrong row (``|z| ≳ 17`` in float32) costs it at most 100
    and sends no gradient; here the loss and its gradient stay exact. A hit is
    ``[z > 0] = y`` (the reference's ``round(σ(z)) = y``: round-half-even sends 0.5 to
    0).

    >>> task = BinaryTask(jnp.zeros((2, 3), jnp.int32), jnp.array([1, 0]), 2, 0, 2, 4, 3,
    ...                   2, "epoch")
    >>> logits = jnp.array([[2.0], [0.0]])
    >>> [round(v, 4) for v in task.losses(logits, task.labels_N).tolist()]
    [0.1269, 0.6931]
    >>> task.hits(logits, task.labels_N).tolist()
    [True, True]
    """

    def losses(
        self, logits: jax.Array, labels: jax.Array, normalizer: str = "softmax", dtype="float32"
    ) -> jax.Array:
        """Per-example binary cross entropy of the single logit, in ``dtype``."""
        _one_output(self, logits)
        z = logits[..., 0].astype(dtype)
        return optax.sigmoid_binary_cross_entropy(z, labels.astype(z.dtype))

    def hits(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        _one_output(self, logits)
        return (logits[..., 0] > 0) == (labels > 0)


@dataclass(frozen=True)
class RegressionTask(Task):
    """Regression of one real target per row (``logits (…, 1)``, ``labels_N`` float).

    ``ℓ = (ŷ − y)²`` (``torch.nn.functional.mse_loss``); a "hit" is ``|ŷ − y| ≤
    tolerance``, so ``train_acc``/``val_acc`` are the fractions of rows within it.
    The grokking detector watches ``train_loss`` and ``val_loss`` and records the first
    evaluation at or below the run's thresholds (``watch_below``).

    >>> task = RegressionTask(jnp.zeros((2, 1)), jnp.array([1.0, 3.0]), 2, 0, 1, 1, 1, 2,
    ...                       "epoch", tolerance=0.5)
    >>> y_hat = jnp.array([[1.25], [2.0]])
    >>> task.losses(y_hat, task.labels_N).tolist(), task.hits(y_hat, task.labels_N).tolist()
    ([0.0625, 1.0], [True, False])
    """

    watch: ClassVar[tuple[str, str]] = ("train_loss", "val_loss")
    watch_below: ClassVar[bool] = True
    tolerance: float = 1.0

    def losses(
        self, logits: jax.Array, labels: jax.Array, normalizer: str = "softmax", dtype="float32"
    ) -> jax.Array:
        """Per-example squared error, in ``dtype``."""
        _one_output(self, logits)
        return jnp.square(logits[..., 0].astype(dtype) - labels.astype(dtype))

    def hits(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        _one_output(self, logits)
        return jnp.abs(logits[..., 0] - labels) <= self.tolerance


@dataclass(frozen=True)
class GraphTask(RegressionTask):
    """Regression on molecules held as padded dense graphs.

    ``inputs_N`` is a dict of arrays with a leading molecule axis (:func:`pad_graphs`):
    ``nodes (N, A, F)``, ``node_mask (N, A)``, ``edges (N, E, 2)`` (sender, receiver
    slots), ``edge_features (N, E, G)``, ``edge_mask (N, E)``; a batch of rows is the
    same dict indexed by the rows, the input of :class:`grokjax.nn.GraphRegressor`.
    """

    @property
    def node_features(self) -> int:
        return int(self.inputs_N["nodes"].shape[-1])

    @property
    def edge_features(self) -> int:
        return int(self.inputs_N["edge_features"].shape[-1])

    @property
    def input_width(self) -> int:
        return self.node_features

    def rows(self, idx: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
        return jax.tree.map(lambda a: a[idx], self.inputs_N), self.labels_N[idx]


@dataclass(frozen=True)
class SupervisedTable(SplitSizes):
    """A table of rows with labels and one seed's split: ``inputs_N`` (an array, or a
    dict of arrays with a leading row axis for graphs), ``labels_N``, ``train_idx``,
    ``val_idx``, and ``vocab`` (the input vocabulary size of token rows; else 0)."""

    inputs_N: Any
    labels_N: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    vocab: int = 0

    def inputs(self, encoding: str = "") -> Any:
        return self.inputs_N

    def vocab_size(self, encoding: str = "") -> int:
        return self.vocab


def stratified_split(
    labels_N: np.ndarray, train_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A split that keeps each class's share: ``n_train = round(train_fraction · N)``
    training rows, of which class ``c`` gets ``⌊train_fraction · n_c⌋`` plus one for the
    classes with the largest remainders (ties: lower class) until they sum to
    ``n_train``; within a class the rows are a ``default_rng(seed)`` permutation's first.
    Each side is then shuffled with the same generator. int32.

    This is what ``sklearn.model_selection.train_test_split(…, stratify=y)`` guarantees
    (the reference's IMDb split), with numpy's generator instead of sklearn's.

    >>> labels = np.array([0] * 8 + [1] * 4)
    >>> train, val = stratified_split(labels, 0.75, seed=0)
    >>> len(train), len(val), int(labels[train].sum()), int(labels[val].sum())
    (9, 3, 3, 1)
    >>> train, _ = stratified_split(np.repeat(np.arange(3), [5, 5, 5]), 0.5, seed=0)
    >>> len(train)  # round(7.5); 2.5 per class: one class gets the extra row
    8
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels_N, return_counts=True)
    shares = train_fraction * counts
    take = np.floor(shares).astype(int)
    extra = round(train_fraction * labels_N.size) - int(take.sum())
    take[np.argsort(-(shares - take), kind="stable")[:extra]] += 1
    train, val = [], []
    for c, n in zip(classes, take, strict=True):
        rows = rng.permutation(np.flatnonzero(labels_N == c))
        train.append(rows[:n])
        val.append(rows[n:])
    train_idx = rng.permutation(np.concatenate(train))
    val_idx = rng.permutation(np.concatenate(val))
    if not train_idx.size or not val_idx.size:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split.")
    return train_idx.astype(np.int32), val_idx.astype(np.int32)


def mnist_table(
    images_NP: np.ndarray,
    labels_N: np.ndarray,
    train_size: int,
    val_size: int = 0,
    sample_seed: int = 0,
) -> SupervisedTable:
    """``train_size`` images train and ``val_size`` (0: all the others) validate, the
    same for every seed (the reference trains on the fixed ``Subset(train,
    range(1000))``); pixels scaled to [0, 1] as ``ToTensor`` does.

    The training images are a :func:`stratified_split` drawn with ``sample_seed`` (a
    share ``train_size / N`` of each digit): the shipped digits are sorted by label, so
    the first ``train_size`` would hold only the first classes.

    >>> labels = np.repeat(np.arange(10), 50)
    >>> t = mnist_table(np.full((500, 784), 255, np.uint8), labels, train_size=100)
    >>> t.num_train, t.num_val, float(t.inputs_N.max()), np.bincount(labels[t.train_idx]).tolist()
    (100, 400, 1.0, [10, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    """
    n = images_NP.shape[0]
    if not 0 < train_size < n or not 0 <= val_size <= n - train_size:
        raise ValueError(
            f"train_size={train_size} and val_size={val_size} do not fit {n} images "
            "(need 0 < train_size < the images and train_size + val_size <= the images)."
        )
    train_idx, val_idx = stratified_split(np.asarray(labels_N), train_size / n, sample_seed)
    return SupervisedTable(
        inputs_N=np.asarray(images_NP, np.float32) / 255.0,
        labels_N=np.asarray(labels_N, np.int32),
        train_idx=train_idx,
        val_idx=val_idx[:val_size] if val_size else val_idx,
    )


#: The reference's stop words (NLTK's English list as the authors' script spells it).
STOP_WORDS = frozenset(
    """a about above after again against ain all am an and any are aren aren't as at be
    because been before being below between both but by can couldn couldn't d did didn
    didn't do does doesn doesn't doing don don't down during each few for from further had
    hadn hadn't has hasn hasn't have haven haven't having he her here hers herself him
    himself his how i if in into is isn isn't it it's its itself just ll m ma me mightn
    mightn't more most mustn mustn't my myself needn needn't no nor not now o of off on once
    only or other our ours ourselves out over own re s same shan shan't she she's should
    should've shouldn shouldn't so some such t than that that'll the their theirs them
    themselves then there these they this those through to too under until up ve very was
    wasn wasn't we were weren weren't what when where which while who whom why will with
    won won't wouldn wouldn't y you you'd you'll you're you've your yours yourself
    yourselves""".split()  # noqa: SIM905 (a word list reads better as text)
)
_NON_WORD, _SPACE, _DIGIT = re.compile(r"[^\w\s]"), re.compile(r"\s+"), re.compile(r"\d")


def _clean(word: str) -> str:
    # the reference's preprocess_string, applied to each whitespace-split lower-case word
    return _DIGIT.sub("", _SPACE.sub("", _NON_WORD.sub("", word)))


def _words(text: str) -> list[str]:
    return [_clean(w) for w in text.lower().split()]


def tokenize_reviews(
    texts: Sequence[str], vocab_texts: Iterable[str], vocab: int = 1000, seq_len: int = 500
) -> np.ndarray:
    """Reviews as the reference's LSTM reads them: ``(N, seq_len)`` int32 ids.

    Words are lower-cased, stripped of non-word characters, whitespace and digits; the
    ``vocab`` most frequent words of ``vocab_texts`` that are not stop words get ids
    1 … vocab (by decreasing count, ties in first-seen order) and other words are
    dropped; each review keeps its first ``seq_len`` ids, left-padded with 0.

    >>> tokenize_reviews(["The cat, the CAT!", "a dog"], ["cat cat dog"], seq_len=3).tolist()
    [[0, 1, 1], [0, 0, 2]]
    """
    counts = Counter(w for t in vocab_texts for w in _words(t) if w and w not in STOP_WORDS)
    ids = {w: i + 1 for i, w in enumerate(sorted(counts, key=counts.get, reverse=True)[:vocab])}
    out = np.zeros((len(texts), seq_len), np.int32)
    for i, text in enumerate(texts):
        review = [ids[w] for w in _words(text) if w in ids][:seq_len]
        if review:
            out[i, -len(review) :] = review
    return out


def imdb_table(
    tokens_NT: np.ndarray, labels_N: np.ndarray, train_fraction: float, seed: int, vocab: int
) -> SupervisedTable:
    """Tokenised reviews with a per-seed :func:`stratified_split`."""
    train_idx, val_idx = stratified_split(labels_N, train_fraction, seed)
    return SupervisedTable(tokens_NT, np.asarray(labels_N, np.int32), train_idx, val_idx, vocab + 1)


def pad_graphs(
    nodes: Sequence[np.ndarray],
    edges: Sequence[np.ndarray],
    edge_features: Sequence[np.ndarray],
    max_nodes: int = 0,
    max_edges: int = 0,
) -> dict[str, np.ndarray]:
    """Variable-size graphs as one padded dense batch.

    Graph ``i`` has ``nodes[i] (A_i, F)``, ``edges[i] (E_i, 2)`` (sender, receiver) and
    ``edge_features[i] (E_i, G)``; the result holds ``nodes (N, A, F)``, ``node_mask
    (N, A)``, ``edges (N, E, 2)``, ``edge_features (N, E, G)``, ``edge_mask (N, E)``
    with ``A``/``E`` the largest sizes (or ``max_nodes``/``max_edges`` when larger).
    Padded edges point at slot 0 with mask 0.

    >>> g = pad_graphs([np.ones((2, 3)), np.ones((1, 3))], [np.array([[0, 1], [1, 0]]),
    ...                np.zeros((0, 2), int)], [np.ones((2, 4)), np.zeros((0, 4))])
    >>> g["nodes"].shape, g["node_mask"].tolist(), g["edge_mask"].tolist()
    ((2, 2, 3), [[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
    """
    n = len(nodes)
    a = max(max_nodes, *(x.shape[0] for x in nodes))
    e = max(max_edges, 1, *(x.shape[0] for x in edges))
    f, g = nodes[0].shape[1], edge_features[0].shape[1]
    out = {
        "nodes": np.zeros((n, a, f), np.float32),
        "node_mask": np.zeros((n, a), np.float32),
        "edges": np.zeros((n, e, 2), np.int32),
        "edge_features": np.zeros((n, e, g), np.float32),
        "edge_mask": np.zeros((n, e), np.float32),
    }
    for i, (x, ei, ef) in enumerate(zip(nodes, edges, edge_features, strict=True)):
        out["nodes"][i, : x.shape[0]] = x
        out["node_mask"][i, : x.shape[0]] = 1
        out["edges"][i, : ei.shape[0]] = ei
        out["edge_features"][i, : ef.shape[0]] = ef
        out["edge_mask"][i, : ei.shape[0]] = 1
    return out


def qm9_table(
    graphs: dict[str, np.ndarray], targets_N: np.ndarray, train_fraction: float, seed: int
) -> SupervisedTable:
    """Padded molecules (:func:`pad_graphs`) and their targets, split at random per seed
    (the reference's ``random_split`` into halves)."""
    from grokjax.data.split import random_split

    train_idx, val_idx = random_split(targets_N.shape[0], train_fraction, seed)
    return SupervisedTable(graphs, np.asarray(targets_N, np.float32), train_idx, val_idx)
