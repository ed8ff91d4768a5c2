"""Error types shared by every layer: each message names the thing that failed and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ConfigError", "DataError", "RunFolderError", "check", "choice"]


class ConfigError(ValueError):
    """A config value or key is invalid; the message names it and what is allowed."""


class DataError(ValueError):
    """The data cannot serve the config (too little text for the windows asked for, …);
    the message names the setting to change."""


class RunFolderError(RuntimeError):
    """A run folder or checkpoint is damaged or inconsistent; the message names the file
    and what to do."""


def choice(path: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{path} = {value!r} is not allowed; choose one of {list(allowed)}.")


def check(path: str, ok: bool, requirement: str, value: Any) -> None:
    """Raise :class:`ConfigError` saying ``path`` must be ``requirement`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{path} = {value!r}: must be {requirement}.")
