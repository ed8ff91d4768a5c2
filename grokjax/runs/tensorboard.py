"""Live TensorBoard event files for a run: ``tensorboard --logdir runs`` shows every
member's curves while the run trains.

``<run_dir>/tb/<method label>/m<member>_seed<seed>[_<swept key>=<value>...]/`` is one
directory per member, so TensorBoard lists each member as a run that can be toggled
and compared. Its tags are the scalar metric names of ``metrics.jsonl`` (``val_acc``,
``nlm_cos/layers/0/kernel``: TensorBoard groups on the ``/``), at the same steps, as
float32; non-finite values are written as they are. Arrays stay in ``analysis/``.

How it writes, and why not one ``tensorboardX.SummaryWriter`` per member: each of those
starts a writer thread and a ``multiprocessing`` queue (of 10 events: a put blocks while
the thread catches up) and registers an ``atexit`` hook, and its ``flush()`` flushes
only what the thread has already taken off the queue, so "flushed at each evaluation"
would not hold. A sweep of 64 members would run 64 threads for 64 short writes per
evaluation. Here the writes are synchronous: tensorboardX's protos and record checksum,
one ``Event`` per member per evaluation holding all its scalars, appended to the
member's event file in one ``write`` (the file opened and closed around it: nothing is
buffered in between, and a sweep of any size holds no file handles). One evaluation of
64 members x 40 scalars takes about 10 ms on a 2-core CPU (64 flushed ``SummaryWriter``
objects: about 210 ms), most of it tensorboardX's pure-Python CRC32C (the optional
``crc32c`` package makes it faster). Files are not fsynced: they are a view of
``metrics.jsonl``, which is.

A resume appends a new event file per member (a file is never rewritten) whose
``SessionLog.START`` at ``resume_step + 1`` makes TensorBoard's Python loader drop the
points of the abandoned steps (those ``>= resume_step + 1``, so the checkpoint's own
point stays); a new run's files start with a ``START`` at step 0, because the Python
server's loader ignores a run's first one. TensorBoard's Rust loader ignores session
logs but drops the points at steps ``>=`` each new point's step, which the resumed
points are. Either way each step shows once, with the resumed run's value (checked with
TensorBoard 2.21's server, ``--load_fast`` true and false, and by tests/test_tensorboard.py).

This module imports tensorboardX, which imports torch where it is installed (a second
or two): :class:`~grokjax.runs.files.RunFiles` imports it when a run starts, not when
the reports read a run directory.
"""

from __future__ import annotations

import pathlib
import re
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import masked_crc32c

__all__ = ["TensorBoardWriter", "member_dir_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def _safe(text: str) -> str:
    """``text`` as one portable path component."""
    return _UNSAFE.sub("_", text).strip(".") or "_"


def member_dir_name(index: int, seed: int, hps: Mapping[str, Any]) -> str:
    """``m<index>_seed<seed>`` and the swept hyperparameters, filesystem-safe.

    >>> member_dir_name(3, 0, {"optimizer.0.lamb": 2.0, "input_noise": 1e-3})
    'm3_seed0_optimizer.0.lamb=2_input_noise=0.001'
    """
    return _safe("_".join([f"m{index}", f"seed{seed}", *(f"{k}={v:g}" for k, v in hps.items())]))


def _record(event: Event) -> bytes:
    """``event`` framed as a TFRecord: length, its checksum, data, its checksum."""
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return b"".join(
        [
            header,
            struct.pack("<I", masked_crc32c(header)),
            data,
            struct.pack("<I", masked_crc32c(data)),
        ]
    )


class TensorBoardWriter:
    """The event files of a run's members, under ``<run_dir>/tb/``.

    Creating it starts a new event file per member (after ``resume_step``'s for a
    resume: see the module docstring); :meth:`write` appends one evaluation.
    """

    def __init__(
        self, run_dir: pathlib.Path, groups: Sequence[Any], resume_step: int | None = None
    ):
        self.dir = pathlib.Path(run_dir) / "tb"
        self.groups = groups
        self.paths: list[list[pathlib.Path]] = []  # [group][member] -> event file
        now = time.time()
        start = Event(
            wall_time=now,
            step=0 if resume_step is None else resume_step + 1,
            session_log=SessionLog(status=SessionLog.START),
        )
        head = _record(Event(wall_time=now, file_version="brain.Event:2")) + _record(start)
        labels: set[str] = set()
        for g, group in enumerate(groups):
            label = _safe(group.method.label)
            if label in labels:  # two labels made the same by _safe
                label = f"{label}_g{g}"
            labels.add(label)
            paths = []
            for i, (seed, hps) in enumerate(group.members):
                folder = self.dir / label / member_dir_name(i, seed, hps)
                folder.mkdir(parents=True, exist_ok=True)
                # TensorBoard reads a run's files in name order: the time, then a count
                # that keeps a resume in the same second after (and off) the old file
                count = sum(1 for _ in folder.glob("*tfevents*"))
                path = folder / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}"
                path = path.with_name(f"{path.name}.{count}")
                with path.open("xb") as f:
                    f.write(head)
                paths.append(path)
            self.paths.append(paths)
        self.closed = False

    def write(
        self,
        step: int,
        host: Sequence[Mapping[str, np.ndarray]],
        names: Sequence[Sequence[str]],
    ) -> None:
        """One evaluation: each member's scalars ``names[g]`` (but ``finite``) at
        ``step``, in its file before this returns."""
        if self.closed:
            raise ValueError(f"{self.dir}: the TensorBoard writer is closed.")
        now = time.time()
        for paths, m, keys in zip(self.paths, host, names, strict=True):
            keys = [k for k in keys if k != "finite"]
            columns = [np.asarray(m[k], np.float64).tolist() for k in keys]
            for i, path in enumerate(paths):
                summary = Summary(
                    value=[
                        Summary.Value(tag=k, simple_value=column[i])
                        for k, column in zip(keys, columns, strict=True)
                    ]
                )
                with path.open("ab") as f:
                    f.write(_record(Event(wall_time=now, step=step, summary=summary)))

    def close(self) -> None:
        """Stop writing (every write is already in its file: nothing is held open)."""
        self.closed = True
