"""The package as a user meets it: public names, install layout, README, CLI."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import tomllib

import pytest

import grokjax as gj
from grokjax import cli
from grokjax.train import apply_overrides, resolve, select_methods
from grokjax.viz.records import load_run

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The public API, exported flat from the top-level package.
PUBLIC_API = [
    "grokfast_ema",
    "grokfast_ma",
    "orthograd",
    "ortho_adamw",
    "ortho_sgd",
    "stablemax",
    "log_stablemax",
    "stablemax_cross_entropy_with_integer_labels",
    "softmax_collapse_fraction",
    "zero_loss_fraction",
    "nlm_cosine",
    "weight_norms",
    "global_weight_norm",
    "collapse",
    "surge",
    "activation_entropy",
    "target_entropy",
]

# Public names reached through a submodule.
SUBMODULE_API = ["nn.swelu", "nn.SWELU", "ops.selective_scan"]


@pytest.mark.parametrize("name", SUBMODULE_API)
def test_submodule_api(name):
    module, attr = name.split(".")
    assert callable(getattr(getattr(gj, module), attr))
    assert module in gj.__all__


def test_ops_does_not_import_nn():
    """ops/ sits below nn/: the scan's activation maths live in grokjax.ops.activations."""
    imports_nn = re.compile(r"^\s*(from|import) grokjax(\.nn\b| import .*\bnn\b)", re.MULTILINE)
    for path in (ROOT / "grokjax" / "ops").glob("*.py"):
        assert not imports_nn.search(path.read_text()), path
    from grokjax.ops import activations

    assert gj.nn.swelu is activations.swelu and gj.nn.swish_k is activations.swish_k


@pytest.mark.parametrize("name", PUBLIC_API)
def test_public_api_is_exported_flat(name):
    assert callable(getattr(gj, name))
    assert name in gj.__all__


def test_all_names_resolve():
    for name in gj.__all__:
        assert hasattr(gj, name), name


def test_every_package_is_installed():
    """Each folder with an __init__.py is listed in pyproject (else a wheel misses it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "grokjax").rglob("__init__.py")
    } | {"grokjax.kernels"}
    assert on_disk == listed
    assert config["tool"]["setuptools"]["package-dir"]["grokjax.kernels"] == "kernels"
    import grokjax.kernels

    assert pathlib.Path(grokjax.kernels.__file__).parent == ROOT / "kernels"


def readme_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_blocks_run(capsys):
    blocks = readme_blocks("python")
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert re.search(r"loss \d+\.\d{3}, softmax-collapse fraction \d\.\d\d", out)
    assert "[0.5 2.  5. ]" in out
    assert "1 ['baseline', 'grokfast_ema', 'grokfast_ma']" in out
    assert "zeros 0.500" in out


def test_readme_commands_match_ci():
    commands = "\n".join(readme_blocks("bash"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]"' in commands and 'pip install -e ".[test]"' in ci
    assert "&& pytest" in commands and re.search(r"^\s*pytest\b", ci, flags=re.MULTILINE)
    assert "grokjax run" in commands


CLI_TINY = ["data.p=11", "model.hidden=[16, 16]", "batch_size=48", "steps=20", "eval_every=5"]


def test_cli_run_report_resume_and_list(tmp_path, capsys):
    sets = [arg for item in CLI_TINY for arg in ("--set", item)]
    argv = ["run", "orthograd_quick", *sets, "--runs-dir", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert "| adamw |" in out and "| ortho_adamw |" in out
    for name in ("config.json", "metrics.jsonl", "grokking.json", "report.md"):
        assert (run_dir / name).exists(), name
    for name in ("accuracy.png", "loss.png", "steps_to_grok.png"):
        assert (run_dir / "plots" / name).stat().st_size > 1000, name
    assert (run_dir / "checkpoints").is_dir()

    (run_dir / "report.md").unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    assert "## Results" in (run_dir / "report.md").read_text()
    # an interrupted run has no grokking.json: the report reads the crossings off the curves
    saved = json.loads((run_dir / "grokking.json").read_text())
    (run_dir / "grokking.json").unlink()
    assert cli.main(["report", str(run_dir)]) == 0
    record = load_run(run_dir)
    labels = [m.label for m in record.methods]
    saved_in_order = sorted(saved, key=lambda r: (labels.index(r["method"]), r["member"]))
    for key in ("generalised", "memorised"):
        got = [s for m in record.methods for s in getattr(m, key)]
        assert got == [r[key] for r in saved_in_order]
    (run_dir / "grokking.json").write_text(json.dumps(saved))

    assert cli.main(["run", "--resume", str(run_dir), "--set", "steps=30", "--no-progress"]) == 0
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert max(steps) == 30

    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "grokfast_modmul" in listed and "grokfast_modmul_full" in listed


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "--set", "data.p=1"], "data.p = 1: must be an integer >= 2"),
        (["run", "no_such_config"], "unknown experiment 'no_such_config'"),
        (["report", "/nonexistent/run"], "/nonexistent/run: no such run directory"),
        (["run", "orthograd_quick", "--only", "sgd"], "its methods are ['adamw', 'ortho_adamw']"),
    ],
)
def test_cli_reports_bad_input_clearly(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_resume_keeps_the_runs_config(capsys):
    assert cli.main(["run", "--resume", "runs/x", "--only", "adamw"]) == 2
    assert "drop CONFIG and --only" in capsys.readouterr().err


def test_select_methods_keeps_the_configs_order_and_settings():
    config = apply_overrides(resolve("stability_fig1"), ["methods.2.seeds=[5]"])
    picked = select_methods(config, ["ortho_adamw", "adamw_stablemax_f64"])
    assert [m.label for m in picked.methods] == ["adamw_stablemax_f64", "ortho_adamw"]
    assert picked.methods[0] == config.methods[2] and picked.methods[0].seeds == (5,)
    assert picked.needs_x64 and not select_methods(config, ["ortho_adamw"]).needs_x64
    assert dataclasses.replace(picked, methods=config.methods) == config
    assert select_methods(config, "ortho_adamw").methods == (config.methods[3],)


def test_cli_rejects_unknown_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fly"])
    assert exc.value.code == 2
