"""A task: the data set on the device, how a batch is drawn, and the objective.

Every data kind (:mod:`grokjax.data.kinds`) builds a :class:`Task`; the trainer reads
data only through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from grokjax.errors import check
from grokjax.losses import cross_entropy_with_integer_labels

__all__ = ["IGNORE", "SpanTask", "Task", "check_curriculum", "table_task"]

IGNORE = -1  # a SpanTask label outside the answer span


def check_curriculum(path: str, stages: tuple[tuple[int, float], ...]) -> None:
    """A ``ConfigError`` naming ``path`` unless ``stages`` are ``(end_epoch, threshold)``
    pairs with increasing positive end epochs and thresholds in (0, 1] (see
    :meth:`Task.admitted`)."""
    ends = [end for end, _ in stages]
    check(
        path,
        all(e > 0 for e in ends) and ends == sorted(set(ends)),
        "stages [end_epoch, threshold] with increasing positive end epochs",
        stages,
    )
    for i, (_, threshold) in enumerate(stages):
        check(f"{path}.{i}", 0 < threshold <= 1, "a threshold in (0, 1]", threshold)


def _trailing(v: jax.Array, ndim: int) -> jax.Array:
    """``v`` (1-D) with leading unit axes up to ``ndim``: an explicit broadcast along the
    last axis."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


@dataclass(frozen=True)
class Task:
    """The whole data set on the device, plus the static facts the step needs.

    It also owns the objective: :meth:`losses` (per example or position) and
    :meth:`hits` (which predictions are right; accuracy is their mean), and
    :attr:`watch`, the metrics the grokking detector compares with its train and
    validation thresholds. A task with another objective (exact match on a span,
    regression) overrides them; the trainer only calls them.
    """

    watch: ClassVar[tuple[str, str]] = ("train_acc", "val_acc")
    watch_below: ClassVar[bool] = False  # True: a crossing is a watched metric <= threshold

    # (N, T) int32 tokens, (N, F) float vectors, or (N, K) int32 one-hot slot ids (the
    # operands x, y of modular "onehot"; the bytes of a window)
    inputs_N: jax.Array
    labels_N: jax.Array  # (N,) int32
    num_train: int
    num_val: int
    num_classes: int
    vocab_size: int
    seq_len: int
    batch_size: int
    sampling: str
    # > 0: row slots are ids in [0, onehot_vocab), the model input their concatenated
    # one-hot rows (modular "onehot" operands, byte windows), given to the model as the
    # positions of the ones (the MLP gathers weight rows); see encode and dense
    onehot_vocab: int = 0
    dtype: str = "float32"  # the model's input dtype for vector inputs
    window: int = 0  # > 0: a token stream; row i is the window inputs_N[i : i + window + 1]
    # what the data kind states about its rows, for probes (e.g. a modular table's op, p)
    facts: Mapping[str, Any] = field(default_factory=dict)
    # each row's difficulty in [0, 1], for curricula (see admitted); None: not defined
    difficulty_N: jax.Array | None = None
    # streamed training (see open_feed): how to open the host stream of training batches;
    # None: batches are drawn from the table (batch_rows)
    stream: Any = None
    # the interval's streamed batches (interval, B, window + 1) int32, passed into the
    # compiled interval with the data argument; batch s − start_step trains step s
    batches_IBT: jax.Array | None = None

    def rows(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Model inputs and labels of rows ``idx``: table rows, or for a token stream the
        windows starting at ``idx`` (inputs ``(…, window)``, next-token labels)."""
        if self.window:
            positions = idx[..., None] + _trailing(jnp.arange(self.window), idx.ndim + 1)
            return self.inputs_N[positions], self.inputs_N[positions + 1]
        return self.encode(self.inputs_N[idx]), self.labels_N[idx]

    def encode(self, inputs: jax.Array) -> jax.Array:
        """A batch of rows as the model reads them.

        For one-hot slots, slot ``k``'s id ``i`` becomes position ``k·V + i`` of the
        flattened one-hot row (``V = onehot_vocab``): int32 ``(…, K)``, which
        :class:`grokjax.nn.MLP` reads as that row; :meth:`dense` writes it out.
        """
        if not self.onehot_vocab:
            return inputs
        offsets = self.onehot_vocab * jnp.arange(inputs.shape[-1], dtype=inputs.dtype)
        return inputs + _trailing(offsets, inputs.ndim)

    def dense(self, x: jax.Array) -> jax.Array:
        """Encoded rows as dense vectors ``(…, input_width)`` in the model's dtype (the
        one-hot rows written out; other inputs unchanged)."""
        if not self.onehot_vocab:
            return x
        ids = x - _trailing(self.onehot_vocab * jnp.arange(x.shape[-1], dtype=x.dtype), x.ndim)
        onehot = jax.nn.one_hot(ids, self.onehot_vocab, dtype=jnp.dtype(self.dtype))
        return onehot.reshape(*x.shape[:-1], -1)

    def losses(
        self, logits: jax.Array, labels: jax.Array, normalizer: str = "softmax", dtype="float32"
    ) -> jax.Array:
        """Per-example (per-position) cross entropy with ``normalizer`` (softmax or
        StableMax), computed in ``dtype`` (the precision Softmax Collapse is in)."""
        return cross_entropy_with_integer_labels(logits, labels, normalizer=normalizer, dtype=dtype)

    def hits(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Which predictions are right, shaped like ``labels`` (top-1)."""
        return jnp.argmax(logits, -1) == labels

    @property
    def answer(self) -> str:
        """Which logits the objective reads: ``"last"`` (one answer per row, at the last
        position: a model may compute only that position) or ``"sequence"`` (labels
        at every position, as a token stream's)."""
        return "sequence" if self.window else "last"

    @property
    def streamed(self) -> bool:
        """Whether training batches come from a host stream (one array per interval)
        rather than from rows of the table."""
        return self.stream is not None

    def open_feed(
        self,
        interval: int,
        state: Mapping[str, Any] | None = None,
        put: Callable[[np.ndarray], Any] | None = None,
    ) -> Any:
        """The streamed task's :class:`~grokjax.data.stream.IntervalFeed`: per interval,
        ``(batches_IBT, stream_state)`` with the stream at ``state`` (a checkpoint's) or
        its start, the arrays placed by ``put`` on a background thread."""
        from grokjax.data.stream import IntervalFeed

        return IntervalFeed(self.stream.open(None if state is None else dict(state)), interval, put)

    def stream_rows(self, batch: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Inputs, next-token labels and an all-ones mask of one streamed ``(B, window +
        1)`` batch: ``batch[:, :-1]``, ``batch[:, 1:]``."""
        return batch[:, :-1], batch[:, 1:], jnp.ones(batch.shape[:1], jnp.float32)

    @property
    def input_width(self) -> int:
        """Width of a vector input row as the model reads it (after :meth:`encode`)."""
        return self.inputs_N.shape[1] * (self.onehot_vocab or 1)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_train // self.batch_size)

    # --- how a batch is drawn -----------------------------------------------------
    # Batches depend on the member's key and the step alone, so training is
    # deterministic and resumes bit for bit:
    # - "epoch": every epoch is a fresh permutation of the member's training rows, cut
    #   into batches of batch_size with a smaller last batch (as torch.split does); the
    #   padded tail is masked out of loss and accuracy.
    # - "iid": every batch is batch_size rows drawn with replacement.

    def admitted(
        self, rows: jax.Array, epoch: jax.Array, curriculum: tuple[tuple[int, float], ...] = ()
    ) -> jax.Array:
        """Float mask of ``rows`` a ``curriculum`` admits in ``epoch`` (all ones without
        one). Its stages ``((end_epoch, threshold), …)`` have increasing end epochs; a
        row is admitted when its difficulty ≤ the threshold of the first stage whose end
        epoch is after ``epoch`` (1 after the last).

        >>> task = Task(jnp.zeros((3, 1), jnp.int32), jnp.zeros(3, jnp.int32), 3, 0, 2, 2,
        ...             1, 3, "epoch", difficulty_N=jnp.array([0.0, 0.5, 1.0]))
        >>> stages = ((10, 0.3), (20, 0.6))
        >>> [task.admitted(jnp.arange(3), jnp.asarray(e), stages).tolist() for e in (0, 10, 20)]
        [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
        """
        if not curriculum:
            return jnp.ones(rows.shape, jnp.float32)
        ends = jnp.asarray([end for end, _ in curriculum])
        thresholds = jnp.asarray([t for _, t in curriculum] + [1.0], jnp.float32)
        threshold = thresholds[jnp.sum(epoch >= ends)]
        return (self.difficulty_N[rows] <= threshold).astype(jnp.float32)

    def epochs_spanned(self, interval: int) -> int:
        """Most epochs that ``interval`` consecutive steps can touch, wherever they start."""
        return -(-(interval - 1) // self.steps_per_epoch) + 1

    def epoch_permutations(self, key: jax.Array, first_epoch: jax.Array, count: int) -> jax.Array:
        """``(count, num_train)``: the member's shuffles of epochs ``first_epoch …``.

        Epoch ``e``'s order is ``permutation(fold_in(key, e), num_train)``, the same
        whichever interval computes it.
        """
        epochs = first_epoch + jnp.arange(count)
        shuffle = lambda e: jax.random.permutation(jax.random.fold_in(key, e), self.num_train)  # noqa: E731
        return jax.vmap(shuffle)(epochs)

    def batch_rows(
        self,
        key: jax.Array,
        step: jax.Array,
        train_idx: jax.Array,
        perms: jax.Array | None = None,
        first_epoch: jax.Array | None = None,
        curriculum: tuple[tuple[int, float], ...] = (),
    ) -> tuple[jax.Array, jax.Array]:
        """Rows of the table for ``step`` and a float mask of the real (non-padding) ones
        that ``curriculum`` admits (:meth:`admitted`).

        For ``sampling="epoch"``, ``perms``/``first_epoch`` (from
        :meth:`epoch_permutations`) reuse shuffles computed once per interval instead of
        once per step; the rows are the same either way.

        ``train_idx`` may end in ``-1`` padding (a member with fewer training rows than
        ``num_train``: a swept train fraction). ``"iid"`` then draws from the real rows
        only; ``"epoch"`` permutes all ``num_train`` slots and masks the padding, so an
        epoch still visits each real row once (in batches with fewer real rows).
        """
        b, n = self.batch_size, self.num_train
        spe = self.steps_per_epoch
        epoch, pos = step // spe, step % spe
        if self.sampling == "iid":
            real = jnp.sum(train_idx >= 0)  # n unless padded
            local = jax.random.randint(jax.random.fold_in(key, step), (b,), 0, real)
            return train_idx[local], self.admitted(train_idx[local], epoch, curriculum)
        if perms is None:
            perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        else:
            perm = lax.dynamic_index_in_dim(perms, epoch - first_epoch, keepdims=False)
        perm = jnp.pad(perm, (0, spe * b - n))
        local = lax.dynamic_slice(perm, (pos * b,), (b,))
        rows = train_idx[local]
        mask = ((pos * b + jnp.arange(b)) < n) & (rows >= 0)
        rows = jnp.maximum(rows, 0)  # padding: any real row, masked out
        return rows, mask.astype(jnp.float32) * self.admitted(rows, epoch, curriculum)


def table_task(
    make_split: Callable[[int], Any],
    seeds: list[int],
    encoding: str,
    num_classes: int,
    batch_size: int,
    sampling: str,
    dtype: str,
    *,
    cast: bool = False,
    onehot_vocab: int = 0,
    inputs: Callable[[Any], np.ndarray] | None = None,
    task_class: type[Task] | None = None,
    real_labels: bool = False,
    **task_fields: Any,
) -> tuple[Task, dict[int, Any]]:
    """The Task of a table data set (rows of inputs and labels, split per seed into
    training and validation rows) and every seed's split (``make_split(seed)``).

    ``inputs(table)`` overrides ``table.inputs(encoding)`` (an array, or a dict of
    arrays with a leading row axis); ``cast`` puts vector inputs in the model's dtype;
    ``onehot_vocab`` > 0 marks rows of one-hot slot ids. ``task_class`` (a
    :class:`Task` subclass with another objective) and its own ``task_fields`` make the
    task; labels are int32, or float32 with ``real_labels`` (regression)."""
    splits = {s: make_split(s) for s in sorted(set(seeds))}
    table = next(iter(splits.values()))
    inputs = table.inputs(encoding) if inputs is None else inputs(table)
    if cast:
        inputs = inputs.astype(jnp.dtype(dtype))
    vocab_size = table.vocab_size(encoding)
    task = (task_class or Task)(
        inputs_N=jax.tree.map(jnp.asarray, inputs),
        labels_N=jnp.asarray(table.labels_N, jnp.float32 if real_labels else jnp.int32),
        num_train=table.num_train,
        num_val=table.num_val,
        num_classes=num_classes,
        vocab_size=vocab_size,
        seq_len=jax.tree.leaves(inputs)[0].shape[1],
        batch_size=batch_size,
        sampling=sampling,
        onehot_vocab=onehot_vocab,
        dtype=dtype,
        **task_fields,
    )
    return task, splits


@dataclass(frozen=True)
class SpanTask(Task):
    """Rows are sequences whose answer is a span of positions, graded as a whole.

    ``inputs_N`` is ``(N, T)`` tokens or ``(N, T, C)`` tokens with per-token channels
    (an ARC sequence's token, row, column and grid index); ``labels_N`` is ``(N, T)``:
    the next token where it belongs to the answer, :data:`IGNORE` elsewhere. With
    ``ℓ_t`` the cross entropy at position ``t`` and ``S`` the row's answer positions:

        loss = (1/|S|) Σ_{t∈S} ℓ_t          hit = ∏_{t∈S} [argmax logits_t = label_t]

    so accuracy is exact match of the whole answer. With teacher forcing, every
    answer token being the argmax is the same event as greedy decoding producing the
    answer exactly (the first wrong token would be the first greedy mistake).

    >>> task = SpanTask(jnp.zeros((1, 3), jnp.int32), jnp.array([[IGNORE, 1, 0]]),
    ...                 1, 0, 2, 2, 3, 1, "epoch")
    >>> logits = jnp.array([[[9.0, 0.0], [0.0, 9.0], [0.0, 9.0]]])
    >>> task.hits(logits, task.labels_N).tolist(), task.answer
    ([False], 'sequence')
    """

    @property
    def answer(self) -> str:
        return "sequence"

    def losses(
        self, logits: jax.Array, labels: jax.Array, normalizer: str = "softmax", dtype="float32"
    ) -> jax.Array:
        """Per-row mean cross entropy over the answer positions, ``(B,)``."""
        inside = labels != IGNORE
        per_token = cross_entropy_with_integer_labels(
            logits, jnp.where(inside, labels, 0), normalizer=normalizer, dtype=dtype
        )
        per_token = jnp.where(inside, per_token, 0)
        return jnp.sum(per_token, -1) / jnp.maximum(jnp.sum(inside, -1), 1)

    def hits(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Whether every answer token is the argmax, ``(B,)``."""
        right = (jnp.argmax(logits, -1) == labels) | (labels == IGNORE)
        return jnp.all(right, -1)
