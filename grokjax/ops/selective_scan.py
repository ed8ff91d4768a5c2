"""The Mamba (S6) selective scan: dispatch and the pure-JAX backends.

Layout (batch, length, channels): ``u, delta, z`` are ``(B, L, D)``, ``A`` is
``(D, N)`` (negative real, ``A = −exp(A_log)``), ``B, C`` are ``(B, L, N)``, ``D`` and
``delta_bias`` are ``(D,)``. With ``dt = softplus(delta + delta_bias)`` (or without the
softplus),

    h_t = exp(dt_t·A) ⊙ h_{t−1} + (dt_t·u_t) ⊗ B_t          h_0 = 0, h_t ∈ R^{D×N}
    y_t = ⟨h_t, C_t⟩ + D ⊙ u_t,      y_t ← y_t · gate(z_t)

accumulated in float32 (float64 for float64 inputs) and returned in ``u``'s dtype. Backends:

- ``"reference"``: ``lax.scan`` over time, state ``(B, D, N)`` in registers of the loop;
  the portable path (CPU, TPU). Reverse-mode differentiation stores the state of
  every step, O(B·L·D·N) memory in the backward pass.
- ``"associative"``: ``lax.associative_scan`` over ``(exp(dt A), dt u ⊗ B)`` pairs;
  materialises O(B·L·D·N) in the forward pass too (for comparison).
- ``"triton"``: the fused kernels of ``kernels/`` launched with jax-triton
  (:mod:`grokjax.ops.triton_scan`), CUDA GPUs only; state in registers, O(B·L·D)
  memory, a backward kernel through ``jax.custom_vjp``.
- ``"auto"``: ``"triton"`` on a CUDA GPU with jax-triton installed, else ``"reference"``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from grokjax.ops.activations import swelu

__all__ = ["BACKENDS", "GATES", "selective_scan", "selective_state_update"]

BACKENDS = ("auto", "reference", "associative", "triton")
GATES = ("silu", "swelu", "none")


def _gate(z: jax.Array, gate: str, gate_k) -> jax.Array:
    if gate == "silu":
        return jax.nn.silu(z)
    if gate == "swelu":
        return swelu(z, 1.0 if gate_k is None else gate_k)
    return jnp.ones_like(z)


def _check(u, delta, A, B, C, D, z, delta_bias, gate, backend) -> None:
    if gate not in GATES:
        raise ValueError(f"gate={gate!r}: choose one of {GATES}.")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {BACKENDS}.")
    if u.ndim != 3:
        raise ValueError(f"u must be (batch, length, channels), got shape {u.shape}.")
    b, length, d = u.shape
    if A.ndim != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (channels={d}, state), got shape {A.shape}.")
    n = A.shape[1]
    expected = {
        "delta": (delta, (b, length, d)),
        "B": (B, (b, length, n)),
        "C": (C, (b, length, n)),
        "D": (D, (d,)),
        "z": (z, (b, length, d)),
        "delta_bias": (delta_bias, (d,)),
    }
    for name, (value, shape) in expected.items():
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}.")
    if gate != "none" and z is None:
        raise ValueError(f"gate={gate!r} multiplies by gate(z): pass z, or use gate='none'.")


def _wide(u: jax.Array):
    """The accumulation dtype: float32, or float64 for float64 inputs."""
    return jnp.promote_types(u.dtype, jnp.float32)


def _discretise(u, delta, A, B, delta_bias, delta_softplus):
    """``dt``, ``A``, ``dt·u`` and ``B`` in the accumulation dtype."""
    f = _wide(u)
    dt = delta.astype(f)
    if delta_bias is not None:
        dt = dt + lax.broadcast_to_rank(delta_bias.astype(f), dt.ndim)
    if delta_softplus:
        dt = jax.nn.softplus(dt)
    return dt, A.astype(f), (dt * u.astype(f)), B.astype(f)


def _scan_states(dt, A, dtu, B, C):
    """``y_BLD``, the last state and every state ``h_LBDN`` by ``lax.scan`` over time."""
    b, _, d = dt.shape
    h0 = jnp.zeros((b, d, A.shape[1]), dt.dtype)

    def step(h, xs):
        dt_t, dtu_t, B_t, C_t = xs  # (B, D), (B, D), (B, N), (B, N)
        h = jnp.exp(dt_t[..., None] * A[None]) * h + dtu_t[..., None] * B_t[:, None, :]
        return h, (jnp.einsum("bdn,bn->bd", h, C_t), h)

    time_major = [jnp.swapaxes(x, 0, 1) for x in (dt, dtu, B, C)]
    h_last, (y_LBD, h_LBDN) = lax.scan(step, h0, time_major)
    return jnp.swapaxes(y_LBD, 0, 1), h_last, h_LBDN


@jax.custom_vjp
def _scan_reference(dt, A, dtu, B, C):
    """``y_BLD`` and the last state by ``lax.scan`` over time (all inputs in one dtype).

    The backward pass is a second ``lax.scan``, in reverse, written out rather than
    derived by JAX: with ``a_t = exp(dt_t A)`` and ``ḡ_t`` the total cotangent of
    ``h_t`` (``ḡ_t = a_{t+1} ḡ_{t+1} + ȳ_t ⊗ C_t``, starting from the last state's),

        C̄_t = Σ_d ȳ_t h_t     dtu‾_t = Σ_n ḡ_t B_t     B̄_t = Σ_d ḡ_t dtu_t
        dt‾_t = Σ_n ḡ_t h_{t−1} a_t A                 Ā = Σ_{b,t} ḡ_t h_{t−1} a_t dt_t

    from the states the forward pass stored. Same memory as JAX's own reverse mode
    (O(B·L·D·N)), but unlike JAX's transposed scan it keeps its speed under ``vmap``
    (the trainer's member axis; ``benchmarks/scan_backends.py --members 1`` times both).
    """
    y, h_last, _ = _scan_states(dt, A, dtu, B, C)
    return y, h_last


def _scan_reference_fwd(dt, A, dtu, B, C):
    y, h_last, h_LBDN = _scan_states(dt, A, dtu, B, C)
    return (y, h_last), (dt, A, dtu, B, C, h_LBDN)


def _scan_reference_bwd(residuals, cotangents):
    dt, A, dtu, B, C, h_LBDN = residuals
    gy_BLD, gh_last = cotangents
    h_prev = jnp.concatenate([jnp.zeros_like(h_LBDN[:1]), h_LBDN[:-1]])

    def step(carry, xs):
        gh, gA = carry  # cotangent of h_t from the future; Ā so far
        dt_t, dtu_t, B_t, C_t, gy_t, h_t, hp_t = xs
        gh = gh + gy_t[..., None] * C_t[:, None, :]
        a_t = jnp.exp(dt_t[..., None] * A[None])
        g_dtA = gh * hp_t * a_t  # cotangent of dt_t·A
        grads_t = (
            jnp.einsum("bdn,dn->bd", g_dtA, A),  # dt
            jnp.einsum("bdn,bn->bd", gh, B_t),  # dtu
            jnp.einsum("bdn,bd->bn", gh, dtu_t),  # B
            jnp.einsum("bd,bdn->bn", gy_t, h_t),  # C
        )
        return (gh * a_t, gA + jnp.einsum("bdn,bd->dn", g_dtA, dt_t)), grads_t

    time_major = [jnp.swapaxes(x, 0, 1) for x in (dt, dtu, B, C, gy_BLD)]
    (_, gA), grads = lax.scan(
        step, (gh_last, jnp.zeros_like(A)), (*time_major, h_LBDN, h_prev), reverse=True
    )
    g_dt, g_dtu, g_B, g_C = (jnp.swapaxes(x, 0, 1) for x in grads)
    return g_dt, gA, g_dtu, g_B, g_C


_scan_reference.defvjp(_scan_reference_fwd, _scan_reference_bwd)


def _scan_associative(dt, A, dtu, B, C):
    """The same recurrence as a parallel prefix over ``(a, b) ∘ (a', b') = (a a', a' b + b')``."""
    a = jnp.exp(dt[..., None] * A[None, None])  # (B, L, D, N)
    x = dtu[..., None] * B[:, :, None, :]

    def combine(left, right):
        a_l, x_l = left
        a_r, x_r = right
        return a_l * a_r, a_r * x_l + x_r

    _, h = lax.associative_scan(combine, (a, x), axis=1)
    y = jnp.einsum("bldn,bln->bld", h, C.astype(dt.dtype))
    return y, h[:, -1]


def selective_scan(
    u: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    z: jax.Array | None = None,
    delta_bias: jax.Array | None = None,
    delta_softplus: bool = False,
    gate: str = "silu",
    gate_k: jax.Array | float | None = None,
    return_last_state: bool = False,
    backend: str = "auto",
):
    """Run the selective scan (see the module docstring for the maths and backends).

    ``gate`` is ``"silu"``, ``"swelu"`` (shape ``gate_k``, default 1) or ``"none"``; a
    gate needs ``z``. Returns ``y`` ``(B, L, D)`` in ``u``'s dtype, and with
    ``return_last_state`` also ``h_L`` ``(B, D, N)`` in the accumulation dtype. Differentiable in
    every array argument (``gate_k`` included) through every backend.

    >>> b, l, d, n = 2, 5, 3, 4
    >>> u = jnp.ones((b, l, d)); delta = jnp.full((b, l, d), 0.1)
    >>> A = -jnp.ones((d, n)); B = C = jnp.ones((b, l, n))
    >>> y = selective_scan(u, delta, A, B, C, gate="none")
    >>> y.shape, bool(jnp.allclose(y, selective_scan(u, delta, A, B, C, gate="none",
    ...                                                    backend="associative")))
    ((2, 5, 3), True)
    """
    _check(u, delta, A, B, C, D, z, delta_bias, gate, backend)
    if backend in ("triton", "auto"):
        from grokjax.ops import triton_scan

        if triton_scan.available():
            y, h_last = triton_scan.triton_selective_scan(
                u, delta, A, B, C, D, z, delta_bias, delta_softplus, gate, gate_k
            )
            return (y, h_last) if return_last_state else y
        if backend == "triton":
            raise ValueError(
                f"backend='triton' needs a CUDA GPU with jax-triton and triton installed "
                f"(JAX runs on {jax.default_backend()!r}); use backend='reference' or 'auto'."
            )
    dt, A32, dtu, B32 = _discretise(u, delta, A, B, delta_bias, delta_softplus)
    scan = _scan_associative if backend == "associative" else _scan_reference
    y, h_last = scan(dt, A32, dtu, B32, C.astype(dt.dtype))
    f = _wide(u)
    if D is not None:
        y = y + lax.broadcast_to_rank(D.astype(f), u.ndim) * u.astype(f)
    if gate != "none":
        y = y * _gate(z.astype(f), gate, gate_k)
    y = y.astype(u.dtype)
    return (y, h_last) if return_last_state else y


def selective_state_update(
    state: jax.Array,
    u: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    z: jax.Array | None = None,
    delta_bias: jax.Array | None = None,
    delta_softplus: bool = False,
    gate: str = "silu",
    gate_k: jax.Array | float | None = None,
):
    """One decode step: ``state`` ``(B, D, N)`` and one token's ``u, delta, z`` ``(B, D)``,
    ``B, C`` ``(B, N)`` → ``(y (B, D), new state)``; the same maths as one step of
    :func:`selective_scan` (running it token by token reproduces the scan).
    """
    if gate not in GATES:
        raise ValueError(f"gate={gate!r}: choose one of {GATES}.")
    dt, A32, dtu, B32 = _discretise(u, delta, A, B, delta_bias, delta_softplus)
    f = _wide(u)
    new = jnp.exp(dt[..., None] * A32[None]) * state.astype(f) + dtu[..., None] * B32[:, None, :]
    y = jnp.einsum("bdn,bn->bd", new, C.astype(f))
    if D is not None:
        y = y + lax.broadcast_to_rank(D.astype(f), u.ndim) * u.astype(f)
    if gate != "none":
        if z is None:
            raise ValueError(f"gate={gate!r} multiplies by gate(z): pass z, or use gate='none'.")
        y = y * _gate(z.astype(f), gate, gate_k)
    return y.astype(u.dtype), new
