"""``grokjax analyze``: recompute a run's probes from its checkpoints, after the run.

For every checkpoint step (or the chosen ones) the run's configured probes are
evaluated again on the restored member states, by the same compiled evaluation the
trainer runs, and written to ``analysis/checkpoints.jsonl`` (rows like
``metrics.jsonl``) and ``analysis/checkpoint_<step>.npz`` (arrays, keyed
``<method>/<name>`` with a leading member axis); then the figures and the report are
redrawn.

With :func:`~grokjax.analysis.progress_measures` among the probes, each row also gets
Nanda et al.'s definition of the restricted and excluded loss
(``progress/restricted_loss``, ``progress/excluded_loss``): computed with the key
frequencies of the member's *final* checkpoint at every step, where training could
only use the current ones (``…_online``).

Probes that read the training steps (``reads("last_step")`` such as
:func:`~grokjax.analysis.gradient_flow`, or step means) cannot be recomputed from a
checkpoint, which holds the state but not the step that led to it; their values are
in ``metrics.jsonl`` and the analysis lists them as skipped.

References:
  Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability".
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from grokjax.analysis.fourier import key_frequencies
from grokjax.analysis.mechanistic import EMBEDDING_LEAVES, _leaf, progress_measures
from grokjax.analysis.probes import probe_reads
from grokjax.errors import ConfigError
from grokjax.runs import RunCheckpointer, write_atomic
from grokjax.train.loading import load_config
from grokjax.train.state import init_groups
from grokjax.train.step import (
    _member_eval,
    _over_members,
    member_probe_context,
    resolve_member_axis,
)

__all__ = ["analyze_run"]


def _probe_fn(probe: Any) -> Any:
    return getattr(probe, "func", probe)


def _final_key_frequencies(probe: Any, p: int, params: Any) -> jax.Array:
    """``(k,)`` key frequencies of one member's embedding, as ``probe`` (a bound
    progress_measures) chooses them."""
    kwargs = getattr(probe, "keywords", {})
    W_E = _leaf(params, kwargs.get("embedding"), EMBEDDING_LEAVES, "embedding")
    return key_frequencies(W_E.astype(jnp.float32), p, kwargs.get("k", 5))


def _nanda_losses(ctx, probe: Any, freqs: jax.Array) -> dict[str, jax.Array]:
    out = progress_measures(ctx, **{**getattr(probe, "keywords", {}), "freqs": freqs})
    return {k: out[k] for k in ("progress/restricted_loss", "progress/excluded_loss")}


def analyze_run(
    run_dir: str | pathlib.Path,
    *,
    steps: Sequence[int] | None = None,
    progress: bool = True,
    figures: bool = True,
) -> list[int]:
    """Recompute the probes of the run in ``run_dir`` at its checkpoint ``steps``
    (default: all kept) and write them; returns the steps analysed.

    Raises:
      ConfigError: a step without a checkpoint (the message lists the saved ones).
      grokjax.runs.CheckpointError: a damaged checkpoint.
    """
    run_dir = pathlib.Path(run_dir)
    config = load_config(run_dir)
    with jax.enable_x64(True) if config.needs_x64 else contextlib.nullcontext():
        return _analyze(run_dir, config, steps, progress, figures)


def _analyze(run_dir, config, steps, progress, figures) -> list[int]:
    task, groups, template = init_groups(config)
    checkpointer = RunCheckpointer(run_dir / "checkpoints", latest=0)  # reads, deletes none
    try:
        saved = checkpointer.all_steps()
        chosen = sorted(saved if steps is None else set(steps))
        missing = [s for s in chosen if s not in saved]
        if missing or not chosen:
            raise ConfigError(
                f"--steps: no checkpoint at step(s) {missing or 'any'} in {run_dir}; saved: "
                f"{saved}. Keep every checkpoint with keep_checkpoints = 0."
            )
        probes = config.probe_functions()
        kept = tuple(p for p in probes if not probe_reads(p) - {"init_params"})
        skipped = sorted(_probe_fn(p).__name__ for p in probes if p not in kept)
        measures = [p for p in kept if _probe_fn(p) is progress_measures]
        nanda = measures[0] if measures else None
        if nanda is not None:
            final, _ = checkpointer.restore(template, saved[-1])
            member_freqs = functools.partial(_final_key_frequencies, nanda, task.facts["p"])
            freqs = [jax.vmap(member_freqs)(s.params) for s in final]
        else:
            freqs = [jnp.zeros((g.size, 0), jnp.int32) for g in groups]

        axis = resolve_member_axis(config.member_axis, 1)

        def member(group, state, freqs_m, step):
            out = _member_eval(group, task, kept, state, None, None, step)
            if nanda is not None:
                ctx = member_probe_context(group, task, state, step=step)
                out.update(_nanda_losses(ctx, nanda, freqs_m))
            return out

        evaluate = jax.jit(
            lambda states, freqs, step: [
                _over_members(functools.partial(member, g), axis, 2)(s, f, step)
                for g, s, f in zip(groups, states, freqs, strict=True)
            ]
        )
        rows, out_dir = [], run_dir / "analysis"
        out_dir.mkdir(exist_ok=True)
        for step in tqdm(chosen, disable=not progress, desc="analyze", unit="checkpoint"):
            states, _ = checkpointer.restore(template, step)
            host = jax.device_get(evaluate(states, freqs, jnp.asarray(step, jnp.int32)))
            arrays = {}
            for g, (group, values) in enumerate(zip(groups, host, strict=True)):
                for i, (seed, hps) in enumerate(group.members):
                    row = {"step": step, "method": group.method.label, "group": g, "member": i}
                    row.update(seed=seed, **hps)
                    row.update({k: float(v[i]) for k, v in values.items() if not np.ndim(v[i])})
                    row.pop("finite", None)
                    rows.append(row)
                arrays.update(
                    {f"{group.method.label}/{k}": v for k, v in values.items() if v.ndim > 1}
                )
            if arrays:
                tmp = out_dir / f".checkpoint_{step:08d}.npz"
                np.savez(tmp, **arrays)
                os.replace(tmp, out_dir / f"checkpoint_{step:08d}.npz")
        write_atomic(out_dir / "checkpoints.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        meta = {"steps": chosen, "skipped_probes": skipped}
        if nanda is not None:
            meta["final_key_frequencies"] = {
                g.method.label: np.asarray(f).tolist() for g, f in zip(groups, freqs, strict=True)
            }
        write_atomic(out_dir / "checkpoints.json", json.dumps(meta, indent=1) + "\n")
    finally:
        checkpointer.close()
    if figures:
        from grokjax.viz import write_report

        write_report(run_dir)
    return chosen
