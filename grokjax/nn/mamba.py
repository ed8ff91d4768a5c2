"""Mamba (Gu & Dao 2023) blocks and language model in Flax NNX, with selectable activations.

A block maps ``x_BLD`` (``D = d_model``) through

    [x, z] = in_proj(x)                        (B, L, 2·E), E = expand·d_model
    x = act_conv(causal_depthwise_conv(x))     kernel d_conv, left-padded
    [dt, B, C] = x_proj(x)                     (B, L, R + 2N), R = dt_rank
    y = selective_scan(x, dt_proj(dt), A, B, C, D, z, delta_bias, softplus, gate=act_gate)
    out = out_proj(y)

with ``A = −exp(A_log)``. The activation after the convolution and the gate on ``z``
are each ``"silu"``, ``"swelu"`` or ``"swish_k"`` (seed 004 puts SWELU at both sites);
every SWELU/swish_k site has its own learnable ``k`` (:class:`~grokjax.nn.SWELU`), which
SWELU's gate passes to the scan as ``gate_k``. Initialisation follows the reference
implementation (``mamba_simple.py``): ``A_log[d] = log(1..N)``, ``D = 1``, dt_proj
weights ``U(±R^{-1/2})`` and bias ``softplus⁻¹(dt)`` for ``dt`` log-uniform in
``[dt_min, dt_max] = [1e-3, 0.1]``, ``out_proj`` scaled by ``1/√n_layer``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from grokjax.nn.activations import SWELU, SwishK
from grokjax.ops import selective_scan

__all__ = ["MambaBlock", "MambaLM", "RMSNorm", "causal_depthwise_conv"]

ACTIVATION_SITES = ("silu", "swelu", "swish_k")


class RMSNorm(nnx.Module):
    """``x / sqrt(mean(x²) + eps) · weight`` over the last axis (weight init 1)."""

    def __init__(self, dim: int, eps: float = 1e-5, *, param_dtype=jnp.float32) -> None:
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        normed = wide * jax.lax.rsqrt(jnp.mean(wide * wide, axis=-1, keepdims=True) + self.eps)
        weight = jax.lax.broadcast_to_rank(self.weight[...], normed.ndim)
        return (normed * weight).astype(x.dtype)


def _activation(name: str):
    if name not in ACTIVATION_SITES:
        raise ValueError(f"activation {name!r}: choose one of {ACTIVATION_SITES}.")
    return {"silu": None, "swelu": SWELU(), "swish_k": SwishK()}[name]


def causal_depthwise_conv(x_BLE: jax.Array, kernel_KE: jax.Array, bias_E: jax.Array) -> jax.Array:
    """``y[:, t] = bias + Σ_k kernel[k] ⊙ x[:, t + k − K + 1]`` with ``x[:, <0] = 0``.

    The causal depthwise convolution of the block written as K shifted multiply-adds.
    Equal to ``nnx.Conv(E, E, (K,), padding=[(K − 1, 0)], feature_group_count=E)`` on
    its own kernel (``(K, 1, E)``), and much faster on the CPU, where XLA's grouped
    convolution is slow, worst inside a loop such as the trainer's loop over steps
    (``benchmarks/mamba_step.py`` times both).

    >>> x = jnp.arange(4.0).reshape(1, 4, 1)
    >>> causal_depthwise_conv(x, jnp.array([[1.0], [10.0]]), jnp.zeros(1))[0, :, 0]
    Array([ 0., 10., 21., 32.], dtype=float32)
    """
    k, length = kernel_KE.shape[0], x_BLE.shape[1]
    padded = jnp.pad(x_BLE, ((0, 0), (k - 1, 0), (0, 0)))
    y = sum(padded[:, j : j + length] * kernel_KE[j][None, None] for j in range(k))
    return y + bias_E[None, None]


def _dt_bias(key: jax.Array, dim: int, dt_min: float, dt_max: float) -> jax.Array:
    """``softplus⁻¹(dt)`` for ``dt = exp(U(log dt_min, log dt_max))`` (clamped at 1e-4)."""
    u = jax.random.uniform(key, (dim,))
    dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, 1e-4)
    return dt + jnp.log(-jnp.expm1(-dt))


class MambaBlock(nnx.Module):
    """One Mamba mixer (see the module docstring); ``(B, L, d_model) → (B, L, d_model)``.

    >>> block = MambaBlock(16, rngs=nnx.Rngs(0), conv_activation="swelu")
    >>> block(jnp.ones((2, 5, 16))).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        conv_activation: str = "silu",
        gate_activation: str = "silu",
        n_layer: int = 1,
        scan_backend: str = "auto",
        rngs: nnx.Rngs,
    ) -> None:
        e = expand * d_model
        r = dt_rank or math.ceil(d_model / 16)
        self.d_inner, self.d_state, self.dt_rank, self.d_conv = e, d_state, r, d_conv
        self.scan_backend = scan_backend
        self.in_proj = nnx.Linear(d_model, 2 * e, use_bias=False, rngs=rngs)
        # parameters and initialisation of a grouped nnx.Conv; applied by causal_depthwise_conv
        self.conv = nnx.Conv(
            e, e, (d_conv,), padding=[(d_conv - 1, 0)], feature_group_count=e, rngs=rngs
        )
        self.x_proj = nnx.Linear(e, r + 2 * d_state, use_bias=False, rngs=rngs)
        std = r**-0.5
        self.dt_proj = nnx.Linear(
            r,
            e,
            kernel_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -std, std),
            rngs=rngs,
        )
        self.dt_proj.bias = nnx.Param(_dt_bias(rngs.params(), e, dt_min, dt_max))
        self.A_log = nnx.Param(
            jnp.log(jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (e, 1)))
        )
        self.D = nnx.Param(jnp.ones((e,), jnp.float32))
        self.out_proj = nnx.Linear(e, d_model, use_bias=False, rngs=rngs)
        self.out_proj.kernel = nnx.Param(self.out_proj.kernel[...] / math.sqrt(n_layer))
        self.conv_act = _activation(conv_activation)
        self.gate_act = _activation(gate_activation)
        self.gate_name = gate_activation

    def __call__(self, x_BLD: jax.Array) -> jax.Array:
        xz = self.in_proj(x_BLD)
        x, z = jnp.split(xz, 2, axis=-1)
        x = causal_depthwise_conv(x, self.conv.kernel[:, 0, :], self.conv.bias[...])
        x = jax.nn.silu(x) if self.conv_act is None else self.conv_act(x)
        proj = self.x_proj(x)
        dt, B, C = jnp.split(proj, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        delta = dt @ self.dt_proj.kernel[...]  # the bias enters the scan as delta_bias
        A = -jnp.exp(self.A_log[...])
        kw = dict(
            D=self.D[...],
            delta_bias=self.dt_proj.bias[...],
            delta_softplus=True,
            backend=self.scan_backend,
        )
        if self.gate_name == "swish_k":
            y = selective_scan(x, delta, A, B, C, gate="none", **kw) * self.gate_act(z)
        elif self.gate_name == "swelu":
            y = selective_scan(x, delta, A, B, C, z=z, gate="swelu", gate_k=self.gate_act.k, **kw)
        else:
            y = selective_scan(x, delta, A, B, C, z=z, gate="silu", **kw)
        return self.out_proj(y)


class MambaLM(nnx.Module):
    """Embedding → ``n_layer`` × (``x + MambaBlock(RMSNorm(x))``) → RMSNorm → head.

    The head is the transposed embedding (``tie_embeddings=True``, the default) or its
    own bias-free projection. Returns logits ``(B, L, vocab)`` in float32.

    >>> lm = MambaLM(vocab_size=256, d_model=32, n_layer=2, rngs=nnx.Rngs(0))
    >>> lm(jnp.zeros((2, 7), jnp.int32)).shape
    (2, 7, 256)
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layer: int,
        *,
        tie_embeddings: bool = True,
        conv_activation: str = "silu",
        gate_activation: str = "silu",
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_backend: str = "auto",
        rngs: nnx.Rngs,
    ) -> None:
        self.embed = nnx.Embed(
            vocab_size, d_model, embedding_init=nnx.initializers.normal(0.02), rngs=rngs
        )
        self.norms = nnx.List([RMSNorm(d_model) for _ in range(n_layer)])
        self.blocks = nnx.List(
            [
                MambaBlock(
                    d_model,
                    d_state=d_state,
                    d_conv=d_conv,
                    expand=expand,
                    conv_activation=conv_activation,
                    gate_activation=gate_activation,
                    n_layer=n_layer,
                    scan_backend=scan_backend,
                    rngs=rngs,
                )
                for _ in range(n_layer)
            ]
        )
        self.norm_f = RMSNorm(d_model)
        self.head = (
            None if tie_embeddings else nnx.Linear(d_model, vocab_size, use_bias=False, rngs=rngs)
        )

    def __call__(self, tokens_BL: jax.Array) -> jax.Array:
        x = self.embed(tokens_BL)
        for norm, block in zip(self.norms, self.blocks, strict=True):
            x = x + block(norm(x))
        x = self.norm_f(x)
        if self.head is None:
            return (x @ self.embed.embedding[...].T).astype(jnp.float32)
        return self.head(x).astype(jnp.float32)
