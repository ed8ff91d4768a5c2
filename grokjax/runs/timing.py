"""Where a run's wall time goes: setup, the program, the device, the host, the files.

The trainer's host loop wraps each kind of work in :meth:`RunTimes.part`; the command
line prints :meth:`RunTimes.summary` at the end of a run and writes it into
``report.md``. Training and evaluation run in one compiled call per interval, so the
device's share is one number (``device``): the time the host waits for results plus
the time to dispatch the calls after the first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields

__all__ = ["RunTimes"]


@dataclass
class RunTimes:
    """Seconds of a run's wall time by kind of work (see the module docstring).

    ``setup``: the task, the members' initialisation, placing them on devices and
    opening the run folder (a resume's checkpoint read included); ``program``: the
    first call of the interval program: tracing, lowering and compiling it (or reading
    it from the persistent cache) before it is dispatched; ``device``: waiting for the
    device's training and evaluation, and dispatching the later calls; ``host``: reading
    the metrics back, checking them, detecting grokking, the progress bar and a
    streamed task's input feed; ``writing``: ``metrics.jsonl``, TensorBoard,
    checkpoints and closing the run's files; ``total``: the whole run, so
    :meth:`other` is what no part counted.

    >>> times = RunTimes()
    >>> with times.part("host"):
    ...     pass
    >>> times.host >= 0 and times.other() == 0.0
    True
    """

    setup: float = 0.0
    program: float = 0.0
    device: float = 0.0
    host: float = 0.0
    writing: float = 0.0
    total: float = 0.0

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to field ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - start)

    def parts(self) -> dict[str, float]:
        """The parts by name, without ``total``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "total"}

    def other(self) -> float:
        """``total`` minus the parts (0 before ``total`` is set)."""
        return max(self.total - sum(self.parts().values()), 0.0) if self.total else 0.0

    def summary(self) -> str:
        """One line, e.g. ``"setup 1.2 s, program 6.5 s, device 60.1 s (87%), host 0.3 s,
        writing 0.8 s, other 0.1 s"``; the largest part also gets its share of the total."""
        parts = {**self.parts(), "other": self.other()}
        largest = max(parts, key=parts.get)
        return ", ".join(
            f"{name} {seconds:.1f} s"
            + (f" ({seconds / self.total:.0%})" if name == largest and self.total else "")
            for name, seconds in parts.items()
        )
