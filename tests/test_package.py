"""The package as a user meets it: public names, install layout, README, CLI."""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest

import grokjax as gj
from grokjax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

# DESIGN.md §3 names that have landed (the rest arrive with their issues).
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
]


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


def test_readme_commands_match_ci():
    commands = "\n".join(readme_blocks("bash"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]"' in commands and 'pip install -e ".[test]"' in ci
    assert "&& pytest" in commands and re.search(r"^\s*pytest\b", ci, flags=re.MULTILINE)
    assert "grokjax run" in commands


def test_cli_run_prints_the_results_table(capsys):
    assert cli.main(["run", "--p", "7", "--steps", "30", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(a + b) mod 7" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("AdamW", "⊥AdamW"))]
    assert [row[0] for row in rows] == ["AdamW", "⊥AdamW"]
    for row in rows:
        assert 0.0 <= float(row[1]) <= 1.0


@pytest.mark.parametrize("argv", [["run", "--steps", "0"], ["run", "--p", "1"], ["fly"]])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_demo_rejects_bad_train_fraction():
    from grokjax.demo import modular_addition_onehot

    with pytest.raises(ValueError, match="train_fraction"):
        modular_addition_onehot(7, 1.5)
