"""ARC tasks as token sequences for a decoder-only transformer, and back.

A task (:class:`~grokjax.data.arc.ArcTask`) with one of its test pairs chosen becomes
one flat sequence over a 16-token vocabulary; a model trained on next-token prediction
then learns to write the test output, its shape included, after reading the
demonstrations and the test input.

Vocabulary (``VOCAB_SIZE = 16``)::

    0 … 9      the colours, one token per cell
    ROW_END 10  ends each row of a grid
    INPUT   11  opens an input grid
    OUTPUT  12  opens an output grid
    PAIR_END 13 closes a pair, after its output grid
    BOS     14  starts a sequence
    PAD     15  right padding in :func:`pack`

A grid ``g`` of ``H × W`` cells is written row-major, each row followed by ``ROW_END``::

    g[0,0] … g[0,W-1] ROW_END  g[1,0] … g[1,W-1] ROW_END  …  g[H-1,W-1] ROW_END

so ``H (W + 1)`` tokens, and the shape can be read back from the delimiters alone. A
task with ``n`` demonstration pairs and test index ``k`` is::

    BOS
    INPUT grid(in_0)  OUTPUT grid(out_0)  PAIR_END
    …
    INPUT grid(in_n-1)  OUTPUT grid(out_n-1)  PAIR_END
    INPUT grid(test_in_k)  OUTPUT grid(test_out_k)  PAIR_END

Besides its token, every position carries three integers a model can embed (a 2-D
position inside a grid and which grid it is in), because a flat 1-D position says
little about which cells are above each other in a 30-wide grid:

================  ==============  ===================================================
token             (row, col)      segment
================  ==============  ===================================================
BOS               (0, 0)          0
INPUT / OUTPUT    (0, 0)          the grid it opens
cell ``g[r, c]``  (r, c)          its grid
ROW_END of row r  (r, W)          its grid
PAIR_END          (H_out, 0)      the output grid it closes (``H_out`` its height)
================  ==============  ===================================================

Grid segments count from 1: demonstration pair ``j``'s input is ``2j + 1`` and its
output ``2j + 2``; the test input is ``2n + 1`` and the test output ``2n + 2``. Every
coordinate is at most ``MAX_GRID = 30``.

Targets are next tokens of the test output only: ``labels[t] = tokens[t + 1]`` when
token ``t + 1`` comes after the test ``OUTPUT`` marker (a cell, a ``ROW_END`` or the
final ``PAIR_END``), else ``IGNORE = -1``. The loss span thus starts at the test
``OUTPUT`` marker (which predicts the first cell) and stops before the final
``PAIR_END``; predicting ``ROW_END`` and ``PAIR_END`` is predicting the output's shape.
The demonstrations are context, not targets, as in the test-time-training setups below
(which also train on the demonstrations by leaving one out; that is a choice of which
pair is the "test" pair, made before serialisation).

Examples
--------
A task with one demonstration (2 × 2) and one test pair, colours swapped:

>>> import numpy as np
>>> from grokjax.data.arc import ArcTask
>>> g = lambda rows: np.array(rows, np.uint8)
>>> task = ArcTask("swap", "doc",
...                train=((g([[1, 2], [0, 1]]), g([[2, 1], [0, 2]])),),
...                test=((g([[3, 0], [3, 3]]), g([[0, 3], [0, 0]])),))
>>> seq = serialize_task(task)
>>> seq.length, seq.output_span
(31, (23, 30))
>>> print(render(seq.tokens_T))
BOS
INPUT
12
01
OUTPUT
21
02
PAIR_END
INPUT
30
33
OUTPUT
03
00
PAIR_END
>>> seq.tokens_T[23:].tolist()
[12, 0, 3, 10, 0, 0, 10, 13]
>>> seq.rows_T[23:].tolist(), seq.cols_T[23:].tolist(), seq.segments_T[23:].tolist()
([0, 0, 0, 0, 1, 1, 1, 2], [0, 0, 1, 2, 0, 1, 2, 0], [4, 4, 4, 4, 4, 4, 4, 4])
>>> seq.labels_T[22:].tolist()
[-1, 0, 3, 10, 0, 0, 10, 13, -1]
>>> decode_grid(seq.tokens_T[24:]).tolist()
[[0, 3], [0, 0]]
>>> deserialize_task([seq], "swap", "doc").same_grids(task)
True
>>> packed = pack([seq], length=32)
>>> packed.inputs_NT4.shape, packed.inputs_NT4[0, -1].tolist(), packed.dropped
((1, 32, 4), [15, 0, 0, 0], ())

References
----------
Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547 (the ARC tasks).
Franzen, Disselhoff & Hartmann 2024, "The LLM ARChitect: Solving ARC-AGI Is a Matter of
Perspective" (ARC Prize 2024 paper award): grids row-major, one newline token per row,
a reduced token set, loss on the outputs only.
Akyürek et al. 2024, "The Surprising Effectiveness of Test-Time Training for Abstract
Reasoning", arXiv:2411.07279: the same row-by-row text layout of grids, demonstrations
as context and the test output as the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from grokjax.data.arc import MAX_GRID, NUM_COLOURS, ArcTask, Pair

__all__ = [
    "BOS",
    "IGNORE",
    "INPUT",
    "OUTPUT",
    "PAD",
    "PAIR_END",
    "ROW_END",
    "TOKEN_NAMES",
    "VOCAB_SIZE",
    "ArcSequence",
    "PackedArc",
    "ParsedSequence",
    "decode_grid",
    "deserialize",
    "deserialize_task",
    "max_segments",
    "pack",
    "render",
    "serialize_grid",
    "serialize_task",
    "serialize_tasks",
]

ROW_END = NUM_COLOURS  # 10: ends each grid row
INPUT = 11  # opens an input grid
OUTPUT = 12  # opens an output grid
PAIR_END = 13  # closes a pair, after its output grid
BOS = 14  # starts a sequence
PAD = 15  # right padding (pack)
VOCAB_SIZE = 16
IGNORE = -1  # label of positions without a target

TOKEN_NAMES: tuple[str, ...] = (
    *(str(c) for c in range(NUM_COLOURS)),
    "ROW_END",
    "INPUT",
    "OUTPUT",
    "PAIR_END",
    "BOS",
    "PAD",
)


@dataclass(frozen=True, eq=False)
class ArcSequence:
    """One serialised (task, test pair): int32 arrays of one length ``T``, read-only.

    Attributes
    ----------
    tokens_T : np.ndarray
        Token ids, ``0 ≤ token < VOCAB_SIZE``.
    rows_T, cols_T : np.ndarray
        Each token's coordinates in its grid (see the module docstring), ``≤ MAX_GRID``.
    segments_T : np.ndarray
        Which grid each token belongs to: 0 for ``BOS``, ``2j + 1`` / ``2j + 2`` for the
        input / output of pair ``j`` (the test pair last).
    labels_T : np.ndarray
        The next token inside the test output's span, ``IGNORE`` elsewhere.
    task_id : str
        The task's :attr:`ArcTask.id`.
    test_index : int
        Which of the task's test pairs closes the sequence.
    """

    tokens_T: np.ndarray
    rows_T: np.ndarray
    cols_T: np.ndarray
    segments_T: np.ndarray
    labels_T: np.ndarray
    task_id: str
    test_index: int

    def __post_init__(self) -> None:
        names = ("tokens_T", "rows_T", "cols_T", "segments_T", "labels_T")
        for name in names:
            array = np.array(getattr(self, name), dtype=np.int32)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        shapes = {getattr(self, name).shape for name in names}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"ArcSequence arrays must be 1-D of one length; got {shapes}.")

    @property
    def length(self) -> int:
        """The number of tokens ``T``."""
        return int(self.tokens_T.shape[0])

    @property
    def output_span(self) -> tuple[int, int]:
        """``(start, stop)``: the positions whose labels are not ``IGNORE``.

        ``start`` is the test ``OUTPUT`` marker's position and ``stop = T - 1`` (the
        final ``PAIR_END`` is a target but predicts nothing).
        """
        positions = np.flatnonzero(self.labels_T != IGNORE)
        return int(positions[0]), int(positions[-1]) + 1


class ParsedSequence(NamedTuple):
    """The grids :func:`deserialize` reads back from one sequence."""

    train: tuple[Pair, ...]
    test: Pair


@dataclass(frozen=True, eq=False)
class PackedArc:
    """Sequences right-padded into fixed-length arrays (build with :func:`pack`).

    Rows hold only the sequences that fit; ``fits_N`` and ``dropped`` say which of the
    sequences given to :func:`pack` those were.

    Attributes
    ----------
    inputs_NT4 : np.ndarray
        int32 ``(N, T, 4)``: channels token, row, col, segment. Padding is ``PAD`` with
        coordinates 0 and segment 0.
    labels_NT : np.ndarray
        int32 ``(N, T)``; ``IGNORE`` at padding.
    lengths_N : np.ndarray
        int32 ``(N,)``: each row's sequence length before padding.
    task_ids : tuple[str, ...]
        Each row's task id.
    test_indices : tuple[int, ...]
        Each row's test index.
    fits_N : np.ndarray
        bool, one per sequence *given to* :func:`pack` (not per row): whether its length
        is ``≤ T``; row ``i`` is sequence ``np.flatnonzero(fits_N)[i]``.
    dropped : tuple[tuple[str, int], ...]
        ``(task_id, test_index)`` of each sequence that did not fit.
    """

    inputs_NT4: np.ndarray
    labels_NT: np.ndarray
    lengths_N: np.ndarray
    task_ids: tuple[str, ...]
    test_indices: tuple[int, ...]
    fits_N: np.ndarray
    dropped: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        for name in ("inputs_NT4", "labels_NT", "lengths_N", "fits_N"):
            getattr(self, name).setflags(write=False)

    @property
    def num_dropped(self) -> int:
        """How many sequences were longer than the packed length."""
        return len(self.dropped)


def _check_grid(grid: np.ndarray) -> np.ndarray:
    """``grid`` as an int32 2-D array, or ValueError if it is not an ARC grid."""
    grid = np.asarray(grid)
    if grid.ndim != 2 or not 1 <= min(grid.shape) <= max(grid.shape) <= MAX_GRID:
        raise ValueError(f"an ARC grid is 2-D with sides 1 … {MAX_GRID}; got shape {grid.shape}.")
    if grid.dtype.kind not in "iu":
        raise ValueError(f"an ARC grid holds integers; got dtype {grid.dtype}.")
    if grid.min() < 0 or grid.max() >= NUM_COLOURS:
        raise ValueError(f"ARC colours are 0 … {NUM_COLOURS - 1}; got {grid.min()} … {grid.max()}.")
    return grid.astype(np.int32)


def serialize_grid(grid: np.ndarray) -> np.ndarray:
    """A grid's tokens: row-major cells, each row followed by ``ROW_END`` (int32).

    >>> serialize_grid(np.array([[1, 2, 3], [4, 5, 6]], np.uint8)).tolist()
    [1, 2, 3, 10, 4, 5, 6, 10]
    """
    grid = _check_grid(grid)
    height = grid.shape[0]
    # One extra column of ROW_END, then row-major order puts it at the end of each row.
    return np.concatenate([grid, np.full((height, 1), ROW_END, np.int32)], axis=1).ravel()


def _grid_channels(grid: np.ndarray, marker: int, segment: int) -> tuple[np.ndarray, ...]:
    """(tokens, rows, cols, segments) of ``marker`` followed by ``grid``'s tokens."""
    height, width = np.shape(grid)
    tokens = np.concatenate([[marker], serialize_grid(grid)]).astype(np.int32)
    # Row r's W cells and its ROW_END share row r; their cols run 0 … W (ROW_END at W).
    # The marker sits at (0, 0).
    rows = np.concatenate([[0], np.repeat(np.arange(height, dtype=np.int32), width + 1)])
    cols = np.concatenate([[0], np.tile(np.arange(width + 1, dtype=np.int32), height)])
    return tokens, rows, cols, np.full(tokens.shape, segment, np.int32)


def serialize_task(task: ArcTask, test_index: int = 0) -> ArcSequence:
    """``task`` with its test pair ``test_index`` as one sequence (module docstring layout)."""
    if not 0 <= test_index < len(task.test):
        raise IndexError(f"task {task.id!r} has {len(task.test)} test pairs; got {test_index}.")
    pairs = (*task.train, task.test[test_index])
    # Four channels, built as lists of per-grid pieces and concatenated once.
    pieces = [tuple(np.array([v], np.int32) for v in (BOS, 0, 0, 0))]
    for j, (grid_in, grid_out) in enumerate(pairs):
        pieces.append(_grid_channels(grid_in, INPUT, 2 * j + 1))
        pieces.append(_grid_channels(grid_out, OUTPUT, 2 * j + 2))
        # PAIR_END closes the output grid: it belongs to its segment, one row below it.
        height_out = np.shape(grid_out)[0]
        pieces.append(tuple(np.array([v], np.int32) for v in (PAIR_END, height_out, 0, 2 * j + 2)))
    tokens, rows, cols, segments = (np.concatenate(c) for c in zip(*pieces, strict=True))
    # The test OUTPUT marker is the last OUTPUT; from there on each position predicts the
    # next token, up to the final PAIR_END (which predicts nothing).
    start = int(np.flatnonzero(tokens == OUTPUT)[-1])
    labels = np.full(tokens.shape, IGNORE, np.int32)
    labels[start:-1] = tokens[start + 1 :]
    return ArcSequence(tokens, rows, cols, segments, labels, task.id, test_index)


def serialize_tasks(tasks: Iterable[ArcTask]) -> list[ArcSequence]:
    """One sequence per test pair of every task, in task order then test order.

    A task with three test pairs gives three sequences (same demonstrations, a
    different test pair each); a task is solved when all of its test outputs are.
    """
    return [serialize_task(task, k) for task in tasks for k in range(len(task.test))]


class _BadGrid(ValueError):
    """A grid body that does not parse; the message names the position."""


def _parse_grid(body: np.ndarray, offset: int) -> np.ndarray:
    """The grid written in ``body`` (cells and ROW_ENDs only), or :class:`_BadGrid`.

    ``offset`` is ``body[0]``'s position in the whole sequence, for the messages.
    """
    if body.size == 0:
        raise _BadGrid(f"empty grid (no rows) at position {offset}.")
    bad = np.flatnonzero((body < 0) | (body > ROW_END))
    if bad.size:
        p = int(bad[0])
        raise _BadGrid(f"token {int(body[p])} inside a grid at position {offset + p}.")
    if body[-1] != ROW_END:
        raise _BadGrid(f"grid does not end with ROW_END at position {offset + body.size - 1}.")
    ends = np.flatnonzero(body == ROW_END)
    widths = np.diff(ends, prepend=-1) - 1
    if (widths == 0).any():
        p = int(ends[np.flatnonzero(widths == 0)[0]])
        raise _BadGrid(f"empty row (ROW_END with no cells) at position {offset + p}.")
    ragged = np.flatnonzero(widths != widths[0])
    if ragged.size:
        r = int(ragged[0])
        raise _BadGrid(
            f"ragged grid: row {r} has {int(widths[r])} cells, row 0 has {int(widths[0])}; "
            f"its ROW_END is at position {offset + int(ends[r])}."
        )
    height, width = ends.size, int(widths[0])
    if max(height, width) > MAX_GRID:
        raise _BadGrid(
            f"grid {height} × {width} at position {offset} exceeds the largest side {MAX_GRID}."
        )
    grid = body.reshape(height, width + 1)[:, :width].astype(np.uint8)
    grid.setflags(write=False)
    return grid


def _as_tokens(tokens: ArcSequence | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(tokens, ArcSequence):
        return tokens.tokens_T
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"a token sequence is 1-D; got shape {array.shape}.")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"tokens are integers; got dtype {array.dtype}.")
    return array.astype(np.int64)


def deserialize(tokens: ArcSequence | np.ndarray | Sequence[int]) -> ParsedSequence:
    """Parse a whole sequence (as :func:`serialize_task` writes it) back to its grids.

    Raises ValueError, naming the position, on anything but the exact layout: a missing
    ``BOS``, markers out of order, tokens between a ``PAIR_END`` and the next ``INPUT``
    or after the last ``PAIR_END``, ``PAD``, or a grid that does not parse.
    """
    tokens = _as_tokens(tokens)
    if tokens.size == 0 or tokens[0] != BOS:
        raise ValueError("a sequence starts with BOS at position 0.")
    outside = np.flatnonzero((tokens < 0) | (tokens >= VOCAB_SIZE))
    if outside.size:
        p = int(outside[0])
        raise ValueError(f"token {int(tokens[p])} outside the vocabulary at position {p}.")
    # Every non-grid token after BOS must be one of INPUT, OUTPUT, PAIR_END in turn.
    markers = np.flatnonzero(tokens > ROW_END)[1:]
    if markers.size == 0:
        raise ValueError("no pairs after BOS at position 0.")
    expected = np.resize(np.array([INPUT, OUTPUT, PAIR_END]), markers.size)
    wrong = np.flatnonzero(tokens[markers] != expected)
    if wrong.size:
        i = int(wrong[0])
        p = int(markers[i])
        raise ValueError(
            f"expected {TOKEN_NAMES[expected[i]]} at position {p}, got {TOKEN_NAMES[tokens[p]]}."
        )
    if markers.size % 3:
        raise ValueError(f"the sequence ends inside a pair (no PAIR_END) at position {tokens.size}")
    opens, mids, closes = markers[0::3], markers[1::3], markers[2::3]
    # A pair opens right after BOS or the previous PAIR_END; nothing follows the last one.
    previous = np.concatenate([[0], closes[:-1]])
    gap = np.flatnonzero(opens != previous + 1)
    if gap.size:
        p = int(previous[gap[0]]) + 1
        raise ValueError(f"token {int(tokens[p])} between pairs at position {p}.")
    if closes[-1] != tokens.size - 1:
        raise ValueError(f"tokens after the final PAIR_END at position {int(closes[-1]) + 1}.")
    pairs = []
    for a, b, c in zip(opens.tolist(), mids.tolist(), closes.tolist(), strict=True):
        try:
            grid_in = _parse_grid(tokens[a + 1 : b], a + 1)
            grid_out = _parse_grid(tokens[b + 1 : c], b + 1)
        except _BadGrid as error:
            raise ValueError(str(error)) from None
        pairs.append((grid_in, grid_out))
    return ParsedSequence(tuple(pairs[:-1]), pairs[-1])


def deserialize_task(
    sequences: Sequence[ArcSequence | np.ndarray | Sequence[int]],
    id: str | None = None,
    source: str = "",
) -> ArcTask:
    """Rebuild a whole task from the sequences of all its test pairs.

    :class:`ArcSequence` items go in test-index order (their indices must be
    ``0 … k-1``); raw token arrays are taken in the order given. All must share the
    same demonstrations. ``id`` defaults to the sequences' ``task_id``.
    """
    if not sequences:
        raise ValueError("deserialize_task needs at least one sequence.")
    items = list(sequences)
    if all(isinstance(s, ArcSequence) for s in items):
        indices = sorted(s.test_index for s in items)
        if indices != list(range(len(items))):
            raise ValueError(f"test indices must be 0 … {len(items) - 1}; got {indices}.")
        ids = {s.task_id for s in items}
        if len(ids) != 1:
            raise ValueError(f"sequences of several tasks: {sorted(ids)}.")
        items.sort(key=lambda s: s.test_index)
        if id is None:
            id = ids.pop()
    parsed = [deserialize(s) for s in items]
    train = parsed[0].train
    for k, p in enumerate(parsed[1:], start=1):
        same = len(p.train) == len(train) and all(
            np.array_equal(a, b) and a.shape == b.shape
            for pa, pb in zip(p.train, train, strict=True)
            for a, b in zip(pa, pb, strict=True)
        )
        if not same:
            raise ValueError(f"sequence {k} has other demonstrations than sequence 0.")
    return ArcTask(id or "", source, train, tuple(p.test for p in parsed))


def decode_grid(tokens: np.ndarray | Sequence[int]) -> np.ndarray | None:
    """A generated output grid (cells and ``ROW_END``\\ s) as uint8, or None if invalid.

    Reading stops at the first ``PAIR_END`` (anything after it is ignored), or at the
    end. None for: no rows, an empty or ragged row, a non-colour token inside the grid
    (``INPUT``, ``PAD``, …, or out of vocabulary), a last row without its ``ROW_END``, a
    side above ``MAX_GRID``.

    >>> decode_grid([1, 2, 10, 3, 4, 10, 13, 15, 15]).tolist()
    [[1, 2], [3, 4]]
    >>> decode_grid([1, 2, 10, 3, 10]) is None  # ragged
    True
    """
    array = np.asarray(tokens)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        return None
    array = array.astype(np.int64)
    stop = np.flatnonzero(array == PAIR_END)
    if stop.size:
        array = array[: stop[0]]
    try:
        return _parse_grid(array, 0)
    except _BadGrid:
        return None


def max_segments(sequences: Iterable[ArcSequence]) -> int:
    """The number of segment ids the sequences use: ``1 + max segment`` (0 if none).

    A task with ``n`` demonstrations uses segments ``0 … 2n + 2``; a segment embedding
    table needs this many rows.
    """
    return max((int(s.segments_T.max()) + 1 for s in sequences), default=0)


def pack(sequences: Sequence[ArcSequence], length: int) -> PackedArc:
    """Right-pad the sequences that fit into ``length`` tokens as one batch of arrays.

    Sequences longer than ``length`` are *not* in the arrays (truncating one would cut
    off its test output, the only part with targets); they are listed in
    ``dropped`` and marked False in ``fits_N``. A task with a dropped test sequence
    cannot be solved from the packed rows: count it as unsolved.
    """
    if length < 1:
        raise ValueError(f"length must be positive; got {length}.")
    lengths = np.array([s.length for s in sequences], np.int32)
    fits = lengths <= length
    kept = [s for s, f in zip(sequences, fits.tolist(), strict=True) if f]
    dropped = [s for s, f in zip(sequences, fits.tolist(), strict=True) if not f]
    inputs = np.zeros((len(kept), length, 4), np.int32)
    inputs[:, :, 0] = PAD
    labels = np.full((len(kept), length), IGNORE, np.int32)
    for i, s in enumerate(kept):  # one copy per sequence, not per token
        inputs[i, : s.length] = np.stack([s.tokens_T, s.rows_T, s.cols_T, s.segments_T], axis=1)
        labels[i, : s.length] = s.labels_T
    return PackedArc(
        inputs_NT4=inputs,
        labels_NT=labels,
        lengths_N=lengths[fits],
        task_ids=tuple(s.task_id for s in kept),
        test_indices=tuple(s.test_index for s in kept),
        fits_N=fits,
        dropped=tuple((s.task_id, s.test_index) for s in dropped),
    )


def render(tokens: ArcSequence | np.ndarray | Sequence[int]) -> str:
    """A sequence as text for debugging: grid rows on lines, other tokens by name.

    Colours are digits, ``ROW_END`` ends the line, each marker is on a line of its own
    and a run of ``PAD`` is ``PAD×n``. Rendering is for people, so it walks tokens one
    by one.
    """
    tokens = _as_tokens(tokens).tolist()
    lines: list[str] = []
    row = ""
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if 0 <= t < NUM_COLOURS:
            row += str(t)
        elif t == ROW_END:
            lines.append(row)
            row = ""
        else:
            if row:  # a row without its ROW_END: show it as it is
                lines.append(row + " …")
                row = ""
            if t == PAD:
                run = 1
                while i + run < len(tokens) and tokens[i + run] == PAD:
                    run += 1
                lines.append(f"PAD×{run}" if run > 1 else "PAD")
                i += run
                continue
            lines.append(TOKEN_NAMES[t] if 0 <= t < VOCAB_SIZE else f"<{t}>")
        i += 1
    if row:
        lines.append(row + " …")
    return "\n".join(lines)
