"""Configs to and from dicts and TOML files, and ``--set key=value`` overrides.

Every error names the offending key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import dacite
import tomli

from grokjax.data.kinds import DATA_KINDS
from grokjax.errors import ConfigError
from grokjax.errors import choice as _choice
from grokjax.nn.kinds import MODEL_KINDS
from grokjax.runs.files import read_json
from grokjax.train.config import ExperimentConfig
from grokjax.train.method import MethodConfig

__all__ = ["apply_overrides", "from_dict", "load_config", "load_toml", "select_methods", "to_dict"]


def to_dict(config: Any) -> Any:
    """A JSON-ready dict of a config (tuples become lists)."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return json.loads(json.dumps(data))


class _Wrong(dacite.WrongTypeError):
    """A value of the wrong type, raised from a type hook so dacite adds its path."""


def _number(value: Any) -> Any:
    # TOML writes 1 for 1.0: an integer is a valid float; a bool is neither; TOML's inf
    # and nan are no setting of any field
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Wrong(float, value)
    if not math.isfinite(value):
        raise _Wrong(_Finite, value)
    return float(value)


class _Finite(float):
    """Names the requirement in messages: a finite number."""


def _integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise _Wrong(int, value)
    return value


_DACITE = dacite.Config(strict=True, cast=[tuple], type_hooks={float: _number, int: _integer})
_TYPE_WORDS = {
    _Finite: "a finite number",
    float: "a number",
    int: "an integer",
    bool: "true or false",
    str: "a string",
}


def _type_words(hint: Any) -> str:
    if hint in _TYPE_WORDS:
        return _TYPE_WORDS[hint]
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if typing.get_origin(hint) is tuple and args:
        return f"a list of {_type_words(args[0]).split(' ', 1)[-1]}s"
    if typing.get_origin(hint) in (dict, Mapping) and args:
        return f"a table of key = {_type_words(args[-1])}"
    return getattr(hint, "__name__", str(hint))


def _build(cls: type, data: Any, path: str) -> Any:
    """``cls`` from ``data`` with dacite, its errors turned into ConfigErrors at ``path``."""
    where = path or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {data!r}.")
    try:
        return dacite.from_dict(cls, data, config=_DACITE)
    except dacite.UnexpectedDataError as err:
        allowed = sorted(f.name for f in dataclasses.fields(cls))
        raise ConfigError(
            f"{where}: unknown key {sorted(err.keys)[0]!r}; allowed keys: {allowed}."
        ) from None
    except dacite.MissingValueError as err:
        raise ConfigError(f"{where}: missing required key {err.field_path!r}.") from None
    except dacite.WrongTypeError as err:
        key = f"{path}.{err.field_path}" if path else err.field_path
        value = list(err.value) if isinstance(err.value, tuple) else err.value
        raise ConfigError(f"{key} = {value!r}: must be {_type_words(err.field_type)}.") from None
    except ConfigError:
        raise
    except ValueError as err:  # a nested value's own check (e.g. a RopeScaling's kind)
        raise ConfigError(f"{where}: {err}") from None


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build config dataclass ``cls`` from a (parsed TOML/JSON) dict, validating keys.

    The ``[data]`` and ``[model]`` tables become the kind their ``kind`` names; each
    ``[[methods]]`` table a :class:`~grokjax.train.method.MethodConfig`.
    """
    if cls is not ExperimentConfig or not isinstance(data, Mapping):
        return _build(cls, data, path)
    data = dict(data)
    defaults = ExperimentConfig.__dataclass_fields__
    for name, kinds in (("data", DATA_KINDS), ("model", MODEL_KINDS)):
        if name in data:
            table = data[name]
            if not isinstance(table, Mapping):
                raise ConfigError(f"{name}: expected a table, got {table!r}.")
            kind = table.get("kind", defaults[name].default_factory().kind)
            _choice(f"{name}.kind", kind, list(kinds))
            data[name] = _build(kinds[kind], {**table, "kind": kind}, name)
    if isinstance(data.get("methods"), list):
        data["methods"] = [
            _build(MethodConfig, m, f"methods.{i}") for i, m in enumerate(data["methods"])
        ]
    elif "methods" in data:
        raise ConfigError("methods: must be a list of [[methods]] tables.")
    return _build(ExperimentConfig, data, path)


def load_toml(path: str) -> ExperimentConfig:
    """Read and validate an experiment config file."""
    with open(path, "rb") as f:
        try:
            data = tomli.load(f)
        except tomli.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from err
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def _parse_value(text: str) -> Any:
    try:
        return tomli.loads(f"v = {text}")["v"]
    except tomli.TOMLDecodeError:
        return text  # a bare word is a string: --set data.op=x+y


def apply_overrides(config: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Apply ``key=value`` overrides (dotted keys, TOML values), or ``(key, value)``
    pairs of parsed values, and re-validate."""
    data = to_dict(config)
    changed_kind: dict[str, str] = {}
    kinds_of = {"data": DATA_KINDS, "model": MODEL_KINDS}
    explicit: set[tuple[str, ...]] = set()
    for item in overrides:
        if isinstance(item, tuple):
            key, text = item
        elif "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. steps=2000.")
        else:
            key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {key!r}: {'.'.join(parts[: depth + 1])} is not an index "
                        f"of a list of {len(node)}."
                    )
                node = node[int(part)]
            elif isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
                node = node[part]
            elif isinstance(node, dict) and part not in node and depth > 0:
                node = node.setdefault(part, {})  # a table the config leaves out
            else:
                raise ConfigError(f"override {key!r}: no table {'.'.join(parts[: depth + 1])!r}.")
        if isinstance(node, list):
            raise ConfigError(
                f"override {key!r}: give a field of a list entry, e.g. methods.0.seeds."
            )
        value = text if isinstance(item, tuple) else _parse_value(text.strip())
        switch = len(parts) == 2 and parts[0] in kinds_of and parts[1] == "kind"
        if switch and node.get("kind") in kinds_of[parts[0]] and node.get("kind") != value:
            changed_kind.setdefault(parts[0], node.get("kind"))  # the config's own kind
            old_fields = {f.name for f in dataclasses.fields(kinds_of[parts[0]][node["kind"]])}
            # keys set so far that the kind being left has were meant for it
            explicit = {e for e in explicit if e[0] != parts[0] or e[-1] not in old_fields}
        explicit.add(tuple(parts))
        node[parts[-1]] = value
    for table, old_kind in changed_kind.items():
        # the new kind keeps the keys set for it, and the config's non-default values of
        # the fields it shares with the old kind (not the old kind's defaults)
        kinds = kinds_of[table]
        new, old = kinds.get(data[table]["kind"]), kinds.get(old_kind)
        if new is None or old is None:
            continue  # the kind check names the bad kind
        shared = {f.name for f in dataclasses.fields(new)} & {
            f.name for f in dataclasses.fields(old)
        }
        old_defaults = dataclasses.asdict(old())
        data[table] = {
            k: v
            for k, v in data[table].items()
            if k == "kind"
            or (table, k) in explicit
            # an encoding names one kind's formats: never carried to another kind
            or (k in shared - {"encoding"} and to_dict(v) != to_dict(old_defaults[k]))
        }
    return from_dict(ExperimentConfig, data)


def select_methods(config: ExperimentConfig, labels: Sequence[str]) -> ExperimentConfig:
    """``config`` with only the methods labelled ``labels`` (in the config's order).

    Useful to run one member group of a figure's config on its own, e.g. its long run.
    The selected members train as they would in the whole config, except that dropping
    every float64 member also turns 64-bit JAX off, which changes the draws of
    ``sampling = "iid"`` batches (epoch permutations are unaffected).

    >>> from grokjax.train import resolve
    >>> config = select_methods(resolve("stability-quick"), ["ortho_adamw"])
    >>> [m.label for m in config.methods]
    ['ortho_adamw']
    """
    if isinstance(labels, str):
        labels = [labels]
    known = [m.label for m in config.methods]
    unknown = [label for label in labels if label not in known]
    if unknown or not labels:
        raise ConfigError(
            f"method label(s) {unknown or list(labels)!r} not in {config.name!r}; "
            f"its methods are {known!r}."
        )
    methods = tuple(m for m in config.methods if m.label in labels)
    return from_dict(
        ExperimentConfig, {**to_dict(config), "methods": [to_dict(m) for m in methods]}
    )


def load_config(run_dir: str | pathlib.Path) -> ExperimentConfig:
    """The config a run was written with (``config.json``)."""
    path = pathlib.Path(run_dir) / "config.json"
    data = read_json(path)
    if any(isinstance(m.get("optimizer"), dict) for m in data.get("methods", [])):
        raise ConfigError(
            f"{path} was written by an older grokjax (an optimizer given as one table, "
            "before optimizers became lists of transforms): this version cannot resume it. "
            "Its metrics.jsonl and report stay readable (`grokjax report`); to continue, "
            "start the experiment again."
        )
    return from_dict(ExperimentConfig, data)
