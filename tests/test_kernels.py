"""The Triton selective-scan kernels on the CPU: ``TRITON_INTERPRET=1`` with torch tensors,
forward (sequential and time-parallel) and backward, against float64 numpy references
at tiny shapes.

torch (CPU build) and triton are test-only dependencies that ``.ci/run`` installs; with
``CI=true`` these tests fail, not skip, when either is missing.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import jax
import jax.numpy as jnp
import numpy as np
import pytest

if os.environ.get("CI") == "true":
    import torch
    import triton
else:
    torch = pytest.importorskip("torch")
    triton = pytest.importorskip("triton")

import torch
from grokjax.kernels.selective_scan import (
    GATE_IDS,
    launch_config,
    selective_scan_bwd_kernel,
    selective_scan_fwd_kernel,
    selective_scan_fwd_parallel_kernel,
)
from test_selective_scan import inputs, np_scan

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="these run the kernels in Triton's CPU interpreter (TRITON_INTERPRET=1)",
)


def t(x, dtype=torch.float32):
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dtype)


def forward(
    x, gate, gate_k, softplus=True, chunk=3, block_d=2, tile=None, has_d=True, has_bias=True,
    dtype=torch.float32,
):  # fmt: skip
    """The sequential forward, or with ``tile`` the parallel one; ``u, delta, B, C, z``
    and ``y`` in ``dtype``, the rest float32. Returns ``y`` as float32 numpy."""
    b, length, d = x["u"].shape
    n = x["A"].shape[1]
    cfg = launch_config(b, length, d, n, block_d=block_d, chunk=chunk, tile=tile)
    y = torch.empty(b, length, d, dtype=dtype)
    last = torch.empty(b, d, n)
    ckpt = torch.empty(b, cfg["n_chunks"], d, n)
    k = torch.tensor([gate_k], dtype=torch.float32)
    kernel, extra = selective_scan_fwd_kernel, {}
    if tile is not None:
        kernel, extra = selective_scan_fwd_parallel_kernel, {"T": cfg["T"]}
    kernel[cfg["grid"]](
        t(x["u"], dtype),
        t(x["delta"], dtype),
        t(x["A"]),
        t(x["B"], dtype),
        t(x["C"], dtype),
        t(x["D"]),
        t(x["z"], dtype),
        t(x["delta_bias"]),
        k,
        length,
        d,
        y,
        last,
        ckpt,
        HAS_D=has_d,
        HAS_BIAS=has_bias,
        SOFTPLUS=softplus,
        GATE=GATE_IDS[gate],
        BLOCK_D=cfg["BLOCK_D"],
        N=n,
        CHUNK=cfg["CHUNK"],
        **extra,
    )
    return y.float().numpy(), last.numpy(), ckpt, cfg


def backward(x, dy, dlast, gate, gate_k, softplus=True, chunk=3, block_d=2, tile=None):
    """The backward kernel, from the checkpoints of the forward ``tile`` selects."""
    _, _, ckpt, cfg = forward(x, gate, gate_k, softplus, chunk, block_d, tile)
    b, length, d = x["u"].shape
    n = x["A"].shape[1]
    nd = cfg["n_dblocks"]
    out = {name: torch.zeros(b, length, d) for name in ("u", "delta", "z")}
    parts = {
        "A": torch.zeros(b, d, n),
        "D": torch.zeros(b, d),
        "delta_bias": torch.zeros(b, d),
        "k": torch.zeros(b, d),
        "B": torch.zeros(b, nd, length, n),
        "C": torch.zeros(b, nd, length, n),
    }
    scratch = torch.zeros(b * nd * cfg["CHUNK"] * cfg["BLOCK_D"] * n)
    selective_scan_bwd_kernel[cfg["grid"]](
        t(x["u"]),
        t(x["delta"]),
        t(x["A"]),
        t(x["B"]),
        t(x["C"]),
        t(x["D"]),
        t(x["z"]),
        t(x["delta_bias"]),
        torch.tensor([gate_k], dtype=torch.float32),
        t(dy),
        t(dlast),
        ckpt,
        length,
        d,
        scratch,
        out["u"],
        out["delta"],
        out["z"],
        parts["A"],
        parts["D"],
        parts["delta_bias"],
        parts["k"],
        parts["B"],
        parts["C"],
        HAS_D=True,
        HAS_BIAS=True,
        SOFTPLUS=softplus,
        GATE=GATE_IDS[gate],
        BLOCK_D=cfg["BLOCK_D"],
        N=n,
        CHUNK=cfg["CHUNK"],
    )
    grads = {name: v.numpy() for name, v in out.items()}
    grads.update(
        A=parts["A"].sum(0).numpy(),
        D=parts["D"].sum(0).numpy(),
        delta_bias=parts["delta_bias"].sum(0).numpy(),
        k=float(parts["k"].sum()),
        B=parts["B"].sum(1).numpy(),
        C=parts["C"].sum(1).numpy(),
    )
    return grads


@pytest.mark.parametrize("gate", ["silu", "swelu", "none"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 7, 3, 4)])
def test_forward_kernel_matches_numpy(gate, shape, rng):
    x = inputs(rng, *shape)
    y, last, _, _ = forward(x, gate, 1.3)
    y_ref, h_ref = np_scan(**x, softplus=True, gate=gate, gate_k=1.3)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(last, h_ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("gate", ["silu", "swelu", "none"])
def test_backward_kernel_matches_float64_finite_differences(gate, rng):
    """Every gradient (u, delta, z, A, B, C, D, delta_bias, gate k) of
    ``Σ w·y + Σ v·h_L`` against central differences of the float64 numpy scan, with a
    chunk (3) that does not divide the length (7) and a channel block (2) that does
    not divide the channels (3)."""
    x = {k: v.astype(np.float64) for k, v in inputs(rng, 2, 7, 3, 4).items()}
    w = rng.standard_normal((2, 7, 3))
    v = rng.standard_normal((2, 3, 4))

    def loss(x, k=1.3):
        y, h = np_scan(**x, softplus=True, gate=gate, gate_k=k)
        return float(np.sum(w * y) + np.sum(v * h))

    grads = backward(x, w, v, gate, 1.3)
    eps = 1e-6
    for name in ("u", "delta", "z", "A", "B", "C", "D", "delta_bias"):
        fd = np.zeros_like(x[name])
        for idx in np.ndindex(x[name].shape):
            up = {**x, name: x[name].copy()}
            down = {**x, name: x[name].copy()}
            up[name][idx] += eps
            down[name][idx] -= eps
            fd[idx] = (loss(up) - loss(down)) / (2 * eps)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-3, atol=1e-4, err_msg=name)
    fd_k = (loss(x, 1.3 + eps) - loss(x, 1.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(grads["k"], fd_k if gate == "swelu" else 0.0, rtol=1e-3, atol=1e-4)


def test_chunk_and_block_sizes_do_not_change_results(rng):
    x = inputs(rng, 1, 9, 5, 2)
    w = rng.standard_normal((1, 9, 5)).astype(np.float32)
    v = np.zeros((1, 5, 2), np.float32)
    ref = backward(x, w, v, "swelu", 0.7, chunk=9, block_d=8)
    for chunk, block_d in [(1, 1), (4, 2), (2, 4)]:
        got = backward(x, w, v, "swelu", 0.7, chunk=chunk, block_d=block_d)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_launch_config_refuses_non_power_of_two_state():
    with pytest.raises(ValueError, match="power-of-two"):
        launch_config(1, 4, 4, 12)


PARALLEL_CASES = [  # shape (B, L, D, N), tile, chunk, gate, has_d, has_bias, softplus
    pytest.param((2, 7, 3, 4), 2, 4, "silu", True, True, True, id="L7-T2-chunk4"),
    pytest.param((1, 9, 3, 2), 4, 8, "swelu", False, False, False, id="L9-T4-noD-nobias"),
    pytest.param((2, 5, 3, 4), 8, 64, "none", True, False, True, id="L5-T8-one-tile"),
    pytest.param((1, 6, 2, 4), 1, 3, "silu", False, True, True, id="L6-T1"),
]


@pytest.mark.parametrize(
    ("shape", "tile", "chunk", "gate", "has_d", "has_bias", "softplus"), PARALLEL_CASES
)
def test_parallel_forward_kernel_matches_numpy(
    shape, tile, chunk, gate, has_d, has_bias, softplus, rng
):
    """y and the last state of the time-parallel forward against the float64 scan, with
    lengths that are not multiples of the tile (identity padding), a last tile longer
    than the sequence, T = 1, channels not a multiple of the block, and without D,
    delta_bias or the softplus."""
    x = inputs(rng, *shape)
    if not softplus:
        x["delta"] = np.abs(x["delta"]) * 0.3
    y, last, ckpt, cfg = forward(
        x, gate, 1.3, softplus, chunk, tile=tile, has_d=has_d, has_bias=has_bias
    )
    assert ckpt.shape[1] == cfg["n_chunks"]
    optional = {"D": x["D"] if has_d else None, "delta_bias": x["delta_bias"] if has_bias else None}
    y_ref, h_ref = np_scan(**{**x, **optional}, softplus=softplus, gate=gate, gate_k=1.3)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(last, h_ref, rtol=2e-5, atol=2e-5)


def test_parallel_forward_checkpoints_and_backward_equal_the_sequential_forwards(rng):
    """The checkpoints the backward restarts from are the same whichever forward stored
    them (tiles within a chunk, a tile per chunk, a partial last tile), and so are the
    backward kernel's gradients from them."""
    x = inputs(rng, 2, 13, 3, 4)
    y, last, ckpt, _ = forward(x, "swelu", 0.8, chunk=4)
    for tile, chunk in [(2, 4), (4, 4)]:
        y_p, last_p, ckpt_p, _ = forward(x, "swelu", 0.8, chunk=chunk, tile=tile)
        np.testing.assert_allclose(y_p, y, rtol=1e-5, atol=1e-6, err_msg=f"tile {tile}")
        np.testing.assert_allclose(last_p, last, rtol=1e-5, atol=1e-6, err_msg=f"tile {tile}")
        np.testing.assert_allclose(
            ckpt_p.numpy(), ckpt.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"tile {tile}"
        )
    w = rng.standard_normal((2, 13, 3)).astype(np.float32)
    v = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ref = backward(x, w, v, "swelu", 0.8, chunk=4)
    got = backward(x, w, v, "swelu", 0.8, chunk=4, tile=2)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_parallel_forward_with_bfloat16_inputs(rng):
    """bf16 ``u, delta, B, C, z`` and ``y``, float32 state: the parallel forward agrees
    with the sequential one to bf16 rounding and with the float64 scan of the
    bf16-rounded inputs."""
    x = inputs(rng, 1, 11, 3, 4)
    rounded = {
        name: t(v, torch.bfloat16).float().numpy() if name in ("u", "delta", "B", "C", "z") else v
        for name, v in x.items()
    }
    y, last, _, _ = forward(x, "silu", 1.0, chunk=8, tile=4, dtype=torch.bfloat16)
    y_seq, last_seq, _, _ = forward(x, "silu", 1.0, chunk=8, dtype=torch.bfloat16)
    y_ref, h_ref = np_scan(**rounded, softplus=True, gate="silu")
    np.testing.assert_allclose(y, y_seq, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(last, last_seq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, y_ref, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(last, h_ref, rtol=1e-5, atol=1e-5)


def interpreter_launcher(*args, kernel, out_shape, grid, zeroed_outputs=(), **meta):
    """jax-triton's ``triton_call`` contract, run in Triton's interpreter on the host."""
    arrays = [a for a in args if not isinstance(a, int)]

    def host(*values):
        values = iter(values)
        call = [a if isinstance(a, int) else torch.from_numpy(np.array(next(values))) for a in args]
        outs = [
            torch.zeros(s.shape, dtype=getattr(torch, np.dtype(s.dtype).name)) for s in out_shape
        ]
        kernel[grid](*call, *outs, **meta)
        return tuple(o.numpy() for o in outs)

    return list(jax.pure_callback(host, tuple(out_shape), *arrays))


VARIANT_OPTIONS = {
    "sequential": dict(variant="sequential", chunk=2),
    "parallel": dict(variant="parallel", chunk=4, tile=2),  # L = 5: a partial last tile
}


@pytest.mark.parametrize("variant", ["sequential", "parallel"])
@pytest.mark.parametrize("gate", ["silu", "swelu", "none"])
def test_jax_custom_vjp_wiring_matches_the_reference_backend(gate, variant, rng, monkeypatch):
    """The jax-triton path (forward, residuals, partial sums, dtypes) with the launch
    replaced by the interpreter, with either forward kernel: values and all gradients
    equal the reference backend's."""
    from grokjax.ops import selective_scan, triton_scan

    monkeypatch.setattr(triton_scan, "launch", interpreter_launcher)
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 2, 5, 3, 4).items()}
    w = jnp.asarray(rng.standard_normal((2, 5, 3)), jnp.float32)
    options = VARIANT_OPTIONS[variant]

    def loss(args, k, use_triton):
        if use_triton:
            y, h = triton_scan.triton_selective_scan(
                **args, delta_softplus=True, gate=gate, gate_k=k, block_d=2, **options
            )
        else:
            y, h = selective_scan(
                **args,
                delta_softplus=True,
                gate=gate,
                gate_k=k,
                return_last_state=True,
                backend="reference",
            )
        return jnp.sum(y * w) + jnp.sum(h**2), (y, h)

    (_, (y, h)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, 1.2, True)
    (_, (y_ref, h_ref)), ref = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, 1.2, False)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_ref), rtol=1e-5, atol=1e-5)
    for name in x:
        np.testing.assert_allclose(
            np.asarray(grads[0][name]), np.asarray(ref[0][name]), rtol=1e-4, atol=1e-5, err_msg=name
        )
    np.testing.assert_allclose(float(grads[1]), float(ref[1]), rtol=1e-4, atol=1e-6)


class _Launched(Exception):
    pass


def test_launch_options_reach_the_launch_and_bad_ones_raise(rng, monkeypatch):
    """variant=None runs FORWARD_VARIANT; tile, num_warps and num_stages (only when set)
    reach the launch; bad values raise a ValueError naming the keyword."""
    from grokjax.ops import triton_scan

    launched = {}

    def record(*args, kernel, out_shape, grid, **meta):
        launched.update(meta, kernel=kernel)
        raise _Launched

    monkeypatch.setattr(triton_scan, "launch", record)
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 1, 40, 2, 2).items()}
    assert triton_scan.FORWARD_VARIANT in triton_scan.VARIANTS
    kernels = {
        "sequential": selective_scan_fwd_kernel,
        "parallel": selective_scan_fwd_parallel_kernel,
    }
    with pytest.raises(_Launched):
        triton_scan.triton_selective_scan(**x)
    assert launched["kernel"] is kernels[triton_scan.FORWARD_VARIANT]
    assert launched["num_warps"] == 4 and "num_stages" not in launched
    launched.clear()
    with pytest.raises(_Launched):
        triton_scan.triton_selective_scan(
            **x, variant="parallel", tile=8, chunk=16, num_warps=8, num_stages=2
        )
    assert launched["kernel"] is selective_scan_fwd_parallel_kernel
    assert (launched["T"], launched["CHUNK"]) == (8, 16)
    assert (launched["num_warps"], launched["num_stages"]) == (8, 2)

    bad = [
        (dict(variant="fast"), "variant='fast'"),
        (dict(variant="parallel", tile=3), "tile=3"),
        (dict(variant="parallel", tile=0), "tile=0"),
        (dict(variant="parallel", tile=16, chunk=24), "chunk=24 is not a multiple of tile=16"),
        (dict(num_warps=3), "num_warps=3"),
        (dict(num_stages=0), "num_stages=0"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=re.escape(match)):
            triton_scan.triton_selective_scan(**x, **kw)
    with pytest.raises(ValueError, match=re.escape("chunk=48 is not a multiple of tile=32")):
        launch_config(1, 128, 4, 4, chunk=48, tile=32)
    for kw, match in [(dict(tile=6), "tile=6"), (dict(block_d=3), "block_d=3")]:
        with pytest.raises(ValueError, match=re.escape(match)):
            launch_config(1, 128, 4, 4, **kw)
    assert "T" not in launch_config(1, 5, 4, 4, chunk=3)  # any chunk without a tile
    assert launch_config(1, 5, 4, 4, chunk=64, tile=32)["T"] == 8  # cut to the length


def test_aot_registry_compiles_the_parallel_forward_at_the_default_tile():
    """``grokjax.kernels.aot`` (the sm_90 register/spill report) compiles the parallel
    forward at the tile ``triton_selective_scan`` launches it with by default."""
    import inspect

    from grokjax.kernels.aot import KERNELS

    from grokjax.ops.triton_scan import triton_selective_scan

    spec = KERNELS["selective_scan_fwd_parallel"]
    assert spec.fn is selective_scan_fwd_parallel_kernel
    default_tile = inspect.signature(triton_selective_scan).parameters["tile"].default
    assert spec.extra_constexprs["T"] == default_tile


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_triton_backend_refuses_without_a_gpu_and_runs_with_one(gpu, rng):
    """Without a CUDA GPU ``backend="triton"`` refuses; with one (where this module's
    interpreter tests run too) the real backend is checked against the reference."""
    from test_selective_scan import check_triton_on_gpu

    from grokjax.ops import selective_scan, triton_scan

    if gpu != triton_scan.available():
        pytest.skip("needs a CUDA GPU and jax-triton" if gpu else "the refusal needs no CUDA GPU")
    if gpu:
        check_triton_on_gpu()
        return
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 1, 3, 2, 2).items()}
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        selective_scan(**x, backend="triton")
