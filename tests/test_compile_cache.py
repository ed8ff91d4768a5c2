"""The persistent compilation cache of `grokjax run`: a second run of the same config
shape takes its program from the cache and trains the same numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import TINY_MODULAR

from grokjax.runs.compile_cache import CompileWatch, default_dir


def _run(run_dir, *flags: str) -> str:
    # a cache of its own, not the test suite's shared one (conftest's JAX_* variables)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
    overrides = [f"--set={o}" for o in [*TINY_MODULAR, "steps=20", "eval_every=10"]]
    cmd = [sys.executable, "-m", "grokjax.cli", "run", "grokfast_quick", *overrides]
    cmd += ["--run-dir", str(run_dir), "--no-progress", *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return (run_dir / "report.md").read_text()


def _hits(report: str) -> int:
    found = re.search(r"compilation [\d.]+ s \((\d+) programs, (\d+) from the persistent", report)
    assert found, report
    return int(found.group(2))


def test_a_second_run_takes_its_program_from_the_cache_and_trains_the_same(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path / "first", "--compile-cache", str(cache))
    second = _run(tmp_path / "second", "--compile-cache", str(cache))
    assert _hits(first) == 0 and _hits(second) >= 1
    assert re.search(r"Where it went: setup [\d.]+ s( \(\d+%\))?, program [\d.]+ s", second), second
    assert any(cache.iterdir())
    a = (tmp_path / "first" / "metrics.jsonl").read_text()
    b = (tmp_path / "second" / "metrics.jsonl").read_text()
    assert a == b


def test_compile_watch_counts_compilations_and_stops_listening():
    import jax
    import jax.numpy as jnp

    with CompileWatch() as watch:
        jax.jit(lambda x: jnp.sin(x) * 7)(jnp.ones(3))
    seen = watch.programs
    assert seen >= 1 and watch.seconds > 0
    jax.jit(lambda x: jnp.cos(x) * 5)(jnp.ones(3))  # after the block: not counted
    assert watch.programs == seen
    # the suite's own cache is on in this process; a watch that saw no lookup says off
    assert "persistent cache off" in CompileWatch(seconds=1.0, programs=2).summary()
    assert "2 from the persistent cache" in CompileWatch(1.0, 2, 2, 0, 3.0).summary()


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GROKJAX_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert default_dir() == tmp_path / "jax"  # JAX's own setting, e.g. this suite's
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_dir() == tmp_path / "grokjax" / "xla"
    monkeypatch.setenv("GROKJAX_COMPILE_CACHE", str(tmp_path / "mine"))
    assert default_dir() == tmp_path / "mine"
