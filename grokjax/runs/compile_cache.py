"""The persistent compilation cache of runs, and what a run spent compiling.

A run's training program takes seconds to compile on a CPU (more for large models), and
a second run of the same config shape compiles the same program again. JAX's
persistent compilation cache stores compiled executables on disk, keyed by the program,
its devices and the compiler's options; :func:`enable` points it at a directory
(``grokjax run`` does so by default: :func:`default_dir`). :class:`CompileWatch` listens
to JAX's monitoring events while a run trains and reports the time spent in XLA
compilation and how many programs came from the cache.

References:
    JAX documentation, "Persistent compilation cache".
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import jax
from jax import monitoring

__all__ = ["CompileWatch", "default_dir", "enable"]

# jax._src.dispatch.BACKEND_COMPILE_EVENT: compiling or fetching from the cache
_COMPILE = "/jax/core/compile/backend_compile_duration"
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"


def default_dir() -> pathlib.Path:
    """``$GROKJAX_COMPILE_CACHE``, else JAX's own ``$JAX_COMPILATION_CACHE_DIR`` when the
    user set one, else ``$XDG_CACHE_HOME/grokjax/xla`` (``~/.cache`` when unset).

    >>> isinstance(default_dir(), pathlib.Path)
    True
    """
    for name in ("GROKJAX_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        if os.environ.get(name):
            return pathlib.Path(os.environ[name])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "grokjax" / "xla"


def enable(path: str | os.PathLike, min_compile_seconds: float = 0.5) -> pathlib.Path:
    """Store compiled programs that took at least ``min_compile_seconds`` to compile in
    ``path`` (created), and read them back instead of compiling again. For the whole
    process: JAX has one cache. ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, when
    set, keeps its value."""
    path = pathlib.Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@dataclass
class CompileWatch:
    """Counts XLA compilations while active (a context manager).

    ``seconds``: time in XLA's compile step, a program fetched from the persistent cache
    included (then it is the time to read it); ``programs``: executables compiled or
    fetched; ``cache_hits`` / ``cache_misses``: lookups in the persistent cache (none
    when it is off); ``saved_seconds``: the compile time the hits' entries recorded.

    >>> with CompileWatch() as watch:
    ...     _ = jax.jit(lambda x: x * 3 + 1)(jax.numpy.arange(4.0))
    >>> watch.programs >= 1 and watch.seconds > 0
    True
    """

    seconds: float = 0.0
    programs: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    saved_seconds: float = 0.0

    def _duration(self, event: str, duration: float, **_) -> None:
        if event == _COMPILE:
            self.seconds += duration
            self.programs += 1
        elif event == _SAVED:
            self.saved_seconds += duration

    def _event(self, event: str, **_) -> None:
        if event == _HIT:
            self.cache_hits += 1
        elif event == _MISS:
            self.cache_misses += 1

    def __enter__(self) -> CompileWatch:
        monitoring.register_event_duration_secs_listener(self._duration)
        monitoring.register_event_listener(self._event)
        return self

    def __exit__(self, *exc) -> None:
        monitoring.unregister_event_duration_listener(self._duration)
        monitoring.unregister_event_listener(self._event)

    def summary(self) -> str:
        """One line for reports, e.g. ``"compilation 4.2 s (2 programs, 2 from the
        persistent cache, which saved 9.8 s)"``."""
        text = f"compilation {self.seconds:.1f} s ({self.programs} programs"
        if self.cache_hits or self.cache_misses:
            text += f", {self.cache_hits} from the persistent cache"
            if self.cache_hits:
                text += f", which saved {self.saved_seconds:.1f} s"
        else:
            text += ", persistent cache off"
        return text + ")"
