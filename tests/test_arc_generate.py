"""The ARC task generator: determinism, valid grids, each family's rule checked against a
reference written here, shared and per-task rules, solvability, JSON, speed and errors."""

from __future__ import annotations

import itertools
import json
import time
from collections import deque

import numpy as np
import pytest

from grokjax.data.arc import ArcTask
from grokjax.data.arc_generate import FAMILIES, TaskSpec, generate_mixture, generate_tasks

# (min_side, max_side, colours): the default, tiny grids with few colours, and big ones.
SETTINGS = [(3, 10, 10), (1, 3, 2), (2, 4, 3), (12, 30, 6)]


def pairs(task: ArcTask):
    return task.train + task.test


def settings_for(family: str):
    """SETTINGS the family accepts (recolour needs 3 colours)."""
    return [s for s in SETTINGS if s[2] >= FAMILIES[family].min_colours]


def tasks_for(family: str, count: int = 30, seed: int = 0):
    """(settings, tasks) for every accepted setting, 2 test pairs to check more grids."""
    for lo, hi, colours in settings_for(family):
        kw = dict(min_side=lo, max_side=hi, colours=colours, num_test=2)
        yield kw, generate_tasks(family, count, seed, **kw)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_arguments_give_the_same_tasks_and_others_differ(family):
    a = generate_tasks(family, 10, seed=5)
    b = generate_tasks(family, 10, seed=5)
    assert [t.id for t in a] == [t.id for t in b] == [f"{family}-5-{i}" for i in range(10)]
    assert all(t.source == f"generated:{family}" for t in a)
    assert all(s.same_grids(t) for s, t in zip(a, b, strict=True))
    c = generate_tasks(family, 10, seed=6)
    assert not any(s.same_grids(t) for s, t in zip(a, c, strict=True))
    # tasks within a call differ too
    assert not any(a[i].same_grids(a[j]) for i, j in itertools.combinations(range(10), 2))


def test_families_with_one_seed_draw_different_grids():
    firsts = {f: generate_tasks(f, 1, seed=0)[0].train[0][0] for f in FAMILIES}
    for f, g in itertools.combinations(FAMILIES, 2):
        x, y = firsts[f], firsts[g]
        assert x.shape != y.shape or not np.array_equal(x, y), (f, g)


# ---------------------------------------------------------------- validity


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_grid_is_a_valid_read_only_arc_grid(family):
    lowest = FAMILIES[family].min_side
    for kw, tasks in tasks_for(family):
        lo, hi, colours = max(kw["min_side"], lowest), kw["max_side"], kw["colours"]
        for task in tasks:
            assert (len(task.train), len(task.test)) == (3, 2)
            assert task.max_side <= min(hi, 30)
            for x, y in pairs(task):
                for g in (x, y):
                    assert g.dtype == np.uint8 and g.ndim == 2
                    assert not g.flags.writeable
                    assert min(g.shape) >= 1 and max(g.shape) <= hi
                    assert int(g.max()) < colours
                    with pytest.raises(ValueError):
                        g[0, 0] = 1
                if family == "denoise_1d":
                    assert x.shape[0] == 1 and lo <= x.shape[1] <= hi
                else:
                    assert lo <= min(x.shape) and max(x.shape) <= hi
                # no pair is trivial
                assert x.shape != y.shape or not np.array_equal(x, y)


def test_sides_are_drawn_across_the_whole_range():
    tasks = generate_tasks("flip", 200, seed=0, min_side=2, max_side=6)
    heights = {x.shape[0] for t in tasks for x, _ in pairs(t)}
    widths = {x.shape[1] for t in tasks for x, _ in pairs(t)}
    assert heights == widths == {2, 3, 4, 5, 6}
    assert any(x.shape[0] != x.shape[1] for t in tasks for x, _ in pairs(t))


# ---------------------------------------------------------------- rules, one per family


def check_colour_permutation(task, colours):
    mapping = {}
    for x, y in pairs(task):
        assert x.shape == y.shape
        for a, b in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True):
            assert mapping.setdefault(a, b) == b  # a function of the cell's colour
    assert len(set(mapping.values())) == len(mapping)  # injective: part of a bijection
    assert any(a != b for a, b in mapping.items())


def axes_of(task):
    return {a for a in (0, 1) if all(np.array_equal(np.flip(x, a), y) for x, y in pairs(task))}


def turns_of(task):
    return {k for k in (1, 2, 3) if all(np.array_equal(np.rot90(x, k), y) for x, y in pairs(task))}


def check_transpose(task, colours):
    for x, y in pairs(task):
        assert y.shape == x.shape[::-1]
        for i, j in np.ndindex(y.shape):
            assert y[i, j] == x[j, i]


def shifted(x, dy, dx):
    """Reference translation, cell by cell."""
    h, w = x.shape
    out = np.zeros_like(x)
    for i, j in np.ndindex(h, w):
        if 0 <= i - dy < h and 0 <= j - dx < w:
            out[i, j] = x[i - dy, j - dx]
    return out


def shifts_of(task, reach=5):
    """Every (dy, dx) ≠ (0, 0), |dy|, |dx| ≤ reach, that maps each input to its output
    (the generator's shifts are ≤ max(1, (min_side − 1) // 2), 5 for the largest
    min_side of SETTINGS)."""
    x0, y0 = task.train[0]
    first = {
        (dy, dx)
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if (dy, dx) != (0, 0) and abs(dy) < x0.shape[0] and abs(dx) < x0.shape[1]
        if np.array_equal(shifted(x0, dy, dx), y0)
    }
    return {d for d in first if all(np.array_equal(shifted(x, *d), y) for x, y in pairs(task))}


def check_translate(task, colours):
    side = min(min(x.shape) for x, _ in pairs(task))
    assert any(max(abs(dy), abs(dx)) <= max(1, (side - 1) // 2) for dy, dx in shifts_of(task))
    for x, y in pairs(task):
        assert x.shape == y.shape and y.any()


def check_gravity(task, colours):
    for x, y in pairs(task):
        expected = np.zeros_like(x)
        for j in range(x.shape[1]):
            column = [v for v in x[:, j].tolist() if v != 0]
            for k, v in enumerate(column):
                expected[x.shape[0] - len(column) + k, j] = v
        np.testing.assert_array_equal(y, expected)


def check_denoise_1d(task, colours):
    for x, y in pairs(task):
        assert x.shape == y.shape and x.shape[0] == 1
        row, expected = x[0].tolist(), x[0].tolist()
        for i in range(1, len(row) - 1):
            if row[i - 1] == row[i + 1] != row[i]:
                expected[i] = row[i - 1]
        assert y[0].tolist() == expected
        assert expected != row  # at least one noise pixel
        # the output has no isolated pixel left: its runs are at least 2 long
        out = y[0].tolist()
        assert all(out[i - 1] != out[i + 1] or out[i - 1] == out[i] for i in range(1, len(out) - 1))


def components(x):
    """Number of 4-connected components of non-zero cells, by flood fill."""
    seen = np.zeros(x.shape, dtype=bool)
    count = 0
    for start in zip(*np.nonzero(x), strict=True):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            i, j = queue.popleft()
            for ni, nj in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= ni < x.shape[0] and 0 <= nj < x.shape[1] and x[ni, nj] and not seen[ni, nj]:
                    seen[ni, nj] = True
                    queue.append((ni, nj))
    return count


def check_count_objects(task, colours):
    for x, y in pairs(task):
        k = components(x)
        assert k >= 1
        (colour,) = set(np.unique(x).tolist()) - {0}  # one object colour
        assert y.shape == (1, k)
        assert set(y.ravel().tolist()) == {colour}


def recolourings_of(task):
    """Every (a, b), a ≠ b both non-zero, with y = x where x ≠ a and y = b where x = a."""
    colours = range(1, 10)
    return {
        (a, b)
        for a in colours
        for b in colours
        if a != b and all(np.array_equal(np.where(x == a, b, x), y) for x, y in pairs(task))
    }


def check_recolour(task, colours):
    rules = recolourings_of(task)
    assert rules
    for a, _ in rules:
        assert all((x == a).any() for x, _ in pairs(task))  # every input shows the rule


CHECKS = {
    "colour_permutation": check_colour_permutation,
    "flip": lambda task, colours: axes_of(task) or pytest.fail("no flip axis fits"),
    "rotate": lambda task, colours: turns_of(task) or pytest.fail("no rotation fits"),
    "transpose": check_transpose,
    "translate": check_translate,
    "gravity": check_gravity,
    "denoise_1d": check_denoise_1d,
    "count_objects": check_count_objects,
    "recolour": check_recolour,
}


def test_every_family_has_a_check():
    assert set(CHECKS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_pair_follows_the_family_rule(family):
    for kw, tasks in tasks_for(family):
        for task in tasks:
            CHECKS[family](task, kw["colours"])


def test_count_objects_sees_several_counts_and_diagonal_contacts_count_apart():
    tasks = generate_tasks("count_objects", 100, seed=0, min_side=6, max_side=10)
    counts = {y.shape[1] for t in tasks for _, y in pairs(t)}
    assert counts >= {1, 2, 3, 4, 5}
    assert max(counts) <= 10
    # an input where two objects touch only at a corner exists and counts them apart
    diagonal = [
        x
        for t in tasks
        for x, _ in pairs(t)
        if ((x[:-1, :-1] > 0) & (x[1:, 1:] > 0) & (x[:-1, 1:] == 0) & (x[1:, :-1] == 0)).any()
    ]
    assert diagonal


# ---------------------------------------------------------------- shared or per-task rules

# Families with parameters, and the rules (from a finite set) that fit one task.
RULES_OF = {
    "colour_permutation": lambda task: {
        p
        for p in itertools.permutations(range(4))
        if all(np.array_equal(np.array(p)[x], y) for x, y in pairs(task))
    },
    "flip": axes_of,
    "rotate": turns_of,
    "translate": shifts_of,
    "recolour": recolourings_of,
}


@pytest.mark.parametrize("family", sorted(RULES_OF))
def test_shared_rule_fits_every_task_and_per_task_rules_differ(family):
    kw = dict(min_side=3, max_side=6, colours=4)
    shared = generate_tasks(family, 20, seed=2, shared_rule=True, **kw)
    common = set.intersection(*(RULES_OF[family](t) for t in shared))
    assert common  # one rule explains all 20 tasks
    own = generate_tasks(family, 20, seed=2, **kw)
    per_task = [RULES_OF[family](t) for t in own]
    assert all(per_task)  # each task has a rule …
    assert not set.intersection(*per_task)  # … but no one rule fits them all


def test_shared_permutation_is_the_same_bijection_in_every_task():
    tasks = generate_tasks("colour_permutation", 20, seed=4, shared_rule=True)
    mapping = {}
    for t in tasks:
        for x, y in pairs(t):
            for a, b in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True):
                assert mapping.setdefault(a, b) == b
    assert sorted(mapping) == sorted(mapping.values()) == list(range(10))


# ---------------------------------------------------------------- solvability


@pytest.mark.parametrize(
    ("min_side", "max_side", "num_train", "colours"),
    [(3, 10, 3, 10), (1, 2, 1, 10), (1, 1, 2, 10), (2, 3, 1, 2), (1, 3, 3, 5)],
)
def test_colour_permutation_test_colours_appear_in_the_demonstrations(
    min_side, max_side, num_train, colours
):
    tasks = generate_tasks(
        "colour_permutation",
        200,
        seed=3,
        min_side=min_side,
        max_side=max_side,
        num_train=num_train,
        num_test=2,
        colours=colours,
    )
    for task in tasks:
        shown = set().union(*(np.unique(x).tolist() for x, _ in task.train))
        for x, y in task.test:
            assert set(np.unique(x).tolist()) <= shown
            assert not np.array_equal(x, y)
        for x, y in task.train:
            assert not np.array_equal(x, y)


# ---------------------------------------------------------------- JSON, mixture, speed


def test_json_layout_is_lists_of_ints():
    for task in generate_mixture(sorted(FAMILIES), 2, seed=0):
        layout = json.loads(json.dumps(task.to_json()))
        assert set(layout) == {"train", "test"}
        assert len(layout["train"]) == 3 and len(layout["test"]) == 1
        for entry, (x, y) in zip(layout["train"] + layout["test"], pairs(task), strict=True):
            assert set(entry) == {"input", "output"}
            for grid, array in ((entry["input"], x), (entry["output"], y)):
                assert all(type(v) is int for row in grid for v in row)
                assert np.array_equal(np.array(grid), array)


def test_mixture_interleaves_the_families_own_tasks():
    families = ["gravity", "flip", "count_objects"]
    mixed = generate_mixture(families, 4, seed=9, max_side=7, shared_rule=True)
    assert [t.id for t in mixed] == [f"{f}-9-{i}" for i in range(4) for f in families]
    for k, f in enumerate(families):
        alone = generate_tasks(f, 4, seed=9, max_side=7, shared_rule=True)
        assert all(s.same_grids(t) for s, t in zip(mixed[k::3], alone, strict=True))
    assert generate_mixture(families, 0, seed=0) == []


def test_a_thousand_tasks_of_10x10_grids_are_quick():
    for family in FAMILIES:
        start = time.perf_counter()
        tasks = generate_tasks(family, 1000, seed=0, min_side=10, max_side=10)
        elapsed = time.perf_counter() - start
        assert len(tasks) == 1000
        assert elapsed < 10, (family, elapsed)  # about 0.1–1 s on a 2-core CPU


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("family", "kwargs", "message"),
    [
        ("spin", {}, r"unknown family 'spin'; known: colour_permutation, flip"),
        ("flip", {"count": -1}, r"count must be ≥ 0"),
        ("flip", {"seed": -2}, r"seed must be ≥ 0"),
        ("flip", {"seed": 1.5}, r"seed must be an integer"),
        ("flip", {"min_side": 0}, r"min_side must be in 1…30"),
        ("flip", {"max_side": 31}, r"max_side must be in 1…30"),
        ("flip", {"min_side": 5, "max_side": 4}, r"min_side must be ≤ max_side"),
        ("flip", {"num_train": 0}, r"num_train must be ≥ 1"),
        ("flip", {"num_test": 0}, r"num_test must be ≥ 1"),
        ("flip", {"colours": 1}, r"colours must be in 2…10"),
        ("flip", {"colours": 11}, r"colours must be in 2…10"),
        ("flip", {"min_side": 1, "max_side": 1}, r"max_side must be ≥ 2 for family 'flip'"),
        ("denoise_1d", {"min_side": 1, "max_side": 2}, r"max_side must be ≥ 3 for family 'denoise"),
        ("recolour", {"colours": 2}, r"colours must be ≥ 3 for family 'recolour'"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(family, kwargs, message):
    args = {"count": 1, "seed": 0} | kwargs
    count, seed = args.pop("count"), args.pop("seed")
    with pytest.raises(ValueError, match=message):
        generate_tasks(family, count, seed, **args)


@pytest.mark.parametrize(
    ("families", "message"),
    [
        ("flip", r"not one string"),
        ([], r"at least one family"),
        (["flip", "flip"], r"must not repeat"),
        (["flip", "spin"], r"unknown family 'spin'"),
    ],
)
def test_bad_mixtures_raise(families, message):
    with pytest.raises(ValueError, match=message):
        generate_mixture(families, 1, seed=0)


def test_a_family_called_directly_checks_its_spec_and_raises_min_side():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"family 'flip' needs max_side ≥ 2"):
        FAMILIES["flip"](rng, TaskSpec(min_side=1, max_side=1))
    for x, y in FAMILIES["flip"](rng, TaskSpec(min_side=1, max_side=2), rule=0):
        assert x.shape[0] == 2 and np.array_equal(x[::-1], y)
    with pytest.raises(ValueError, match=r"colours must be in 2…10"):
        TaskSpec(colours=11)
