"""A data kind plugs into the trainer with its own objective and no trainer edits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from grokjax.data.kinds import DATA_KINDS, ModularData
from grokjax.data.task import Task
from grokjax.train import apply_overrides, resolve, run_experiment

TINY = [
    "data.p=11",
    "model.depth=1",
    "model.width=16",
    "model.heads=2",
    "batch_size=16",
    "eval_every=10",
    "steps=60",
    "methods.0.seeds=[0]",
]


@dataclasses.dataclass(frozen=True)
class Top2Task(Task):
    """Counts a prediction as right when the label is among the two largest logits."""

    def hits(self, logits, labels):
        top2 = jax.lax.top_k(logits, 2)[1]
        return jnp.any(top2 == labels[..., None], axis=-1)


@dataclasses.dataclass(frozen=True)
class Top2Modular(ModularData):
    kind: str = "modular_top2"

    def build(self, batch_size, sampling, dtype, seeds):
        task, splits = super().build(batch_size, sampling, dtype, seeds)
        fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
        return Top2Task(**fields), splits


def test_a_new_kind_with_its_own_accuracy_trains_unchanged(monkeypatch):
    monkeypatch.setitem(DATA_KINDS, "modular_top2", Top2Modular)
    base = apply_overrides(resolve("grokfast_quick"), TINY)
    base = apply_overrides(base, ["methods.1.seeds=[0]"])
    top1 = run_experiment(base, progress=False)
    top2 = run_experiment(apply_overrides(base, ["data.kind=modular_top2"]), progress=False)
    # the objective's loss is the same, so training is identical ...
    np.testing.assert_array_equal(top1.metric(0, "train_loss"), top2.metric(0, "train_loss"))
    # ... and the task's accuracy is what the trainer reports and the detector reads
    acc1, acc2 = top1.metric(0, "val_acc"), top2.metric(0, "val_acc")
    assert np.all(acc2 >= acc1) and np.any(acc2 > acc1)
    assert top2.detector.metrics == ("train_acc", "val_acc")
