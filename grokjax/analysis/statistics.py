"""Statistics of a training run and of a model's internals, for studying grokking.

- :func:`early_grokking_score`, :func:`early_grokking_scores`: seed 003's legacy
  early-grokking score over a window of evaluations (detected above
  :data:`EARLY_GROKKING_THRESHOLD`);
- :func:`grokking_phases`: the steps at which memorisation, circuit formation and
  cleanup end (Nanda et al. 2023), from one member's accuracy and excluded-loss curves;
- :func:`attention_entropy`: the entropy of each head's attention distributions;
- :func:`activation_statistics`: mean, std, fraction of exact zeros and RMS of a tensor.

:func:`early_grokking_score`, :func:`attention_entropy` and
:func:`activation_statistics` are pure JAX (jit/vmap-able) and compute in float32 or
wider; :func:`early_grokking_scores` and :func:`grokking_phases` run on the host
(numpy, float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "EARLY_GROKKING_THRESHOLD",
    "GrokkingPhases",
    "activation_statistics",
    "attention_entropy",
    "early_grokking_score",
    "early_grokking_scores",
    "grokking_phases",
]

#: Seed 003's detection threshold: grokking is "detected" when the score exceeds it.
EARLY_GROKKING_THRESHOLD = 0.1

_EPS = 1e-8


def _float(x: ArrayLike) -> jax.Array:
    """``x`` as a JAX array of at least float32."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def early_grokking_score(train_loss_W: ArrayLike, test_loss_W: ArrayLike) -> jax.Array:
    r"""Seed 003's legacy early-grokking score over a window of ``W`` evaluations.

    With ``r`` the training losses and ``t`` the test losses of the window, oldest
    first (both ``(W,)``),

    .. math::

        S = \frac{t_0 − t_{W−1}}{t_0}\cdot\frac{\operatorname{mean}(t)}{\operatorname{mean}(r)}
            \cdot\frac{1}{\operatorname{std}(r) + 10^{-8}},

    ``std`` with ``ddof = 0``: large when the test loss falls by a large fraction while
    the training loss sits low and flat. Detected when ``S >``
    :data:`EARLY_GROKKING_THRESHOLD`. A heuristic kept for comparison with seed 003,
    not a calibrated test: it is not scale-free in the losses (through the ``1e-8``).

    >>> r = jnp.array([0.01, 0.02, 0.01, 0.02])
    >>> t = jnp.array([2.0, 1.5, 1.0, 0.5])
    >>> print(early_grokking_score(r, t))   # 0.75 · (1.25 / 0.015) / 0.005
    12500.0...

    References:
      Seed 003 (the legacy grokking detector this reproduces); Power et al. 2022,
      "Grokking: Generalization Beyond Overfitting on Small Algorithmic Datasets".
    """
    r, t = _float(train_loss_W), _float(test_loss_W)
    if r.ndim != 1 or r.shape != t.shape or r.shape[0] < 1:
        raise ValueError(
            f"train and test losses must be 1-D of the same length >= 1, got {r.shape} "
            f"and {t.shape}."
        )
    drop = (t[0] - t[-1]) / t[0]
    return drop * (jnp.mean(t) / jnp.mean(r)) / (jnp.std(r) + _EPS)


def early_grokking_scores(
    train_loss_N: ArrayLike, test_loss_N: ArrayLike, window: int = 100
) -> np.ndarray:
    r""":func:`early_grokking_score` of every full window of ``window`` evaluations.

    Entry ``j`` is the score of evaluations ``j … j + window − 1``, i.e. of the window
    ending at evaluation ``i = j + window − 1``, for ``i = window − 1 … N − 1``: an
    ``(N − window + 1,)`` float64 numpy array, empty when ``N < window``. Host-side
    (numpy, float64), for whole metric histories.

    >>> r = np.array([0.01, 0.02, 0.01, 0.02, 0.01])
    >>> t = np.array([2.0, 1.5, 1.0, 0.5, 0.5])
    >>> print(np.round(early_grokking_scores(r, t, window=4)))   # windows ending at 3, 4
    [12500.  7778.]

    References:
      Seed 003 (the legacy grokking detector this reproduces).
    """
    r = np.asarray(train_loss_N, np.float64)
    t = np.asarray(test_loss_N, np.float64)
    if r.ndim != 1 or r.shape != t.shape:
        raise ValueError(
            f"train and test losses must be 1-D of the same length, got {r.shape} and {t.shape}."
        )
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r} must be an int >= 1.")
    if r.shape[0] < window:
        return np.zeros((0,), np.float64)
    r_JW = np.lib.stride_tricks.sliding_window_view(r, window)
    t_JW = np.lib.stride_tricks.sliding_window_view(t, window)
    drop = (t_JW[:, 0] - t_JW[:, -1]) / t_JW[:, 0]
    return drop * (t_JW.mean(axis=1) / r_JW.mean(axis=1)) / (r_JW.std(axis=1) + _EPS)


@dataclass(frozen=True)
class GrokkingPhases:
    """The steps at which one member's grokking phases end (``None``: not reached).

    ``memorised``: first step with train accuracy at its threshold. ``cleaned_up``:
    first step with validation accuracy at its threshold. ``circuit``: the step of the
    largest excluded loss between the two (``None`` without an excluded-loss curve or
    without a separate memorisation phase). ``separate``: memorisation was reached and
    strictly before cleanup (or cleanup never came).
    """

    memorised: int | None
    circuit: int | None
    cleaned_up: int | None
    separate: bool

    def describe(self) -> str:
        """One line of text, e.g. for a log or a figure caption."""
        m, c, u = self.memorised, self.circuit, self.cleaned_up
        if m is None and u is None:
            return "not memorised: neither accuracy reached its threshold"
        if m is None:
            return (
                f"no separate memorisation: validation accuracy reached its threshold at "
                f"step {u}, train accuracy never did"
            )
        if not self.separate:
            return (
                f"no separate memorisation: train accuracy reached its threshold at step {m}, "
                f"validation accuracy by step {u}"
            )
        if u is None:
            return f"memorised at step {m}; not cleaned up (validation accuracy never reached)"
        circuit = "circuit step unknown" if c is None else f"circuit formed by step {c}"
        return f"memorised at step {m}, {circuit}, cleaned up at step {u} (delay {u - m} steps)"


def _first_at_least(values: np.ndarray, threshold: float) -> int | None:
    hits = np.flatnonzero(values >= threshold)
    return int(hits[0]) if hits.size else None


def grokking_phases(
    steps: ArrayLike,
    train_acc: ArrayLike,
    val_acc: ArrayLike,
    excluded_loss: ArrayLike | None = None,
    *,
    train_threshold: float = 0.99,
    val_threshold: float = 0.95,
) -> GrokkingPhases:
    r"""The ends of memorisation, circuit formation and cleanup for one member.

    All arrays are 1-D over the evaluations of one member, ``steps`` strictly
    increasing. With ``M`` the first step with ``train_acc >= train_threshold`` and
    ``C`` the first with ``val_acc >= val_threshold``:

    - memorisation ends at ``M``; cleanup ends at ``C``;
    - circuit formation ends at the step of the largest ``excluded_loss`` among the
      evaluations with ``M ≤ step ≤ C`` (NaNs skipped, the earliest on ties); ``None``
      without ``excluded_loss``;
    - if ``C ≤ M`` there is no separate memorisation phase: ``separate=False`` and
      ``circuit=None`` (``memorised`` still records ``M``).

    A step is ``None`` where its threshold is never reached (``circuit`` needs both).

    >>> ph = grokking_phases([0, 100, 200, 300, 400], [0.5, 1.0, 1.0, 1.0, 1.0],
    ...                      [0.1, 0.1, 0.3, 0.97, 1.0], [1.0, 2.0, 5.0, 3.0, 0.5])
    >>> ph
    GrokkingPhases(memorised=100, circuit=200, cleaned_up=300, separate=True)
    >>> ph.describe()
    'memorised at step 100, circuit formed by step 200, cleaned up at step 300 (delay 200 steps)'

    References:
      Nanda et al. 2023, "Progress measures for grokking via mechanistic
      interpretability", Section 5.2 (the three phases: memorisation, circuit
      formation, cleanup).
    """
    steps_N = np.asarray(steps)
    train_N = np.asarray(train_acc, np.float64)
    val_N = np.asarray(val_acc, np.float64)
    curves = [train_N, val_N]
    if excluded_loss is not None:
        curves.append(np.asarray(excluded_loss, np.float64))
    if steps_N.ndim != 1 or any(c.shape != steps_N.shape for c in curves):
        raise ValueError(
            "steps, train_acc, val_acc (and excluded_loss) must be 1-D of one length, got "
            f"{[steps_N.shape, *(c.shape for c in curves)]}."
        )
    if np.any(np.diff(steps_N) <= 0):
        raise ValueError("steps must be strictly increasing (evaluations in order).")
    i_m = _first_at_least(train_N, train_threshold)
    i_c = _first_at_least(val_N, val_threshold)
    separate = i_m is not None and (i_c is None or i_c > i_m)
    circuit = None
    if separate and i_c is not None and excluded_loss is not None:
        window = curves[2][i_m : i_c + 1]
        if not np.all(np.isnan(window)):
            circuit = int(steps_N[i_m + int(np.nanargmax(window))])
    return GrokkingPhases(
        memorised=None if i_m is None else int(steps_N[i_m]),
        circuit=circuit,
        cleaned_up=None if i_c is None else int(steps_N[i_c]),
        separate=separate,
    )


def _xlogx(p: jax.Array) -> jax.Array:
    """``p·ln p`` with the limit 0 at p = 0 (and a finite gradient there)."""
    safe = jnp.where(p > 0, p, 1)
    return jnp.where(p > 0, p * jnp.log(safe), 0)


def attention_entropy(probs_BHQT: ArrayLike) -> jax.Array:
    r"""Mean entropy (nats) of each head's attention distributions, ``(H,)``.

    ``probs_BHQT`` holds the attention probabilities over the ``T`` keys for each batch
    element, head and query. Per head ``h``,

    .. math::

        \bar H_h = \frac{1}{BQ} Σ_{b,q} \Bigl(−Σ_t p_{bhqt} \ln p_{bhqt}\Bigr),
        \qquad 0 \ln 0 = 0,

    so causally masked keys (exact zeros) contribute nothing and the result is finite.
    Uniform attention over ``T`` keys gives ``ln T``, one-hot attention 0.

    >>> probs = jnp.full((2, 3, 4, 4), 0.25)     # uniform over 4 keys
    >>> print(attention_entropy(probs))          # ln 4
    [1.3862944 1.3862944 1.3862944]

    References:
      Vig & Belinkov 2019, "Analyzing the Structure of Attention in a Transformer
      Language Model" (attention entropy per head).
    """
    probs = _float(probs_BHQT)
    if probs.ndim != 4:
        raise ValueError(f"probs_BHQT must be (B, H, Q, T), got shape {probs.shape}.")
    entropy_BHQ = -jnp.sum(_xlogx(probs), axis=-1)
    return jnp.mean(entropy_BHQ, axis=(0, 2))


def activation_statistics(x: ArrayLike) -> dict[str, jax.Array]:
    r"""Summary statistics over all entries of ``x``: a dict of scalars.

    With ``n`` entries ``x_i``:

    - ``"mean"``: ``μ = Σ x_i / n``;
    - ``"std"``: ``√(Σ (x_i − μ)² / n)`` (``ddof = 0``);
    - ``"zero_fraction"``: the fraction of entries exactly 0 (e.g. dead ReLU units);
    - ``"rms"``: ``√(Σ x_i² / n)``.

    Accumulated in float32 or wider (float64 in, float64 out).

    >>> stats = activation_statistics(jnp.array([0.0, 0.0, 3.0, 4.0]))
    >>> {k: float(v) for k, v in stats.items()}
    {'mean': 1.75, 'std': 1.7853571, 'zero_fraction': 0.5, 'rms': 2.5}

    References:
      Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward
      neural networks" (activation statistics across layers).
    """
    x = _float(x).reshape(-1)
    if x.shape[0] == 0:
        raise ValueError("activation_statistics needs at least one entry.")
    return {
        "mean": jnp.mean(x),
        "std": jnp.std(x),
        "zero_fraction": jnp.sum(x == 0).astype(x.dtype) / x.shape[0],  # exact integer count
        "rms": jnp.sqrt(jnp.mean(jnp.square(x))),
    }
