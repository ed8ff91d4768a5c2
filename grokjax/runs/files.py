"""A run directory on disk: its files, written so that a crash or an interrupt loses
nothing already written, and read back with damage named (the trainer writes it, the
figures and reports read it).

``runs/<name>_<YYYYmmdd_HHMMSS>/`` holds ``config.json``, ``metrics.jsonl`` (one row per
evaluation per member, flushed per evaluation), ``grokking.json``, ``checkpoints/``
(orbax), ``analysis/`` (the probes' arrays, ``step_<step>.npz``), ``tb/`` (TensorBoard
event files of the scalar metrics, one directory per member, ``tb/<method
label>/m<member>_seed<seed>[_<swept>=<value>...]``, written with ``metrics.jsonl``:
``tensorboard --logdir runs`` follows a run live; see :mod:`grokjax.runs.tensorboard`)
and, from :mod:`grokjax.viz`, ``plots/`` and ``report.md``. Whole-file rewrites go
through a temporary file and a rename, so a file is either the old one or the new one.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import sys
from typing import Any

import jax
import numpy as np

from grokjax.errors import RunFolderError
from grokjax.runs.checkpoint import RunCheckpointer

__all__ = ["RunFiles", "new_run_dir", "read_json", "read_metrics", "write_atomic"]


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Replace ``path``'s contents with ``text`` in one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename makes it the file
    os.replace(tmp, path)


def read_json(path: pathlib.Path) -> Any:
    """A run folder's JSON file; a missing or damaged one names itself."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such run directory.")
    if not path.exists():
        raise RunFolderError(f"{path} not found: is {path.parent} a grokjax run directory?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is damaged (not valid JSON: {err}).") from None


def read_metrics(path: pathlib.Path) -> tuple[list[dict[str, Any]], bool]:
    """``(rows, torn)``: the rows of a ``metrics.jsonl``, and whether its last line was
    cut off (a crash mid-write) and dropped. A damaged line before the last names
    itself."""
    lines = path.read_text().split("\n")
    rows, torn = [], False
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):  # ends in a newline: written whole, so damaged
                raise RunFolderError(
                    f"{path}:{number} is damaged ({err}); remove that line to continue."
                ) from None
            torn = True
    return rows, torn


def new_run_dir(config: Any, root: str | pathlib.Path = "runs") -> pathlib.Path:
    """``root/<config.name>_<YYYYmmdd_HHMMSS>`` (with a suffix if it exists)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    run_dir = pathlib.Path(root) / f"{config.name}_{stamp}"
    suffix = 1
    while run_dir.exists():
        run_dir = pathlib.Path(root) / f"{config.name}_{stamp}_{suffix}"
        suffix += 1
    return run_dir


class RunFiles:
    """A run directory's files while it trains: ``config.json``, ``metrics.jsonl``,
    ``analysis/*.npz``, ``tb/``, ``grokking.json`` and the orbax checkpoints."""

    def __init__(self, run_dir: pathlib.Path, groups: list[Any], keep_checkpoints: int = 3):
        self.dir, self.groups, self.metrics, self.tensorboard = run_dir, groups, None, None
        # In a multi-process run process 0 writes the files; all save the checkpoints.
        self.primary = jax.process_index() == 0
        run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpointer = RunCheckpointer(run_dir / "checkpoints", latest=keep_checkpoints)

    def kept_rows(self, resume_step: int) -> list[dict[str, Any]]:
        """The rows a resume from ``resume_step`` (its checkpoint) keeps; writes nothing.
        Metrics that are missing or end before the checkpoint are refused: continuing
        would lose them."""
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            raise RunFolderError(
                f"{path} is missing, but the checkpoint is at step {resume_step}: "
                "resuming would lose the metrics before it. Restore the file, or start "
                "the experiment again."
            )
        rows, torn = read_metrics(path)
        last = max((row["step"] for row in rows), default=0)
        if last < resume_step:
            raise RunFolderError(
                f"{path} ends at step {last}, before the checkpoint at step {resume_step}: "
                "resuming would leave a gap. Restore the file, resume from a step <= "
                f"{last} with --from-step, or start the experiment again."
            )
        kept = [row for row in rows if row["step"] <= resume_step]
        members = sum(len(g.members) for g in self.groups)
        at_step = {(row["group"], row["member"]) for row in kept if row["step"] == resume_step}
        if len(at_step) < members:
            raise RunFolderError(
                f"{path} has {len(at_step)} of the {members} members' rows at step "
                f"{resume_step}, the checkpoint's: resume from an earlier checkpoint with "
                "--from-step, or restore the file."
            )
        dropped = len(rows) - len(kept) + torn
        if dropped and self.primary:
            cut = " (the last one cut off)" if torn else ""
            print(
                f"grokjax: resuming from step {resume_step}: dropped {dropped} row(s) of "
                f"{path.name} written after it{cut}",
                file=sys.stderr,
            )
        return kept

    def start(
        self,
        config: dict[str, Any],
        resume_step: int | None = None,
        kept: list[dict[str, Any]] | None = None,
    ) -> None:
        """Start writing: ``config.json`` (``config`` as a JSON-ready dict; a resume may
        have changed ``steps``) and, for
        a resume, the kept rows; probe arrays after ``resume_step`` are removed, and new
        TensorBoard event files hide the points after it. A new run claims
        ``metrics.jsonl`` (a folder that already holds a run is refused)."""
        # here, not at the top: tensorboardX imports torch where it is installed, and the
        # reports read run directories without writing any
        from grokjax.runs.tensorboard import TensorBoardWriter

        if not self.primary:
            return
        path = self.dir / "metrics.jsonl"
        if resume_step is None:
            try:
                self.metrics = path.open("x")
            except FileExistsError:
                raise RunFolderError(
                    f"{self.dir} already holds a run ({path.name}): resume it, or write the "
                    "new run to another folder."
                ) from None
        else:
            for npz in (self.dir / "analysis").glob("step_*.npz"):
                if int(npz.stem.removeprefix("step_")) > resume_step:
                    npz.unlink()  # from the abandoned steps
            write_atomic(path, "".join(json.dumps(row) + "\n" for row in kept or []))
            self.metrics = path.open("a")
        write_atomic(self.dir / "config.json", json.dumps(config, indent=1) + "\n")
        self.tensorboard = TensorBoardWriter(self.dir, self.groups, resume_step)

    def write(self, step: int, host: list[dict[str, np.ndarray]], names, array_names) -> None:
        """One evaluation: a row per member (flushed), its scalars in TensorBoard's
        files, and the probes' arrays."""
        if not self.primary:
            return
        lines = []
        for g, (group, m) in enumerate(zip(self.groups, host, strict=True)):
            for i, (seed, hps) in enumerate(group.members):
                row = {"step": step, "method": group.method.label, "group": g, "member": i}
                row.update(seed=seed, **hps)
                row.update({k: float(m[k][i]) for k in names[g] if k != "finite"})
                lines.append(json.dumps(row) + "\n")
        self.metrics.write("".join(lines))
        self.metrics.flush()
        os.fsync(self.metrics.fileno())  # a row written is a row kept, even on power loss
        self.tensorboard.write(step, host, names)
        arrays = {
            f"{group.method.label}/{k}": np.asarray(m[k])
            for group, m, keys in zip(self.groups, host, array_names, strict=True)
            for k in keys
        }
        if arrays:
            (self.dir / "analysis").mkdir(exist_ok=True)
            np.savez(self.dir / "analysis" / f"step_{step:08d}.npz", **arrays)

    def close(self, detector: Any) -> None:
        """With ``detector``, write ``grokking.json``; then close the files (waiting
        for a checkpoint in flight)."""
        try:
            if detector is not None and self.primary:
                rows = [
                    {"method": g.method.label, "member": i, "seed": seed, **hps}
                    | detector.member(gi, i)
                    for gi, g in enumerate(self.groups)
                    for i, (seed, hps) in enumerate(g.members)
                ]
                write_atomic(self.dir / "grokking.json", json.dumps(rows, indent=1) + "\n")
        finally:
            if self.metrics is not None:
                self.metrics.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
            self.checkpointer.close()
