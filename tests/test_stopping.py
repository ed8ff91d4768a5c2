"""The stop decision on the device, and where a run's wall time goes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import TINY_MODULAR

from grokjax.runs.timing import RunTimes
from grokjax.train import apply_overrides, resolve, run_experiment
from grokjax.train.detect import crossed

# A tiny decoder whose members pass 6% validation accuracy at different evaluations
# (steps 4 and 8 for seeds 0 and 1), long before the budget.
STOPPING = [
    *TINY_MODULAR,
    "stop_when_grokked=true",
    "val_threshold=0.06",
    "evals_per_sync=10",
    "steps=400",
]


def params_of(result, g):
    return jax.tree.map(np.asarray, result.final_states[g].params)


def test_a_run_ends_at_the_evaluation_where_its_last_member_crossed(tmp_path):
    config = apply_overrides(resolve("grokfast_modmul"), STOPPING)
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    crossings = np.concatenate(result.detector.generalised)
    assert (crossings > 0).all() and len(set(crossings)) > 1  # members cross apart
    # ten intervals were dispatched before the host's first sync; the device skipped
    # those after the last crossing, and the host recorded none of them
    assert result.steps[-1] == crossings.max() < 10 * result.steps[0]
    assert result.steps == list(range(result.steps[0], crossings.max() + 1, result.steps[0]))
    assert result.compilations == 1
    assert result.metric(0, "finite").all()  # no skipped interval's zeros were read
    checkpoints = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").glob("[0-9]*"))
    assert checkpoints[-1] == crossings.max()
    # the skipped intervals trained nothing: the state is the one of a run that stops there
    budget = apply_overrides(config, ["stop_when_grokked=false", f"steps={crossings.max()}"])
    plain = run_experiment(budget, progress=False)
    assert plain.steps == result.steps
    for g in range(len(result.groups)):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
            params_of(result, g),
            params_of(plain, g),
        )
        np.testing.assert_array_equal(result.metric(g, "val_acc"), plain.metric(g, "val_acc"))
    # where the time went: every part measured, none negative, none beyond the total
    times = result.times
    assert times.program > 0 and times.device > 0 and times.setup > 0 and times.writing > 0
    assert min(times.parts().values()) >= 0
    assert sum(times.parts().values()) <= times.total + 1e-6
    assert times.total == result.seconds
    assert all(name in times.summary() for name in ("setup", "program", "device", "writing"))


def test_device_and_host_agree_on_a_crossing():
    rng = np.random.default_rng(0)
    threshold = 0.95
    near = np.float32(threshold) + np.arange(-3, 4, dtype=np.float32) * np.float32(2**-24)
    values = np.concatenate([near, rng.uniform(0.9, 1.0, 64).astype(np.float32)])
    for below in (False, True):
        for limit in (threshold, np.float64(threshold), np.float32(threshold)):
            host = crossed(values, limit, below)
            device = np.asarray(jax.jit(lambda v, b=below, t=limit: crossed(v, t, b))(values))
            np.testing.assert_array_equal(host, device)
            # the reference: the comparison made in float32, the values' precision
            expected = values <= np.float32(limit) if below else values >= np.float32(limit)
            np.testing.assert_array_equal(host, expected)
    assert crossed(np.float32(0.95), np.float64(0.95))  # a float64 0.95 exceeds float32's
    assert not crossed(jnp.float32(0.9499), 0.95)


def test_run_times_split_a_block_by_name():
    times = RunTimes()
    with times.part("device"):
        sum(range(10_000))
    with times.part("device"):
        pass
    times.total = times.device + 1.0
    assert times.device > 0 and times.host == 0.0
    assert abs(times.other() - 1.0) < 1e-9
    assert "other 1.0 s" in times.summary() and "(" in times.summary()
