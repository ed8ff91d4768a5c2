"""Multi-process runs on JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same ``grokjax run``: it joins the runtime
(:func:`initialize`), sees all processes' devices in ``jax.devices()``, lays members
out over them (:mod:`grokjax.train.mesh`) and trains; process 0 writes the run's files
and every process writes its part of the orbax checkpoints.

- ``grokjax run CONFIG --processes N`` starts N processes on this machine
  (:func:`launch_local`): a coordinator on 127.0.0.1, CPU collectives through gloo.
- A cluster launcher starts the processes itself and passes ``--coordinator
  HOST:PORT --process-id I --num-processes N`` to each, or, under SLURM, ``--slurm``
  (JAX reads the job's environment).

A process that dies stops sending heartbeats; after ``heartbeat_timeout`` seconds the
coordination service fails the others' pending collectives and ends them, and the
local launcher then stops any survivor and names the process that failed first. The
run resumes from its last checkpoint with ``grokjax run --resume RUN_DIR`` (with or
without ``--processes``: checkpoints restore onto any process count).

References:
    JAX, "Multi-process environments",
    https://docs.jax.dev/en/latest/multi_process.html
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from grokjax.errors import ConfigError

__all__ = ["HEARTBEAT_TIMEOUT", "LaunchFailed", "broadcast_text", "initialize", "launch_local"]

#: Seconds without a heartbeat after which a process counts as dead and the others
#: stop (JAX's default, 100 s, leaves a crashed run hanging for minutes).
HEARTBEAT_TIMEOUT = 20
#: Seconds the processes may take to reach the coordinator at start.
INIT_TIMEOUT = 120


class LaunchFailed(RuntimeError):
    """A process of a multi-process run failed; the message names it and how to resume."""


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    slurm: bool = False,
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT,
) -> None:
    """Join the JAX distributed runtime, before anything touches a device.

    Args:
        coordinator: ``host:port`` of process 0's coordination service.
        num_processes: how many processes the run has.
        process_id: this process's index, ``0 … num_processes − 1``.
        slurm: take all three from the SLURM job's environment instead.
        heartbeat_timeout: seconds of silence after which a process counts as dead.
    """
    import jax

    given = (coordinator, num_processes, process_id)
    if slurm:
        if any(x is not None for x in given):
            raise ConfigError("--slurm reads the processes from SLURM: drop --coordinator etc.")
        if "SLURM_JOB_ID" not in os.environ:
            raise ConfigError("--slurm: SLURM_JOB_ID is not set; start the run with srun.")
        kwargs = {}
    else:
        if any(x is None for x in given):
            raise ConfigError(
                "a multi-process run needs --coordinator HOST:PORT, --process-id I and "
                "--num-processes N together (or --slurm, or --processes N on one machine)."
            )
        if not 0 <= process_id < num_processes:
            raise ConfigError(
                f"--process-id {process_id} is outside 0 … {num_processes - 1} "
                f"(--num-processes {num_processes})."
            )
        kwargs = dict(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
    # CPU collectives (used only where the devices are CPUs); asking for the backend to
    # decide would start it, and initialize must come first
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        **kwargs,
        initialization_timeout=INIT_TIMEOUT,
        heartbeat_timeout_seconds=heartbeat_timeout,
        shutdown_timeout_seconds=heartbeat_timeout,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(
    argv: Sequence[str],
    processes: int,
    *,
    run_dir: str,
    resume: bool = False,
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``grokjax <argv>`` as ``processes`` processes on this machine, joined by a
    coordinator on 127.0.0.1; return their exit code when they agree (0: done; an
    error that all met, such as a bad config, is printed by process 0).

    Process 0 prints to this terminal; the others write ``process_<i>.log`` in
    ``run_dir`` (the new run's folder, or with ``resume`` the one ``argv`` resumes).
    Ctrl-C or SIGTERM is passed on to every process (each saves a
    checkpoint and stops). When a process fails, the others are stopped within
    ``heartbeat_timeout`` plus a grace period, and :class:`LaunchFailed` names it.
    """
    if processes < 1:
        raise ConfigError(f"--processes {processes}: give at least 1.")
    os.makedirs(run_dir, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    children: list[subprocess.Popen] = []
    logs = []
    base_env = {**os.environ, **(env or {})}
    for i in range(processes):
        command = [
            sys.executable, "-m", "grokjax.cli", *argv, *([] if resume else ["--run-dir", run_dir]),
            "--coordinator", address, "--process-id", str(i), "--num-processes", str(processes),
        ]  # fmt: skip
        out = None
        if i:
            out = open(os.path.join(run_dir, f"process_{i}.log"), "w")  # noqa: SIM115
            logs.append(out)
        err = subprocess.STDOUT if i else None
        # their own process group: a terminal's Ctrl-C reaches the launcher alone, which
        # passes it on once (a second signal would make a worker exit without a checkpoint)
        children.append(
            subprocess.Popen(command, stdout=out, stderr=err, env=base_env, process_group=0)
        )

    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed, deadline = None, None
        while True:
            codes = [c.poll() for c in children]
            if all(code is not None for code in codes):
                break
            if failed is None:
                bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
                if bad:
                    failed = bad[0]
                    deadline = time.monotonic() + heartbeat_timeout + 15
            elif time.monotonic() > deadline:
                for child in children:
                    if child.poll() is None:
                        child.kill()
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for log in logs:
            log.close()
    codes = [c.returncode for c in children]
    if len(set(codes)) == 1:  # all done, or all stopped by the same error (printed by 0)
        return codes[0]
    if failed is None:
        failed = next((i, c) for i, c in enumerate(codes) if c)
    i, code = failed
    where = "this terminal" if i == 0 else os.path.join(run_dir, f"process_{i}.log")
    ckpts = os.path.join(run_dir, "checkpoints")
    saved = os.path.isdir(ckpts) and any(name.isdigit() for name in os.listdir(ckpts))
    then = (
        f"Resume from the last checkpoint with:\n  grokjax run --resume {run_dir} "
        f"--processes {processes}"
        if saved
        else "No checkpoint was saved: start the run again."
    )
    raise LaunchFailed(
        f"process {i} of {processes} exited with code {code} (its output: {where}); the "
        f"others were stopped (exit codes {codes}). {then}"
    )


def broadcast_text(text: str) -> str:
    """Process 0's ``text`` on every process (e.g. the run folder it named).

    >>> broadcast_text("runs/grokfast_quick_20261202_120000")  # one process: as given
    'runs/grokfast_quick_20261202_120000'
    """
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    data = np.zeros(4096, np.uint8)
    raw = text.encode()
    if len(raw) > data.size:
        raise ConfigError(f"{text[:80]}…: longer than {data.size} bytes.")
    data[: len(raw)] = np.frombuffer(raw, np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(data))
    return bytes(got[got != 0]).decode()
