"""Streamed LM training (``data.stream = true``): the feed's arrays are the packed
stream's batches, checkpoints resume the same token stream, a damaged shard stops a
run (one or two processes) with its file and line named."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from grokjax.data import MalformedRecord, offline_text, write_shard
from grokjax.data.stream import IntervalFeed, ShardStream, offline_shards, streamed_windows
from grokjax.data.text import PackedStream, ShardReader
from grokjax.errors import ConfigError
from grokjax.train import apply_overrides, resolve, resume_experiment, run_experiment
from grokjax.train.loading import select_methods

SEQ, BATCH, INTERVAL = 32, 4, 5


def tiny(root: pathlib.Path | str, steps: int, *extra: str) -> list[str]:
    """A one-layer Mamba LM on ``root`` streamed, one method of one seed."""
    return [
        "data.stream=true",
        f"data.text_path={root}",
        f"data.seq_len={SEQ}",
        "data.val_windows=4",
        "model.width=16",
        "model.depth=1",
        f"batch_size={BATCH}",
        f"eval_every={INTERVAL}",
        "tokens_per_param=0",
        f"steps={steps}",
        "methods.0.seeds=[0]",
        "methods.0.optimizer.0.learning_rate=3e-3",
        *extra,
    ]


def config(root, steps: int, *extra: str):
    return select_methods(
        apply_overrides(resolve("mamba-swelu"), tiny(root, steps, *extra)), ["silu"]
    )


def docs(n: int, size: int = 600) -> list[dict]:
    text = offline_text().decode("utf-8")
    return [{"text": text[i * size : (i + 1) * size]} for i in range(n)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> pathlib.Path:
    """Two training shards (zstd and plain) of 600-character documents; no validation
    split, so validation is held out from the first training documents."""
    root = tmp_path_factory.mktemp("shards")
    d = docs(40)
    write_shard(root / "train/chunk1/a.jsonl.zst", d[0::2])
    write_shard(root / "train/chunk1/b.jsonl", d[1::2])
    return root


def test_stream_needs_a_shard_directory(tmp_path):
    text = tmp_path / "one.txt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match=r"data\.text_path.*shard directory"):
        config(text, 10)


def test_validation_is_held_out_and_the_feed_yields_the_packed_batches(shards):
    """Without a validation split the first documents validate and training starts
    after them; each interval's array is ``INTERVAL`` consecutive batches of the packed
    stream, with the stream's position after exactly those batches."""
    w = streamed_windows(str(shards), seq_len=SEQ, batch_size=BATCH, val_windows=4)
    window = SEQ + 1
    assert w.tokens_T.shape == (8 * window,) and w.num_val == 4 and w.num_train == 4
    head = docs(1)[0]["text"]  # 132 tokens: shard a's first document suffices
    assert bytes(w.tokens_T[: 4 * window].tolist()).decode() == head[: 4 * window]
    assert w.stream.start["consumed"] == [1, 0]  # training starts with shard b

    reference = PackedStream(ShardReader(shards), seq_len=SEQ, batch_size=BATCH)
    reference.reader.load_state_dict(w.stream.start)
    feed = IntervalFeed(w.stream.open(), INTERVAL)
    try:
        for _ in range(3):
            batches, state = feed.next()
            want = np.stack([next(reference) for _ in range(INTERVAL)])
            np.testing.assert_array_equal(batches, want)
            assert state["packed"] == json.loads(json.dumps(reference.state_dict()))
    finally:
        feed.close()
    assert not feed._thread.is_alive()


def test_stream_repeats_and_resumes_across_epochs(shards):
    spec = ShardStream(str(shards), seq_len=SEQ, batch_size=BATCH)
    stream = spec.open()
    first = [next(stream) for _ in range(250)]  # 40 × ~600 tokens: past one epoch
    assert stream.epoch == 1
    saved = json.loads(json.dumps(spec.open().state_dict()))
    again = spec.open(saved)
    for got, want in zip((next(again) for _ in range(250)), first, strict=True):
        np.testing.assert_array_equal(got, want)
    mid = spec.open()
    for _ in range(200):
        next(mid)
    assert mid.epoch == 1
    resumed = spec.open(json.loads(json.dumps(mid.state_dict())))
    np.testing.assert_array_equal(next(resumed), first[200])


def test_a_malformed_line_is_raised_at_the_interval_that_needs_it(tmp_path):
    d = docs(12)
    write_shard(tmp_path / "train/c/a.jsonl", d[:6])
    bad = tmp_path / "train/c/b.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in d[6:9]) + "{broken\n")
    feed = IntervalFeed(ShardStream(str(tmp_path), SEQ, BATCH).open(), 2)
    try:
        got = 0
        with pytest.raises(MalformedRecord, match=r"b\.jsonl, line 4"):
            while True:
                feed.next()
                got += 1
        assert got >= 3  # the intervals before the bad line came through
    finally:
        feed.close()
    assert not feed._thread.is_alive()


def meta(run_dir: pathlib.Path, step: int) -> dict:
    return json.loads((run_dir / "checkpoints" / str(step) / "meta" / "metadata").read_text())


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_from_a_mid_run_checkpoint_trains_on_the_same_tokens(shards, tmp_path):
    """A 30-step run checkpoints every 10 steps while the feed reads ahead; resuming a
    copy from its step-10 checkpoint gives the same metrics and stream position."""
    full = tmp_path / "full"
    r = run_experiment(
        config(shards, 30, "checkpoint_every=10", "evals_per_sync=1"),
        run_dir=full,
        progress=False,
    )
    assert r.compilations == 1
    at10, at30 = meta(full, 10), meta(full, 30)
    assert at10["stream"]["packed"]["batches"] == 10
    assert at30["stream"]["packed"]["batches"] == 30
    resumed = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(full), str(resumed)], check=True)
    resume_experiment(resumed, progress=False, from_step=10)
    assert meta(resumed, 30)["stream"] == at30["stream"]
    a, b = rows(full), rows(resumed)
    assert [x["step"] for x in a] == [x["step"] for x in b] == [5, 10, 15, 20, 25, 30]
    for x, y in zip(a, b, strict=True):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            np.testing.assert_allclose(x[k], y[k], rtol=1e-6, err_msg=f"{k} at {x['step']}")


def test_offline_shards_hold_out_a_validation_split(tmp_path):
    root = offline_shards(tmp_path / "pydoc")
    assert offline_shards(tmp_path / "pydoc") == root  # reused
    train = list(ShardReader(root))
    val = list(ShardReader(root, "validation"))
    assert len(val) >= 1 and not set(val) & set(train)


def test_two_processes_stop_on_a_malformed_shard_with_its_line_named(tmp_path):
    """Both processes read the same stream, meet the bad line at the same interval and
    exit with code 2; process 0's message names the file and line."""
    root = tmp_path / "shards"
    d = docs(30)
    write_shard(root / "train/c/a.jsonl.zst", d[:15])
    bad = root / "train/c/b.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in d[15:21]) + "{broken\n")
    sets = [f"--set={o}" for o in tiny(root, 200)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "grokjax.cli", "run", "mamba-swelu", *sets, "--only=silu",
         "--processes", "2", "--run-dir", str(tmp_path / "run"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "b.jsonl, line 7" in proc.stderr, proc.stderr[-3000:]
    assert "MalformedRecord" not in proc.stderr  # the message, not a traceback
    assert "b.jsonl, line 7" in (tmp_path / "run" / "process_1.log").read_text()
    assert len(rows(tmp_path / "run")) >= 2  # intervals before the bad line trained
    print(f"the 2-process run stopped after {time.monotonic() - start:.1f} s")
