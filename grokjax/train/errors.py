"""The trainer's error types (defined in :mod:`grokjax.errors`, shared by every layer)."""

from __future__ import annotations

from grokjax.errors import ConfigError

__all__ = ["ConfigError"]
