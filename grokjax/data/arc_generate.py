"""A seeded generator of simple ARC-format tasks, as many as wanted, of controlled difficulty.

This is the CPU-scale stand-in for the real synthetic ARC data sets (neoneye's
arc-dataset-collection and simon-arc-lab, Hodel's re-arc): a handful of *families*, each
one transformation ("concept") whose parameters are drawn per task, turned into
:class:`~grokjax.data.arc.ArcTask` objects with ``source = "generated:<family>"`` so that
reports can say the tasks are generated, not ARC's own.

Families and their rules (``x`` the input grid, ``y`` the output, ``C = colours``):

``colour_permutation``
    ``y[i, j] = π[x[i, j]]`` for a permutation ``π`` of ``{0, …, C−1}`` that is not the
    identity (colour 0 is permuted too: there is no background). Inputs are uniform over
    the ``C`` colours.
``flip``
    ``y = np.flip(x, axis)``, ``axis ∈ {0, 1}``: 0 reverses the rows (upside down), 1 the
    columns (left–right mirror).
``rotate``
    ``y = np.rot90(x, k)``, ``k ∈ {1, 2, 3}`` quarter turns anticlockwise; an ``H × W``
    input gives a ``W × H`` output when ``k`` is odd.
``transpose``
    ``y = x.T`` (``y[i, j] = x[j, i]``; no parameter).
``translate``
    ``y[i, j] = x[i − dy, j − dx]`` where that cell exists and 0 elsewhere; cells shifted
    past the edge are lost and the shape is kept. ``(dy, dx) ≠ (0, 0)`` with
    ``|dy|, |dx| ≤ s = max(1, ⌊(m − 1)/2⌋)``, ``m`` the smallest side a grid can have,
    so every grid keeps part of its content. ``dy > 0`` moves content down, ``dx > 0``
    right.
``gravity``
    In every column the non-zero cells fall to the bottom, keeping their top-to-bottom
    order; the zeros end up above them (no parameter).
``denoise_1d``
    ``1 × W`` grids. Cell ``i`` (``0 < i < W − 1``) is *noise* when
    ``x[i − 1] = x[i + 1] ≠ x[i]``; ``y[i] = x[i − 1]`` there and ``y[i] = x[i]``
    elsewhere (no parameter).
``count_objects``
    The input is background 0 with ``k ≥ 1`` objects of one colour ``c``; an object is
    a 4-connected component of non-zero cells. ``y`` is the ``1 × k`` grid filled with
    ``c`` (no parameter).
``recolour``
    ``y = x`` with colour ``a`` replaced by colour ``b``, ``1 ≤ a ≠ b < C`` (background 0
    and the other colours unchanged). Needs ``colours ≥ 3``.

What every task guarantees:

- **Non-degenerate pairs**: no output equals its input (a grid symmetric under its flip,
  already settled under gravity, without noise, … is repaired by changing one or two
  cells), and every ``translate`` output keeps a non-zero cell.
- **Solvable** ``colour_permutation`` and ``recolour`` tasks: every colour of a test
  input appears in some demonstration input (so ``π`` is shown on it), and ``a`` appears
  in every input.
- **Shapes**: inputs of the 2-D families have both sides uniform in
  ``[max(min_side, m_f), max_side]``, ``m_f`` the family's smallest useful side (2 for the
  geometric families, gravity and count_objects; 1 for colour_permutation and recolour);
  ``denoise_1d`` grids are ``1 × W`` with ``W`` in ``[max(min_side, 3), max_side]``;
  ``count_objects`` outputs are ``1 × k`` with ``1 ≤ k ≤ min(max_side, 10)``. Every side is
  ≤ ``max_side`` ≤ 30 and every value is ``< colours``.

A task's rule parameters are drawn per task (``shared_rule=False``: the model must infer
the rule from the demonstrations, as in ARC) or once per call (``shared_rule=True``: one
concept with many instances, the easy setting). Families without parameters (transpose,
gravity, denoise_1d, count_objects) are the same either way.

Examples
--------
>>> import numpy as np
>>> from grokjax.data.arc_generate import generate_mixture, generate_tasks
>>> tasks = generate_tasks("flip", 2, seed=0, max_side=4)
>>> tasks[0].id, tasks[0].source, len(tasks[0].train), len(tasks[0].test)
('flip-0-0', 'generated:flip', 3, 1)
>>> any(all(np.array_equal(np.flip(i, a), o) for i, o in tasks[0].train + tasks[0].test)
...     for a in (0, 1))
True
>>> [t.id for t in generate_mixture(["flip", "gravity"], 2, seed=7)]
['flip-7-0', 'gravity-7-0', 'flip-7-1', 'gravity-7-1']

References
----------
- Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547 (ARC).
- neoneye, arc-dataset-collection (https://github.com/neoneye/arc-dataset-collection) and
  simon-arc-lab (https://github.com/neoneye/simon-arc-lab): the synthetic ARC-format
  data sets this module stands in for at CPU scale.
- Hodel 2024, "Addressing the Abstraction and Reasoning Corpus via Procedural Example
  Generation" (re-arc), arXiv:2404.07353.
"""

from __future__ import annotations

import operator
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from grokjax.data.arc import MAX_GRID, NUM_COLOURS, ArcTask, Pair

__all__ = [
    "FAMILIES",
    "Family",
    "TaskSpec",
    "denoise_row",
    "generate_mixture",
    "generate_tasks",
    "gravity",
    "shift",
]

MAX_OBJECTS = 10  # count_objects: at most this many objects (and ≤ max_side), a 1 × k output


@dataclass(frozen=True)
class TaskSpec:
    """The shape of the tasks to make: grid sides, pair counts and palette size.

    ``min_side`` is the smallest side a family may draw (generate_tasks raises it to the
    family's own minimum). Raises ``ValueError`` naming the argument when out of range.
    """

    min_side: int = 3
    max_side: int = 10
    num_train: int = 3
    num_test: int = 1
    colours: int = NUM_COLOURS

    def __post_init__(self) -> None:
        for name in ("min_side", "max_side", "num_train", "num_test", "colours"):
            object.__setattr__(self, name, _as_int(getattr(self, name), name))
        for name in ("min_side", "max_side"):
            if not 1 <= getattr(self, name) <= MAX_GRID:
                raise ValueError(f"{name} must be in 1…{MAX_GRID}; got {getattr(self, name)}.")
        if self.min_side > self.max_side:
            raise ValueError(
                f"min_side must be ≤ max_side; got min_side={self.min_side}, "
                f"max_side={self.max_side}."
            )
        for name in ("num_train", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}.")
        if not 2 <= self.colours <= NUM_COLOURS:
            raise ValueError(f"colours must be in 2…{NUM_COLOURS}; got {self.colours}.")

    @property
    def num_pairs(self) -> int:
        return self.num_train + self.num_test


Rule = Any  # a family's parameters: a tuple, an int, or () for families without any


@dataclass(frozen=True)
class Family:
    """One family of tasks: how its rule is drawn and how a task's pairs are made.

    Calling it, ``family(rng, spec)``, draws a rule (unless ``rule`` is given) and returns
    the task's ``spec.num_pairs`` pairs, demonstrations first, with ``spec.min_side``
    raised to the family's ``min_side`` as :func:`generate_tasks` does. ``make_pairs``'s
    docstring states the rule; :attr:`doc` returns it.
    """

    name: str
    draw_rule: Callable[[np.random.Generator, TaskSpec], Rule]
    make_pairs: Callable[[np.random.Generator, Rule, TaskSpec], list[Pair]]
    min_side: int = 1  # the smallest side for which the rule is not the identity
    min_colours: int = 2

    def __call__(
        self, rng: np.random.Generator, spec: TaskSpec, rule: Rule | None = None
    ) -> list[Pair]:
        if spec.max_side < self.min_side or spec.colours < self.min_colours:
            raise ValueError(
                f"family {self.name!r} needs max_side ≥ {self.min_side} and colours ≥ "
                f"{self.min_colours}; got max_side={spec.max_side}, colours={spec.colours}."
            )
        spec = replace(spec, min_side=max(spec.min_side, self.min_side))
        if rule is None:
            rule = self.draw_rule(rng, spec)
        return self.make_pairs(rng, rule, spec)

    @property
    def doc(self) -> str:
        return self.make_pairs.__doc__ or ""


# ---------------------------------------------------------------------------- helpers


def _as_int(value: Any, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer; got {value!r}.") from None


def _frozen(grid: np.ndarray) -> np.ndarray:
    """A read-only uint8 copy (np.flip, rot90 and .T return views of a writable array)."""
    out = np.array(grid, dtype=np.uint8)
    out.setflags(write=False)
    return out


def _sides(rng: np.random.Generator, spec: TaskSpec) -> tuple[int, int]:
    h, w = rng.integers(spec.min_side, spec.max_side + 1, size=2)
    return int(h), int(w)


def _sparse_grid(rng: np.random.Generator, h: int, w: int, colours: int) -> np.ndarray:
    """Background 0; each cell non-zero with one probability per grid in [0.15, 0.6),
    its colour uniform in 1 … colours − 1 (ARC grids are mostly background)."""
    density = rng.uniform(0.15, 0.6)
    filled = rng.random((h, w)) < density
    return np.where(filled, rng.integers(1, colours, size=(h, w)), 0).astype(np.uint8)


def _break_symmetry(
    rng: np.random.Generator, grid: np.ndarray, f: Callable[[np.ndarray], np.ndarray], colours: int
) -> None:
    """Make ``f(grid) ≠ grid`` for a cell-permuting ``f`` that fixed it, in place.

    ``f`` applied to cell indices says which input cell ``s`` lands on output cell ``p``;
    choosing a ``p`` with ``s ≠ p`` and giving ``s`` a colour other than ``grid[p]`` makes
    ``f(grid)[p] ≠ grid[p]``. Such a ``p`` exists unless ``f`` is the identity on this
    shape, which the family's minimum side rules out.
    """
    source = f(np.arange(grid.size).reshape(grid.shape)).ravel()
    p = int(rng.choice(np.flatnonzero(source != np.arange(grid.size))))
    grid.flat[source[p]] = (int(grid.flat[p]) + int(rng.integers(1, colours))) % colours


def _cell_map_pairs(
    rng: np.random.Generator, spec: TaskSpec, f: Callable[[np.ndarray], np.ndarray]
) -> list[Pair]:
    """Pairs ``(x, f(x))`` of sparse grids for a cell-permuting ``f``, none with f(x) = x."""
    pairs = []
    for _ in range(spec.num_pairs):
        x = _sparse_grid(rng, *_sides(rng, spec), spec.colours)
        y = f(x)
        if y.shape == x.shape and np.array_equal(y, x):
            _break_symmetry(rng, x, f, spec.colours)
            y = f(x)
        pairs.append((_frozen(x), _frozen(y)))
    return pairs


def _no_rule(rng: np.random.Generator, spec: TaskSpec) -> Rule:
    return ()


# ---------------------------------------------------------------------------- families


def _draw_permutation(rng: np.random.Generator, spec: TaskSpec) -> Rule:
    perm = rng.permutation(spec.colours)
    if np.array_equal(perm, np.arange(spec.colours)):
        perm = np.roll(perm, 1)  # the identity is nothing to infer; a cycle moves every colour
    return tuple(int(c) for c in perm)


def _colour_permutation(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y[i, j] = π[x[i, j]]``: one permutation ``π`` of ``{0, …, C−1}`` (``rule``), not
    the identity, applied cell-wise; colour 0 is permuted like any other.

    Inputs are uniform over the ``C`` colours. Every input has a cell whose colour ``π``
    moves (else one cell is recoloured to such a colour), so ``y ≠ x``. Every colour of a
    test input appears in some demonstration input: unseen cells are redrawn from the
    colours the demonstrations show, so the demonstrations determine ``π`` on the test.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec
    >>> spec = TaskSpec(min_side=2, max_side=3, colours=4)
    >>> pairs = FAMILIES["colour_permutation"](np.random.default_rng(0), spec, rule=(1, 0, 3, 2))
    >>> all(np.array_equal(np.array([1, 0, 3, 2])[x], y) for x, y in pairs)
    True
    """
    perm = np.asarray(rule, dtype=np.uint8)
    moved = np.flatnonzero(perm != np.arange(spec.colours))
    seen = np.zeros(spec.colours, dtype=bool)  # colours shown by the demonstration inputs
    pairs = []
    for n in range(spec.num_pairs):
        x = rng.integers(0, spec.colours, size=_sides(rng, spec)).astype(np.uint8)
        demo = n < spec.num_train
        if not demo:
            unseen = ~seen[x]
            if unseen.any():
                shown = np.flatnonzero(seen)
                x[unseen] = shown[rng.integers(shown.size, size=int(unseen.sum()))]
        if np.array_equal(perm[x], x):
            # Every demonstration shows a moved colour, so a test input can take one too.
            allowed = moved if demo else moved[seen[moved]]
            x[rng.integers(x.shape[0]), rng.integers(x.shape[1])] = rng.choice(allowed)
        if demo:
            seen[x.ravel()] = True
        pairs.append((_frozen(x), _frozen(perm[x])))
    return pairs


def _draw_axis(rng: np.random.Generator, spec: TaskSpec) -> Rule:
    return int(rng.integers(2))


def _flip(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y = np.flip(x, axis)`` with ``axis = rule ∈ {0, 1}``: 0 reverses the rows
    (``y[i, j] = x[H−1−i, j]``), 1 the columns (``y[i, j] = x[i, W−1−j]``).

    Inputs are sparse (background 0) with both sides ≥ 2; one that is symmetric under the
    flip gets one cell recoloured so that ``y ≠ x``.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec
    >>> pairs = FAMILIES["flip"](np.random.default_rng(0), TaskSpec(2, 4), rule=1)
    >>> all(np.array_equal(x[:, ::-1], y) and not np.array_equal(x, y) for x, y in pairs)
    True
    """
    return _cell_map_pairs(rng, spec, lambda g: np.flip(g, int(rule)))


def _draw_quarter_turns(rng: np.random.Generator, spec: TaskSpec) -> Rule:
    return int(rng.integers(1, 4))


def _rotate(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y = np.rot90(x, k)`` with ``k = rule ∈ {1, 2, 3}`` quarter turns anticlockwise:
    ``k = 1``: ``y[i, j] = x[j, W−1−i]`` (shape ``W × H``); ``k = 2``:
    ``y[i, j] = x[H−1−i, W−1−j]``; ``k = 3``: ``y[i, j] = x[H−1−j, i]`` (``W × H``).

    Inputs are sparse with both sides ≥ 2; one the rotation fixes gets one cell
    recoloured.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec
    >>> pairs = FAMILIES["rotate"](np.random.default_rng(0), TaskSpec(2, 5), rule=3)
    >>> all(np.array_equal(np.rot90(x, 3), y) for x, y in pairs)
    True
    """
    return _cell_map_pairs(rng, spec, lambda g: np.rot90(g, int(rule)))


def _transpose(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y = x.T`` (``y[i, j] = x[j, i]``, shape ``W × H``); no parameter.

    Inputs are sparse with both sides ≥ 2; a symmetric square one gets one cell
    recoloured.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec
    >>> pairs = FAMILIES["transpose"](np.random.default_rng(0), TaskSpec(2, 5))
    >>> all(np.array_equal(x.T, y) for x, y in pairs)
    True
    """
    return _cell_map_pairs(rng, spec, np.transpose)


def _draw_shift(rng: np.random.Generator, spec: TaskSpec) -> Rule:
    # |d| ≤ (m − 1) // 2 keeps at least half of every side of the smallest grid, so the
    # outputs still show the content the shift moved.
    s = max(1, (spec.min_side - 1) // 2)
    n = 2 * s + 1
    index = int(rng.integers(n * n - 1))
    index += index >= n * n // 2  # skip the centre, (0, 0)
    dy, dx = divmod(index, n)
    return (dy - s, dx - s)


def shift(grid: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``grid`` moved ``dy`` cells down and ``dx`` right, 0 filling, overflow lost.

    >>> shift(np.array([[1, 2], [3, 4]]), 1, -1)
    array([[0, 0],
           [2, 0]])
    """
    h, w = grid.shape
    out = np.zeros_like(grid)
    if abs(dy) < h and abs(dx) < w:
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = grid[
            max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
        ]
    return out


def _translate(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y[i, j] = x[i − dy, j − dx]`` where that cell exists, else 0 (``rule = (dy, dx)``,
    not ``(0, 0)``, ``|dy|, |dx| ≤ max(1, ⌊(m − 1)/2⌋)``, ``m`` the smallest side drawn):
    the content moves ``dy`` down and ``dx`` right, cells pushed past an edge are lost and
    the shape is kept.

    Inputs are sparse with both sides ≥ 2. An input none of whose non-zero cells stays
    inside gets one such cell, so ``y`` is never blank; and ``y ≠ x`` whenever ``x`` has
    a non-zero cell (for a shift down, say, the top non-zero row of ``x`` is blank in ``y``).

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec, shift
    >>> pairs = FAMILIES["translate"](np.random.default_rng(0), TaskSpec(3, 6), rule=(0, -1))
    >>> all(np.array_equal(shift(x, 0, -1), y) and y.any() for x, y in pairs)
    True
    """
    dy, dx = (int(d) for d in rule)
    pairs = []
    for _ in range(spec.num_pairs):
        h, w = _sides(rng, spec)
        x = _sparse_grid(rng, h, w, spec.colours)
        y = shift(x, dy, dx)
        if not y.any():
            # a cell inside the part of x that stays in the grid
            i = rng.integers(max(-dy, 0), h - max(dy, 0))
            j = rng.integers(max(-dx, 0), w - max(dx, 0))
            x[i, j] = rng.integers(1, spec.colours)
            y = shift(x, dy, dx)
        pairs.append((_frozen(x), _frozen(y)))
    return pairs


def gravity(grid: np.ndarray) -> np.ndarray:
    """Every column's non-zero cells at its bottom, in their order, zeros above.

    A stable sort of each column by ``cell ≠ 0`` puts the zeros first and keeps both
    groups in order.

    >>> gravity(np.array([[1, 0], [0, 2], [3, 0]]))
    array([[0, 0],
           [1, 0],
           [3, 2]])
    """
    order = np.argsort(grid != 0, axis=0, kind="stable")
    return np.take_along_axis(grid, order, axis=0)


def _gravity(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y = gravity(x)``: in each column the non-zero cells fall to the bottom, keeping
    their top-to-bottom order, and the zeros fill the top; no parameter.

    Inputs are sparse with both sides ≥ 2. An input that is already settled gets a
    random column's top cell coloured and bottom cell cleared, so ``y ≠ x``.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec, gravity
    >>> pairs = FAMILIES["gravity"](np.random.default_rng(0), TaskSpec(2, 6))
    >>> all(np.array_equal(gravity(x), y) and not np.array_equal(x, y) for x, y in pairs)
    True
    """
    pairs = []
    for _ in range(spec.num_pairs):
        x = _sparse_grid(rng, *_sides(rng, spec), spec.colours)
        y = gravity(x)
        if np.array_equal(x, y):
            j = rng.integers(x.shape[1])
            x[0, j], x[-1, j] = rng.integers(1, spec.colours), 0
            y = gravity(x)
        pairs.append((_frozen(x), _frozen(y)))
    return pairs


def denoise_row(row: np.ndarray) -> np.ndarray:
    """``row`` with each isolated pixel replaced by its neighbours' colour.

    Cell ``i`` with ``0 < i < W − 1`` is noise when ``row[i − 1] = row[i + 1] ≠ row[i]``.

    >>> denoise_row(np.array([[1, 1, 2, 1, 3, 3, 3, 4, 3]]))
    array([[1, 1, 1, 1, 3, 3, 3, 3, 3]])
    """
    x = row.reshape(-1)
    y = x.copy()
    noise = (x[:-2] == x[2:]) & (x[1:-1] != x[:-2])
    y[1:-1][noise] = x[:-2][noise]
    return y.reshape(row.shape)


def _denoise_1d(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``1 × W`` grids; ``y = denoise_row(x)``: cell ``i`` (``0 < i < W − 1``) with
    ``x[i − 1] = x[i + 1] ≠ x[i]`` becomes ``x[i − 1]``, every other cell is kept; no
    parameter.

    An input is a clean row of runs (each ≥ 2 cells, the first ≥ 4, neighbouring runs of
    different colours from all ``C`` colours) with ≥ 1 noise pixel of another colour.
    Noise sits only where the two cells on either side belong to its run, and two noise
    pixels are ≥ 3 apart, so the rule finds exactly the noise and ``y`` is the clean
    row. ``W`` is drawn from ``[max(min_side, 3), max_side]``.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec, denoise_row
    >>> pairs = FAMILIES["denoise_1d"](np.random.default_rng(0), TaskSpec(3, 12))
    >>> all(x.shape[0] == 1 and np.array_equal(denoise_row(x), y) for x, y in pairs)
    True
    """
    c = spec.colours
    pairs = []
    for _ in range(spec.num_pairs):
        w = int(rng.integers(spec.min_side, spec.max_side + 1))
        lengths = rng.integers(2, 7, size=w)  # w runs of ≥ 2 cells: more than enough
        lengths[0] = max(lengths[0], 4)  # so cell 1 can always be noise
        run = np.repeat(np.arange(w), lengths)[:w]
        if w >= 2 and run[-1] != run[-2]:
            run[-1] = run[-2]  # a last run cut to one cell joins the run before it
        steps = rng.integers(1, c, size=run[-1] + 1)  # ≠ 0 mod c: neighbours differ
        steps[0] = rng.integers(c)
        clean = (np.cumsum(steps) % c)[run].astype(np.uint8)
        # Noise may sit at i when cells i−2 … i+2 (those inside the row) share i's run.
        padded = np.pad(run, 2, mode="edge")
        eligible = np.ones(w, dtype=bool)
        for offset in (0, 1, 3, 4):
            eligible &= padded[offset : offset + w] == run
        eligible[[0, -1]] = False
        # One candidate per block of 3 cells; a candidate < 3 after the previous block's
        # is dropped, so the kept ones are ≥ 3 apart.
        blocks = -(-w // 3)
        pos = np.minimum(3 * np.arange(blocks) + rng.integers(0, 3, size=blocks), w - 1)
        active = eligible[pos] & (rng.random(blocks) < rng.uniform(0.3, 0.8))
        keep = active.copy()
        keep[1:] &= ~(active[:-1] & (pos[1:] - pos[:-1] < 3))
        noise = pos[keep]
        if noise.size == 0:
            noise = rng.choice(np.flatnonzero(eligible), size=1)
        x = clean.copy()
        x[noise] = (x[noise] + rng.integers(1, c, size=noise.size)) % c
        pairs.append((_frozen(x[None, :]), _frozen(denoise_row(x)[None, :])))
    return pairs


# count_objects: 4-connected shapes within a 2 × 2 box, as (row, column) offsets.
_SHAPES = tuple(
    np.array(s)
    for s in (
        [(0, 0)],
        [(0, 0), (0, 1)],
        [(0, 0), (1, 0)],
        [(0, 0), (0, 1), (1, 0)],
        [(0, 0), (0, 1), (1, 1)],
        [(0, 0), (1, 0), (1, 1)],
        [(0, 1), (1, 0), (1, 1)],
        [(0, 0), (0, 1), (1, 0), (1, 1)],
    )
)


def _free_anchors(blocked: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, int]:
    """Flat indices into the anchor grid where ``shape`` covers no blocked cell, and that
    grid's width (to turn them into rows and columns)."""
    h, w = blocked.shape
    sh, sw = shape.max(axis=0) + 1
    free = np.ones((h - sh + 1, w - sw + 1), dtype=bool)
    for oy, ox in shape:
        free &= ~blocked[oy : oy + h - sh + 1, ox : ox + w - sw + 1]
    return np.flatnonzero(free), free.shape[1]


def _count_objects(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y = `` the ``1 × k`` grid of colour ``c``, where the input is background 0 with
    ``k ≥ 1`` objects of the single colour ``c`` and an object is a 4-connected component
    of non-zero cells (diagonal contact does not join two); no parameter.

    Each input (both sides ≥ 2) aims for ``k`` uniform in ``1 … min(max_side, 10)``
    objects, each a random 4-connected shape within a 2 × 2 box (pixel, domino, L
    tromino, square), placed where it touches no earlier object by an edge; when no place
    is left the grid has fewer. ``c`` is drawn per pair from ``1 … C−1``.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec
    >>> pairs = FAMILIES["count_objects"](np.random.default_rng(0), TaskSpec(4, 6))
    >>> all(y.shape[0] == 1 and set(np.unique(x)) == {0, y[0, 0]} for x, y in pairs)
    True
    """
    pairs = []
    for _ in range(spec.num_pairs):
        h, w = _sides(rng, spec)
        target = int(rng.integers(1, min(spec.max_side, MAX_OBJECTS) + 1))
        occupied = np.zeros((h, w), dtype=bool)
        k = 0
        for _ in range(target):
            # An object may not sit on or edge-next to an earlier one: block the
            # occupied cells and their 4-neighbours.
            blocked = occupied.copy()
            blocked[1:] |= occupied[:-1]
            blocked[:-1] |= occupied[1:]
            blocked[:, 1:] |= occupied[:, :-1]
            blocked[:, :-1] |= occupied[:, 1:]
            shape = _SHAPES[rng.integers(len(_SHAPES))]
            free, width = _free_anchors(blocked, shape)
            if free.size == 0:
                shape = _SHAPES[0]  # a single pixel fits where nothing bigger does
                free, width = _free_anchors(blocked, shape)
                if free.size == 0:
                    break
            ay, ax = divmod(int(rng.choice(free)), width)
            occupied[shape[:, 0] + ay, shape[:, 1] + ax] = True
            k += 1
        colour = int(rng.integers(1, spec.colours))
        x = np.where(occupied, colour, 0)
        pairs.append((_frozen(x), _frozen(np.full((1, k), colour))))
    return pairs


def _draw_recolour(rng: np.random.Generator, spec: TaskSpec) -> Rule:
    a = int(rng.integers(1, spec.colours))
    b = 1 + (a - 1 + int(rng.integers(1, spec.colours - 1))) % (spec.colours - 1)  # ≠ a
    return (a, b)


def _recolour(rng: np.random.Generator, rule: Rule, spec: TaskSpec) -> list[Pair]:
    """``y[i, j] = b`` where ``x[i, j] = a``, else ``x[i, j]`` (``rule = (a, b)``,
    ``1 ≤ a ≠ b ≤ C − 1``; background 0 and the other colours stay).

    Inputs are sparse; one without colour ``a`` gets one cell of it, so every input shows
    the rule and ``y ≠ x``.

    >>> import numpy as np
    >>> from grokjax.data.arc_generate import FAMILIES, TaskSpec
    >>> pairs = FAMILIES["recolour"](np.random.default_rng(0), TaskSpec(2, 5), rule=(2, 5))
    >>> all(np.array_equal(np.where(x == 2, 5, x), y) and (x == 2).any() for x, y in pairs)
    True
    """
    a, b = (int(v) for v in rule)
    pairs = []
    for _ in range(spec.num_pairs):
        x = _sparse_grid(rng, *_sides(rng, spec), spec.colours)
        if not (x == a).any():
            x[rng.integers(x.shape[0]), rng.integers(x.shape[1])] = a
        pairs.append((_frozen(x), _frozen(np.where(x == a, b, x))))
    return pairs


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("colour_permutation", _draw_permutation, _colour_permutation),
        Family("flip", _draw_axis, _flip, min_side=2),
        Family("rotate", _draw_quarter_turns, _rotate, min_side=2),
        Family("transpose", _no_rule, _transpose, min_side=2),
        Family("translate", _draw_shift, _translate, min_side=2),
        Family("gravity", _no_rule, _gravity, min_side=2),
        Family("denoise_1d", _no_rule, _denoise_1d, min_side=3),
        Family("count_objects", _no_rule, _count_objects, min_side=2),
        Family("recolour", _draw_recolour, _recolour, min_colours=3),
    )
}


# ---------------------------------------------------------------------------- public API


def generate_tasks(
    family: str,
    count: int,
    seed: int,
    *,
    min_side: int = 3,
    max_side: int = 10,
    num_train: int = 3,
    num_test: int = 1,
    shared_rule: bool = False,
    colours: int = NUM_COLOURS,
) -> list[ArcTask]:
    """``count`` tasks of one family, the same for the same arguments.

    The random stream is ``np.random.default_rng([seed, crc32(family)])`` (never Python's
    salted ``hash``), so families with one seed are independent. With ``shared_rule`` the
    rule is drawn once, first, and every task uses it; otherwise each task draws its own.
    Each task has ``num_train`` demonstration and ``num_test`` test pairs, id
    ``f"{family}-{seed}-{i}"`` and source ``f"generated:{family}"``. Sides follow
    :class:`TaskSpec` with ``min_side`` raised to the family's minimum; values lie in
    ``0 … colours − 1`` (see the module docstring for each family's rule and guarantees).

    Raises ``ValueError`` for an unknown family (listing the known ones), a count or seed
    below 0, sides outside 1…30 or ``min_side > max_side``, ``num_train`` or
    ``num_test`` below 1, ``colours`` outside 2…10, or a ``max_side`` or ``colours`` below
    what the family needs.

    >>> a = generate_tasks("rotate", 3, seed=1, max_side=5)
    >>> b = generate_tasks("rotate", 3, seed=1, max_side=5)
    >>> all(s.same_grids(t) for s, t in zip(a, b)), a[2].id
    (True, 'rotate-1-2')
    >>> generate_tasks("spin", 1, seed=0)
    Traceback (most recent call last):
    ...
    ValueError: unknown family 'spin'; known: colour_permutation, flip, ...
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}.")
    fam = FAMILIES[family]
    count, seed = _as_int(count, "count"), _as_int(seed, "seed")
    if count < 0:
        raise ValueError(f"count must be ≥ 0; got {count}.")
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0; got {seed}.")
    TaskSpec(min_side, max_side, num_train, num_test, colours)  # validates the arguments
    if max_side < fam.min_side:
        raise ValueError(
            f"max_side must be ≥ {fam.min_side} for family {family!r} (smaller grids make "
            f"its rule the identity or leave no room); got {max_side}."
        )
    if colours < fam.min_colours:
        raise ValueError(
            f"colours must be ≥ {fam.min_colours} for family {family!r}; got {colours}."
        )
    spec = TaskSpec(max(min_side, fam.min_side), max_side, num_train, num_test, colours)
    rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
    shared = fam.draw_rule(rng, spec) if shared_rule else None
    tasks = []
    for i in range(count):
        rule = shared if shared_rule else fam.draw_rule(rng, spec)
        pairs = fam.make_pairs(rng, rule, spec)
        tasks.append(
            ArcTask(
                id=f"{family}-{seed}-{i}",
                source=f"generated:{family}",
                train=tuple(pairs[: spec.num_train]),
                test=tuple(pairs[spec.num_train :]),
            )
        )
    return tasks


def generate_mixture(
    families: Sequence[str], count_per_family: int, seed: int, **kwargs: Any
) -> list[ArcTask]:
    """``count_per_family`` tasks of each family, interleaved round-robin.

    Family ``f``'s tasks are exactly ``generate_tasks(f, count_per_family, seed,
    **kwargs)``; the list is their ``i``-th tasks in the order of ``families``, for
    ``i = 0, 1, …``, so every prefix is balanced across families. Raises ``ValueError``
    for a bare string, no families or a repeated one (whose tasks would repeat).

    >>> [t.id for t in generate_mixture(["transpose", "rotate"], 2, seed=3)]
    ['transpose-3-0', 'rotate-3-0', 'transpose-3-1', 'rotate-3-1']
    """
    if isinstance(families, str):
        raise ValueError(
            f"families must be a sequence of family names, not one string; got {families!r}."
        )
    families = list(families)
    if not families:
        raise ValueError(f"families must name at least one family; known: {', '.join(FAMILIES)}.")
    if len(set(families)) != len(families):
        raise ValueError(f"families must not repeat a family; got {families}.")
    per_family = [generate_tasks(f, count_per_family, seed, **kwargs) for f in families]
    return [task for group in zip(*per_family, strict=True) for task in group]
