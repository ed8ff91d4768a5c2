"""Decoding ARC test outputs with two attempts: width-``K`` beam search and greedy.

ARC grades a task with two attempts per test output: the task is solved when, for
every test output, one of the two submitted grids equals it exactly. Here the two
attempts are the two best sequences of a width-2 beam search, written after the test
``OUTPUT`` marker of a serialised task (:mod:`grokjax.data.arc_tokens`) until
``PAIR_END``. The teacher-forced probe (:mod:`grokjax.analysis.arc`) grades greedy
decoding in one forward pass; beam search has to generate.

**Algorithm** (:func:`beam_decode`). Row ``b`` of a batch of packed sequences has its
test ``OUTPUT`` marker at position ``s_b``; the prompt is the row up to and including
``s_b`` (later positions are overwritten while decoding, and a causal model does not
look at them before). Each of ``K`` beams holds a copy of the row, a score (the sum of
the generated tokens' log-probabilities under the model's full softmax, not
renormalised over the allowed tokens), a *stopped* flag and the grid position the next
cell would take. Step ``i = 0, 1, …, max_new − 1``:

1. run ``logits_fn`` on all ``B·K`` beam rows (a full forward over the padded length
   ``T``: there is no KV cache, so a step costs a whole forward pass — fine at CPU
   scale, ``O(max_new · T²)`` attention per row) and take the log-softmax at position
   ``s_b + i``, the last token written;
2. a live beam proposes itself extended by each allowed token ``v`` with score
   ``score + log p(v)``; a stopped beam proposes only itself, unchanged (so finished
   beams compete with live ones, as in standard beam search);
3. keep the ``K`` best of the ``K·|allowed|`` proposals (ties: the lower beam, then
   the lower token id), write each new token at position ``s_b + i + 1`` with its
   coordinates and segment, and stop a beam that wrote ``PAIR_END``.

The allowed tokens are the output vocabulary: the colours, ``ROW_END`` and
``PAIR_END`` (``constrain=True``); with ``constrain=False`` any token may be chosen and
one that cannot occur in an output grid (``INPUT``, ``OUTPUT``, ``BOS``, ``PAD``)
stops its beam as a failed attempt. Coordinates follow :func:`arc_tokens.serialize_task`:
with ``(r, c)`` the number of ``ROW_END``\\ s so far and the number of cells since the
last one, a cell or ``ROW_END`` sits at ``(r, c)`` and ``PAIR_END`` at ``(r, 0)`` (one
row below a well-formed grid); coordinates are clipped at ``MAX_GRID`` (a longer side
is no ARC grid anyway). Every generated token gets the segment of the test ``OUTPUT``
marker. Beams start as ``[prompt]`` with score 0 and ``K − 1`` empty beams at −∞, so
no hypothesis is duplicated. A row stops when all its beams have stopped, or when the
next position would be ``T`` (the row is full: its live beams stay unfinished, wrong
attempts); the loop (a ``lax.while_loop``, fixed shapes) ends after ``max_new`` steps
or once no row has a live beam.

With ``K = 1`` this is greedy decoding (:func:`greedy_decode`), and greedy decoding
reproduces the label output exactly iff every output token is the argmax under
teacher forcing (the first wrong argmax is the first greedy mistake): with
``constrain=False`` the argmax over the whole vocabulary, as the teacher-forced probe
counts it; with ``constrain=True`` the argmax over the output vocabulary (the two
differ only where the model's top token cannot occur in a grid).

:func:`attempts_exact` grades the beams against the labels, :func:`make_attempts_fn`
and :func:`task_attempts` run it all on many rows, in chunks.

Example: a position-wise table of logits that prefers ``3 3 ROW_END PAIR_END`` (a
``1 × 2`` grid of colour 3) and, second, colour 4 in the first cell:

>>> import numpy as np
>>> from grokjax.data import arc_tokens as at
>>> table = np.zeros((8, at.VOCAB_SIZE), np.float32)  # position → next-token logits
>>> for position, token in enumerate([3, 3, at.ROW_END, at.PAIR_END], start=2):
...     table[position, token] = 6.0
>>> table[2, 4] = 5.0
>>> fn = lambda params, x: jnp.broadcast_to(params, (x.shape[0], *params.shape))
>>> x = np.zeros((1, 8, 4), np.int32)  # channels token, row, col, segment
>>> x[0, :, 0] = [at.BOS, at.INPUT, at.OUTPUT, *[at.PAD] * 5]  # a made-up prompt
>>> tokens, scores, done = beam_decode(fn, jnp.asarray(table), x, jnp.array([2]), 5)
>>> tokens[0].tolist(), done[0].tolist()
([[3, 3, 10, 13, 15], [4, 3, 10, 13, 15]], [True, True])
>>> labels = np.full((1, 8), at.IGNORE, np.int32)
>>> labels[0, 2:6] = [4, 3, at.ROW_END, at.PAIR_END]
>>> [a.tolist() for a in attempts_exact(tokens, done, labels, jnp.array([2]))]
[[False], [True]]

References:
  Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547 (ARC and its
  exact-match grading).
  ARC Prize 2024/2025 rules and Kaggle evaluation: two attempts per test output; a
  task scores when every test output is matched by one of its attempts.
  Graves 2012, "Sequence Transduction with Recurrent Neural Networks",
  arXiv:1211.3711, and standard beam search (e.g. Sutskever, Vinyals & Le 2014,
  arXiv:1409.3215): keep the ``K`` best partial hypotheses by summed log-probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grokjax.data.arc import MAX_GRID, NUM_COLOURS
from grokjax.data.arc_tokens import IGNORE, PAD, PAIR_END, ROW_END, VOCAB_SIZE

__all__ = [
    "OUTPUT_TOKENS",
    "Attempts",
    "attempts_exact",
    "beam_decode",
    "greedy_decode",
    "make_attempts_fn",
    "output_starts",
    "task_attempts",
]

#: The tokens an output grid is written with: the colours, ``ROW_END``, ``PAIR_END``.
OUTPUT_TOKENS = np.array([*range(NUM_COLOURS), ROW_END, PAIR_END], np.int32)

LogitsFn = Callable[[Any, jax.Array], jax.Array]


class _Beams(NamedTuple):
    """The loop state of :func:`beam_decode` (``B`` rows, ``K`` beams)."""

    step: jax.Array  # () int32: tokens generated so far
    rows_BKT4: jax.Array  # each beam's copy of its row, generated tokens written in
    scores_BK: jax.Array  # summed log-probabilities, float32
    stopped_BK: jax.Array  # generates no more (PAIR_END, or a non-grid token)
    done_BK: jax.Array  # wrote PAIR_END
    grid_row_BK: jax.Array  # where the next cell or ROW_END goes: ROW_ENDs so far
    grid_col_BK: jax.Array  # … and cells since the last ROW_END
    tokens_BKL: jax.Array  # the generated tokens, PAD after the last


def output_starts(labels_BT: jax.Array) -> jax.Array:
    """Each row's test ``OUTPUT`` marker position: its first label that is not
    ``IGNORE`` (0 for a row without labels), int32 ``(B,)``."""
    return jnp.argmax(jnp.asarray(labels_BT) != IGNORE, axis=-1).astype(jnp.int32)


def _take_BK(a: jax.Array, parent_BK: jax.Array) -> jax.Array:
    """``a[b, parent_BK[b, k], …]``: each new beam's parent's entry."""
    index = parent_BK.reshape(parent_BK.shape + (1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, index, axis=1)


def beam_decode(
    logits_fn: LogitsFn,
    params: Any,
    x_BT4: jax.Array,
    start_B: jax.Array,
    max_new: int,
    beams: int = 2,
    *,
    constrain: bool = True,
    return_rows: bool = False,
) -> tuple[jax.Array, ...]:
    """Width-``beams`` beam search for each row's test output (module docstring).

    Args:
        logits_fn: ``(params, x (N, T, 4)) -> logits (N, T, V)`` over every position,
            e.g. a model kind's ``eval_logits_fn(graphdef, task)`` for a span task. It
            is called on ``N = B·beams`` rows, row ``b``'s beams at ``b·beams …
            b·beams + beams − 1``.
        params: the model's parameters, passed through to ``logits_fn``.
        x_BT4: packed rows (:func:`arc_tokens.pack`): int32 channels token, row, col,
            segment.
        start_B: each row's test ``OUTPUT`` position (:func:`output_starts`).
        max_new: how many tokens to generate at most (static, ``1 ≤ max_new ≤ T − 1``);
            ``T − 1 − min(start_B)`` lets every row run to its end. A beam without
            ``PAIR_END`` by then is unfinished.
        beams: the width ``K`` (static).
        constrain: allow only :data:`OUTPUT_TOKENS` (else every token; a non-grid
            token ends its beam, not done).
        return_rows: also return each beam's row with the generated tokens written in,
            ``(B, K, T, 4)``.

    Returns:
        ``(tokens_BKL, scores_BK, done_BK)`` (and ``rows_BKT4`` if ``return_rows``):
        the generated tokens (``L = max_new``, ``PAD`` after the last), the summed
        log-probabilities (float32; −∞ for an empty beam, possible only when ``beams``
        exceeds the number of distinct hypotheses), and whether the beam wrote
        ``PAIR_END``; beams sorted by score, best first.

    Traceable: wrap it in ``jax.jit`` with ``logits_fn``, ``max_new``, ``beams``,
    ``constrain`` and ``return_rows`` static.
    """
    x_BT4 = jnp.asarray(x_BT4, jnp.int32)
    B, T, channels = x_BT4.shape
    if channels != 4:
        raise ValueError(f"x_BT4 has channels token, row, col, segment; got shape {x_BT4.shape}.")
    if not 1 <= max_new <= T - 1:
        raise ValueError(f"max_new must be in [1, T − 1 = {T - 1}]; got {max_new}.")
    if beams < 1:
        raise ValueError(f"beams must be positive; got {beams}.")
    K, L = beams, max_new
    allowed_C = jnp.asarray(OUTPUT_TOKENS if constrain else np.arange(VOCAB_SIZE, dtype=np.int32))
    C = allowed_C.shape[0]
    start_B = jnp.asarray(start_B, jnp.int32)
    segment_B = jnp.take_along_axis(x_BT4[..., 3], start_B[:, None], axis=1)[:, 0]
    positions_T = jnp.arange(T, dtype=jnp.int32)

    init = _Beams(
        step=jnp.zeros((), jnp.int32),
        rows_BKT4=jnp.broadcast_to(x_BT4[:, None], (B, K, T, 4)),
        # one real beam: K copies of the prompt would propose K copies of each token
        scores_BK=jnp.full((B, K), -jnp.inf, jnp.float32).at[:, 0].set(0.0),
        stopped_BK=jnp.zeros((B, K), bool),
        done_BK=jnp.zeros((B, K), bool),
        grid_row_BK=jnp.zeros((B, K), jnp.int32),
        grid_col_BK=jnp.zeros((B, K), jnp.int32),
        tokens_BKL=jnp.full((B, K, L), PAD, jnp.int32),
    )

    def room(state: _Beams) -> jax.Array:
        """Rows whose next token still fits in ``T`` positions, ``(B,)``."""
        return start_B + state.step + 1 < T

    def live(state: _Beams) -> jax.Array:
        # an empty beam (−∞) is not worth a forward pass
        active = ~state.stopped_BK & jnp.isfinite(state.scores_BK)
        return (state.step < L) & jnp.any(active & room(state)[:, None])

    def step(state: _Beams) -> _Beams:
        i = state.step
        logits_NTV = logits_fn(params, state.rows_BKT4.reshape(B * K, T, 4))
        V = logits_NTV.shape[-1]
        at_BK11 = jnp.broadcast_to((start_B + i)[:, None, None, None], (B, K, 1, 1))
        logits_BKV = jnp.take_along_axis(logits_NTV.reshape(B, K, T, V), at_BK11, axis=2)[:, :, 0]
        logp_BKC = jax.nn.log_softmax(logits_BKV.astype(jnp.float32), axis=-1)[..., allowed_C]
        extended_BKC = state.scores_BK[..., None] + logp_BKC
        # a stopped beam proposes itself once (as candidate 0), unchanged
        kept_BKC = jnp.where(jnp.arange(C)[None, None] == 0, state.scores_BK[..., None], -jnp.inf)
        proposals_BKC = jnp.where(state.stopped_BK[..., None], kept_BKC, extended_BKC)
        # top_k is sorted and takes the lower index among ties
        scores_BK, index_BK = jax.lax.top_k(proposals_BKC.reshape(B, K * C), K)
        parent_BK, token_BK = index_BK // C, allowed_C[index_BK % C]

        stopped_BK = _take_BK(state.stopped_BK, parent_BK)
        write_BK = ~stopped_BK  # a stopped parent is carried over unchanged
        grid_row_BK = _take_BK(state.grid_row_BK, parent_BK)
        grid_col_BK = _take_BK(state.grid_col_BK, parent_BK)
        is_cell_BK = token_BK < NUM_COLOURS
        is_row_end_BK = token_BK == ROW_END
        is_pair_end_BK = token_BK == PAIR_END
        # serialize_task's coordinates: a cell or ROW_END at (r, c), PAIR_END at (r, 0)
        entry_BK4 = jnp.stack(
            [
                token_BK,
                jnp.minimum(grid_row_BK, MAX_GRID),
                jnp.where(is_cell_BK | is_row_end_BK, jnp.minimum(grid_col_BK, MAX_GRID), 0),
                jnp.broadcast_to(segment_B[:, None], (B, K)),
            ],
            axis=-1,
        )
        here_BKT = write_BK[..., None] & (positions_T[None] == (start_B + i + 1)[:, None])[:, None]
        rows_BKT4 = jnp.where(
            here_BKT[..., None], entry_BK4[:, :, None], _take_BK(state.rows_BKT4, parent_BK)
        )
        tokens_BKL = jnp.where(
            write_BK[..., None] & (jnp.arange(L) == i)[None, None],
            token_BK[..., None],
            _take_BK(state.tokens_BKL, parent_BK),
        )
        new = _Beams(
            step=i + 1,
            rows_BKT4=rows_BKT4,
            scores_BK=scores_BK,
            stopped_BK=stopped_BK | (write_BK & ~is_cell_BK & ~is_row_end_BK),
            done_BK=_take_BK(state.done_BK, parent_BK) | (write_BK & is_pair_end_BK),
            grid_row_BK=grid_row_BK + (write_BK & is_row_end_BK),
            grid_col_BK=jnp.where(
                write_BK & is_row_end_BK, 0, grid_col_BK + (write_BK & is_cell_BK)
            ),
            tokens_BKL=tokens_BKL,
        )
        # a full row keeps its beams as they are (its live ones end unfinished)
        fits_B = room(state)

        def keep(a_new: jax.Array, a_old: jax.Array) -> jax.Array:
            if a_new.ndim == 0:
                return a_new
            return jnp.where(fits_B.reshape((B,) + (1,) * (a_new.ndim - 1)), a_new, a_old)

        return jax.tree.map(keep, new, state)

    final = jax.lax.while_loop(live, step, init)
    done_BK = final.done_BK & jnp.isfinite(final.scores_BK)
    out = (final.tokens_BKL, final.scores_BK, done_BK)
    return (*out, final.rows_BKT4) if return_rows else out


def greedy_decode(
    logits_fn: LogitsFn,
    params: Any,
    x_BT4: jax.Array,
    start_B: jax.Array,
    max_new: int,
    *,
    constrain: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Greedy decoding: :func:`beam_decode` with one beam, as ``(tokens_BL, scores_B,
    done_B)``.

    Its output equals the label output exactly iff every output token is the argmax
    under teacher forcing — over the whole vocabulary with ``constrain=False`` (the
    teacher-forced probe's criterion), over :data:`OUTPUT_TOKENS` with
    ``constrain=True``.
    """
    tokens_BKL, scores_BK, done_BK = beam_decode(
        logits_fn, params, x_BT4, start_B, max_new, 1, constrain=constrain
    )
    return tokens_BKL[:, 0], scores_BK[:, 0], done_BK[:, 0]


def attempts_exact(
    tokens_BKL: jax.Array, done_BK: jax.Array, labels_BT: jax.Array, start_B: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(exact_at_1_B, exact_at_2_B)``: whether the best beam, or one of the best two,
    is the true output token for token.

    The true output is ``labels_BT[b, start_B[b]:]`` up to its last non-``IGNORE``
    label (the final ``PAIR_END``, included); a beam matches when it wrote exactly that
    (so it is done, and no longer than ``L``).
    """
    tokens_BKL = jnp.asarray(tokens_BKL)
    labels_BT = jnp.asarray(labels_BT)
    start_B = jnp.asarray(start_B, jnp.int32)
    L, T = tokens_BKL.shape[-1], labels_BT.shape[-1]
    length_B = jnp.sum(labels_BT != IGNORE, axis=-1)
    at_BL = start_B[:, None] + jnp.arange(L)[None]
    truth_BL = jnp.take_along_axis(labels_BT, jnp.minimum(at_BL, T - 1), axis=1)
    truth_BL = jnp.where(jnp.arange(L)[None] < length_B[:, None], truth_BL, PAD)
    same_BK = jnp.all(tokens_BKL == truth_BL[:, None], axis=-1)
    exact_BK = same_BK & jnp.asarray(done_BK) & (length_B <= L)[:, None]
    return exact_BK[:, 0], jnp.any(exact_BK[:, :2], axis=-1)


class Attempts(NamedTuple):
    """Two-attempt decoding of ``N`` rows (see :func:`make_attempts_fn`)."""

    exact_at_1_N: jax.Array  # bool: the best beam is the true output
    exact_at_2_N: jax.Array  # bool: one of the best two is
    tokens_NKL: jax.Array  # int32 generated tokens per beam, PAD after the last
    scores_NK: jax.Array  # float32 summed log-probabilities, best first
    done_NK: jax.Array  # bool: the beam wrote PAIR_END


def make_attempts_fn(
    logits_fn: LogitsFn,
    *,
    max_new: int,
    beams: int = 2,
    chunk: int = 8,
    constrain: bool = True,
) -> Callable[[Any, jax.Array, jax.Array], Attempts]:
    """A jitted ``fn(params, inputs_NT4, labels_NT) -> Attempts``: beam search
    (:func:`beam_decode`) and :func:`attempts_exact` on every row.

    Rows go through ``lax.map`` in chunks of ``chunk`` (the last one padded with
    copies of row 0), so memory is that of ``chunk·beams`` rows and a chunk stops
    when its own beams have. Build it once and call it at every evaluation: it
    compiles once per ``(N, T)``. Exact@2 needs ``beams ≥ 2``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be positive; got {chunk}.")

    def decode_chunk(params: Any, x_BT4: jax.Array, labels_BT: jax.Array) -> Attempts:
        start_B = output_starts(labels_BT)
        tokens, scores, done = beam_decode(
            logits_fn, params, x_BT4, start_B, max_new, beams, constrain=constrain
        )
        return Attempts(*attempts_exact(tokens, done, labels_BT, start_B), tokens, scores, done)

    @jax.jit
    def attempts(params: Any, inputs_NT4: jax.Array, labels_NT: jax.Array) -> Attempts:
        N = inputs_NT4.shape[0]
        pad = -N % chunk
        if pad:  # repeat row 0: a real row, so the padding decodes like one
            inputs_NT4 = jnp.concatenate([inputs_NT4, inputs_NT4[:1].repeat(pad, 0)])
            labels_NT = jnp.concatenate([labels_NT, labels_NT[:1].repeat(pad, 0)])
        M = (N + pad) // chunk
        chunks = (
            inputs_NT4.reshape(M, chunk, *inputs_NT4.shape[1:]),
            labels_NT.reshape(M, chunk, *labels_NT.shape[1:]),
        )
        out = jax.lax.map(lambda c: decode_chunk(params, *c), chunks)
        return jax.tree.map(lambda a: a.reshape(M * chunk, *a.shape[2:])[:N], out)

    return attempts


def task_attempts(
    model_kind: Any,
    graphdef: Any,
    params: Any,
    task: Any,
    *,
    beams: int = 2,
    chunk: int = 8,
    max_new: int | None = None,
    constrain: bool = True,
) -> Attempts:
    """Two-attempt decoding of an ARC task's validation rows with a model kind.

    ``task`` is a span task of packed ARC sequences (rows ``num_train … num_train +
    num_val − 1`` validate; see :func:`grokjax.data.arc_sets.build_arc_task`);
    ``model_kind.eval_logits_fn(graphdef, task)`` gives the model. ``max_new``
    defaults to ``T − 1 − min(start)``, so every row may run to the end of its
    length. Each call builds and compiles :func:`make_attempts_fn` anew; to evaluate
    repeatedly, build that once. A task is solved at 2 when all its rows are
    (``facts["val_task_of_row"]`` says which rows are whose).
    """
    rows = slice(task.num_train, task.num_train + task.num_val)
    inputs_NT4 = jnp.asarray(task.inputs_N[rows])
    labels_NT = jnp.asarray(task.labels_N[rows])
    if max_new is None:
        max_new = int(labels_NT.shape[1]) - 1 - int(np.min(np.asarray(output_starts(labels_NT))))
    fn = make_attempts_fn(
        model_kind.eval_logits_fn(graphdef, task),
        max_new=max_new,
        beams=beams,
        chunk=chunk,
        constrain=constrain,
    )
    return fn(params, inputs_NT4, labels_NT)
