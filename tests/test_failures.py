"""Failures that name themselves and lose nothing: exit codes, damaged run folders,
interrupts, values that must be refused, runaway losses."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from grokjax import cli
from grokjax.train import (
    ConfigError,
    RunResult,
    TrainingDiverged,
    apply_overrides,
    resolve,
    run_experiment,
)
from grokjax.train.loop import _check_finite

# A small MLP on (a + b) mod 11 (the orthograd_quick preset, shrunk): seconds per run.
TINY = ["data.p=11", "model.hidden=[16, 16]", "batch_size=48", "eval_every=5"]
TINY += ["stop_when_grokked=false"]


def sets(*overrides: str) -> list[str]:
    return [arg for item in (*TINY, *overrides) for arg in ("--set", item)]


def run_cli(tmp_path: pathlib.Path, *overrides: str) -> tuple[int, pathlib.Path | None]:
    argv = ["run", "orthograd_quick", *sets(*overrides), "--runs-dir", str(tmp_path)]
    code = cli.main([*argv, "--no-progress"])
    dirs = sorted(tmp_path.iterdir())
    return code, dirs[-1] if dirs else None


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    """A finished 20-step run with checkpoints at 10 and 20."""
    root = tmp_path_factory.mktemp("finished")
    code, run_dir = run_cli(root, "steps=20", "checkpoint_every=10", "evals_per_sync=1")
    assert code == 0
    return run_dir


def copy_of(run_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    import shutil

    return pathlib.Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


# --- values that must be refused (exit 2, before anything is written) ---------------


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "methods.0.optimizer.0.learning_rate=inf",
            "learning_rate = inf: optax.adamw needs a finite",
        ),
        ("data.train_fraction=nan", "data.train_fraction = nan: must be a finite number"),
        ("data.train_fraction=0.001", "leaves neither split empty"),
        ("data.op='x/y'", "data.p = 11"),  # 11 is prime: accepted, checked below with 12
    ],
)
def test_non_finite_and_impossible_values_are_refused(override, message, tmp_path, capsys):
    if override == "data.op='x/y'":
        override = "data.p=12"
        code, _ = run_cli(tmp_path, "data.op='x/y'", override)
        message = "data.p = 12: must be a prime for op 'x/y'"
    else:
        code, _ = run_cli(tmp_path, override)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("lamb", ["-1.0", "nan"])
def test_grokfast_lamb_must_be_finite_and_non_negative(lamb):
    with pytest.raises(ConfigError, match=r"methods.1.optimizer.0.*lamb"):
        apply_overrides(resolve("grokfast_quick"), [f"methods.1.optimizer.0.lamb={lamb}"])


# --- divergence: exit 3, naming the member and its optimizer ------------------------


def test_a_diverging_member_exits_3_naming_its_learning_rate(tmp_path, capsys):
    code, run_dir = run_cli(tmp_path, "steps=20", "methods.0.optimizer.0.learning_rate=1e30")
    err = capsys.readouterr().err
    assert code == 3
    assert "adamw[member 0: seed 0]" in err and "learning_rate=1e+30" in err
    assert (run_dir / "metrics.jsonl").exists() and (run_dir / "grokking.json").exists()
    diverged = [r.get("diverged") for r in json.loads((run_dir / "grokking.json").read_text())]
    assert diverged[0] is not None and diverged[1:] == [None] * (len(diverged) - 1)


def test_a_runaway_training_loss_stops_like_nan():
    """The host check against a hand-made history: member 1's loss grows 2e4-fold."""
    config = apply_overrides(resolve("orthograd_quick"), [*TINY, "methods.0.seeds=[0, 1]"])
    result = run_experiment(apply_overrides(config, ["steps=5"]), progress=False, warn=False)
    first = result.metric(0, "train_loss")[0]
    host = [
        {"train_loss": first * np.array([2.0, 2e4]), "finite": np.array([True, True])},
        {"train_loss": first, "finite": np.array([True, True])},
    ]
    with pytest.raises(TrainingDiverged, match=r"adamw\[member 1: seed 1\]: training loss"):
        _check_finite(result, host, 10)
    relaxed = RunResult(apply_overrides(config, ["divergence_factor=0"]), result.groups)
    relaxed.history = result.history
    _check_finite(relaxed, host, 10)  # 0 turns the check off


# --- damaged run folders: exit 4, naming the file -------------------------------------


def test_a_torn_last_metrics_line_is_dropped_on_resume_and_in_reports(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    path = run_dir / "metrics.jsonl"
    before = rows(run_dir)
    path.write_text(path.read_text() + '{"step": 25, "meth')  # a crash mid-write
    assert cli.main(["report", str(run_dir)]) == 0
    assert cli.main(["run", "--resume", str(run_dir), "--set", "steps=30", "--no-progress"]) == 0
    assert "dropped 1 row(s) of metrics.jsonl written after it (the last one cut off)" in (
        capsys.readouterr().err
    )
    after = rows(run_dir)
    assert after[: len(before)] == before and max(r["step"] for r in after) == 30
    keys = [(r["step"], r["group"], r["member"]) for r in after]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # no step twice


@pytest.mark.parametrize(
    "damage, message",
    [
        ("config", "config.json is damaged (not valid JSON"),
        ("metrics_middle", "metrics.jsonl:2 is damaged"),
        ("metrics_missing", "metrics.jsonl is missing, but the checkpoint is at step 20"),
        ("metrics_short", "metrics.jsonl ends at step 10, before the checkpoint at step 20"),
        ("checkpoint_meta", "checkpoints/20 cannot be read"),
        ("metrics_penultimate", "metrics.jsonl:8 is damaged"),
        ("metrics_member_missing", "has 1 of the 2 members' rows at step 20"),
    ],
)
def test_damaged_run_folders_exit_4_naming_the_file(finished, tmp_path, capsys, damage, message):
    import shutil

    run_dir = copy_of(finished, tmp_path)
    metrics = run_dir / "metrics.jsonl"
    if damage == "checkpoint_meta":  # the step's JSON record deleted
        shutil.rmtree(run_dir / "checkpoints" / "20" / "meta")
    elif damage == "config":
        text = (run_dir / "config.json").read_text()
        (run_dir / "config.json").write_text(text[: len(text) // 2])
    elif damage == "metrics_middle":
        lines = metrics.read_text().splitlines()
        metrics.write_text("\n".join([lines[0], lines[1][:10], *lines[2:]]) + "\n")
    elif damage == "metrics_penultimate":  # a damaged whole line, then a torn one
        lines = metrics.read_text().splitlines()
        metrics.write_text("\n".join([*lines[:-1], lines[-1][:10], '{"step": 2']))
    elif damage == "metrics_member_missing":  # the checkpoint's step lacks a member's row
        lines = metrics.read_text().splitlines()
        metrics.write_text("".join(x + "\n" for x in lines[:-1]))
    elif damage == "metrics_missing":
        metrics.unlink()
    else:
        metrics.write_text("".join(x + "\n" for x in metrics.read_text().splitlines()[:4]))
    before = _snapshot(run_dir)
    assert cli.main(["run", "--resume", str(run_dir), "--set", "steps=30", "--no-progress"]) == 4
    assert message in capsys.readouterr().err
    assert _snapshot(run_dir) == before  # nothing rewritten, no checkpoint deleted


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_new_run_into_a_folder_holding_a_run_is_refused(finished, tmp_path):
    from grokjax.errors import RunFolderError

    run_dir = copy_of(finished, tmp_path)
    before = _snapshot(run_dir)
    config = apply_overrides(resolve("orthograd_quick"), [*TINY, "steps=5"])
    with pytest.raises(RunFolderError, match="already holds a run"):
        run_experiment(config, run_dir=run_dir, progress=False, warn=False)
    assert _snapshot(run_dir) == before


def test_resume_to_fewer_steps_than_trained_is_refused(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    before = _snapshot(run_dir)
    assert cli.main(["run", "--resume", str(run_dir), "--set", "steps=10", "--no-progress"]) == 2
    assert "already trained 20 steps; give steps >= 20" in capsys.readouterr().err
    assert _snapshot(run_dir) == before


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.p = 1"):
        cli.main(["run", "--set", "data.p=1", "--debug"])


# --- interrupts: exit 130, a checkpoint, and a resume identical to no interrupt ------


def test_sigint_saves_a_checkpoint_and_the_resume_equals_an_uninterrupted_run(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "grokjax.cli", "run", "orthograd_quick", "--no-progress"]
    argv += [*sets("steps=100000", "evals_per_sync=1"), "--runs-dir", str(runs)]
    # A shell's background job (`pytest &`) ignores SIGINT and its children inherit
    # that; the child here must start with SIGINT at its default, as from a terminal.
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # until training has written a few evaluations
        found = list(runs.glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 6:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    (run_dir,) = runs.iterdir()
    assert f"grokjax run --resume {run_dir}" in err.decode()
    stopped = max(r["step"] for r in rows(run_dir))
    assert (run_dir / "checkpoints" / str(stopped)).is_dir()

    total = stopped + 10
    resumed = ["run", "--resume", str(run_dir), "--set", f"steps={total}", "--no-progress"]
    assert cli.main(resumed) == 0
    code, straight = run_cli(tmp_path / "straight", f"steps={total}", "evals_per_sync=1")
    assert code == 0
    assert rows(run_dir) == rows(straight)


# --- checkpoints: kept log-spaced, checked by hash, resumable from an earlier step ----


def test_checkpoints_keep_the_latest_and_one_per_octave(tmp_path):
    import jax.numpy as jnp

    from grokjax.runs import RunCheckpointer

    ckpt = RunCheckpointer(tmp_path / "ck")
    for step in (5, 10, 15, 20, 25, 30, 35, 40, 60, 70, 130):
        ckpt.save(step, {"w": jnp.arange(3.0) * step}, {"step": step})
    ckpt.close()
    # first of each octave [4,8) [8,16) [16,32) [32,64) [64,128) [128,256), latest three
    assert RunCheckpointer(tmp_path / "ck").all_steps() == [5, 10, 20, 35, 60, 70, 130]


def test_automatic_checkpoints_bound_the_loss_to_a_minute_or_a_tenth():
    from grokjax.runs import checkpoint_due

    assert not checkpoint_due(0, 1000, 500, 59.0)  # under a minute
    assert not checkpoint_due(0, 1000, 99, 600.0)  # under 10% of the run
    assert checkpoint_due(0, 1000, 100, 60.0)
    assert checkpoint_due(30, 1000, 30, 0.0) and not checkpoint_due(30, 1000, 29, 1e9)
    assert resolve("grokfast_modmul").checkpoint_every == 0  # the main job: automatic


@pytest.mark.parametrize("damage", ["hash", "bytes"])
def test_a_damaged_checkpoint_names_its_step_and_offers_the_previous(
    finished, tmp_path, capsys, damage
):
    run_dir = copy_of(finished, tmp_path)
    if damage == "hash":  # the arrays no longer match what was saved
        path = run_dir / "checkpoints" / "sha256.json"
        hashes = json.loads(path.read_text())
        key = next(iter(hashes["20"]))
        hashes["20"][key] = "0" * 64
        path.write_text(json.dumps(hashes))
    else:  # a flipped byte in every array data file of the step
        for target in (run_dir / "checkpoints" / "20" / "state").glob("**/d/*"):
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0xFF
            target.write_bytes(bytes(data))
    argv = ["run", "--resume", str(run_dir), "--set", "steps=30", "--no-progress"]
    assert cli.main(argv) == 4
    err = capsys.readouterr().err
    assert f"checkpoint {run_dir.resolve()}/checkpoints/20" in err
    assert "--from-step 10" in err
    # the offered step resumes, drops the rows after it and finishes
    assert cli.main([*argv, "--from-step", "10"]) == 0
    steps = [r["step"] for r in rows(run_dir)]
    assert steps == sorted(steps) and max(steps) == 30 and len(steps) == len(set(steps)) * 2


# --- damaged text shards: named, skippable, and on_error from the config ------------


def _shards(root: pathlib.Path, damage: str) -> pathlib.Path:
    from grokjax.data import write_shard

    good = [{"text": f"document {i} " * 40} for i in range(200)]
    write_shard(root / "train/chunk1/a.jsonl.zst", good[:100])
    bad = write_shard(root / "train/chunk1/b.jsonl.zst", good[100:])
    data = bad.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "not_zstd":
        bad.write_bytes(b"this is not zstd data" + data)
    else:  # a line that is not UTF-8, in a plain shard
        plain = root / "train/chunk1/c.jsonl"
        plain.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n{"text": "after"}\n')
        bad.unlink()
        return plain
    return bad


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", "b.jsonl.zst: cut off inside a zstd frame"),
        ("not_zstd", "b.jsonl.zst: not readable zstd data"),
        ("utf8", "c.jsonl, line 2: not a JSON record with a string 'text'"),
    ],
)
def test_damaged_shards_name_the_file_and_can_be_skipped(tmp_path, damage, message):
    from grokjax.data import MalformedRecord, ShardReader

    bad = _shards(tmp_path, damage)
    with pytest.raises(MalformedRecord, match=message):
        list(ShardReader(tmp_path))
    reader = ShardReader(tmp_path, on_error="skip")
    docs = list(reader)
    assert reader.skipped == 1
    if damage == "utf8":
        assert docs.count("fine") == 1 and docs.count("after") == 1
    else:  # every document of the good shard, none invented
        assert sum(d.startswith("document") for d in docs) >= 100
        assert all(d.startswith("document") for d in docs)
    assert bad.exists()


def test_on_error_is_a_data_setting(tmp_path, capsys):
    _shards(tmp_path / "corpus", "truncated")
    base = resolve("mamba_swelu")
    overrides = [f"data.text_path='{tmp_path / 'corpus'}'", "steps=1", "data.seq_len=16"]
    with pytest.raises(ConfigError, match=r"data.on_error = 'sometimes' is not allowed"):
        apply_overrides(base, [*overrides, "data.on_error=sometimes"])
    from grokjax.data.kinds import LMData

    config = apply_overrides(base, [*overrides, "data.on_error=skip"])
    assert isinstance(config.data, LMData) and config.data.on_error == "skip"
    task, _ = config.data.build(config.batch_size, config.sampling, config.dtype, [0])
    assert task.num_train > 0
    assert "skipped 1 malformed line(s) or damaged shard(s)" in capsys.readouterr().err
    strict = apply_overrides(base, overrides)
    from grokjax.data import MalformedRecord

    with pytest.raises(MalformedRecord, match="cut off inside a zstd frame"):
        strict.data.build(config.batch_size, config.sampling, config.dtype, [0])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.text_path='{corpus}'"], "cut off inside a zstd frame"),
        (["data.max_tokens=100"], "use more text (max_tokens=0)"),
    ],
)
def test_data_that_cannot_serve_the_config_exits_2(tmp_path, capsys, overrides, message):
    _shards(tmp_path / "corpus", "truncated")
    items = [o.format(corpus=tmp_path / "corpus") for o in ["steps=1", *overrides]]
    argv = ["run", "mamba_swelu", *[a for o in items for a in ("--set", o)]]
    assert cli.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_non_finite_values_inside_a_record_table_are_refused():
    override = "methods.2.optimizer.0.controller={high=nan}"
    with pytest.raises(ConfigError, match=r"controller.high = nan: needs a finite number"):
        apply_overrides(resolve("surge_collapse"), [override])


def test_non_finite_probe_keywords_are_refused():
    probe = "probes=[{probe='test_probes.squared_norm_and_val_margin', scale=inf}]"
    with pytest.raises(ConfigError, match=r"probes.0.scale = inf: probe .* needs a finite"):
        apply_overrides(resolve("orthograd_quick"), [probe])


def test_the_first_signal_asks_to_stop_and_a_second_exits_at_once():
    from grokjax.train.loop import _StopOnSignal

    # as from a terminal, even when the suite runs as a background job (SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs between bytecodes
            assert stop.requested
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, outer)
