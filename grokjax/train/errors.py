"""The trainer's error types: each message names the thing that failed and the fix."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config value or key is invalid; the message names it and what is allowed."""
