"""A method's optimizer from its config: a list of transforms resolved by dotted name.

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
eagerly). Randomness: a transform with a ``key`` parameter gets one from the trainer
(the member's optimizer key; a later keyed transform folds in its index).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from grokjax.train.errors import ConfigError

__all__ = [
    "Optimizer",
    "check_update",
    "has_state",
    "keyed_transforms",
    "resolve_callable",
    "walk_specs",
]

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

    def chain(self, specs: Sequence[Mapping[str, Any]], path: str) -> optax.GradientTransformation:
        return optax.chain(*(self.transform(s, f"{path}{i}") for i, s in enumerate(specs)))

    def transform(self, spec: Any, path: str) -> optax.GradientTransformation:
        if not _is_spec(spec):
            raise ConfigError(
                f"optimizer.{path} = {spec!r}: must be a table with a 'transform' key, e.g. "
                "{ transform = 'optax.adam', learning_rate = 1e-3 }."
            )
        name = spec["transform"]
        fn = resolve_callable(name, f"optimizer.{path}.transform")
        kwargs = {k: v for k, v in spec.items() if k != "transform"}
        kwargs.update(self.swept_here(path, kwargs))
        if "key" in kwargs:
            raise ConfigError(
                f"optimizer.{path}.key: the trainer gives {name} its key (from the member's "
                "seed); remove it."
            )
        _check_keywords(fn, kwargs, name, f"optimizer.{path}")
        built = {k: self.value(fn, k, v, f"{path}.{k}") for k, v in kwargs.items()}
        if self.keys is not None and "key" in inspect.signature(fn).parameters:
            built["key"] = next(self.keys)
        return self.call(fn, built, name, path)

    def value(self, fn: Callable[..., Any], keyword: str, value: Any, path: str) -> Any:
        if path in self.values:
            self.used.add(path)
            return self.values[path]
        if _is_chain(value):
            return self.chain(value, f"{path}.")
        if isinstance(value, Mapping) and "schedule" in value:
            sched = resolve_callable(value["schedule"], f"optimizer.{path}.schedule", "schedule")
            kwargs = {k: v for k, v in value.items() if k != "schedule"}
            kwargs.update(self.swept_here(path, kwargs))
            _check_keywords(sched, kwargs, value["schedule"], f"optimizer.{path}")
            built = {k: self.value(sched, k, v, f"{path}.{k}") for k, v in kwargs.items()}
            return self.call(sched, built, value["schedule"], path)
        if isinstance(value, Mapping):
            for record in _record_types(fn, keyword):
                fields = (
                    [f.name for f in dataclasses.fields(record)]
                    if dataclasses.is_dataclass(record)
                    else list(record._fields)
                )
                unknown = [k for k in value if k not in fields]
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

    @staticmethod
    def call(fn: Callable[..., Any], kwargs: dict[str, Any], name: str, path: str) -> Any:
        try:
            return fn(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:
            raise ConfigError(f"optimizer.{path}: {name}({_show(kwargs)}) failed: {err}") from err


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


def has_state(opt_state: Any, types: tuple[type, ...]) -> bool:
    """Whether ``opt_state`` holds a state of one of ``types`` anywhere."""
    found: list[bool] = []
    jax.tree.map(
        lambda _: None, opt_state, is_leaf=lambda n: found.append(isinstance(n, types)) or False
    )
    return any(found)


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

        def build(injected: Mapping[str, Any]) -> optax.GradientTransformation:
            key_iter = None if keys is None else iter(keys)
            builder = _Builder(injected, key_iter)
            tx = builder.chain(self.specs, "")
            unused = sorted(set(injected) - builder.used)
            if unused:
                raise ConfigError(
                    f"optimizer.{unused[0]}: no transform or schedule keyword at this path "
                    "to sweep (a swept key is optimizer.<index>.<keyword>, or "
                    "optimizer.<index>.<keyword>.<schedule keyword>)."
                )
            return tx

        eager = build({p: values[p] for p in self.swept})  # the transforms' own checks
        if not self.swept:
            return optax.with_extra_args_support(eager)
        names = {path: _identifier(path) for path in self.swept}

        def factory(**kwargs):
            return build({path: kwargs[name] for path, name in names.items()})

        # inject_hyperparams reads the keywords from the signature; paths are not names
        factory.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names.values()]
        )
        inject = optax.inject_hyperparams(factory, hyperparam_dtype=self.hyperparam_dtype)
        return inject(**{names[p]: values[p] for p in self.swept})

    def lookup(self, path: str) -> Any:
        """The configured value at a keyword ``path`` (``None`` when the spec omits it)."""
        node: Any = self.specs
        for part in path.split("."):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
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


def check_update(optimizer: Optimizer, extra_args: Mapping[str, Any], path: str) -> None:
    """Trace one init and update on a small parameter tree, with the extra arguments the
    trainer passes (``value``, …), so a transform that needs another one fails here, in
    words, instead of inside the compiled run."""
    params = {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32)}
    values = {p: jax.ShapeDtypeStruct((), optimizer.hyperparam_dtype) for p in optimizer.swept}
    # keys as the trainer passes them: raw uint32[2] arrays, one per keyed transform
    keys = [jax.ShapeDtypeStruct((2,), jnp.uint32)] * optimizer.num_keys

    def step(params, values, keys):
        tx = optimizer(values, keys)
        return tx.update(params, tx.init(params), params, **extra_args)

    try:
        jax.eval_shape(step, params, values, keys)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        given = ", ".join(extra_args) or "none"
        raise ConfigError(
            f"{path}: the optimizer's init or update failed as the trainer calls it (extra "
            f"arguments: {given}, track_entropy = true adds activation_entropy; a transform "
            f"taking `key` gets a raw uint32[2] PRNG key): {err}"
        ) from err
