"""The stop that benchmarks/torch_reference.py adds to the authors' Grokfast ``main.py``,
checked on a fake ``main.py`` with the same loop shape (no real model is trained)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch", reason="the PyTorch reference benchmark needs torch")

ROOT = pathlib.Path(__file__).resolve().parents[1]

# main()'s shape in ironjr/grokfast main.py: its/val_acc lists, model.train(is_train) at
# the start of the train and the validation pass of every epoch, results/ in the cwd.
FAKE_MAIN = """
import sys
from argparse import ArgumentParser

import torch
from torch import nn

ACCS = [0.1, 0.5, 0.9, 0.96, 0.99, 1.0]


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])


def main(args):
    model = Decoder()
    print("a model")  # the benchmark discards the script's prints
    its, train_acc, val_acc = [], [], []
    i = 0
    for e in range(args.budget // 10):
        for is_train in [True, False]:
            model.train(is_train)
            if is_train:
                i += 10
                its.append(i)
            else:
                val_acc.append(ACCS[min(e, len(ACCS) - 1)] if args.good else 0.5)
        open("results/res.txt", "w").write(str(e))
    sys.modules["__fake_done__"] = its


if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--budget", type=int, default=300000)
    parser.add_argument("--good", type=int, default=1)
    main(parser.parse_args())
"""


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "torch_reference_bench", ROOT / "benchmarks" / "torch_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def reference(tmp_path):
    (tmp_path / "main.py").write_text(textwrap.dedent(FAKE_MAIN))
    yield tmp_path
    sys.modules.pop("__fake_done__", None)


def test_stops_at_the_first_evaluation_at_95_percent(bench, reference, capsys):
    original = torch.nn.Module.train
    step, seconds, trained = bench.run_reference(reference, ["--budget", "1000"])
    # val_acc reaches 0.96 in epoch 3 (its 40); seen at epoch 4's model.train(True)
    assert step == trained == 40
    assert seconds >= 0
    assert "__fake_done__" not in sys.modules  # main() did not run to its end
    assert torch.nn.Module.train is original  # the wrapper is removed
    assert str(reference) not in sys.path
    assert capsys.readouterr().out == ""


def test_a_run_that_ends_on_its_budget(bench, reference):
    # the last epoch's evaluation is read after main() returns
    assert bench.run_reference(reference, ["--budget", "40"])[0] == 40
    assert sys.modules.pop("__fake_done__") == [10, 20, 30, 40]
    # never reaching 95%
    assert bench.run_reference(reference, ["--budget", "100", "--good", "0"])[::2] == (None, 100)


def test_other_callers_of_train_are_ignored(bench, tmp_path):
    seen = bench.install_stop(tmp_path / "main.py")
    try:
        its, val_acc = [10], [1.0]  # noqa: F841  (read from this frame by name)
        model = torch.nn.Linear(2, 2)
        model.train()  # not main() in main.py: no stop
        assert "its" not in seen
    finally:
        bench.remove_stop(seen)
