"""Raw Triton kernels of the Mamba selective scan: forward and backward.

The maths is :mod:`grokjax.ops.selective_scan`'s. One program owns one batch row ``b``
and a block of ``BLOCK_D`` channels, and walks the sequence in order with the state
``h`` (``BLOCK_D × N``, float32) in registers: discretisation (``dt = softplus(delta +
bias)``, ``exp(dt·A)``), the ``D`` skip and the gate are fused, so the forward reads
``u, delta, z, B, C`` once and writes ``y`` once: memory traffic O(B·L·D).

The forward also stores ``h`` at every ``CHUNK``-th step (``(B, L/CHUNK, D, N)``; with
``CHUNK ≥ N`` that is at most O(B·L·D)). The backward walks the chunks in reverse:
it recomputes the chunk's states from its checkpoint into a per-program scratch
buffer (``CHUNK × BLOCK_D × N``), then runs the adjoint recurrence
``g_{t−1} = exp(dt_t A) ⊙ g_t`` (plus ``C_{t−1} ⊗ ∂s_{t−1}``) backwards through it.
Reductions over channels (``dB``, ``dC``) and over the sequence (``dA``, ``dD``,
``d bias``, ``d gate_k``) are written as per-program partial sums, which the caller
sums (deterministic: no atomics).

Two forwards with the same parameters and outputs (``y``, the last state, the
checkpoints), so the one backward serves both: :func:`selective_scan_fwd_kernel` walks
the sequence one step at a time, and :func:`selective_scan_fwd_parallel_kernel` scans
tiles of ``T`` steps in parallel and carries the state only from tile to tile (see
its docstring). Which is faster on a given GPU is for a benchmark to say.

Parameters come inputs first (arrays, then the scalars ``L`` and ``DIM``), outputs
after, as jax-triton passes them. Layouts are contiguous: ``u, delta, z, y, du,
ddelta, dz`` ``(B, L, D)``; ``B, C`` ``(B, L, N)``; ``A`` ``(D, N)``; ``D, bias``
``(D,)``. ``N`` must be a power of two.
Gates: 0 none, 1 SiLU, 2 SWELU with shape ``gate_k``.

The kernels are plain ``@triton.jit`` functions, launched from JAX by
:mod:`grokjax.ops.triton_scan` (jax-triton) and from torch in the CPU tests
(``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "GATE_IDS",
    "launch_config",
    "selective_scan_bwd_kernel",
    "selective_scan_fwd_kernel",
    "selective_scan_fwd_parallel_kernel",
]

GATE_IDS = {"none": 0, "silu": 1, "swelu": 2}


def launch_config(
    batch: int,
    length: int,
    channels: int,
    state: int,
    block_d: int = 32,
    chunk: int = 64,
    tile: int | None = None,
) -> dict:
    """Grid and block sizes shared by every launcher.

    ``block_d`` (a power of two) is cut to the channels' next power of two and
    ``chunk`` to the length. ``tile`` is the parallel forward's ``T``, ``None`` for
    the sequential forward: a power of two dividing ``chunk`` (checkpoints are
    stored at tile starts), cut to the length's next power of two (a power of two
    that divides ``chunk`` still does). With the length within one chunk, the only
    checkpoint is at step 0 and ``CHUNK = L`` needs no alignment.
    """
    if state & (state - 1):
        raise ValueError(f"the Triton scan needs a power-of-two state size N, got {state}.")
    if not _is_power_of_two(block_d):
        raise ValueError(f"block_d={block_d!r}: the channel block must be a power of two.")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk={chunk!r}: the checkpoint interval must be a positive int.")
    cfg = {}
    if tile is not None:
        if not _is_power_of_two(tile):
            raise ValueError(f"tile={tile!r}: the parallel forward's tile must be a power of two.")
        if chunk % tile:
            raise ValueError(
                f"chunk={chunk} is not a multiple of tile={tile}: the parallel forward "
                "stores checkpoints at tile starts, so chunk must be a multiple of tile."
            )
        cfg["T"] = min(tile, triton.next_power_of_2(max(length, 1)))
    block_d = min(block_d, triton.next_power_of_2(channels))
    n_dblocks = triton.cdiv(channels, block_d)
    chunk = max(1, min(chunk, length))
    return {
        "grid": (batch, n_dblocks),
        "BLOCK_D": block_d,
        "N": state,
        "CHUNK": chunk,
        "n_dblocks": n_dblocks,
        "n_chunks": triton.cdiv(length, chunk),
        **cfg,
    }


def _is_power_of_two(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1 and not x & (x - 1)


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _gate_value(z, k, GATE: tl.constexpr):
    """gate(z) and its derivatives d/dz and d/dk (k: SWELU's shape)."""
    if GATE == 1:
        sig = 1.0 / (1.0 + tl.exp(-z))
        value = z * sig
        d_z = sig * (1.0 + z * (1.0 - sig))
        d_k = tl.zeros_like(z)
    elif GATE == 2:
        a = tl.maximum(tl.abs(z), 1e-30)
        log_a = tl.log(a)
        power = tl.exp(k * log_a)
        decay = tl.exp(-power)
        sign = tl.where(z > 0, 1.0, tl.where(z < 0, -1.0, 0.0))
        value = sign * (1.0 - decay)
        d_z = k * tl.exp((k - 1.0) * log_a) * decay
        d_k = tl.where(tl.abs(z) < 1e-30, 0.0, sign * decay * power * log_a)
    else:
        value = tl.full(z.shape, 1.0, tl.float32)
        d_z = tl.zeros_like(z)
        d_k = tl.zeros_like(z)
    return value, d_z, d_k


@triton.jit
def _channel_params(
    pd, A_ptr, D_ptr, bias_ptr, k_ptr, DIM,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, GATE: tl.constexpr,
    BLOCK_D: tl.constexpr, N: tl.constexpr,
):  # fmt: skip
    """The program's channels and their float32 ``A`` (BLOCK_D × N), ``D``, bias and gate k."""
    d_offs = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = d_offs < DIM
    n_offs = tl.arange(0, N)
    A = tl.load(A_ptr + d_offs[:, None] * N + n_offs[None, :], mask=d_mask[:, None], other=0.0)
    A = A.to(tl.float32)
    Dv = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d_offs, mask=d_mask, other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d_offs, mask=d_mask, other=0.0).to(tl.float32)
    k = 1.0
    if GATE == 2:
        k = tl.load(k_ptr).to(tl.float32)
    return d_offs, d_mask, n_offs, A, Dv, bias, k


@triton.jit
def selective_scan_fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    k_ptr,
    L,
    DIM,
    y_ptr,
    last_ptr,
    ckpt_ptr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    b = tl.program_id(0)
    pd = tl.program_id(1)
    d_offs, d_mask, n_offs, A, Dv, bias, k = _channel_params(
        pd, A_ptr, D_ptr, bias_ptr, k_ptr, DIM, HAS_D, HAS_BIAS, GATE, BLOCK_D, N
    )
    dn_mask = d_mask[:, None]
    n_chunks = tl.cdiv(L, CHUNK)
    h = tl.zeros((BLOCK_D, N), tl.float32)
    for t in range(0, L):
        if t % CHUNK == 0:  # the state before step t: where the backward restarts
            c_off = ((b * n_chunks + t // CHUNK) * DIM + d_offs[:, None]) * N + n_offs[None, :]
            tl.store(ckpt_ptr + c_off, h, mask=dn_mask)
        row = (b * L + t) * DIM + d_offs
        u = tl.load(u_ptr + row, mask=d_mask, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + row, mask=d_mask, other=0.0).to(tl.float32) + bias
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_ptr + (b * L + t) * N + n_offs).to(tl.float32)
        Ct = tl.load(C_ptr + (b * L + t) * N + n_offs).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1) + Dv * u
        if GATE != 0:
            z = tl.load(z_ptr + row, mask=d_mask, other=0.0).to(tl.float32)
            g, _, _ = _gate_value(z, k, GATE)
            y = y * g
        tl.store(y_ptr + row, y.to(y_ptr.dtype.element_ty), mask=d_mask)
    tl.store(last_ptr + (b * DIM + d_offs[:, None]) * N + n_offs[None, :], h, mask=dn_mask)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    """Composition of two steps ``h ↦ a·h + b``: first ``(a1, b1)``, then ``(a2, b2)``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def selective_scan_fwd_parallel_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    k_ptr,
    L,
    DIM,
    y_ptr,
    last_ptr,
    ckpt_ptr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    N: tl.constexpr,
    CHUNK: tl.constexpr,
    T: tl.constexpr,
):
    """The forward of :func:`selective_scan_fwd_kernel`, parallel over tiles of ``T`` steps.

    Each step of the recurrence is an affine map of the state,
    ``h_t = a_t ⊙ h_{t−1} + b_t`` with ``a_t = exp(dt_t·A)`` and ``b_t = (dt_t·u_t) ⊗ B_t``,
    and affine maps compose associatively:

        (a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2)        (first 1, then 2)

    so the states of a tile ``t0 … t0+T−1`` are an inclusive prefix scan of its
    ``(a_t, b_t)`` pairs, ``tl.associative_scan`` along the time axis of
    ``(T, BLOCK_D, N)`` tensors, with the carried state folded into the first step
    (``b_{t0} ← a_{t0} ⊙ h_{t0−1} + b_{t0}``). The state is carried sequentially only
    from tile to tile (the last row of the scan), the structure of the reference CUDA
    kernel of state-spaces/mamba, which scans chunks of time across threads. The
    sequential kernel waits on its loads ``L`` times in a row per program; this one
    ``L/T`` times, with each tile's loads independent of the carried state, at the
    price of ``O(log T)`` more multiply-adds per step and ``T×`` the registers for the
    state (``(T, BLOCK_D, N)`` float32 per tensor: keep ``T·BLOCK_D·N`` small enough
    not to spill).

    Steps past ``L`` in the last tile are the identity (``a = 1``, ``b = 0``: ``dt``
    is set to 0 there), so the tile's last row is the state after step ``L−1``.
    Checkpoints (the state before every ``CHUNK``-th step) are stored at tile starts,
    so ``CHUNK`` must be a multiple of ``T`` unless ``L ≤ CHUNK``
    (:func:`launch_config` checks). ``y_t = ⟨h_t, C_t⟩ + D·u_t`` times the gate, as in
    the sequential kernel.
    """
    b = tl.program_id(0)
    pd = tl.program_id(1)
    d_offs, d_mask, n_offs, A, Dv, bias, k = _channel_params(
        pd, A_ptr, D_ptr, bias_ptr, k_ptr, DIM, HAS_D, HAS_BIAS, GATE, BLOCK_D, N
    )
    dn_mask = d_mask[:, None]
    n_chunks = tl.cdiv(L, CHUNK)
    steps = tl.arange(0, T)
    first = (steps == 0)[:, None, None]
    last = (steps == T - 1)[:, None, None]
    h = tl.zeros((BLOCK_D, N), tl.float32)
    for t0 in range(0, L, T):
        if t0 % CHUNK == 0:  # the state before step t0: where the backward restarts
            c_off = ((b * n_chunks + t0 // CHUNK) * DIM + d_offs[:, None]) * N + n_offs[None, :]
            tl.store(ckpt_ptr + c_off, h, mask=dn_mask)
        t = t0 + steps
        t_mask = t < L
        td_mask = t_mask[:, None] & d_mask[None, :]
        rows = (b * L + t)[:, None] * DIM + d_offs[None, :]  # (T, BLOCK_D)
        u = tl.load(u_ptr + rows, mask=td_mask, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + rows, mask=td_mask, other=0.0).to(tl.float32) + bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(t_mask[:, None], dt, 0.0)  # steps past L: decay 1, input 0
        tn = (b * L + t)[:, None] * N + n_offs[None, :]  # (T, N)
        Bt = tl.load(B_ptr + tn, mask=t_mask[:, None], other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + tn, mask=t_mask[:, None], other=0.0).to(tl.float32)
        decay = tl.exp(dt[:, :, None] * A[None, :, :])  # (T, BLOCK_D, N)
        x = (dt * u)[:, :, None] * Bt[:, None, :]
        x = tl.where(first, decay * h[None, :, :] + x, x)
        _, hs = tl.associative_scan((decay, x), 0, _affine_combine)
        y = tl.sum(hs * Ct[:, None, :], axis=2) + Dv[None, :] * u
        if GATE != 0:
            z = tl.load(z_ptr + rows, mask=td_mask, other=0.0).to(tl.float32)
            g, _, _ = _gate_value(z, k, GATE)
            y = y * g
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=td_mask)
        h = tl.sum(tl.where(last, hs, 0.0), axis=0)
    tl.store(last_ptr + (b * DIM + d_offs[:, None]) * N + n_offs[None, :], h, mask=dn_mask)


@triton.jit
def selective_scan_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    k_ptr,
    dy_ptr,
    dlast_ptr,
    ckpt_ptr,
    L,
    DIM,
    scratch_ptr,
    du_ptr,
    ddelta_ptr,
    dz_ptr,
    dA_part_ptr,
    dD_part_ptr,
    dbias_part_ptr,
    dk_part_ptr,
    dB_part_ptr,
    dC_part_ptr,
    HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    b = tl.program_id(0)
    pd = tl.program_id(1)
    n_dblocks = tl.num_programs(1)
    d_offs, d_mask, n_offs, A, Dv, bias, k = _channel_params(
        pd, A_ptr, D_ptr, bias_ptr, k_ptr, DIM, HAS_D, HAS_BIAS, GATE, BLOCK_D, N
    )
    dn_mask = d_mask[:, None]
    program = b * n_dblocks + pd
    scratch = scratch_ptr + program * CHUNK * BLOCK_D * N
    local = tl.arange(0, BLOCK_D)[:, None] * N + n_offs[None, :]
    n_chunks = tl.cdiv(L, CHUNK)

    g = tl.load(
        dlast_ptr + (b * DIM + d_offs[:, None]) * N + n_offs[None, :], mask=dn_mask, other=0.0
    ).to(tl.float32)
    dA_acc = tl.zeros((BLOCK_D, N), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)
    dk_acc = tl.zeros((BLOCK_D,), tl.float32)
    for c_rev in range(0, n_chunks):
        c = n_chunks - 1 - c_rev
        t0 = c * CHUNK
        steps = tl.minimum(CHUNK, L - t0)
        c_off = ((b * n_chunks + c) * DIM + d_offs[:, None]) * N + n_offs[None, :]
        h0 = tl.load(ckpt_ptr + c_off, mask=dn_mask, other=0.0)
        # 1. recompute the chunk's states h_{t0} … h_{t0+steps−1} into the scratch buffer
        h = h0
        for i in range(0, steps):
            row = (b * L + t0 + i) * DIM + d_offs
            u = tl.load(u_ptr + row, mask=d_mask, other=0.0).to(tl.float32)
            dt = tl.load(delta_ptr + row, mask=d_mask, other=0.0).to(tl.float32) + bias
            if SOFTPLUS:
                dt = _softplus(dt)
            Bt = tl.load(B_ptr + (b * L + t0 + i) * N + n_offs).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
            tl.store(scratch + i * BLOCK_D * N + local, h)
        # 2. the adjoint recurrence backwards through the chunk
        for j in range(0, steps):
            i = steps - 1 - j
            t = t0 + i
            row = (b * L + t) * DIM + d_offs
            u = tl.load(u_ptr + row, mask=d_mask, other=0.0).to(tl.float32)
            pre = tl.load(delta_ptr + row, mask=d_mask, other=0.0).to(tl.float32) + bias
            dt = pre
            if SOFTPLUS:
                dt = _softplus(pre)
            Bt = tl.load(B_ptr + (b * L + t) * N + n_offs).to(tl.float32)
            Ct = tl.load(C_ptr + (b * L + t) * N + n_offs).to(tl.float32)
            h_t = tl.load(scratch + i * BLOCK_D * N + local)
            h_prev = tl.load(scratch + tl.maximum(i - 1, 0) * BLOCK_D * N + local)
            h_prev = tl.where(i > 0, h_prev, h0)
            dy = tl.load(dy_ptr + row, mask=d_mask, other=0.0).to(tl.float32)
            s = tl.sum(h_t * Ct[None, :], axis=1) + Dv * u  # the pre-gate output
            ds = dy
            if GATE != 0:
                z = tl.load(z_ptr + row, mask=d_mask, other=0.0).to(tl.float32)
                gz, dgz, dgk = _gate_value(z, k, GATE)
                tl.store(dz_ptr + row, (dy * s * dgz).to(dz_ptr.dtype.element_ty), mask=d_mask)
                dk_acc += dy * s * dgk
                ds = dy * gz
            ds = tl.where(d_mask, ds, 0.0)
            dD_acc += ds * u
            tl.store(
                dC_part_ptr + ((b * n_dblocks + pd) * L + t) * N + n_offs,
                tl.sum(h_t * ds[:, None], axis=0),
            )
            g += ds[:, None] * Ct[None, :]  # total adjoint of h_t
            decay = tl.exp(dt[:, None] * A)
            d_pre_exp = g * h_prev * decay  # ∂/∂(dt·A)
            dA_acc += d_pre_exp * dt[:, None]
            gB = tl.sum(g * Bt[None, :], axis=1)
            d_dt = tl.sum(d_pre_exp * A, axis=1) + gB * u
            du = gB * dt + ds * Dv
            tl.store(
                dB_part_ptr + ((b * n_dblocks + pd) * L + t) * N + n_offs,
                tl.sum(tl.where(dn_mask, g * (dt * u)[:, None], 0.0), axis=0),
            )
            d_pre = d_dt
            if SOFTPLUS:
                d_pre = d_dt / (1.0 + tl.exp(-pre))
            d_pre = tl.where(d_mask, d_pre, 0.0)
            dbias_acc += d_pre
            tl.store(du_ptr + row, du.to(du_ptr.dtype.element_ty), mask=d_mask)
            tl.store(ddelta_ptr + row, d_pre.to(ddelta_ptr.dtype.element_ty), mask=d_mask)
            g = g * decay  # carried to h_{t−1}
    tl.store(dA_part_ptr + (b * DIM + d_offs[:, None]) * N + n_offs[None, :], dA_acc, mask=dn_mask)
    tl.store(dD_part_ptr + b * DIM + d_offs, dD_acc, mask=d_mask)
    tl.store(dbias_part_ptr + b * DIM + d_offs, dbias_acc, mask=d_mask)
    tl.store(dk_part_ptr + b * DIM + d_offs, dk_acc, mask=d_mask)
