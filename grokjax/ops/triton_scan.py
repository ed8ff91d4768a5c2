"""The ``"triton"`` backend: the kernels of :mod:`grokjax.kernels.selective_scan` launched
from JAX with ``jax_triton.triton_call``, differentiated with ``jax.custom_vjp``.

jax-triton is imported lazily (it fails to import without a CUDA jaxlib). Every
launch goes through :data:`launch`, ``jax_triton.triton_call`` by default; the CPU
tests swap in a launcher that runs the same kernels in Triton's interpreter through
``jax.pure_callback``, so everything here but the CUDA launch itself is tested on a
CPU. The forward saves ``(B, ⌈L/CHUNK⌉, D, N)`` float32 state checkpoints as its only
residual beyond the inputs; the backward's per-program partial sums are summed here.

Two forward kernels produce the same outputs (``variant``): ``"sequential"``, one
step at a time, and ``"parallel"``, tiles of ``tile`` steps scanned with
``tl.associative_scan`` and the state carried from tile to tile. The backward is the
same for both.

Untested on a GPU. jax-triton's ``triton_call`` may have no ``vmap`` rule: train
Mamba members with ``member_axis = "map"`` (or the reference backend) until a ``vmap``
of this backend has run on one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["FORWARD_VARIANT", "VARIANTS", "available", "launch", "triton_selective_scan"]


def _jax_triton_call(*args, **kwargs):
    try:
        import jax_triton
    except Exception as err:  # ImportError, or jaxlib without the CUDA Triton plugin
        raise ImportError(
            "backend='triton' needs jax-triton on a CUDA machine (pip install -e '.[cuda]'); "
            f"importing it failed: {err}. Use backend='reference' elsewhere."
        ) from err
    if os.environ.get("TRITON_CACHE_DIR") == "":  # jax-triton 0.3.1 sets "", newer triton rejects
        del os.environ["TRITON_CACHE_DIR"]
    return jax_triton.triton_call(*args, **kwargs)


#: The function that launches a kernel: ``launch(*inputs, kernel=, out_shape=, grid=,
#: **constexprs)``, jax-triton's ``triton_call`` signature (replaceable, e.g. in tests).
launch: Callable = _jax_triton_call

#: The forward kernels: ``"sequential"`` (``selective_scan_fwd_kernel``) and
#: ``"parallel"`` (``selective_scan_fwd_parallel_kernel``).
VARIANTS = ("sequential", "parallel")

#: The forward used when ``variant`` is None. The Triton backend uses the variant that
#: a GPU benchmark has measured faster, and stays ``"sequential"`` until one has.
FORWARD_VARIANT = "sequential"


def available() -> bool:
    """Whether the Triton backend can run here: a CUDA GPU and an importable jax-triton."""
    if jax.default_backend() != "gpu":
        return False
    try:
        import jax_triton  # noqa: F401
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _kernels():
    from grokjax.kernels import selective_scan as k

    return k


def _config(u, A, block_d: int, chunk: int, tile: int | None = None) -> dict:
    b, length, d = u.shape
    return _kernels().launch_config(
        b, length, d, A.shape[1], block_d=block_d, chunk=chunk, tile=tile
    )


def _meta(cfg, has_d, has_bias, softplus, gate, num_warps, num_stages):
    meta = dict(
        HAS_D=has_d,
        HAS_BIAS=has_bias,
        SOFTPLUS=softplus,
        GATE=_kernels().GATE_IDS[gate],
        BLOCK_D=cfg["BLOCK_D"],
        N=cfg["N"],
        CHUNK=cfg["CHUNK"],
        num_warps=num_warps,
    )
    if "T" in cfg:
        meta["T"] = cfg["T"]
    if num_stages is not None:
        meta["num_stages"] = num_stages
    return meta


def _forward(static, u, delta, A, B, C, D, z, bias, k):
    softplus, gate, has_d, has_bias, block_d, chunk, variant, tile, num_warps, num_stages = static
    parallel = variant == "parallel"
    cfg = _config(u, A, block_d, chunk, tile if parallel else None)
    b, length, d = u.shape
    n = A.shape[1]
    kernels = _kernels()
    y, last, ckpt = launch(
        u, delta, A, B, C, D, z, bias, k, length, d,
        kernel=(
            kernels.selective_scan_fwd_parallel_kernel
            if parallel
            else kernels.selective_scan_fwd_kernel
        ),
        out_shape=[
            jax.ShapeDtypeStruct(u.shape, u.dtype),
            jax.ShapeDtypeStruct((b, d, n), jnp.float32),
            jax.ShapeDtypeStruct((b, cfg["n_chunks"], d, n), jnp.float32),
        ],
        grid=cfg["grid"],
        **_meta(cfg, has_d, has_bias, softplus, gate, num_warps, num_stages),
    )  # fmt: skip
    return y, last, ckpt


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(static, u, delta, A, B, C, D, z, bias, k):
    y, last, _ = _forward(static, u, delta, A, B, C, D, z, bias, k)
    return y, last


def _scan_fwd(static, u, delta, A, B, C, D, z, bias, k):
    y, last, ckpt = _forward(static, u, delta, A, B, C, D, z, bias, k)
    return (y, last), (u, delta, A, B, C, D, z, bias, k, ckpt)


def _scan_bwd(static, residuals, cotangents):
    softplus, gate, has_d, has_bias, block_d, chunk, _, _, num_warps, num_stages = static
    u, delta, A, B, C, D, z, bias, k, ckpt = residuals
    dy, dlast = cotangents
    cfg = _config(u, A, block_d, chunk)
    b, length, d = u.shape
    n = A.shape[1]
    nd = cfg["n_dblocks"]
    f32 = jnp.float32
    outs = launch(
        u, delta, A, B, C, D, z, bias, k, dy.astype(u.dtype), dlast.astype(f32), ckpt, length, d,
        kernel=_kernels().selective_scan_bwd_kernel,
        out_shape=[
            jax.ShapeDtypeStruct((b * nd * cfg["CHUNK"] * cfg["BLOCK_D"] * n,), f32),  # scratch
            jax.ShapeDtypeStruct(u.shape, f32),  # du
            jax.ShapeDtypeStruct(u.shape, f32),  # ddelta
            jax.ShapeDtypeStruct(u.shape, f32),  # dz
            jax.ShapeDtypeStruct((b, d, n), f32),  # dA per batch row
            jax.ShapeDtypeStruct((b, d), f32),  # dD per batch row
            jax.ShapeDtypeStruct((b, d), f32),  # d bias per batch row
            jax.ShapeDtypeStruct((b, d), f32),  # d gate_k per (batch row, channel)
            jax.ShapeDtypeStruct((b, nd, length, n), f32),  # dB per channel block
            jax.ShapeDtypeStruct((b, nd, length, n), f32),  # dC per channel block
        ],
        grid=cfg["grid"],
        zeroed_outputs=(3,),  # dz stays 0 without a gate
        **_meta(cfg, has_d, has_bias, softplus, gate, num_warps, num_stages),
    )  # fmt: skip
    _, du, ddelta, dz, dA, dD, dbias, dk, dB, dC = outs
    return (
        du.astype(u.dtype),
        ddelta.astype(delta.dtype),
        jnp.sum(dA, 0).astype(A.dtype),
        jnp.sum(dB, 1).astype(B.dtype),
        jnp.sum(dC, 1).astype(C.dtype),
        jnp.sum(dD, 0).astype(D.dtype),
        dz.astype(z.dtype),
        jnp.sum(dbias, 0).astype(bias.dtype),
        jnp.sum(dk).reshape(k.shape).astype(k.dtype),
    )


_scan.defvjp(_scan_fwd, _scan_bwd)


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _check_options(variant, tile, chunk, num_warps, num_stages) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: choose one of {VARIANTS} (or None).")
    if variant == "parallel" and (not _positive_int(tile) or tile & (tile - 1)):
        raise ValueError(f"tile={tile!r}: the parallel forward's tile must be a power of two.")
    if not _positive_int(num_warps) or num_warps & (num_warps - 1):
        raise ValueError(f"num_warps={num_warps!r}: must be a power of two (1, 2, 4, 8, ...).")
    if num_stages is not None and not _positive_int(num_stages):
        raise ValueError(f"num_stages={num_stages!r}: must be a positive int or None.")
    if variant == "parallel" and _positive_int(chunk) and chunk % tile:
        raise ValueError(
            f"chunk={chunk} is not a multiple of tile={tile}: the parallel forward stores "
            "checkpoints at tile starts, so chunk must be a multiple of tile."
        )


def triton_selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, gate="silu",
    gate_k=None, *, block_d: int = 32, chunk: int = 64, variant: str | None = None,
    tile: int = 16, num_warps: int = 4, num_stages: int | None = None,
):  # fmt: skip
    """``(y, last state)`` of the selective scan on the Triton kernels; arguments as
    :func:`grokjax.ops.selective_scan` (already validated there). Differentiable in
    every array argument, ``gate_k`` included.

    Launch options: ``block_d`` channels per program (a power of two); ``chunk`` steps
    between the state checkpoints the backward restarts from; ``variant`` the forward
    kernel (:data:`VARIANTS`; None: :data:`FORWARD_VARIANT`); ``tile`` the parallel
    forward's time tile ``T`` (a power of two dividing ``chunk``; ignored by the
    sequential forward). The default 16 is the largest tile whose ``(T, BLOCK_D, N)``
    float32 tensors compile for sm_90 without register spills at ``block_d=32``,
    ``N=16`` and 4 warps (``python -m grokjax.kernels.report``); ``tile=32`` needs 8
    warps there. ``num_warps`` and ``num_stages`` (None: jax-triton's default) go to
    every launch, forward and backward. Bad values raise ``ValueError`` naming the
    keyword.
    """
    variant = FORWARD_VARIANT if variant is None else variant
    _check_options(variant, tile, chunk, num_warps, num_stages)
    dim = u.shape[-1]
    has_d, has_bias = D is not None, delta_bias is not None
    D = jnp.zeros((dim,), jnp.float32) if D is None else D
    bias = jnp.zeros((dim,), jnp.float32) if delta_bias is None else delta_bias
    z = jnp.zeros_like(u) if z is None else z
    k = jnp.reshape(jnp.asarray(1.0 if gate_k is None else gate_k, jnp.float32), (1,))
    static = (
        bool(delta_softplus), gate, has_d, has_bias, block_d, chunk,
        variant, tile, num_warps, num_stages,
    )  # fmt: skip
    y, last = _scan(static, u, delta, A.astype(jnp.float32), B, C, D, z, bias, k)
    return y, last
