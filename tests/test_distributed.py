"""Multi-process runs (``jax.distributed`` on localhost, CPU collectives through gloo):
two processes train what one trains, and their checkpoints restore in one process
and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_MODULAR

from grokjax.errors import ConfigError
from grokjax.launch import initialize
from grokjax.train import apply_overrides, resolve, resume_experiment, run_experiment

# 3 members per method: two processes (a device each) pad every group to 4. vmap in both:
# one CPU device would otherwise map members one by one, whose rounding differs.
TINY = [*TINY_MODULAR, "member_axis=vmap", "eval_every=10", "evals_per_sync=1"]
METHODS = ["baseline", "grokfast_ema"]


def config(steps: int):
    cfg = apply_overrides(resolve("grokfast_quick"), [*TINY, f"steps={steps}"])
    assert [m.label for m in cfg.methods] == METHODS and len(cfg.methods[0].seeds) == 3
    return cfg


def grokjax(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device each
    return subprocess.run(
        [sys.executable, "-m", "grokjax.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(run_dir) -> dict[tuple, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {(r["step"], r["group"], r["member"]): r for r in map(json.loads, lines)}


def assert_same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, row in a.items():
        for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
            # collective reductions may sum in another order
            np.testing.assert_allclose(row[name], b[key][name], rtol=1e-5, err_msg=f"{key}")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dist") / "two"
    sets = [f"--set={o}" for o in [*TINY, "steps=20"]]
    proc = grokjax("run", "grokfast_quick", *sets, "--processes", "2", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """40 steps in one process (its first 20 are what a 20-step run trains: nothing in
    the config depends on the budget)."""
    run_dir = tmp_path_factory.mktemp("dist") / "one"
    assert run_experiment(config(40), run_dir=run_dir, progress=False).compilations == 1
    return run_dir


@pytest.mark.slow  # two runs of 2 processes (~40 s); gates in CI's slow part
def test_two_processes_train_what_one_trains(two_process_run, one_process_run):
    one = {k: r for k, r in rows(one_process_run).items() if k[0] <= 20}
    assert_same_metrics(rows(two_process_run), one)
    # process 0 wrote the files; process 1's output went to its log
    assert (two_process_run / "process_1.log").exists()
    assert (two_process_run / "report.md").exists()


@pytest.mark.slow  # three more runs
def test_two_process_checkpoint_resumes_in_one_process_and_back(
    two_process_run, one_process_run, tmp_path
):
    """2 processes → 1 process (20 → 30 steps) → 2 processes (30 → 40 steps) equals
    one uninterrupted process."""
    resumed = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(two_process_run), str(resumed)], check=True)
    resume_experiment(resumed, steps=30, progress=False)
    proc = grokjax("run", "--resume", str(resumed), "--set=steps=40", "--processes", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert_same_metrics(rows(resumed), rows(one_process_run))


def test_bad_process_arguments_are_named(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match="SLURM_JOB_ID is not set; start the run with srun"):
        initialize(slurm=True)
    with pytest.raises(ConfigError, match="--slurm reads the processes from SLURM"):
        initialize("127.0.0.1:1", slurm=True)
    with pytest.raises(ConfigError, match="--process-id 2 is outside 0 … 1"):
        initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(ConfigError, match="needs --coordinator HOST:PORT, --process-id I"):
        initialize("127.0.0.1:1", None, 0)
    proc = grokjax("run", "grokfast_quick", "--processes", "2", "--coordinator", "h:1")
    assert proc.returncode == 2
    assert "--processes starts local processes" in proc.stderr
    # a process id without a coordinator is not a single-process run
    proc = grokjax("run", "grokfast_quick", "--process-id", "1", "--num-processes", "4")
    assert proc.returncode == 2
    assert "needs --coordinator HOST:PORT, --process-id I and --num-processes N" in proc.stderr
    with pytest.raises(ConfigError, match=r"member_axis.*'auto' or 'vmap' with data_parallel > 1"):
        apply_overrides(config(10), ["data_parallel=2", "member_axis=map"])


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


@pytest.mark.slow
def test_a_killed_process_ends_the_run_and_resume_completes_it(tmp_path):
    """Kill -9 one of two processes after a checkpoint: the run ends with a message
    naming it within 60 s, and ``--resume`` finishes what one process trains."""
    import signal
    import time

    run_dir = tmp_path / "killed"
    sets = [f"--set={o}" for o in [*TINY, "steps=3000", "checkpoint_every=20"]]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "grokjax.cli", "run", "grokfast_quick", *sets, "--processes",
         "2", "--run-dir", str(run_dir), "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "40").exists():
            assert launcher.poll() is None, launcher.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.5)
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = launcher.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 5, stderr[-3000:]
    assert "process 1 of 2 exited with code -9" in stderr
    assert f"grokjax run --resume {run_dir} --processes 2" in stderr
    assert took < 60, took
    print(f"the run ended {took:.1f} s after the kill")

    proc = grokjax("run", "--resume", str(run_dir), "--set=steps=100", "--processes", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    reference = tmp_path / "reference"
    run_experiment(config(100), run_dir=reference, progress=False)
    assert_same_metrics(rows(run_dir), rows(reference))
