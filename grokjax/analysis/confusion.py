r"""Confusion matrices of a classifier on its validation rows, as a probe.

:func:`confusion_counts` is the pure function (logits and integer labels to a
``(C, C)`` count matrix); :func:`confusion_matrix` is the probe the trainer runs at every
evaluation, named in an experiment's ``probes``::

    probes = [{ probe = "grokjax.analysis.confusion_matrix" }]

It saves one int32 matrix per member and evaluation, ``<method>/confusion`` in the run's
``analysis/step_<step>.npz`` (shape ``(members, C, C)``), and
:func:`grokjax.viz.confusion.write_confusion_figures` draws them at the end of the run.

Convention (scikit-learn's ``confusion_matrix``): row ``i`` is the true class, column
``j`` the predicted class, so :math:`M_{ij} = \#\{n : y_n = i,\ \hat y_n = j\}`; the
diagonal holds the hits, row sums the class supports and column sums the predictions.

References:
  Stehman 1997, "Selecting and interpreting measures of thematic classification
  accuracy", Remote Sensing of Environment 62(1) (the error matrix).
  scikit-learn, ``sklearn.metrics.confusion_matrix`` (the row = truth, column =
  prediction convention):
  https://scikit-learn.org/stable/modules/generated/sklearn.metrics.confusion_matrix.html
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from grokjax.analysis.probes import ProbeContext
from grokjax.errors import ConfigError

__all__ = ["MAX_CLASSES", "confusion_counts", "confusion_matrix", "predicted_classes"]

# The probe refuses wider outputs: a language model's vocabulary would make a matrix of
# V² counts per member and evaluation (50k tokens: 10 GB).
MAX_CLASSES = 1024


def predicted_classes(logits: ArrayLike) -> tuple[jax.Array, int]:
    r"""``(ŷ, C)``: the predicted class of every row of ``logits`` ``(..., K)`` and the
    number of classes.

    For ``K >= 2`` columns, :math:`\hat y = \arg\max_k \text{logits}_k` (top-1, the first
    maximum on ties, as :meth:`grokjax.data.task.Task.hits`) and ``C = K``. A single
    column is a binary classifier's logit (sigmoid / binary cross entropy):
    :math:`\hat y = [\text{logit} > 0]` and ``C = 2``.

    >>> y_hat, C = predicted_classes(jnp.array([[0.3], [-1.0], [0.0]]))
    >>> y_hat.tolist(), C
    ([1, 0, 0], 2)
    """
    logits = jnp.asarray(logits)
    if logits.ndim == 0:
        raise ValueError("logits must be (..., K) with a class axis, got a scalar.")
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).astype(jnp.int32), 2
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits.shape[-1]


def confusion_counts(
    logits: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None
) -> jax.Array:
    r"""The ``(C, C)`` int32 confusion matrix of ``logits`` ``(..., K)`` against integer
    ``labels`` ``(...)``.

    With :math:`\hat y_n` the predicted class of row ``n`` (:func:`predicted_classes`:
    argmax over ``K >= 2`` columns, ``logit > 0`` for a single column, ``C = 2``),

    .. math::

        M_{ij} = \sum_n w_n\,[y_n = i]\,[\hat y_n = j],\qquad i, j = 0 … C−1,

    rows the true class, columns the predicted one, :math:`w_n ∈ \{0, 1\}` the
    ``weights`` (a mask of the real rows, e.g. of a padded batch; all ones when
    ``None``). Labels outside ``0 … C−1`` (e.g. the :data:`~grokjax.data.task.IGNORE`
    positions of a span task) are not counted, so
    :math:`\sum_{ij} M_{ij} = \#\{n : w_n = 1,\ 0 \le y_n < C\}`. Leading axes of
    ``labels`` (rows, sequence positions) are flattened. Pure ``jnp`` (a scatter-add of
    ``C²`` bins), so it traces under ``jit`` and ``vmap``.

    >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 2.0]])
    >>> print(confusion_counts(logits, jnp.array([0, 1, 2, 2])))
    [[1 0 0]
     [0 1 0]
     [0 1 1]]

    References:
      Stehman 1997, "Selecting and interpreting measures of thematic classification
      accuracy" (the error matrix); scikit-learn's ``confusion_matrix`` (the
      convention: rows true, columns predicted).
    """
    labels = jnp.asarray(labels)
    predicted, C = predicted_classes(logits)
    chex.assert_equal_shape(
        [predicted, labels],
        custom_message="labels must have the shape of logits without the class axis",
    )
    keep = (labels >= 0) & (labels < C)
    if weights is not None:
        weights = jnp.asarray(weights)
        chex.assert_equal_shape(
            [weights, labels], custom_message="weights must be shaped as labels"
        )
        keep = keep & (weights > 0)
    labels, predicted, keep = labels.astype(jnp.int32).ravel(), predicted.ravel(), keep.ravel()
    cell = jnp.where(keep, labels * C + predicted, C * C)  # C·C: out of range, dropped
    counts = jnp.zeros((C * C,), jnp.int32).at[cell].add(1, mode="drop")
    return counts.reshape(C, C)


def confusion_matrix(ctx: ProbeContext, max_classes: int = MAX_CLASSES) -> dict[str, jax.Array]:
    r"""Probe: ``confusion``, the member's ``(C, C)`` int32 confusion matrix on its
    validation rows (:func:`confusion_counts`: rows true class, columns predicted).

    The logits are the model's in evaluation mode on ``ctx.val`` (every validation row
    of the member: the split has a fixed size, no padding), so the counts sum to the
    number of validation rows (of answer positions, for a task that grades sequences)
    and the diagonal's share is the evaluation's top-1 accuracy. An array output: it
    goes to ``analysis/step_<step>.npz`` as ``<method>/confusion``, ``(members, C, C)``.

    A task with real-valued labels (regression) is a
    :class:`~grokjax.errors.ConfigError`. ``max_classes`` guards against a task whose
    outputs are a vocabulary (``C²`` counts per member and evaluation): wider logits are
    a :class:`~grokjax.errors.ConfigError` when the program is traced.

    >>> import grokjax as gj
    >>> ctx = gj.analysis.ProbeContext(
    ...     params=None, opt_state=None, logits_fn=lambda params, x: x, loss_fn=None,
    ...     normalizer="softmax", loss_dtype="float32", train=None,
    ...     val=(jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), jnp.array([0, 0, 1])))
    >>> print(confusion_matrix(ctx)["confusion"])
    [[1 1]
     [1 0]]

    References:
      Stehman 1997, "Selecting and interpreting measures of thematic classification
      accuracy"; scikit-learn's ``confusion_matrix`` (the convention).
    """
    x, y = ctx.val
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ConfigError(
            f"probe confusion_matrix needs integer class labels; this task's are {y.dtype} "
            "(a regression task has no classes to confuse)."
        )
    logits = ctx.logits_fn(ctx.params, x)
    width = 2 if logits.shape[-1] == 1 else logits.shape[-1]
    if width > max_classes:
        raise ConfigError(
            f"probe confusion_matrix: the logits have {width} classes, more than "
            f"max_classes={max_classes} (a {width}×{width} matrix per member and "
            "evaluation); raise max_classes if that is meant."
        )
    return {"confusion": confusion_counts(logits, y)}
