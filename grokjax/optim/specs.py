"""Optax transformations from specs: lists of transforms named by dotted name.

A config writes an optimizer as a list of *specs*, each a table naming a callable in
``grokjax``, ``optax`` or ``optax.contrib`` and giving its keyword arguments::

    optimizer = [
      { transform = "grokjax.grokfast_ema", alpha = 0.98, lamb = 2.0 },
      { transform = "optax.add_decayed_weights", weight_decay = 0.005 },
      { transform = "optax.adam", b1 = 0.9, b2 = 0.98,
        learning_rate = { schedule = "optax.linear_schedule", init_value = 0.0,
                          end_value = 1e-3, transition_steps = 10 } },
    ]

The list is an ``optax.chain``. A keyword's value may be a schedule table
(``{ schedule = "optax.<name>", … }``, its own keywords resolved the same way), a list
of specs (an inner chain, e.g. ``inner`` of :func:`grokjax.surge_collapse` or
:func:`grokjax.with_state_dtype`), or a table for a keyword annotated with a
``NamedTuple`` (e.g. Surge-Collapse's ``controller``). Defaults are the callables'
own: nothing here supplies one.

Swept keywords (dotted paths such as ``"0.lamb"`` or ``"2.learning_rate.end_value"``)
are injected with :func:`optax.inject_hyperparams` around the whole chain, so each
member of a vmapped sweep carries its own value in its state and the program compiles
once; every other keyword stays a static Python value (some transforms validate theirs
eagerly). Randomness: a transform with a ``key`` parameter gets one of the ``keys``
passed to the build (the trainer passes each member's own).

>>> import jax.numpy as jnp
>>> tx = Optimizer(({"transform": "grokjax.grokfast_ema", "lamb": 2.0},
...                 {"transform": "optax.sgd", "learning_rate": 0.1}), swept=("0.lamb",))
>>> state = tx({"0.lamb": 5.0}).init({"w": jnp.ones(3)})
>>> float(state.hyperparams["optimizer_0_lamb"])
5.0
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from grokjax.errors import ConfigError

__all__ = ["Optimizer", "describe", "keyed_transforms", "resolve_callable", "walk_specs"]

NAMESPACES = ("grokjax", "optax", "optax.contrib")


def resolve_callable(name: Any, path: str, what: str = "transform") -> Callable[..., Any]:
    """The callable a dotted ``name`` such as ``"optax.adam"`` refers to."""
    if not isinstance(name, str):
        raise ConfigError(f"{path} = {name!r}: must be a dotted name such as 'optax.adam'.")
    module_name, _, attr = name.rpartition(".")
    if module_name not in NAMESPACES:
        raise ConfigError(
            f"{path} = {name!r}: a {what} is named "
            f"{' or '.join(f'{ns}.NAME' for ns in NAMESPACES)}."
        )
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if attr.startswith("_") or not callable(fn) or inspect.isclass(fn):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(attr, public, n=4)
        hint = f"; did you mean {', '.join(f'{module_name}.{c}' for c in close)}?" if close else "."
        raise ConfigError(f"{path} = {name!r}: {module_name} has no {what} {attr!r}{hint}")
    return fn


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "transform" in value


def _is_chain(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_spec(v) for v in value)


def _record_types(fn: Callable[..., Any], keyword: str) -> list[type]:
    """NamedTuple / dataclass types in the annotation of ``fn``'s ``keyword``."""
    try:
        hint = typing.get_type_hints(fn).get(keyword)
    except Exception:  # unresolvable annotations: no record type to build
        return []
    candidates = typing.get_args(hint) or (hint,)
    return [
        t
        for t in candidates
        if inspect.isclass(t)
        and (dataclasses.is_dataclass(t) or (issubclass(t, tuple) and hasattr(t, "_fields")))
    ]


def _check_keywords(fn: Callable[..., Any], given: Mapping[str, Any], name: str, path: str) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    for key, value in given.items():
        if key not in accepted:
            raise ConfigError(
                f"{path}.{key}: {name} has no keyword {key!r}; its keywords are {accepted}."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}.{key} = {value!r}: {name} needs a finite number.")
        default = params[key].default
        number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if number and (isinstance(value, (str, bool)) or value is None):
            raise ConfigError(
                f"{path}.{key} = {value!r}: {name} takes a number for {key!r} (default "
                f"{default!r})."
            )
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and n not in given
        and n != "key"
    ]
    if missing:
        raise ConfigError(f"{path}: {name} needs {missing[0]!r}; its keywords are {accepted}.")


class _Builder:
    """One construction of a spec list: swept values and keys substituted by path."""

    def __init__(self, values: Mapping[str, Any], keys: Iterator[jax.Array] | None):
        self.values = values
        self.keys = keys
        self.used: set[str] = set()  # swept paths that reached a keyword

    def chain(self, specs: Sequence[Any], path: str = "") -> optax.GradientTransformation:
        """The chain of ``specs``; at the top (``path=""``), every swept path must have
        reached a keyword."""
        for i, spec in enumerate(specs):
            if not _is_spec(spec):
                raise ConfigError(
                    f"optimizer.{_join(path, i)} = {spec!r}: must be a table with a "
                    "'transform' key, e.g. { transform = 'optax.adam', learning_rate = 1e-3 }."
                )
        tx = optax.chain(*(self.build(s, _join(path, i)) for i, s in enumerate(specs)))
        unused = sorted(set(self.values) - self.used) if not path else []
        if unused:
            raise ConfigError(
                f"optimizer.{unused[0]}: no transform or schedule keyword at this path to "
                "sweep (a swept key is optimizer.<index>.<keyword>, or "
                "optimizer.<index>.<keyword>.<schedule keyword>)."
            )
        return tx

    def build(self, value: Any, path: str, owner: Callable[..., Any] | None = None) -> Any:
        """The value at ``path``: swept, an inner chain, a built transform or schedule,
        a record for ``owner``'s keyword, or the value as written."""
        if path in self.values:
            self.used.add(path)
            return self.values[path]
        if _is_chain(value):
            return self.chain(value, path)
        head = "transform" if _is_spec(value) else "schedule"
        if isinstance(value, Mapping) and head in value:
            name = value[head]
            fn = resolve_callable(name, f"optimizer.{path}.{head}", head)
            kwargs = {k: v for k, v in value.items() if k != head}
            kwargs.update(self.swept_here(path, kwargs))
            if "key" in kwargs and head == "transform":
                raise ConfigError(
                    f"optimizer.{path}.key: the trainer gives {name} its key (from the "
                    "member's seed); remove it."
                )
            _check_keywords(fn, kwargs, name, f"optimizer.{path}")
            built = {k: self.build(v, f"{path}.{k}", fn) for k, v in kwargs.items()}
            if self.keys is not None and "key" in inspect.signature(fn).parameters:
                built["key"] = next(self.keys)
            try:
                return fn(**built)
            except ConfigError:
                raise
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"optimizer.{path}: {name}({_show(built)}) failed: {err}"
                ) from err
        if isinstance(value, Mapping) and owner is not None:
            for record in _record_types(owner, path.rpartition(".")[2]):
                fields = (
                    [f.name for f in dataclasses.fields(record)]
                    if dataclasses.is_dataclass(record)
                    else list(record._fields)
                )
                unknown = [k for k in value if k not in fields]
                for k, v in value.items():
                    if isinstance(v, float) and not math.isfinite(v):
                        raise ConfigError(f"optimizer.{path}.{k} = {v!r}: needs a finite number.")
                if unknown:
                    raise ConfigError(
                        f"optimizer.{path}.{unknown[0]}: {record.__name__} has no field "
                        f"{unknown[0]!r}; its fields are {fields}."
                    )
                return record(**value)
        return value

    def swept_here(self, path: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Swept keywords of the transform or schedule at ``path`` that its spec omits."""
        out = {}
        for swept, value in self.values.items():
            parent, _, keyword = swept.rpartition(".")
            if parent == path and keyword not in given:
                out[keyword] = value
                self.used.add(swept)
        return out


def _join(path: str, index: int) -> str:
    return f"{path}.{index}" if path else str(index)


def _show(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v!r}" for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))
    )


def walk_specs(specs: Sequence[Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(path, spec)`` of every transform spec, depth first, in construction order."""
    for i, spec in enumerate(specs):
        here = f"{path}{i}"
        if not _is_spec(spec):
            continue
        for k, v in spec.items():
            if _is_chain(v):
                yield from walk_specs(v, f"{here}.{k}.")
        yield here, spec


def keyed_transforms(specs: Sequence[Any]) -> list[str]:
    """Paths of the transforms that take a ``key``, in the order they receive one."""
    out = []
    for path, spec in walk_specs(specs):
        fn = resolve_callable(spec["transform"], f"optimizer.{path}.transform")
        if "key" in inspect.signature(fn).parameters:
            out.append(path)
    return out


def _identifier(path: str) -> str:
    return "optimizer_" + re.sub(r"\W", "_", path)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A method's optimizer: specs, the swept keyword paths and their dtype.

    ``Optimizer(specs, swept)(values, keys)`` builds the transformation; ``values``
    maps each swept path to this member's value (traced under ``vmap``), ``keys`` are
    the member's keys for :func:`keyed_transforms` (``None``: the transforms' defaults).
    The update reads swept values from the state, so any member's ``values`` build a
    transformation that updates every member.
    """

    specs: tuple[Mapping[str, Any], ...]
    swept: tuple[str, ...] = ()
    hyperparam_dtype: Any = jnp.float32

    def __call__(
        self,
        values: Mapping[str, Any] | None = None,
        keys: Sequence[jax.Array] | None = None,
    ) -> optax.GradientTransformationExtraArgs:
        values = dict(values or {})
        missing = [p for p in self.swept if p not in values]
        if missing:
            raise ValueError(f"no value for swept optimizer keyword(s) {missing}")

        def build(**injected: Any) -> optax.GradientTransformation:
            by_path = {path: injected[name] for path, name in names.items()}
            return _Builder(by_path, None if keys is None else iter(keys)).chain(self.specs)

        names = {path: _identifier(path) for path in self.swept}
        eager = build(**{names[p]: values[p] for p in self.swept})  # the transforms' checks
        if not self.swept:
            return optax.with_extra_args_support(eager)
        # inject_hyperparams reads the keywords from the signature; paths are not names
        build.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names.values()]
        )
        inject = optax.inject_hyperparams(build, hyperparam_dtype=self.hyperparam_dtype)
        return inject(**{names[p]: values[p] for p in self.swept})

    def lookup(self, path: str) -> Any:
        """The value at a keyword ``path``: as configured, else the default in the
        callable's signature (``None`` when there is neither)."""
        node: Any = self.specs
        for part in path.split("."):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, Mapping) and ("transform" in node or "schedule" in node):
                name = node.get("transform", node.get("schedule"))
                fn = resolve_callable(name, f"optimizer.{path}")
                param = inspect.signature(fn).parameters.get(part)
                return None if param is None or param.default is param.empty else param.default
            else:
                return None
        return node

    @property
    def num_keys(self) -> int:
        """How many keys a member passes (one per transform taking a ``key``)."""
        return len(keyed_transforms(self.specs))

    def transforms(self) -> list[tuple[str, Mapping[str, Any]]]:
        """``(path, spec)`` of every transform, inner chains included."""
        return list(walk_specs(self.specs))


def describe(specs: Sequence[Any]) -> str:
    """A spec list in one line, for messages.

    >>> describe([{"transform": "optax.adam", "learning_rate": 1e-3}])
    'optax.adam(learning_rate=0.001)'
    """

    def text(value):
        if isinstance(value, dict):
            head = value.get("transform", value.get("schedule"))
            args = ", ".join(
                f"{k}={text(v)}" for k, v in value.items() if k not in ("transform", "schedule")
            )
            return f"{head}({args})" if head else f"{{{args}}}"
        if isinstance(value, (list, tuple)):
            return "[" + " → ".join(text(v) for v in value) + "]"
        return f"{value:g}" if isinstance(value, float) else repr(value)

    return " → ".join(text(spec) for spec in specs)
