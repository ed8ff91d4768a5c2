"""Grokfast accelerates grokking: the contrast itself, on a CPU-sized setting."""

from __future__ import annotations

import numpy as np
import pytest

from grokjax.train import resolve, run_experiment


@pytest.mark.slow  # trains to an accuracy; CI's slow part runs it
def test_grokfast_ema_groks_where_the_baseline_has_not():
    """`grokfast_quick`: every EMA seed reaches 95% validation accuracy within the budget;
    every baseline seed has memorised the training split but stays below 95%."""
    config = resolve("grokfast_quick")
    assert [m.label for m in config.methods] == ["baseline", "grokfast_ema"]
    result = run_experiment(config, progress=False)
    assert result.compilations == 1
    assert result.steps[-1] >= config.steps
    detector = result.detector
    baseline, ema = 0, 1

    ema_steps = detector.generalised[ema]
    assert np.all(ema_steps > 0), f"EMA seeds not grokked: {ema_steps}"
    assert np.all(result.metric(ema, "val_acc")[-1] >= 0.95)

    assert np.all(detector.generalised[baseline] < 0)
    assert np.all(result.metric(baseline, "val_acc") < 0.95)
    memorised = detector.memorised[baseline]
    assert np.all((memorised > 0) & (memorised < np.min(ema_steps))), memorised
