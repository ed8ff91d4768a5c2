"""Configs to and from dicts and TOML files, and ``--set key=value`` overrides.

Every error names the offending key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import tomli

from grokjax.data.tasks import DATA_KINDS
from grokjax.errors import choice as _choice
from grokjax.nn.kinds import MODEL_KINDS
from grokjax.train.config import ExperimentConfig
from grokjax.train.errors import ConfigError
from grokjax.train.method import MethodConfig

__all__ = ["apply_overrides", "from_dict", "load_toml", "select_methods", "to_dict"]


def to_dict(config: Any) -> Any:
    """A JSON-ready dict of a config (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    return config


def _convert(path: str, value: Any, hint: Any) -> Any:
    """Check and convert ``value`` to the annotated type ``hint``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} = {value!r}: must be a number.")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} = {value!r}: must be an integer.")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r}: must be true or false.")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} = {value!r}: must be a string.")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} = {value!r}: must be a list.")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_convert(f"{path}.{i}", v, item) for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} = {value!r}: must be a table of key = [values].")
        _, item = typing.get_args(hint)
        return {k: _convert(f"{path}.{k}", v, item) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config annotation {hint!r} at {path}")
    return value


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build config dataclass ``cls`` from a (parsed TOML/JSON) dict, validating keys."""
    where = path or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {sorted(fields)}.")
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        if name in ("data", "model"):
            kinds = DATA_KINDS if name == "data" else MODEL_KINDS
            default = fields[name].default_factory().kind
            kwargs[name] = _kind_from_dict(kinds, value, key, default)
        elif name == "methods":
            if not isinstance(value, list):
                raise ConfigError(f"{key}: must be a list of [[methods]] tables.")
            kwargs[name] = tuple(
                from_dict(MethodConfig, m, f"{key}.{i}") for i, m in enumerate(value)
            )
        else:
            kwargs[name] = _convert(key, value, hints[name])
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}.")
    return cls(**kwargs)


def _kind_from_dict(kinds: Mapping[str, type], data: Any, path: str, default: str) -> Any:
    """The kind dataclass a ``[data]`` or ``[model]`` table names with ``kind``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a table, got {data!r}.")
    kind = data.get("kind", default)
    _choice(f"{path}.kind", kind, list(kinds))
    return from_dict(kinds[kind], {**data, "kind": kind}, path)


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
    """Apply ``key=value`` overrides (dotted keys, TOML values) and re-validate."""
    data = json.loads(json.dumps(to_dict(config)))
    changed_kind: dict[str, str] = {}
    kinds_of = {"data": DATA_KINDS, "model": MODEL_KINDS}
    explicit: set[tuple[str, ...]] = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. steps=2000.")
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
        value = _parse_value(text.strip())
        switch = len(parts) == 2 and parts[0] in kinds_of and parts[1] == "kind"
        if switch and node.get("kind") in kinds_of[parts[0]] and node.get("kind") != value:
            old_kind = changed_kind.setdefault(parts[0], node.get("kind"))
            old_fields = {f.name for f in dataclasses.fields(kinds_of[parts[0]][old_kind])}
            # keys set so far that the old kind has were meant for it
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
