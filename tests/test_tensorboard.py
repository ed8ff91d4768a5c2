"""TensorBoard event files (``<run_dir>/tb/``), read back with TensorBoard's own loaders:
every member's scalars at the steps and values of ``metrics.jsonl``, each step once
after a resume."""

from __future__ import annotations

import json
import pathlib
import shutil
import types

import numpy as np
import pytest

from grokjax.runs.tensorboard import TensorBoardWriter, member_dir_name
from grokjax.train import apply_overrides, resolve, resume_experiment, run_experiment

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
plugin_event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.plugin_event_accumulator"
)


def read_scalars(folder: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard's (legacy) loader reads ``folder``."""
    ea = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(s.step, s.value) for s in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def read_scalars_as_served(folder: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """The same, through the loader ``tensorboard --load_fast=false`` serves from."""
    ea = plugin_event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    ea.Reload()
    return {
        tag: [(t.step, float(np.asarray(t.tensor_proto.float_val)[0])) for t in ea.Tensors(tag)]
        for tag in ea.Tags()["tensors"]
    }


def fake_groups():
    def group(label, members):
        return types.SimpleNamespace(method=types.SimpleNamespace(label=label), members=members)

    swept = tuple((s, {"optimizer.0.lamb": lamb}) for s in (0, 1) for lamb in (0.0, 2.0))
    return [group("baseline", ((0, {}), (7, {}))), group("grokfast/ema", swept)]


NAMES = [["train_loss", "val_acc", "finite"], ["train_loss", "nlm_cos/layers/0/kernel", "finite"]]


def fake_host(rng, groups, step):
    host = []
    for group, names in zip(groups, NAMES, strict=True):
        n = len(group.members)
        m = {k: rng.normal(size=n).astype(np.float32) for k in names if k != "finite"}
        m["finite"] = np.ones(n, bool)
        host.append(m)
    if step == 20:
        host[1]["train_loss"][0] = np.nan  # written as it is
    return host


def test_every_member_and_tag_reads_back_with_its_steps_and_values(tmp_path):
    groups, rng, steps = fake_groups(), np.random.default_rng(0), [10, 20, 30]
    writer = TensorBoardWriter(tmp_path, groups)
    hosts = [fake_host(rng, groups, step) for step in steps]
    for step, host in zip(steps, hosts, strict=True):
        writer.write(step, host, NAMES)
    writer.close()

    folders = {p.relative_to(tmp_path / "tb").as_posix() for p in (tmp_path / "tb").glob("*/*")}
    assert folders == {
        "baseline/m0_seed0",
        "baseline/m1_seed7",
        "grokfast_ema/m0_seed0_optimizer.0.lamb=0",
        "grokfast_ema/m1_seed0_optimizer.0.lamb=2",
        "grokfast_ema/m2_seed1_optimizer.0.lamb=0",
        "grokfast_ema/m3_seed1_optimizer.0.lamb=2",
    }
    label = {0: "baseline", 1: "grokfast_ema"}
    for g, group in enumerate(groups):
        for i, (seed, hps) in enumerate(group.members):
            scalars = read_scalars(tmp_path / "tb" / label[g] / member_dir_name(i, seed, hps))
            assert set(scalars) == set(NAMES[g]) - {"finite"}
            for tag, points in scalars.items():
                assert [s for s, _ in points] == steps
                want = [host[g][tag][i] for host in hosts]  # float32, NaN included
                np.testing.assert_array_equal(np.float32([v for _, v in points]), want)
    nan_member = read_scalars(tmp_path / "tb" / "grokfast_ema" / "m0_seed0_optimizer.0.lamb=0")
    assert np.isnan(nan_member["train_loss"][1][1])  # step 20's NaN, written as it is


def test_a_resume_hides_the_abandoned_steps_and_keeps_the_checkpoints(tmp_path):
    groups = fake_groups()[:1]
    names = [["train_loss"]]

    def host(value):
        return [{"train_loss": np.full(2, value, np.float32)}]

    first = TensorBoardWriter(tmp_path, groups)
    for step in (10, 20, 30, 40):
        first.write(step, host(1.0), names)
    first.close()
    resumed = TensorBoardWriter(tmp_path, groups, resume_step=20)  # the same second
    for step in (30, 40, 50):
        resumed.write(step, host(2.0), names)
    resumed.close()

    folder = tmp_path / "tb" / "baseline" / "m0_seed0"
    assert len(list(folder.iterdir())) == 2  # appended, the old file kept as it was
    want = [(10, 1.0), (20, 1.0), (30, 2.0), (40, 2.0), (50, 2.0)]
    assert read_scalars(folder) == {"train_loss": want}
    assert read_scalars_as_served(folder) == {"train_loss": want}


# --- the run path: what a training run writes equals its metrics.jsonl ---------------

# A small MLP on (a + b) mod 11 (as tests/test_failures.py), two seeds in one method and
# a swept learning rate in the other: 4 members.
TINY = ["data.p=11", "model.hidden=[16, 16]", "batch_size=48", "eval_every=5"]
TINY += ["stop_when_grokked=false", "evals_per_sync=1", "methods.0.seeds=[0, 1]"]
TINY += ["methods.1.sweep={'optimizer.1.learning_rate'=[0.01, 0.003]}"]


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_tb_equals_metrics(run_dir: pathlib.Path, groups, read=read_scalars) -> None:
    """Every member's tb/ folder holds exactly its metrics.jsonl scalars, each step once."""
    by_member: dict[tuple[int, int], list[dict]] = {}
    for row in rows(run_dir):
        by_member.setdefault((row["group"], row["member"]), []).append(row)
    folders = set()
    for g, group in enumerate(groups):
        for i, (seed, hps) in enumerate(group.members):
            folder = run_dir / "tb" / group.method.label / member_dir_name(i, seed, hps)
            folders.add(folder)
            member_rows = by_member[g, i]
            ids = {"step", "method", "group", "member", "seed", *hps}
            tags = set(member_rows[0]) - ids
            scalars = read(folder)
            assert set(scalars) == tags and "finite" not in tags and tags
            for tag in tags:
                assert [s for s, _ in scalars[tag]] == [r["step"] for r in member_rows], tag
                np.testing.assert_array_equal(
                    np.float32([v for _, v in scalars[tag]]),
                    np.float32([r[tag] for r in member_rows]),
                    err_msg=f"{folder.name}: {tag}",
                )
    assert folders == set((run_dir / "tb").glob("*/*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 20-step run, evaluated every 5 steps, with checkpoints at 10 and 20."""
    config = apply_overrides(resolve("orthograd_quick"), [*TINY, "steps=20", "checkpoint_every=10"])
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    result = run_experiment(config, run_dir=run_dir, progress=False, warn=False)
    return run_dir, result.groups


def test_a_runs_tensorboard_files_equal_its_metrics(finished):
    run_dir, groups = finished
    assert sorted(p.name for p in (run_dir / "tb" / "ortho_adamw").iterdir()) == [
        "m0_seed0_optimizer.1.learning_rate=0.01",
        "m1_seed0_optimizer.1.learning_rate=0.003",
    ]
    assert [r["step"] for r in rows(run_dir)][::4] == [5, 10, 15, 20]
    assert_tb_equals_metrics(run_dir, groups)


def test_a_resumed_runs_tensorboard_files_show_each_step_once(finished, tmp_path):
    run_dir = pathlib.Path(shutil.copytree(finished[0], tmp_path / "run"))
    # from the checkpoint at 10: the old files' points at 15 and 20 are abandoned
    result = resume_experiment(run_dir, steps=30, from_step=10, progress=False, warn=False)
    assert sorted({r["step"] for r in rows(run_dir)}) == [5, 10, 15, 20, 25, 30]
    assert_tb_equals_metrics(run_dir, result.groups)
    assert_tb_equals_metrics(run_dir, result.groups, read_scalars_as_served)
