"""Learning phases of a training run from its accuracy curves (Liu et al. 2022).

Liu et al. sort runs into four phases by two first-crossing times, read off the
training and validation accuracy curves. With ``τ`` the accuracy threshold,

    t_train = min { t ≤ T : train_acc(t) ≥ τ }      t_val = min { t ≤ T : val_acc(t) ≥ τ }

(``∞`` when the curve never reaches ``τ`` within the budget ``T``) and ``Δ`` the delay
threshold, a run is in

- **comprehension** when ``t_train < ∞``, ``t_val < ∞`` and ``t_val − t_train < Δ``:
  it fits and generalises together;
- **grokking** when ``t_train < ∞``, ``t_val < ∞`` and ``t_val − t_train ≥ Δ``: it
  generalises long after it fits the training set;
- **memorisation** when ``t_train < ∞`` and ``t_val = ∞``: it fits the training set
  and never generalises;
- **confusion** when ``t_train = ∞``: it does not even fit the training set.

The authors' values (their phase-diagram code, ``simple_phase_diagram.ipynb`` of
``ejmichaud/grokking-squared``): ``τ = 0.9`` on both curves (:data:`LIU_THRESHOLD`),
``Δ = 10³`` steps (:data:`LIU_DELAY`), budget ``T = 10⁵`` steps. Here ``T`` is the
run's own budget (the last evaluated step unless given) and ``Δ`` stays ``10³`` steps
unless given; a shorter budget turns some late grokking into memorisation. Two corner
cases the authors' code leaves to its default index (comprehension) are named here: a
delay of exactly ``Δ`` is grokking, and a run that reaches ``τ`` on validation but
never on training counts as confusion (it does not fit its training set). The
crossings are read at the evaluated steps only, so they are upper bounds within one
evaluation interval.

References:
    Liu, Kitouni, Nolte, Michaud, Tegmark, Williams (2022). Towards Understanding
    Grokking: An Effective Theory of Representation Learning. NeurIPS 2022,
    arXiv:2205.10343. Section 5 and Fig. 6-7 (phase diagrams); criteria as coded in
    https://github.com/ejmichaud/grokking-squared, ``phase_diagram_plot/``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "LIU_DELAY",
    "LIU_THRESHOLD",
    "PHASES",
    "Phases",
    "classify_phases",
    "first_crossing",
]

#: The four phases, in Liu et al.'s order (the codes :func:`classify_phases` returns).
PHASES = ("comprehension", "grokking", "memorisation", "confusion")
#: Liu et al.'s accuracy threshold on both curves.
LIU_THRESHOLD = 0.9
#: Liu et al.'s delay threshold between comprehension and grokking, in steps.
LIU_DELAY = 1000


class Phases(NamedTuple):
    """Per member: ``phase`` (int codes into :data:`PHASES`), the first steps at which
    training and validation accuracy reach the threshold (``nan``: never), and the
    criteria used."""

    phase: np.ndarray  # (M,) int
    train_step: np.ndarray  # (M,) float, nan = never
    val_step: np.ndarray  # (M,) float, nan = never
    threshold: float
    delay: float
    budget: float

    @property
    def names(self) -> list[str]:
        """Each member's phase by name."""
        return [PHASES[i] for i in self.phase]

    def counts(self) -> dict[str, int]:
        """Members per phase, every phase named (0 when empty)."""
        return {name: int(np.sum(self.phase == i)) for i, name in enumerate(PHASES)}


def first_crossing(
    steps_E: np.ndarray, acc_EM: np.ndarray, threshold: float, budget: float = np.inf
) -> np.ndarray:
    """Per member (column of ``acc_EM``), the first of ``steps_E`` ≤ ``budget`` whose
    accuracy is ≥ ``threshold``; ``nan`` when none is (NaN accuracies never cross).

    >>> first_crossing(np.array([10, 20, 30]),
    ...                np.array([[0.1, 0.5], [0.95, 0.5], [0.2, 0.9]]), 0.9).tolist()
    [20.0, 30.0]
    """
    steps_E = np.asarray(steps_E, float)
    acc_EM = np.asarray(acc_EM, float).reshape(len(steps_E), -1)
    hit_EM = (np.nan_to_num(acc_EM, nan=-np.inf) >= threshold) & (steps_E <= budget)[:, None]
    first = steps_E[np.argmax(hit_EM, axis=0)] if len(steps_E) else np.zeros(acc_EM.shape[1])
    return np.where(hit_EM.any(axis=0), first, np.nan)


def classify_phases(
    steps_E: np.ndarray,
    train_acc_EM: np.ndarray,
    val_acc_EM: np.ndarray,
    *,
    threshold: float = LIU_THRESHOLD,
    delay: float = LIU_DELAY,
    budget: float | None = None,
) -> Phases:
    """Each member's learning phase (see the module docstring for the criteria).

    ``steps_E`` are the evaluated steps, ``*_acc_EM`` the accuracies there, one column
    per member. ``budget`` (default: the last evaluated step) caps the crossings;
    ``delay`` (steps) separates comprehension from grokking.

    >>> steps = np.array([100, 200, 300, 400, 500])
    >>> train = np.array([[0.5, 0.5, 0.2, 0.3], [0.95, 0.95, 0.95, 0.4],
    ...                   [1, 1, 1, 0.5], [1, 1, 1, 0.6], [1, 1, 1, 0.7]])
    >>> val = np.array([[0.1, 0.0, 0.0, 0.0], [0.92, 0.1, 0.1, 0.0],
    ...                 [1, 0.2, 0.1, 0.0], [1, 0.96, 0.1, 0.0], [1, 1, 0.1, 0.0]])
    >>> result = classify_phases(steps, train, val, delay=100)
    >>> result.names
    ['comprehension', 'grokking', 'memorisation', 'confusion']
    >>> result.train_step.tolist(), result.val_step.tolist()[:2]
    ([200.0, 200.0, 200.0, nan], [200.0, 400.0])
    """
    steps_E = np.asarray(steps_E, float)
    if budget is None:
        budget = float(steps_E[-1]) if len(steps_E) else 0.0
    t_train = first_crossing(steps_E, train_acc_EM, threshold, budget)
    t_val = first_crossing(steps_E, val_acc_EM, threshold, budget)
    fits, generalises = ~np.isnan(t_train), ~np.isnan(t_val)
    late = np.nan_to_num(t_val - t_train, nan=-np.inf) >= delay
    phase = np.select(
        [fits & generalises & ~late, fits & generalises & late, fits & ~generalises],
        [0, 1, 2],
        default=3,
    ).astype(int)
    return Phases(phase, t_train, t_val, float(threshold), float(delay), float(budget))
