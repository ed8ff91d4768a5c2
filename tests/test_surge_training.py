"""Surge-Collapse in the trainer: the preset, input noise, events, entropy metrics, data."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from grokjax.train import ConfigError, apply_overrides, resolve, run_experiment
from grokjax.viz.report import write_report


def small(*overrides: str):
    """The surge-collapse preset on 1,000 samples (800 train, 13 batches of 64 per epoch)."""
    return apply_overrides(
        resolve("surge-collapse"),
        ["data.num_samples=1000", "steps=400", "eval_every=100", *overrides],
    )


def only(cfg, m: int):
    """``cfg`` with method ``m`` alone, one member (σ = 0)."""
    method = dataclasses.replace(cfg.methods[m], sweep={})
    return dataclasses.replace(cfg, methods=(method,))


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "surge"
    return run_experiment(small(), run_dir=run_dir, progress=False)


def test_preset_trains_every_member_in_one_program(preset_run):
    """12 members (3 methods × 4 noise levels), one compilation, finite entropy metrics."""
    r = preset_run
    assert [g.size for g in r.groups] == [4, 4, 4]
    assert r.compilations == 1
    assert r.steps == [100, 200, 300, 400]
    for g in range(3):
        h = r.metric(g, "act_entropy_norm")
        assert h.shape == (4, 4) and np.all((h > 0.5) & (h < 1.0))
        np.testing.assert_allclose(
            r.metric(g, "act_entropy"), h * math.log(256), rtol=1e-5
        )  # nats = normalised · ln(width)
        # 64 labels over 128 classes: at most log2(64) = 6 bits
        t = r.metric(g, "target_entropy")
        assert np.all((t > 5.0) & (t <= 6.0))


def test_fixed_schedule_events_and_sparsity(preset_run):
    """Collapse at updates 100, 200, … zeros ⌈(n−1)/2⌉ of each leaf; the surge at 200
    and 400 re-expands every zero; the baseline never prunes."""
    r = preset_run
    leaves = [128 * 256, 256, 256 * 128, 128]  # kernel, bias, kernel, bias
    expected_half = sum(math.ceil(0.5 * (n - 1)) for n in leaves) / sum(leaves)
    fixed = 1
    np.testing.assert_array_equal(r.metric(fixed, "collapses")[:, 0], [1, 2, 3, 4])
    np.testing.assert_array_equal(r.metric(fixed, "surges")[:, 0], [0, 1, 1, 2])
    zeros = r.metric(fixed, "zero_fraction")
    np.testing.assert_allclose(zeros[[0, 2]], expected_half, rtol=1e-6)  # after a collapse
    np.testing.assert_array_equal(zeros[[1, 3]], 0.0)  # after collapse + surge
    assert np.all(r.metric(0, "collapses") == 0) and np.all(r.metric(0, "zero_fraction") == 0)


def test_noise_free_members_match_a_run_without_noise(preset_run):
    """σ = 0 adds exactly nothing: the baseline's σ = 0 member equals a noise-free run,
    and noisy members differ from it."""
    cfg = apply_overrides(small(), ["methods.0.sweep={}"])
    plain = run_experiment(dataclasses.replace(cfg, methods=cfg.methods[:1]), progress=False)
    assert not plain.groups[0].noisy
    noisy = preset_run.metric(0, "train_loss")
    np.testing.assert_array_equal(plain.metric(0, "train_loss")[:, 0], noisy[:, 0])
    assert not np.array_equal(noisy[:, 0], noisy[:, 3])


def test_report_has_entropy_section_and_figure(preset_run):
    text = write_report(preset_run.run_dir).read_text()
    assert "## Entropy dynamics" in text and "plots/entropy.png" in text
    assert (preset_run.run_dir / "plots" / "entropy.png").exists()
    assert "surge_collapse_fixed: lower final training loss than baseline at" in text
    assert "reconstruction" in text


def test_adaptive_controller_reads_the_entropy_in_the_trainer():
    """Thresholds set so that one rule must fire: high = 0 collapses and surges every
    cooldown + 1 updates; low = high = 1 pumps instead (and never collapses)."""
    cfg = small(
        "steps=200",
        "methods.2.optimizer.0.controller.high=0.0",
        "methods.2.optimizer.0.controller.low=0.0",
        "methods.2.optimizer.0.controller.warmup=1",
        "methods.2.optimizer.0.controller.cooldown=49",
    )
    r = run_experiment(only(cfg, 2), progress=False)
    # fires at updates 1, 51, 101, 151 (cooldown 49 → one event every 50 updates)
    np.testing.assert_array_equal(r.metric(0, "collapses")[-1], 4)
    np.testing.assert_array_equal(r.metric(0, "surges")[-1], 4)
    np.testing.assert_array_equal(r.metric(0, "pumps")[-1], 0)
    cfg = small(
        "steps=200",
        "methods.2.optimizer.0.controller.high=1.0",
        "methods.2.optimizer.0.controller.low=1.0",
        "methods.2.optimizer.0.controller.warmup=1",
        "methods.2.optimizer.0.controller.cooldown=49",
    )
    r = run_experiment(only(cfg, 2), progress=False)
    np.testing.assert_array_equal(r.metric(0, "pumps")[-1], 4)
    np.testing.assert_array_equal(r.metric(0, "collapses")[-1], 0)


def test_text_windows_train_and_learn(tmp_path):
    """Next-byte prediction over a local text: a periodic text becomes predictable."""
    text = tmp_path / "text.txt"
    text.write_bytes(b"the quick brown fox jumps over the lazy dog. " * 200)
    cfg = small(
        "data.kind=text",
        "data.encoding=onehot",
        f"data.text_path={text}",
        "data.context=4",
        "data.num_samples=2000",
        "steps=100",
        "eval_every=2",
    )
    r = run_experiment(only(cfg, 0), progress=False)
    # untrained: cross entropy near ln 256 = 5.55 over 256 byte classes
    assert r.metric(0, "train_loss")[0, 0] > 0.8 * math.log(256)
    # "the " is followed by "q" or "l": 44 of 45 contexts of 4 bytes are unambiguous
    assert r.metric(0, "val_acc")[-1, 0] > 0.9


@pytest.mark.parametrize(
    "override, message",
    [
        ("methods.1.optimizer.0.schedule=sometimes", "schedule='sometimes': choose one of"),
        ("methods.1.optimizer.0.sparsity=1.5", "sparsity=1.5: must be in"),
        ("methods.0.sweep.input_noise=[-0.1]", "methods.0.sweep.input_noise"),
        ("data.encoding=tokens", "data.encoding"),
        ("data.text_path=/no/such/file.txt", "text_path"),
    ],
)
def test_bad_surge_settings_name_the_key(override, message):
    overrides = [override] + (
        ["data.kind=text", "data.encoding=onehot"] if "text_path" in override else []
    )
    with pytest.raises((ConfigError, FileNotFoundError), match=message.replace(".", r"\.")):
        run_experiment(small(*overrides), progress=False)


def test_input_noise_needs_vector_inputs():
    cfg = resolve("grokfast_quick")
    with pytest.raises(ConfigError, match=r"methods\.0\.input_noise"):
        apply_overrides(cfg, ["methods.0.input_noise=0.1"])
    with pytest.raises(ConfigError, match="track activation entropy"):
        apply_overrides(cfg, ["track_entropy=true"])


def test_text_experiment_config_runs(tmp_path):
    """experiments/surge_collapse_text.toml loads and trains (2 evaluations of 5 steps)."""
    cfg = apply_overrides(
        resolve("surge_collapse_text"), ["steps=10", "eval_every=5", "data.num_samples=500"]
    )
    r = run_experiment(cfg, run_dir=tmp_path / "run", progress=False)
    assert r.compilations == 1 and [g.size for g in r.groups] == [4, 4, 4]
    assert r.groups[0].noisy and np.all(np.isfinite(r.metric(2, "act_entropy_norm")))
