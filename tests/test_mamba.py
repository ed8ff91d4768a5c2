"""The Mamba block and language model: initialisation, activations, a training step."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grokjax.nn import ActivationShape, MambaBlock, MambaLM
from grokjax.nn.mamba import causal_depthwise_conv
from grokjax.ops import selective_scan


def test_block_initialisation_follows_the_reference():
    block = MambaBlock(32, d_state=8, n_layer=4, rngs=nnx.Rngs(0))
    assert block.d_inner == 64 and block.dt_rank == 2
    np.testing.assert_allclose(np.asarray(block.A_log[...])[5], np.log(np.arange(1, 9)))
    np.testing.assert_array_equal(np.asarray(block.D[...]), 1.0)
    dt = np.asarray(jax.nn.softplus(block.dt_proj.bias[...]))
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    bound = 2**-0.5
    assert np.abs(np.asarray(block.dt_proj.kernel[...])).max() <= bound
    plain = MambaBlock(32, d_state=8, n_layer=1, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(
        np.asarray(block.out_proj.kernel[...]),
        np.asarray(plain.out_proj.kernel[...]) / 2,
        rtol=1e-6,
    )


def test_causal_conv_equals_a_grouped_nnx_conv_with_its_gradients():
    """The shifted multiply-adds agree with XLA's grouped convolution on the same kernel."""
    conv = nnx.Conv(6, 6, (4,), padding=[(3, 0)], feature_group_count=6, rngs=nnx.Rngs(3))
    conv.bias = nnx.Param(jax.random.normal(jax.random.key(4), (6,)))
    x = jax.random.normal(jax.random.key(5), (2, 9, 6))
    weights = jax.random.normal(jax.random.key(6), (2, 9, 6))

    graphdef, state = nnx.split(conv)

    def ours(state, x):
        kernel_KE = state["kernel"][...][:, 0, :]
        return jnp.sum(causal_depthwise_conv(x, kernel_KE, state["bias"][...]) * weights)

    def xla(state, x):
        return jnp.sum(nnx.merge(graphdef, state)(x) * weights)

    np.testing.assert_allclose(float(ours(state, x)), float(xla(state, x)), rtol=1e-5)
    got, want = jax.grad(ours, argnums=(0, 1))(state, x), jax.grad(xla, argnums=(0, 1))(state, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


def test_block_matches_a_hand_written_forward():
    """The block's pieces composed by hand (numpy causal conv, the scan) give its output."""
    block = MambaBlock(8, d_state=4, d_conv=3, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (2, 6, 8))
    xz = np.asarray(x @ block.in_proj.kernel[...])
    u, z = xz[..., :16], xz[..., 16:]
    w = np.asarray(block.conv.kernel[...])[:, 0, :]  # (d_conv, channels)
    padded = np.concatenate([np.zeros((2, 2, 16)), u], axis=1)
    conv = sum(padded[:, j : j + 6] * w[j] for j in range(3)) + np.asarray(block.conv.bias[...])
    conv = conv / (1 + np.exp(-conv))
    proj = conv @ np.asarray(block.x_proj.kernel[...])
    dt, B, C = proj[..., :1], proj[..., 1:5], proj[..., 5:]
    y = selective_scan(
        jnp.asarray(conv, jnp.float32),
        jnp.asarray(dt @ np.asarray(block.dt_proj.kernel[...]), jnp.float32),
        -jnp.exp(block.A_log[...]),
        jnp.asarray(B, jnp.float32),
        jnp.asarray(C, jnp.float32),
        block.D[...],
        jnp.asarray(z, jnp.float32),
        block.dt_proj.bias[...],
        delta_softplus=True,
    )
    expected = np.asarray(y) @ np.asarray(block.out_proj.kernel[...])
    np.testing.assert_allclose(np.asarray(block(x)), expected, rtol=2e-4, atol=2e-5)


def test_block_is_causal():
    block = MambaBlock(8, rngs=nnx.Rngs(0), conv_activation="swelu", gate_activation="swish_k")
    x = jax.random.normal(jax.random.key(0), (1, 10, 8))
    changed = x.at[:, 6:].add(1.0)
    np.testing.assert_allclose(
        np.asarray(block(x))[:, :6], np.asarray(block(changed))[:, :6], rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("activation", ["silu", "swelu", "swish_k"])
def test_lm_loss_decreases_and_k_learns(activation):
    """A few Adam steps on a repeated sentence lower the next-byte loss; each SWELU /
    swish_k site's k receives a gradient and moves."""
    text = np.frombuffer(b"grokking needs patience and weight decay. " * 8, np.uint8)
    tokens = jnp.asarray(text[: 4 * 33].reshape(4, 33), jnp.int32)
    lm = MambaLM(
        256, 32, 2, conv_activation=activation, gate_activation=activation, rngs=nnx.Rngs(0)
    )
    graphdef, params = nnx.split(lm)
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] == pytest.approx(math.log(256), rel=0.05)
    assert losses[-1] < 0.6 * losses[0]
    shapes = nnx.state(nnx.merge(graphdef, params), ActivationShape)
    if activation == "silu":
        assert not jax.tree.leaves(shapes)
    else:
        ks = np.asarray([float(jnp.exp(v)) for v in jax.tree.leaves(shapes)])
        assert ks.size == 4 and np.all(ks != 1.0)  # 2 sites × 2 blocks, all moved


def test_untied_head_and_bad_activation():
    lm = MambaLM(50, 16, 1, tie_embeddings=False, rngs=nnx.Rngs(0))
    assert lm(jnp.zeros((1, 3), jnp.int32)).shape == (1, 3, 50)
    with pytest.raises(ValueError, match="activation 'gelu'"):
        MambaBlock(16, conv_activation="gelu", rngs=nnx.Rngs(0))
