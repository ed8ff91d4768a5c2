"""Experiments by name: the TOML files under ``experiments/`` (``grokjax list``).

``grokjax run NAME`` accepts a file's stem (``stability_quick``, or with hyphens,
``stability-quick``), ``experiments/NAME`` with or without ``.toml``, or a path to
any TOML file.
"""

from __future__ import annotations

import pathlib

import tomli

from grokjax.errors import ConfigError
from grokjax.train.config import ExperimentConfig
from grokjax.train.loading import load_toml

__all__ = ["DEFAULT", "available", "experiment_dirs", "resolve"]

DEFAULT = "grokfast_modmul"


def experiment_dirs() -> list[pathlib.Path]:
    """``./experiments`` and the repository's ``experiments/`` (for editable installs)."""
    here, repo = pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parents[2]
    dirs = [d / "experiments" for d in (here, repo) if (d / "experiments").is_dir()]
    unique: dict[pathlib.Path, pathlib.Path] = {}
    for d in dirs:  # the same folder once (cwd is the repository in a checkout)
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def _files() -> dict[str, pathlib.Path]:
    names: dict[str, pathlib.Path] = {}
    for d in experiment_dirs():
        for path in sorted(d.glob("*.toml")):
            names.setdefault(path.stem, path)
    return names


def available() -> dict[str, str]:
    """Every experiment name -> its description (the file's ``description``)."""
    out = {}
    for name, path in sorted(_files().items()):
        try:  # the description only: validating every file here would be slow
            out[name] = tomli.loads(path.read_text()).get("description") or str(path)
        except tomli.TOMLDecodeError as err:
            out[name] = f"(not valid TOML: {err})"
    return out


def resolve(name_or_path: str | None) -> ExperimentConfig:
    """The experiment named ``name_or_path`` (default: the main job).

    >>> resolve("stability-quick").name
    'stability_quick'
    """
    name = name_or_path or DEFAULT
    path = pathlib.Path(name)
    for candidate in (path, path.with_suffix(".toml")):
        if candidate.suffix == ".toml" and candidate.is_file():
            return load_toml(str(candidate))
    files = _files()
    stem = path.stem if path.parent.name == "experiments" else name
    stem = stem.removesuffix(".toml").replace("-", "_")
    if stem in files:
        return load_toml(str(files[stem]))
    raise ConfigError(
        f"unknown experiment {name!r}: give a .toml file or one of {sorted(files)} "
        "(`grokjax list` shows them)."
    )
