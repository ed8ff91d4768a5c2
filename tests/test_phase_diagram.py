"""Phase diagrams: Liu et al.'s phase classifier, per-member train fractions, and the
``phase_diagram`` experiments at a tiny size (one compilation, both heatmaps)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokjax.analysis.phases import PHASES, classify_phases, first_crossing
from grokjax.errors import ConfigError
from grokjax.train import TrainingDiverged, resolve, run_experiment
from grokjax.train.state import member_splits
from grokjax.viz import write_report
from grokjax.viz.phase_diagram import is_log_spaced, phase_diagram_section, phase_grids
from grokjax.viz.records import load_run

STEPS = np.arange(100, 1100, 100)  # ten evaluations, the last at step 1000


def ramp(at: float | None, low: float = 0.05) -> np.ndarray:
    """An accuracy curve at ``low`` that jumps to 1 at step ``at`` (never: None)."""
    return np.where((np.inf if at is None else at) <= STEPS, 1.0, low)


def phases_of(*members: tuple[float | None, float | None], **kw) -> list[str]:
    train = np.stack([ramp(t) for t, _ in members], 1)
    val = np.stack([ramp(v) for _, v in members], 1)
    return classify_phases(STEPS, train, val, **kw).names


def test_each_phase_on_synthetic_curves():
    # an evaluation every 100 steps, budget 1000 (the last evaluation)
    members = (200, 200), (200, 600), (200, None), (None, None)
    assert phases_of(*members, delay=300) == list(PHASES)
    # Liu et al.'s Δ = 10³ steps by default: a 400-step delay is comprehension
    assert phases_of((200, 600)) == ["comprehension"]
    assert classify_phases(STEPS, ramp(200)[:, None], ramp(600)[:, None]).delay == 1000


def test_edge_cases():
    # never memorises: confusion, also when validation accuracy alone crosses
    assert phases_of((None, None), (None, 300), delay=100) == ["confusion", "confusion"]
    # crossing at the last evaluation counts; a delay of exactly Δ is grokking
    assert phases_of((1000, None), (200, 1000), (200, 300), delay=100) == [
        "memorisation",
        "grokking",
        "grokking",
    ]
    # generalising before fitting is comprehension (a negative delay)
    assert phases_of((500, 300), delay=100) == ["comprehension"]
    # crossings after the budget do not count
    result = classify_phases(STEPS, ramp(200)[:, None], ramp(900)[:, None], budget=800, delay=100)
    assert result.names == ["memorisation"] and np.isnan(result.val_step[0])
    assert result.counts() == {"comprehension": 0, "grokking": 0, "memorisation": 1, "confusion": 0}
    # NaN accuracies (a stopped member) never cross
    nan_val = np.where(STEPS > 300, np.nan, 0.1)[:, None]
    assert classify_phases(STEPS, ramp(200)[:, None], nan_val, delay=100).names == ["memorisation"]
    # no member at all
    assert first_crossing(STEPS, np.zeros((10, 0)), 0.9).shape == (0,)


def test_log_spacing_is_detected():
    assert is_log_spaced(np.logspace(-4, -1, 8).round(6))
    assert is_log_spaced([1e-3, 3.7e-3, 1.4e-2, 5.2e-2, 0.19, 0.72, 2.7, 10.0])
    assert not is_log_spaced([0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert not is_log_spaced([0.0, 1.0, 10.0]) and not is_log_spaced([1.0, 10.0])


def tiny(name: str, steps: int = 20, **data):
    """``name`` at a 2 × 2 grid (the first two values of each swept key), a few steps."""
    config = resolve(name)
    methods = tuple(
        dataclasses.replace(m, sweep={k: v[:2] for k, v in m.sweep.items()}) for m in config.methods
    )
    return dataclasses.replace(
        config,
        methods=methods,
        steps=steps,
        eval_every=10,
        data=dataclasses.replace(config.data, **data),
    )


@pytest.mark.parametrize("name", ["phase_diagram", "phase_diagram_data"])
def test_config_compiles_once_and_writes_both_heatmaps(name, tmp_path):
    config = tiny(name)
    assert [m.label for m in config.methods] == ["adamw", "grokfast_ema", "ortho_adamw"]
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    assert result.compilations == 1
    report = write_report(tmp_path / "run").read_text()
    for png in ("phase_diagram.png", "phase_diagram_steps.png"):
        assert (tmp_path / "run" / "plots" / png).stat().st_size > 0
    record = load_run(tmp_path / "run")
    grids = phase_grids(record)
    assert [g.label for g in grids] == ["adamw", "grokfast_ema", "ortho_adamw"]
    assert all(g.phase_YX.shape == (2, 2) for g in grids)
    assert "## Phase diagram" in report and "Against adamw" in report
    assert phase_diagram_section(record).startswith("## Phase diagram")


def test_swept_train_fraction_pads_rows_and_shares_validation():
    config = tiny("phase_diagram_data")
    fractions = config.methods[0].sweep["data.train_fraction"]
    task, rows = member_splits(config)
    n = config.data.p**2
    assert task.num_train == int(max(fractions) * n)
    for (_, hps), (train, val) in zip(config.methods[0].members(), rows[0], strict=True):
        real = train[train >= 0]
        assert len(real) == int(hps["data.train_fraction"] * n)
        assert np.all(train[len(real) :] == -1)  # padding at the tail
        assert not set(real) & set(val)  # validation rows are held out from every member
        assert len(val) == n - task.num_train  # the same rows for every fraction
    # a full batch trains on exactly the member's real rows
    small = rows[0][0][0]
    idx, mask = task.batch_rows(jnp.zeros(2, jnp.uint32), jnp.asarray(0), jnp.asarray(small))
    assert int(mask.sum()) == int((small >= 0).sum())
    assert set(np.asarray(idx)[np.asarray(mask) > 0]) == set(small[small >= 0])
    # iid draws come from the real rows only
    iid = dataclasses.replace(task, sampling="iid")
    idx, mask = iid.batch_rows(jnp.zeros(2, jnp.uint32), jnp.asarray(3), jnp.asarray(small))
    assert set(np.asarray(idx)) <= set(small[small >= 0]) and float(mask.min()) == 1.0


def test_swept_train_fraction_is_validated():
    config = resolve("phase_diagram_data")
    method = config.methods[0]

    def with_sweep(values, **changes):
        sweep = {**method.sweep, "data.train_fraction": values}
        methods = (dataclasses.replace(method, sweep=sweep),)
        return dataclasses.replace(config, methods=methods, **changes)

    key = "methods.0.sweep.data.train_fraction"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        with_sweep((0.5, 1.5))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + r" = 0\.001"):
        with_sweep((0.001, 0.5))  # leaves no training row of the 961
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*probes"):
        with_sweep((0.3, 0.5), probes=({"probe": "grokjax.analysis.activation_shapes"},))
    with pytest.raises(ConfigError, match=r"methods\.0\.sweep key.*data\.train_fraction"):
        dataclasses.replace(method, sweep={"data.p": (5.0, 7.0)}).validate("methods.0")


def test_moves_against_the_first_method_are_counted_from_the_grids():
    from grokjax.viz.phase_diagram import PhaseGrid, _moves

    x, y = np.array([1e-3, 1e-2]), np.array([0.1, 1.0])
    base = PhaseGrid(
        "adamw", ("learning_rate", "weight_decay"), x, y,
        np.array([[np.nan, 2000.0], [500.0, np.nan]]), np.array([[2, 1], [0, 3]]), 1000, 4000,
    )  # fmt: skip
    other = dataclasses.replace(
        base,
        label="ortho",
        steps_YX=np.array([[np.nan, 500.0], [250.0, 300.0]]),
        phase_YX=np.array([[2, 0], [0, 0]]),
    )
    lines = _moves(base, other)
    assert lines[0] == "- **ortho**: 2 of 4 grid points differ from adamw's phase."
    assert "grokking → comprehension: 1 ((learning_rate 0.01, weight_decay 0.1))" in "\n".join(
        lines
    )
    assert "median ×3.00 [2.00–4.00]; reached only by ortho: 1, only by adamw: 0" in lines[-1]
    elsewhere = dataclasses.replace(other, y=np.array([0.1, 2.0]))
    assert "not on adamw's grid" in _moves(base, elsewhere)[0]


def test_a_diverging_corner_is_recorded_and_the_rest_of_the_grid_trains_on(tmp_path):
    """lr 10³⁰ makes two of four members NaN at once; with on_divergence = "continue" the
    other two train exactly as they do alone, and the stop waits only for them."""
    base = tiny("phase_diagram", steps=40)
    adamw = base.methods[0]

    def grid(rates, **changes):
        sweep = {"optimizer.0.learning_rate": rates, "optimizer.0.weight_decay": (0.1, 1.0)}
        method = dataclasses.replace(adamw, sweep=sweep)
        return dataclasses.replace(base, methods=(method,), **changes)

    with pytest.warns(
        RuntimeWarning, match=r"member 2: seed 0, optimizer\.0\.learning_rate=1e\+30"
    ):
        both = run_experiment(grid((1e-2, 1e30)), run_dir=tmp_path / "run", progress=False)
    # members: learning rate outermost, then weight decay; the NaN shows at the first evaluation
    assert both.detector.diverged[0].tolist() == [-1, -1, 10, 10]
    assert not both.metric(0, "finite")[:, 2:].any() and both.metric(0, "finite")[:, :2].all()
    alone = run_experiment(dataclasses.replace(grid((1e-2,)), on_divergence="stop"), progress=False)
    for a, b in zip(
        jax.tree.leaves(alone.final_states[0].params),
        jax.tree.leaves(both.final_states[0].params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[:2])
    # the files name them: grokking.json, the report's line and the phase table's column
    rows = json.loads((tmp_path / "run" / "grokking.json").read_text())
    assert [r.get("diverged") for r in rows] == [None, None, 10, 10]
    report = write_report(tmp_path / "run").read_text()
    assert "Diverged (loss or parameters NaN/Inf, or a runaway loss): 2 members" in report
    phase_table = report.split("## Phase diagram")[1].splitlines()
    assert next(row for row in phase_table if row.startswith("| adamw |")).endswith("| 2 |")
    # the stop on the device waits for the healthy members only (the diverged count as done)
    stopping = grid((1e-2, 1e30), stop_when_grokked=True, val_threshold=0.01, steps=400)
    with pytest.warns(RuntimeWarning):
        result = run_experiment(stopping, progress=False)
    healthy = result.detector.generalised[0][:2]
    assert (healthy > 0).all() and (result.detector.generalised[0][2:] < 0).all()
    assert result.steps[-1] == healthy.max() < 400
    # "stop" (the default) ends the run at the first NaN, naming the member
    with pytest.raises(TrainingDiverged, match=r"member 2: seed 0.*on_divergence"):
        run_experiment(grid((1e-2, 1e30), on_divergence="stop"), progress=False)
    with pytest.raises(ConfigError, match=r"on_divergence"):
        grid((1e-2,), on_divergence="ignore")
