"""``grokjax analyze``: the probes recomputed from the checkpoints equal the ones
recorded during training, plus Nanda's restricted/excluded loss with the final key
frequencies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_mechanistic import small

from grokjax.analyze import analyze_run
from grokjax.cli import main
from grokjax.train import run_experiment


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("analyze") / "run"
    config = small(
        "steps=30",
        "eval_every=10",
        "evals_per_sync=1",
        "checkpoint_every=10",
        "keep_checkpoints=0",
    )
    run_experiment(config, run_dir=run_dir, progress=False)
    steps = analyze_run(run_dir, progress=False, figures=False)
    return run_dir, steps


def _jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_analyze_reproduces_the_recorded_probes(analysed):
    run_dir, steps = analysed
    assert steps == [10, 20, 30]
    recorded = {(r["step"], r["member"]): r for r in _jsonl(run_dir / "metrics.jsonl")}
    rows = _jsonl(run_dir / "analysis" / "checkpoints.jsonl")
    assert len(rows) == 3 * 2
    compared = 0
    for row in rows:
        want = recorded[row["step"], row["member"]]
        for name, value in row.items():
            if name in want and isinstance(value, float) and not name.startswith("train_"):
                np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-7, err_msg=name)
                compared += 1
        assert not any(k.startswith("grad/") for k in row)  # needs the training step
    assert compared > 6 * 40  # every state-only probe scalar of every row
    meta = json.loads((run_dir / "analysis" / "checkpoints.json").read_text())
    assert meta["skipped_probes"] == ["gradient_flow"]
    for s in steps:
        with (
            np.load(run_dir / "analysis" / f"step_{s:08d}.npz") as during,
            np.load(run_dir / "analysis" / f"checkpoint_{s:08d}.npz") as after,
        ):
            assert set(during.files) == set(after.files)
            for key in during.files:
                np.testing.assert_allclose(after[key], during[key], rtol=1e-5, atol=1e-7)


def test_nanda_losses_use_the_final_key_frequencies(analysed):
    """At the final checkpoint the final key frequencies are the current ones, so
    Nanda's losses equal the online ones there; earlier they are computed with the
    final frequencies, recorded in checkpoints.json."""
    run_dir, _ = analysed
    rows = _jsonl(run_dir / "analysis" / "checkpoints.jsonl")
    meta = json.loads((run_dir / "analysis" / "checkpoints.json").read_text())
    with np.load(run_dir / "analysis" / "step_00000030.npz") as last:
        np.testing.assert_array_equal(
            meta["final_key_frequencies"]["adamw"], last["adamw/progress/key_freqs"]
        )
    for row in rows:
        assert {"progress/restricted_loss", "progress/excluded_loss"} <= row.keys()
        if row["step"] == 30:
            for kind in ("restricted", "excluded"):
                np.testing.assert_allclose(
                    row[f"progress/{kind}_loss"], row[f"progress/{kind}_loss_online"], rtol=1e-6
                )


def test_analyze_from_the_command_line(analysed, capsys):
    run_dir, _ = analysed
    assert main(["analyze", str(run_dir), "--steps", "20", "--no-progress"]) == 0
    assert "analysed 1 checkpoint(s) [20]" in capsys.readouterr().out
    assert [r["step"] for r in _jsonl(run_dir / "analysis" / "checkpoints.jsonl")] == [20, 20]
    assert (run_dir / "report.md").exists()
    assert main(["analyze", str(run_dir), "--steps", "15"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at step(s) [15]" in err and "saved: [10, 20, 30]" in err
