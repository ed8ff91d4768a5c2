"""⊥Grad (Prieto et al. 2025): keep only the gradient component orthogonal to the weights.

Naïve loss minimisation (NLM) grows the weights along their own direction, which
scales the logits without changing predictions and drives softmax into collapse.
⊥Grad removes that direction from each leaf's gradient and restores its norm, so the
optimizer that follows sees a gradient of the same size that cannot just scale the
weights. It needs the parameters: call ``update(grads, state, params)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["ortho_adamw", "ortho_sgd", "orthograd"]


def _positive_eps(eps: Any, dtype: Any) -> jax.Array:
    """``eps`` in ``dtype``; the smallest positive normal number if it underflows there.

    A Python ``eps`` is checked before the cast; an array ``eps`` (swept with
    ``inject_hyperparams``) is compared in its own precision.
    """
    tiny = jnp.finfo(dtype).tiny
    if isinstance(eps, (int, float)):
        underflows = eps > 0 and np.asarray(eps, dtype) == 0
        return jnp.asarray(tiny if underflows else eps, dtype)
    eps = jnp.asarray(eps)
    eps_d = eps.astype(dtype)
    return jnp.where((eps_d == 0) & (eps > 0), tiny, eps_d)


def _unit_scaled(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(v / max|v|, max|v|)``, with ``v`` unchanged where it is all zeros.

    The projection is linear in ``g`` and invariant to the scale of ``w``, so working
    on max-normalised vectors changes nothing but keeps ``‖v‖²`` from underflowing
    (in float32 it does below ‖v‖ ≈ 1e-19, a size gradients reach near Softmax
    Collapse) or overflowing.
    """
    scale = jnp.max(jnp.abs(v))
    safe = jnp.where(scale > 0, scale, 1)
    return v / safe, safe


def _orthogonalize(g: jax.Array, w: jax.Array, eps: Any) -> jax.Array:
    if g.size == 1:
        # No direction is orthogonal to a nonzero number: g⊥ = 0 exactly (the formula
        # would rescale the projection's rounding noise to the full norm ‖g‖, with a
        # random sign). A zero weight has nothing to project out: g̃ = g.
        return jnp.where(w == 0, g, jnp.zeros_like(g))
    # Reductions run in at least float32 (bf16/f16 leaves are upcast), result in g's dtype.
    compute = jnp.promote_types(g.dtype, jnp.float32)
    g_v, g_scale = _unit_scaled(g.astype(compute).ravel())
    w_v, _ = _unit_scaled(w.astype(compute).ravel())
    e = _positive_eps(eps, compute)
    g_perp = g_v - (jnp.vdot(w_v, g_v) / (jnp.vdot(w_v, w_v) + e)) * w_v
    g_norm = jnp.sqrt(jnp.vdot(g_v, g_v))
    g_perp_norm = jnp.sqrt(jnp.vdot(g_perp, g_perp))
    out = g_perp * (g_norm / (g_perp_norm + e)) * g_scale
    return out.reshape(g.shape).astype(g.dtype)


class OrthogradState(NamedTuple):
    """⊥Grad is stateless."""


def orthograd(eps: float = 1e-30) -> optax.GradientTransformation:
    r"""⊥Grad: project each leaf's gradient orthogonal to its weights, keep its norm.

    Per leaf, with ``w`` and ``g`` flattened to vectors:

    .. math::

        g_⊥ = g - \frac{⟨w, g⟩}{⟨w, w⟩ + ε}\, w, \qquad
        \tilde g = g_⊥ \frac{‖g‖}{‖g_⊥‖ + ε}.

    So ``⟨w, g̃⟩ ≈ 0`` and ``‖g̃‖ = ‖g‖`` (up to ``ε``). Zero weights leave ``g``
    unchanged; a zero gradient stays zero; neither produces NaN. Every leaf is
    projected (use :func:`optax.masked` to exempt some). A one-element leaf (a
    learnable scalar) has no direction orthogonal to a nonzero weight, so its
    gradient becomes exactly 0 (``g`` itself while the weight is 0): mask such leaves
    out if they should train. The reductions run on max-normalised vectors, which
    leaves the result unchanged but keeps tiny gradients (‖g‖ < 1e-19 in float32)
    from underflowing to a zero update. The sums run in float32 for
    half-precision leaves and in the leaf's dtype otherwise; the output keeps the
    gradient's dtype. Where ``ε`` underflows in that dtype the smallest positive
    normal number is used instead.

    Args:
        eps: ``ε``, guards both divisions (default 1e-30, as in the paper's code).

    Returns:
        A stateless :class:`optax.GradientTransformation` whose ``update`` needs
        ``params``. Compose it before any optimizer: :func:`ortho_adamw`,
        :func:`ortho_sgd`.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> tx = gj.orthograd()
        >>> w = jnp.array([1.0, 0.0])
        >>> g = jnp.array([3.0, 4.0])  # the part along w is removed, the norm 5 kept
        >>> out, _ = tx.update(g, tx.init(w), w)
        >>> print(out)
        [0. 5.]
    """

    def init_fn(params: optax.Params) -> OrthogradState:
        del params
        return OrthogradState()

    def update_fn(
        updates: optax.Updates, state: OrthogradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, OrthogradState]:
        if params is None:
            raise ValueError(
                "orthograd needs the parameters: call tx.update(grads, state, params) "
                "(flax.nnx.Optimizer.update does this for you)."
            )
        return jax.tree.map(lambda g, w: _orthogonalize(g, w, eps), updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def ortho_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    eps_root: float = 0.0,
    mask: Any | None = None,
    ortho_eps: float = 1e-30,
) -> optax.GradientTransformation:
    """⊥AdamW: ``optax.chain(orthograd(ortho_eps), optax.adamw(...))``.

    Every hyperparameter reaches :func:`optax.adamw` exactly as given (the paper-era
    reference code silently ran β2 = 0.999 and eps = 1e-8 whatever was asked). Note
    the defaults differ from :func:`optax.adamw`: β2 = 0.99 and no weight decay, as
    in Prieto et al.; their MLP runs use ``eps=1e-25``.

    Args:
        learning_rate: a float or an optax schedule.
        b1, b2, eps, eps_root: Adam's moment decays and denominators.
        weight_decay: decoupled weight decay (AdamW), applied after ⊥Grad.
        mask: passed to :func:`optax.adamw` to choose the decayed leaves.
        ortho_eps: ``ε`` of :func:`orthograd`.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> tx = gj.ortho_adamw(learning_rate=0.01, eps=1e-25)
        >>> params = jnp.array([1.0, 0.0])
        >>> updates, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
        >>> print(updates)  # Adam's first step is -lr·sign(g̃); g̃ = [0, 5]
        [-0.   -0.01]
    """
    return optax.chain(
        orthograd(eps=ortho_eps),
        optax.adamw(
            learning_rate,
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
            mask=mask,
        ),
    )


def ortho_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.8,
    *,
    nesterov: bool = False,
    ortho_eps: float = 1e-30,
) -> optax.GradientTransformation:
    """⊥SGD: ``optax.chain(orthograd(ortho_eps), optax.sgd(learning_rate, momentum))``.

    Args:
        learning_rate: a float or an optax schedule.
        momentum: heavy-ball momentum (Prieto et al. use 0.8).
        nesterov: use Nesterov momentum.
        ortho_eps: ``ε`` of :func:`orthograd`.

    Example:
        >>> import jax.numpy as jnp
        >>> import grokjax as gj
        >>> tx = gj.ortho_sgd(learning_rate=0.1)
        >>> params = jnp.array([1.0, 0.0])
        >>> updates, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
        >>> print(updates)
        [-0.  -0.5]
    """
    return optax.chain(
        orthograd(eps=ortho_eps),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )
