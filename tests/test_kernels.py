"""The Triton selective-scan kernels on the CPU: ``TRITON_INTERPRET=1`` with torch tensors,
forward and backward, against float64 numpy references at tiny shapes.

torch (CPU build) and triton are test-only dependencies that ``.ci/run`` installs; with
``CI=true`` these tests fail, not skip, when either is missing.
"""

from __future__ import annotations

import os

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
)
from test_selective_scan import inputs, np_scan

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="these run the kernels in Triton's CPU interpreter (TRITON_INTERPRET=1)",
)


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x, np.float32))


def forward(x, gate, gate_k, softplus=True, chunk=3, block_d=2):
    b, length, d = x["u"].shape
    n = x["A"].shape[1]
    cfg = launch_config(b, length, d, n, block_d=block_d, chunk=chunk)
    y = torch.empty(b, length, d)
    last = torch.empty(b, d, n)
    ckpt = torch.empty(b, cfg["n_chunks"], d, n)
    k = torch.tensor([gate_k], dtype=torch.float32)
    selective_scan_fwd_kernel[cfg["grid"]](
        t(x["u"]),
        t(x["delta"]),
        t(x["A"]),
        t(x["B"]),
        t(x["C"]),
        t(x["D"]),
        t(x["z"]),
        t(x["delta_bias"]),
        k,
        length,
        d,
        y,
        last,
        ckpt,
        HAS_D=True,
        HAS_BIAS=True,
        SOFTPLUS=softplus,
        GATE=GATE_IDS[gate],
        BLOCK_D=cfg["BLOCK_D"],
        N=n,
        CHUNK=cfg["CHUNK"],
    )
    return y.numpy(), last.numpy(), ckpt, cfg


def backward(x, dy, dlast, gate, gate_k, softplus=True, chunk=3, block_d=2):
    _, _, ckpt, cfg = forward(x, gate, gate_k, softplus, chunk, block_d)
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


@pytest.mark.parametrize("gate", ["silu", "swelu", "none"])
def test_jax_custom_vjp_wiring_matches_the_reference_backend(gate, rng, monkeypatch):
    """The jax-triton path (forward, residuals, partial sums, dtypes) with the launch
    replaced by the interpreter: values and all gradients equal the reference backend's."""
    from grokjax.ops import selective_scan, triton_scan

    monkeypatch.setattr(triton_scan, "launch", interpreter_launcher)
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 2, 5, 3, 4).items()}
    w = jnp.asarray(rng.standard_normal((2, 5, 3)), jnp.float32)

    def loss(args, k, use_triton):
        if use_triton:
            y, h = triton_scan.triton_selective_scan(
                **args, delta_softplus=True, gate=gate, gate_k=k, block_d=2, chunk=2
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


def test_triton_backend_refuses_without_a_gpu(rng):
    from grokjax.ops import selective_scan

    x = {k: jnp.asarray(v) for k, v in inputs(rng, 1, 3, 2, 2).items()}
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        selective_scan(**x, backend="triton")
