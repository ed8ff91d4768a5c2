"""The selective scan: backends against a float64 numpy reference, gradients, decode."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grokjax as gj
from grokjax.ops import selective_scan, selective_state_update


def np_softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def np_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False, gate="silu", gate_k=1.0
):
    """Straightforward float64 loops over batch, time, channel and state."""
    u, delta, A, B, C = (np.asarray(x, np.float64) for x in (u, delta, A, B, C))
    b, length, d = u.shape
    n = A.shape[1]
    dt = delta + (0 if delta_bias is None else np.asarray(delta_bias, np.float64))
    if softplus:
        dt = np_softplus(dt)
    y = np.zeros((b, length, d))
    h = np.zeros((b, d, n))
    for i in range(b):
        for t in range(length):
            for c in range(d):
                for s in range(n):
                    h[i, c, s] = (
                        np.exp(dt[i, t, c] * A[c, s]) * h[i, c, s]
                        + dt[i, t, c] * u[i, t, c] * B[i, t, s]
                    )
                y[i, t, c] = np.dot(h[i, c], C[i, t])
    if D is not None:
        y += np.asarray(D, np.float64) * u
    if gate == "silu":
        zz = np.asarray(z, np.float64)
        y *= zz / (1 + np.exp(-zz))
    elif gate == "swelu":
        zz = np.asarray(z, np.float64)
        y *= np.sign(zz) * (1 - np.exp(-(np.abs(zz) ** gate_k)))
    return y, h


def inputs(rng, b, length, d, n, dtype=np.float32):
    return dict(
        u=rng.standard_normal((b, length, d)).astype(dtype),
        delta=rng.standard_normal((b, length, d)).astype(dtype),
        A=-np.exp(rng.standard_normal((d, n))).astype(np.float32),
        B=rng.standard_normal((b, length, n)).astype(dtype),
        C=rng.standard_normal((b, length, n)).astype(dtype),
        D=rng.standard_normal(d).astype(np.float32),
        z=rng.standard_normal((b, length, d)).astype(dtype),
        delta_bias=(0.5 * rng.standard_normal(d)).astype(np.float32),
    )


SHAPES = [(1, 1, 1, 1), (2, 7, 3, 4), (3, 16, 5, 2)]


@pytest.mark.parametrize("backend", ["reference", "associative"])
@pytest.mark.parametrize("gate", ["silu", "swelu", "none"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_last_state_match_numpy(backend, gate, shape, rng):
    x = inputs(rng, *shape)
    kw = dict(delta_softplus=True, gate=gate, gate_k=1.4 if gate == "swelu" else None)
    y, h = selective_scan(
        **{k: jnp.asarray(v) for k, v in x.items()}, **kw, return_last_state=True, backend=backend
    )
    y_ref, h_ref = np_scan(**x, softplus=True, gate=gate, gate_k=1.4)
    assert y.dtype == jnp.float32 and h.shape == h_ref.shape
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(h), h_ref, rtol=2e-5, atol=2e-5)


def test_optional_arguments_and_bfloat16(rng):
    """Without D, delta_bias and softplus; bf16 inputs accumulate in float32, return bf16."""
    x = inputs(rng, 2, 9, 3, 4)
    x["delta"] = np.abs(x["delta"]) * 0.3
    args = {k: jnp.asarray(x[k]) for k in ("u", "delta", "A", "B", "C", "z")}
    y = selective_scan(**args, gate="silu")
    y_ref, _ = np_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], z=x["z"])
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=2e-5, atol=2e-5)
    bf = {k: v.astype(jnp.bfloat16) if k != "A" else v for k, v in args.items()}
    y_bf = selective_scan(**bf, gate="silu")
    assert y_bf.dtype == jnp.bfloat16
    ref_bf, _ = np_scan(
        *(np.asarray(bf[k], np.float64) for k in ("u", "delta", "A", "B", "C")),
        z=np.asarray(bf["z"], np.float64),
    )
    np.testing.assert_allclose(np.asarray(y_bf, np.float64), ref_bf, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("gate", ["silu", "swelu"])
def test_backends_have_equal_gradients_for_every_argument(gate, rng):
    """∂ of a weighted sum of y and the last state w.r.t. all ten inputs, both backends."""
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 2, 6, 3, 4).items()}
    weights = jnp.asarray(rng.standard_normal((2, 6, 3)), jnp.float32)

    def loss(args, gate_k, backend):
        y, h = selective_scan(
            **args,
            delta_softplus=True,
            gate=gate,
            gate_k=gate_k,
            return_last_state=True,
            backend=backend,
        )
        return jnp.sum(y * weights) + jnp.sum(h)

    ref = jax.grad(loss, argnums=(0, 1))(x, 1.3, "reference")
    assoc = jax.grad(loss, argnums=(0, 1))(x, 1.3, "associative")
    for name in x:
        np.testing.assert_allclose(
            np.asarray(assoc[0][name]), np.asarray(ref[0][name]), rtol=1e-4, atol=1e-5, err_msg=name
        )
    if gate == "swelu":
        np.testing.assert_allclose(float(assoc[1]), float(ref[1]), rtol=1e-4)
        assert float(ref[1]) != 0.0


@pytest.mark.parametrize("backend", ["reference", "associative"])
def test_gradients_against_finite_differences_in_float64(backend, rng):
    x = inputs(rng, 1, 5, 2, 3, np.float64)
    with jax.enable_x64(True):
        args = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
        weights = jnp.asarray(rng.standard_normal((1, 5, 2)))

        @jax.jit  # one compilation for the many finite-difference evaluations
        def loss(args, gate_k):
            y = selective_scan(
                **args, delta_softplus=True, gate="swelu", gate_k=gate_k, backend=backend
            )
            return jnp.sum(y * weights)

        grads, dk = jax.grad(loss, argnums=(0, 1))(args, jnp.float64(1.2))
        h = 1e-6
        for name, value in args.items():
            flat = np.asarray(value).reshape(-1)
            for j in range(0, flat.size, max(1, flat.size // 4)):
                up, down = flat.copy(), flat.copy()
                up[j] += h
                down[j] -= h
                f_up = loss({**args, name: jnp.asarray(up.reshape(value.shape))}, 1.2)
                f_down = loss({**args, name: jnp.asarray(down.reshape(value.shape))}, 1.2)
                fd = (float(f_up) - float(f_down)) / (2 * h)
                got = float(np.asarray(grads[name]).reshape(-1)[j])
                np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-7, err_msg=f"{name}[{j}]")
        fd_k = (float(loss(args, 1.2 + h)) - float(loss(args, 1.2 - h))) / (2 * h)
        np.testing.assert_allclose(float(dk), fd_k, rtol=1e-5)


def test_decode_steps_reproduce_the_scan(rng):
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 2, 8, 3, 4).items()}
    y_scan, h_scan = selective_scan(
        **x, delta_softplus=True, gate="swelu", gate_k=0.8, return_last_state=True
    )
    state = jnp.zeros((2, 3, 4))
    ys = []
    for t in range(8):
        y_t, state = selective_state_update(
            state,
            x["u"][:, t],
            x["delta"][:, t],
            x["A"],
            x["B"][:, t],
            x["C"][:, t],
            x["D"],
            x["z"][:, t],
            x["delta_bias"],
            delta_softplus=True,
            gate="swelu",
            gate_k=0.8,
        )
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), np.asarray(y_scan), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state), np.asarray(h_scan), rtol=1e-5, atol=1e-6)


def triton_matches_reference(seed: int = 0, shape=(2, 150, 40, 16)) -> None:
    """On a CUDA GPU: the Triton backend against the reference at a small shape.

    Output, last state and the gradient of every argument (``gate_k`` included) for each
    forward variant, ``backend="triton"`` and ``"auto"`` (which picks Triton there)
    through :func:`selective_scan`, and a bfloat16 forward. At the default ``shape`` the
    length spans several checkpoint chunks and the channels several blocks, neither a
    multiple of them, so the masked tails run too. Matmuls at full float32: XLA may use
    TF32 on a GPU by default.
    """
    from grokjax.ops import triton_scan

    rng = np.random.default_rng(seed)
    b, length, d, n = shape
    x = {k: jnp.asarray(v) for k, v in inputs(rng, b, length, d, n).items()}
    w = jnp.asarray(rng.standard_normal((b, length, d)), jnp.float32)

    def loss(args, k, scan):
        y, h = scan(args, k)
        return jnp.sum(y * w) + jnp.sum(h**2), (y, h)

    def reference(args, k):
        return selective_scan(
            **args, delta_softplus=True, gate="swelu", gate_k=k, return_last_state=True,
            backend="reference",
        )  # fmt: skip

    def via_dispatch(args, k):
        return selective_scan(
            **args, delta_softplus=True, gate="swelu", gate_k=k, return_last_state=True,
            backend="triton",
        )  # fmt: skip

    def variant(name):
        return lambda args, k: triton_scan.triton_selective_scan(
            **args, delta_softplus=True, gate="swelu", gate_k=k, variant=name
        )

    candidates = {"backend='triton'": via_dispatch}
    for name in getattr(triton_scan, "VARIANTS", ()):
        candidates[f"variant={name!r}"] = variant(name)
    with jax.default_matmul_precision("highest"):
        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
        (_, (y_ref, h_ref)), g_ref = grad(x, 1.2, reference)
        for label, scan in candidates.items():
            (_, (y, h)), g = grad(x, 1.2, scan)
            np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=f"{label}: y")
            np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5, err_msg=f"{label}: h")
            for name in x:
                np.testing.assert_allclose(
                    g[0][name], g_ref[0][name], rtol=1e-4, atol=1e-5, err_msg=f"{label}: d{name}"
                )
            np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-4, err_msg=f"{label}: dgate_k")
        # softplus keeps exp(dt·A) ≤ 1: a raw delta grows the state without bound over 150 steps
        auto = jax.jit(lambda a: selective_scan(**a, delta_softplus=True))(x)
        y_ref = selective_scan(**x, delta_softplus=True, backend="reference")
        np.testing.assert_allclose(auto, y_ref, rtol=1e-5, atol=1e-5, err_msg="auto")
        half = {k: v.astype(jnp.bfloat16) if v.ndim == 3 else v for k, v in x.items()}
        y16, y16_ref = (
            selective_scan(**half, delta_softplus=True, backend=backend).astype(jnp.float32)
            for backend in ("triton", "reference")
        )
        np.testing.assert_allclose(y16, y16_ref, rtol=2e-2, atol=2e-2, err_msg="bfloat16 y")


@functools.cache
def check_triton_on_gpu() -> None:
    """:func:`triton_matches_reference`, once per process: here, or in a fresh process
    when this one has ``TRITON_INTERPRET=1`` (tests/test_kernels.py sets it), since
    kernels defined under Triton's interpreter cannot be compiled for the GPU."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        triton_matches_reference()
        return
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this process may hold most of the GPU
    code = "import test_selective_scan as t; t.triton_matches_reference()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_auto_backend_jit_and_errors(gpu, rng):
    """Without a CUDA GPU ``"auto"`` is the reference and ``"triton"`` refuses; with one
    both run the Triton kernels, checked against the reference instead."""
    from grokjax.ops import triton_scan

    if gpu != triton_scan.available():
        pytest.skip("needs a CUDA GPU and jax-triton" if gpu else "the refusal needs no CUDA GPU")
    x = {k: jnp.asarray(v) for k, v in inputs(rng, 1, 4, 2, 2).items()}
    if gpu:
        check_triton_on_gpu()
    else:
        auto = jax.jit(lambda a: selective_scan(**a))(x)
        np.testing.assert_allclose(
            np.asarray(auto), np.asarray(selective_scan(**x, backend="reference")), rtol=1e-6
        )
        with pytest.raises(ValueError, match=r"backend='triton' needs a CUDA GPU"):
            selective_scan(**x, backend="triton")
    with pytest.raises(ValueError, match="backend='cuda'"):
        selective_scan(**x, backend="cuda")
    with pytest.raises(ValueError, match="pass z"):
        selective_scan(**{**x, "z": None})
    with pytest.raises(ValueError, match=r"B must have shape \(1, 4, 2\)"):
        selective_scan(**{**x, "B": x["B"][:, :3]})
    assert gj.ops.selective_scan is selective_scan


def test_reference_gradients_under_vmap_equal_each_members_own(rng):
    """The reference backward (a custom VJP) batched over members with their own A, u, ...
    gives each member the gradients it gets alone, and those match the associative
    backend's (JAX-derived) gradients."""
    members = [{k: jnp.asarray(v) for k, v in inputs(rng, 2, 5, 3, 4).items()} for _ in range(3)]
    weights = jnp.asarray(rng.standard_normal((2, 5, 3)), jnp.float32)

    def loss(args, backend="reference"):
        y, h = selective_scan(**args, delta_softplus=True, return_last_state=True, backend=backend)
        return jnp.sum(y * weights) + jnp.sum(h**2)

    stacked = jax.tree.map(lambda *x: jnp.stack(x), *members)
    batched = jax.jit(jax.vmap(jax.grad(loss)))(stacked)
    for m, args in enumerate(members):
        alone = jax.grad(loss)(args, "associative")
        for name in args:
            np.testing.assert_allclose(
                np.asarray(batched[name][m]),
                np.asarray(alone[name]),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"member {m}, {name}",
            )
