"""Run directories on disk: their files and checkpoints, written so that nothing
already written is lost, and read back with damage named; TensorBoard event files for
following a run live."""

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
    "TensorBoardWriter",
    "array_hashes",
    "checkpoint_due",
    "new_run_dir",
    "read_json",
    "read_metrics",
    "write_atomic",
]


def __getattr__(name: str):
    # grokjax.runs.tensorboard imports tensorboardX (and so torch, where installed) only
    # when asked for: reading a run directory does not need it
    if name == "TensorBoardWriter":
        from grokjax.runs.tensorboard import TensorBoardWriter

        return TensorBoardWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
