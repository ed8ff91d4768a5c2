"""benchmarks/scaling_model.py: its paper formulas, and its shapes-only initialisation
agrees with the real one."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import jax
import pytest

from grokjax.train import apply_overrides, resolve
from grokjax.train.state import init_groups

_PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "scaling_model.py"
_spec = importlib.util.spec_from_file_location("scaling_model", _PATH)
sm = importlib.util.module_from_spec(_spec)
sys.modules["scaling_model"] = sm  # dataclasses look their module up
_spec.loader.exec_module(sm)


def test_ring_formulas():
    assert sm.allreduce_seconds(1e9, 1) == 0.0
    # 2·(D−1)/D × bytes over NVLink within a node, over InfiniBand beyond it
    assert sm.allreduce_seconds(1e9, 8) == pytest.approx(2 * 7 / 8 * 1e9 / sm.C["nvlink_bytes_s"])
    assert sm.allreduce_seconds(1e9, 64) == pytest.approx(2 * 63 / 64 * 1e9 / sm.C["ib_bytes_s"])
    assert sm.allgather_seconds(1e9, 8) == pytest.approx(7 / 8 * 1e9 / sm.C["nvlink_bytes_s"])


def test_abstract_init_matches_the_real_states():
    config = sm.one_seed(resolve("grokfast_modmul"))
    config = apply_overrides(config, ["methods.2.optimizer.0.window_size=3"])
    _, _, real = init_groups(config)
    with sm.abstract_init():
        _, _, abstract = init_groups(config)
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, str(x.dtype)), t)  # noqa: E731
    assert shapes(abstract) == shapes(real)
    assert [sm.nbytes(s) for s in abstract] == [sm.nbytes(s) for s in real]
    assert all(s.key.shape[0] == 1 for s in real)  # one member per group
