"""Mechanistic probes: what a model computes inside, measured at every evaluation.

Each is a probe (:mod:`grokjax.analysis.probes`): list it in an experiment's
``probes``, and it runs inside the compiled program for every member. Scalars become
columns of ``metrics.jsonl`` (and TensorBoard tags); arrays go to the run's
``analysis/step_<step>.npz``.

- :func:`attention_patterns`: mean attention per head and query position over a
  fixed probe batch (array ``attention/block{i}``, ``(H, T, T)``) and each head's
  entropy (``attn_entropy/block{i}/head{h}``).
- :func:`activation_site_statistics`: mean, std, fraction of exact zeros and RMS of
  every site's activations on the probe batch (``act/<site>/<statistic>``).
- :func:`gradient_flow`: per parameter leaf, the norms of the last step's gradient and
  update, of the parameters, and the update/parameter ratio (``grad/<leaf>/…``).
- :func:`weight_evolution`: per leaf, the norm and the cosine to the initial weights
  (``weights/<leaf>/…``).
- :func:`progress_measures`: Nanda et al.'s progress measures for ``x+y mod p``
  (``progress/…``).

References:
  Nanda, Chan, Lieberum, Smith, Steinhardt 2023, "Progress measures for grokking via
  mechanistic interpretability".
  Seed 003, "Grokking Transformer Analysis" (attention, activation statistics,
  gradient flow, weight evolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grokjax.analysis.fourier import (
    excluded_logits,
    fourier_fraction,
    fourier_norms,
    gini,
    key_frequencies,
    restricted_logits,
)
from grokjax.analysis.probes import ProbeContext, leaf_names, reads
from grokjax.analysis.statistics import activation_statistics, attention_entropy
from grokjax.errors import ConfigError

__all__ = [
    "EMBEDDING_LEAVES",
    "UNEMBEDDING_LEAVES",
    "activation_site_statistics",
    "attention_patterns",
    "gradient_flow",
    "probe_rows",
    "progress_measures",
    "weight_evolution",
]

# Where the token embedding (rows = input tokens) and the unembedding (columns = output
# classes) live in the models of grokjax.nn, tried in this order.
EMBEDDING_LEAVES = ("embed/W_E", "token_embedding/embedding")
UNEMBEDDING_LEAVES = ("unembed/W_U", "head/kernel")


def _f32(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def probe_rows(num_rows: int, size: int) -> np.ndarray:
    """``size`` table rows spread evenly over ``num_rows`` (all of them if fewer): the
    fixed probe batch, the same for every member and every evaluation.

    >>> probe_rows(10, 4).tolist()
    [0, 3, 6, 9]
    """
    if size >= num_rows:
        return np.arange(num_rows)
    return np.round(np.linspace(0, num_rows - 1, size)).astype(np.int64)


def _sites(ctx: ProbeContext, rows: int, probe: str) -> dict[str, jax.Array]:
    if ctx.intermediates_fn is None:
        raise ConfigError(
            f"probe {probe} reads the model's internal activations, which this model kind "
            "does not expose (the transformers and the MLP do): remove the probe."
        )
    idx = probe_rows(ctx.task.inputs_N.shape[0], rows)
    x, _ = ctx.task.rows(jnp.asarray(idx))
    return ctx.intermediates_fn(ctx.params, x)[1]


def attention_patterns(ctx: ProbeContext, rows: int = 256) -> dict[str, jax.Array]:
    """Attention on a fixed probe batch of ``rows`` table rows (:func:`probe_rows`).

    ``attention/block{i}``: the attention probabilities averaged over the batch,
    ``(H, T, T)`` (query × key per head); ``attn_entropy/block{i}/head{h}``: the mean
    entropy (nats) of head ``h``'s attention distributions
    (:func:`~grokjax.analysis.statistics.attention_entropy`).
    """
    out = {}
    for name, probs_BHQT in sorted(_sites(ctx, rows, "attention_patterns").items()):
        if not name.endswith("/attention"):
            continue
        block = name.removesuffix("/attention")
        out[f"attention/{block}"] = jnp.mean(_f32(probs_BHQT), axis=0)
        for h, entropy in enumerate(attention_entropy(probs_BHQT)):
            out[f"attn_entropy/{block}/head{h}"] = entropy
    return out


def activation_site_statistics(ctx: ProbeContext, rows: int = 256) -> dict[str, jax.Array]:
    """``act/<site>/{mean, std, zero_fraction, rms}`` of every activation site except
    the attention probabilities (embedding, each block's attention output, MLP hidden
    layer and residual stream, the final hidden state), on the probe batch
    (:func:`~grokjax.analysis.statistics.activation_statistics`)."""
    out = {}
    for name, x in sorted(_sites(ctx, rows, "activation_site_statistics").items()):
        if name.endswith("/attention"):
            continue
        out.update({f"act/{name}/{k}": v for k, v in activation_statistics(x).items()})
    return out


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(_f32(x))))


def _ratio(a: jax.Array, b: jax.Array) -> jax.Array:
    return a / jnp.maximum(b, jnp.finfo(jnp.float32).tiny)


@reads("last_step")
def gradient_flow(ctx: ProbeContext) -> dict[str, jax.Array]:
    """Per parameter leaf, from the interval's last training step (its real gradient
    ``g``, before the optimizer transformed it, and its update ``u``):
    ``grad/<leaf>/grad_norm`` ‖g‖, ``update_norm`` ‖u‖, ``param_norm`` ‖w‖ (after
    the update) and ``update_ratio`` ‖u‖/‖w‖."""
    out = {}
    leaves = zip(
        leaf_names(ctx.params),
        jax.tree.leaves(ctx.last_grads),
        jax.tree.leaves(ctx.last_updates),
        jax.tree.leaves(ctx.params),
        strict=True,
    )
    for name, g, u, w in leaves:
        u_norm, w_norm = _norm(u), _norm(w)
        out[f"grad/{name}/grad_norm"] = _norm(g)
        out[f"grad/{name}/update_norm"] = u_norm
        out[f"grad/{name}/param_norm"] = w_norm
        out[f"grad/{name}/update_ratio"] = _ratio(u_norm, w_norm)
    return out


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    a, b = _f32(a).ravel(), _f32(b).ravel()
    return _ratio(jnp.dot(a, b), _norm(a) * _norm(b))


@reads("init_params")
def weight_evolution(ctx: ProbeContext) -> dict[str, jax.Array]:
    """Per parameter leaf: ``weights/<leaf>/norm`` ‖w‖ and ``weights/<leaf>/cos_init``
    cos(w, w₀) with the member's initial weights w₀ (0 where either is zero); and
    ``weights/cos_init`` over all parameters as one vector."""
    out = {}
    params, init = jax.tree.leaves(ctx.params), jax.tree.leaves(ctx.init_params)
    for name, w, w0 in zip(leaf_names(ctx.params), params, init, strict=True):
        out[f"weights/{name}/norm"] = _norm(w)
        out[f"weights/{name}/cos_init"] = _cosine(w, w0)
    flat = jnp.concatenate([_f32(w).ravel() for w in params])
    out["weights/cos_init"] = _cosine(flat, jnp.concatenate([_f32(w).ravel() for w in init]))
    return out


def _leaf(params: Any, wanted: str | None, candidates: Sequence[str], what: str) -> jax.Array:
    leaves = dict(zip(leaf_names(params), jax.tree.leaves(params), strict=True))
    for name in [wanted] if wanted else candidates:
        if name in leaves:
            return leaves[name]
    raise ConfigError(
        f"probe progress_measures: no {what} leaf {wanted or ' or '.join(candidates)!r} in "
        f"this model; name it with the probe's keyword (leaves: {sorted(leaves)})."
    )


def progress_measures(
    ctx: ProbeContext,
    k: int = 5,
    embedding: str | None = None,
    unembedding: str | None = None,
    freqs: Any = None,
) -> dict[str, jax.Array]:
    """Nanda et al.'s progress measures of a model of ``x+y mod p`` on the full table.

    With ``W_E`` the token embedding (rows 0…p−1 the residues) and ``W_U`` the
    unembedding (columns 0…p−1 the answers; transposed to rows), ``L[a, b, c]`` the
    logits of the answer position for every input pair (first p outputs):

    - ``progress/train_loss``, ``progress/test_loss``: the model's loss on the
      member's whole training / validation split (the method's loss);
    - ``progress/restricted_loss_online``: cross entropy over all p² pairs of
      :func:`~grokjax.analysis.fourier.restricted_logits` ``(L, F)``, F the current
      top-``k`` key frequencies of ``W_E`` (an online variant: Nanda uses the final
      model's, as ``grokjax analyze`` does);
    - ``progress/excluded_loss_online``: cross entropy of
      :func:`~grokjax.analysis.fourier.excluded_logits` ``(L, F)`` over the training
      pairs;
    - ``progress/gini_embed``, ``progress/gini_unembed``: Gini coefficient of the
      Fourier norms of ``W_E`` and ``W_U`` (constant term excluded);
    - ``progress/key_fraction``: share of ``W_E``'s squared Fourier norm on F;
    - ``progress/weight_norm_sq``: Σ‖w‖² over all parameters;
    - arrays ``progress/embed_fourier_norms`` ``(K+1,)`` and ``progress/key_freqs``
      ``(k,)``.

    ``freqs`` (an int array of frequencies, e.g. the final checkpoint's) replaces the
    online choice; the two losses are then named ``progress/restricted_loss`` and
    ``progress/excluded_loss``. ``embedding`` / ``unembedding`` name the leaves if the
    model is not one of :mod:`grokjax.nn`'s (:data:`EMBEDDING_LEAVES`,
    :data:`UNEMBEDDING_LEAVES`).

    The data must be ``op = "x+y"`` with every pair (``y_min = 0``).
    """
    facts = getattr(ctx.task, "facts", {})
    if facts.get("op") != "x+y" or not facts.get("full_table"):
        raise ConfigError(
            "probe progress_measures needs the full table of x+y mod p (data.kind = "
            '"modular", data.op = "x+y", data.y_min = 0); this data is '
            f"{dict(facts) or 'not a modular table'}."
        )
    p = int(facts["p"])
    W_E = _f32(_leaf(ctx.params, embedding, EMBEDDING_LEAVES, "embedding"))
    W_U = _f32(_leaf(ctx.params, unembedding, UNEMBEDDING_LEAVES, "unembedding")).T
    inputs, labels = ctx.task.rows(jnp.arange(p * p))
    logits = ctx.logits_fn(ctx.params, inputs)  # (p², C), C ≥ p
    losses = ctx.loss_fn(logits, labels)
    norms_E = fourier_norms(W_E, p)
    online = freqs is None
    freqs = key_frequencies(W_E, p, k) if online else jnp.asarray(freqs, jnp.int32)
    table_PPC = _f32(logits[:, :p]).reshape(p, p, p)
    kept = ctx.loss_fn(restricted_logits(table_PPC, freqs).reshape(p * p, p), labels)
    cut = ctx.loss_fn(excluded_logits(table_PPC, freqs).reshape(p * p, p), labels)
    suffix = "_online" if online else ""
    return {
        "progress/train_loss": jnp.mean(_f32(losses[ctx.train_idx])),
        "progress/test_loss": jnp.mean(_f32(losses[ctx.val_idx])),
        f"progress/restricted_loss{suffix}": jnp.mean(_f32(kept)),
        f"progress/excluded_loss{suffix}": jnp.mean(_f32(cut[ctx.train_idx])),
        "progress/gini_embed": gini(norms_E[1:]),
        "progress/gini_unembed": gini(fourier_norms(W_U, p)[1:]),
        "progress/key_fraction": fourier_fraction(norms_E, freqs),
        "progress/weight_norm_sq": sum(jnp.square(_norm(w)) for w in jax.tree.leaves(ctx.params)),
        "progress/embed_fourier_norms": norms_E,
        "progress/key_freqs": freqs,
    }
