"""The ``"triton"`` backend: the kernels of :mod:`grokjax.kernels.selective_scan` launched
from JAX with ``jax_triton.triton_call``, differentiated with ``jax.custom_vjp``.

jax-triton is imported lazily (it fails to import without a CUDA jaxlib). Every
launch goes through :data:`launch`, ``jax_triton.triton_call`` by default; the CPU
tests swap in a launcher that runs the same kernels in Triton's interpreter through
``jax.pure_callback``, so everything here but the CUDA launch itself is tested on a
CPU. The forward saves ``(B, ⌈L/CHUNK⌉, D, N)`` float32 state checkpoints as its only
residual beyond the inputs; the backward's per-program partial sums are summed here.

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

__all__ = ["available", "launch", "triton_selective_scan"]


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


def _config(u, A, block_d: int, chunk: int) -> dict:
    b, length, d = u.shape
    return _kernels().launch_config(b, length, d, A.shape[1], block_d=block_d, chunk=chunk)


def _meta(cfg, has_d, has_bias, softplus, gate):
    return dict(
        HAS_D=has_d,
        HAS_BIAS=has_bias,
        SOFTPLUS=softplus,
        GATE=_kernels().GATE_IDS[gate],
        BLOCK_D=cfg["BLOCK_D"],
        N=cfg["N"],
        CHUNK=cfg["CHUNK"],
    )


def _forward(static, u, delta, A, B, C, D, z, bias, k):
    softplus, gate, has_d, has_bias, block_d, chunk = static
    cfg = _config(u, A, block_d, chunk)
    b, length, d = u.shape
    n = A.shape[1]
    y, last, ckpt = launch(
        u, delta, A, B, C, D, z, bias, k, length, d,
        kernel=_kernels().selective_scan_fwd_kernel,
        out_shape=[
            jax.ShapeDtypeStruct(u.shape, u.dtype),
            jax.ShapeDtypeStruct((b, d, n), jnp.float32),
            jax.ShapeDtypeStruct((b, cfg["n_chunks"], d, n), jnp.float32),
        ],
        grid=cfg["grid"],
        **_meta(cfg, has_d, has_bias, softplus, gate),
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
    softplus, gate, has_d, has_bias, block_d, chunk = static
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
        **_meta(cfg, has_d, has_bias, softplus, gate),
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


def triton_selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, gate="silu",
    gate_k=None, *, block_d: int = 32, chunk: int = 64,
):  # fmt: skip
    """``(y, last state)`` of the selective scan on the Triton kernels; arguments as
    :func:`grokjax.ops.selective_scan` (already validated there). Differentiable in
    every array argument, ``gate_k`` included."""
    dim = u.shape[-1]
    has_d, has_bias = D is not None, delta_bias is not None
    D = jnp.zeros((dim,), jnp.float32) if D is None else D
    bias = jnp.zeros((dim,), jnp.float32) if delta_bias is None else delta_bias
    z = jnp.zeros_like(u) if z is None else z
    k = jnp.reshape(jnp.asarray(1.0 if gate_k is None else gate_k, jnp.float32), (1,))
    static = (bool(delta_softplus), gate, has_d, has_bias, block_d, chunk)
    y, last = _scan(static, u, delta, A.astype(jnp.float32), B, C, D, z, bias, k)
    return y, last
