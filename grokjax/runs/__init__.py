"""Run directories on disk: their files and checkpoints, written so that nothing
already written is lost, and read back with damage named."""

from grokjax.runs.checkpoint import (
    CheckpointError,
    RunCheckpointer,
    array_hashes,
    checkpoint_due,
)
from grokjax.runs.files import RunFiles, new_run_dir, read_json, read_metrics, write_atomic

__all__ = [
    "CheckpointError",
    "RunCheckpointer",
    "RunFiles",
    "array_hashes",
    "checkpoint_due",
    "new_run_dir",
    "read_json",
    "read_metrics",
    "write_atomic",
]
