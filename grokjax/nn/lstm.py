"""A multi-layer LSTM sequence classifier with PyTorch's parameterisation and initialisation.

This is the IMDb sentiment model of the Grokfast paper (Lee et al. 2024; the authors'
``SentimentRNN``): an embedding, a stack of LSTM layers as ``torch.nn.LSTM`` (gate order
i, f, g, o; two biases per layer; zero initial state; batch first) and a linear head
read at the last time step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from grokjax.nn.mlp import uniform_init

__all__ = ["LSTMClassifier", "LSTMLayer", "lstm_recurrence"]


def _forward(w_hh_HG: jax.Array, zx_TBG: jax.Array) -> tuple[jax.Array, ...]:
    """The recursion, returning every step's ``h, c, i, f, g, o, tanh(c)`` (T, B, H)."""
    H = w_hh_HG.shape[0]

    def step(carry, zx_BG):
        h_BH, c_BH = carry
        z_BG = zx_BG + h_BH @ w_hh_HG
        s_BG = jax.nn.sigmoid(z_BG)  # i, f, o read their blocks; g's is recomputed as tanh
        i_BH, f_BH, o_BH = s_BG[:, :H], s_BG[:, H : 2 * H], s_BG[:, 3 * H :]
        g_BH = jnp.tanh(z_BG[:, 2 * H : 3 * H])
        c_BH = f_BH * c_BH + i_BH * g_BH
        tc_BH = jnp.tanh(c_BH)
        h_BH = o_BH * tc_BH
        return (h_BH, c_BH), (h_BH, c_BH, i_BH, f_BH, g_BH, o_BH, tc_BH)

    zeros_BH = jnp.zeros((zx_TBG.shape[1], H), zx_TBG.dtype)
    return jax.lax.scan(step, (zeros_BH, zeros_BH), zx_TBG)[1]


@jax.custom_vjp
def lstm_recurrence(w_hh_HG: jax.Array, zx_TBG: jax.Array) -> jax.Array:
    """The hidden states ``h_1 … h_T`` ``(T, B, H)`` of the LSTM recursion (see
    :class:`LSTMLayer`) from the input projections ``zx_TBG`` (``x_t W_ih + b``, gates
    in PyTorch's order i, f, g, o) and ``W_hh`` ``(H, 4H)``, from ``h_0 = c_0 = 0``.

    Its backward pass is written out: the reverse scan carries ``(∂h, ∂c)`` and emits
    the gate pre-activation gradients ``∂z_t = [∂i·i(1−i), ∂f·f(1−f), ∂g·(1−g²),
    ∂o·o(1−o)]`` with ``∂o = ∂h_t ⊙ tanh c_t``, ``∂c_t = ∂c_{t+1} ⊙ f_{t+1} + ∂h_t ⊙
    o_t ⊙ (1 − tanh² c_t)``, ``∂i = ∂c_t ⊙ g_t``, ``∂f = ∂c_t ⊙ c_{t−1}``, ``∂g = ∂c_t ⊙
    i_t`` and ``∂h_{t−1} = ∂h^{out}_{t−1} + ∂z_t W_hhᵀ``; then ``∂W_hh = Σ_t h_{t−1}ᵀ
    ∂z_t`` is one ``(H, T·B) @ (T·B, 4H)`` matmul after the loop, and ``∂zx = ∂z``.
    Autodiff through ``lax.scan`` accumulates ``∂W_hh`` inside the loop instead, which
    is slower on the CPU (``benchmarks/lstm_backward.py`` measures both).

    >>> zx_TBG = jax.random.normal(jax.random.key(0), (6, 2, 12))
    >>> w_HG = jax.random.normal(jax.random.key(1), (3, 12))
    >>> lstm_recurrence(w_HG, zx_TBG).shape
    (6, 2, 3)

    References:
        Hochreiter & Schmidhuber (1997). Long Short-Term Memory. Neural Computation 9(8).
    """
    return _forward(w_hh_HG, zx_TBG)[0]


def _recurrence_fwd(w_hh_HG, zx_TBG):
    saved = _forward(w_hh_HG, zx_TBG)
    return saved[0], (w_hh_HG, saved)


def _recurrence_bwd(residuals, dhs_TBH):
    w_hh_HG, (hs_TBH, cs_TBH, i_TBH, f_TBH, g_TBH, o_TBH, tc_TBH) = residuals
    c_prev_TBH = jnp.concatenate([jnp.zeros_like(cs_TBH[:1]), cs_TBH[:-1]])
    h_prev_TBH = jnp.concatenate([jnp.zeros_like(hs_TBH[:1]), hs_TBH[:-1]])
    w_GH = w_hh_HG.T

    def step(carry, xs):
        dh_next_BH, dc_next_BH = carry
        dh_out_BH, c_prev_BH, i_BH, f_BH, g_BH, o_BH, tc_BH = xs
        dh_BH = dh_out_BH + dh_next_BH
        dc_BH = dc_next_BH + dh_BH * o_BH * (1 - tc_BH * tc_BH)
        dz_BG = jnp.concatenate(
            [
                dc_BH * g_BH * i_BH * (1 - i_BH),
                dc_BH * c_prev_BH * f_BH * (1 - f_BH),
                dc_BH * i_BH * (1 - g_BH * g_BH),
                dh_BH * tc_BH * o_BH * (1 - o_BH),
            ],
            axis=-1,
        )
        return (dz_BG @ w_GH, dc_BH * f_BH), dz_BG

    zeros_BH = jnp.zeros_like(dhs_TBH[0])
    xs = (dhs_TBH, c_prev_TBH, i_TBH, f_TBH, g_TBH, o_TBH, tc_TBH)
    _, dz_TBG = jax.lax.scan(step, (zeros_BH, zeros_BH), xs, reverse=True)
    T, B, H = hs_TBH.shape
    dw_HG = h_prev_TBH.reshape(T * B, H).T @ dz_TBG.reshape(T * B, 4 * H)
    return dw_HG.astype(w_hh_HG.dtype), dz_TBG


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class LSTMLayer(nnx.Module):
    """One LSTM layer, parameterised as one layer of ``torch.nn.LSTM``.

    With gate pre-activations ``z_t = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh`` split into
    four blocks of ``hidden`` in PyTorch's order ``(i, f, g, o)``:

        i_t = σ(z_i),  f_t = σ(z_f),  g_t = tanh(z_g),  o_t = σ(z_o),
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,
        h_t = o_t ⊙ tanh(c_t),

    from ``h_0 = c_0 = 0``. ``W_ih`` is ``(features, 4·hidden)`` and ``W_hh``
    ``(hidden, 4·hidden)`` (PyTorch's ``weight_ih_l{k}`` and ``weight_hh_l{k}``
    transposed); all four parameters are drawn from U(±1/√hidden), PyTorch's default.

    The input projection ``x_t W_ih + b_ih + b_hh`` of all time steps is one flattened
    matmul outside the time recursion; the recursion (:func:`lstm_recurrence`) does only
    ``h_{t-1} W_hh`` and the elementwise cell update, with a hand-written backward pass.

    Args:
        features: input width.
        hidden: hidden (and cell) state width.
        dtype: computation dtype (``None``: the parameter dtype promoted with the input's).
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    >>> layer = LSTMLayer(3, 5, rngs=nnx.Rngs(0))
    >>> hs_TBH, h_BH = layer(jnp.ones((7, 2, 3)))
    >>> hs_TBH.shape, h_BH.shape, bool(jnp.array_equal(hs_TBH[-1], h_BH))
    ((7, 2, 5), (2, 5), True)
    """

    def __init__(
        self,
        features: int,
        hidden: int,
        *,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        init = uniform_init(1.0 / math.sqrt(hidden))
        self.features, self.hidden, self.dtype = features, hidden, dtype
        self.w_ih = nnx.Param(init(rngs.params(), (features, 4 * hidden), param_dtype))
        self.w_hh = nnx.Param(init(rngs.params(), (hidden, 4 * hidden), param_dtype))
        self.b_ih = nnx.Param(init(rngs.params(), (4 * hidden,), param_dtype))
        self.b_hh = nnx.Param(init(rngs.params(), (4 * hidden,), param_dtype))

    def __call__(self, x_TBD: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Run over a time-major sequence ``(T, B, features)``: returns every step's
        hidden state ``(T, B, hidden)`` and the last one ``(B, hidden)``."""
        hs_TBH, h_BH = self._run(x_TBD, keep_all=True)
        return hs_TBH, h_BH

    def last(self, x_TBD: jax.Array) -> jax.Array:
        """The last step's hidden state ``(B, hidden)`` alone (no stacked outputs)."""
        return self._run(x_TBD, keep_all=False)[1]

    def _run(self, x_TBD: jax.Array, *, keep_all: bool) -> tuple[jax.Array | None, jax.Array]:
        dtype = self.dtype or jnp.result_type(x_TBD, self.w_ih[...])
        w_ih_DG = self.w_ih[...].astype(dtype)
        w_hh_HG = self.w_hh[...].astype(dtype)
        b_G = (self.b_ih[...] + self.b_hh[...]).astype(dtype)
        T, B, D = x_TBD.shape
        H = self.hidden
        # all time steps' input projections in one (T·B, D) @ (D, 4H) matmul
        z_NG = x_TBD.astype(dtype).reshape(T * B, D) @ w_ih_DG + b_G[None, :]
        zx_TBG = z_NG.reshape(T, B, 4 * H)

        hs_TBH = lstm_recurrence(w_hh_HG, zx_TBG)
        return (hs_TBH if keep_all else None), hs_TBH[-1]


class LSTMClassifier(nnx.Module):
    """Embedding → ``layers`` stacked LSTM layers → linear head at the last time step.

    For tokens ``ids_BT`` with embedding ``E`` (``(vocab, embed)``), the first layer reads
    ``x_t = E[ids_t]``, each further layer the hidden states of the one below (see
    :class:`LSTMLayer`; zero initial states, batch first), and the output is the logits

        y = h^{(L)}_T W_out + b_out        (shape ``(B, outputs)``),

    the top layer's hidden state at the last step ``T`` only. The authors' model applies
    the head and a sigmoid at every position and keeps the last; these logits are the
    same before the sigmoid, which is left to the loss (a binary cross-entropy on logits
    is numerically stable where ``log σ`` of a saturated sigmoid is not).

    Initialisation as PyTorch: ``E ~ N(0, 1)`` (``nn.Embedding``), LSTM weights and
    biases U(±1/√hidden) (``nn.LSTM``), head U(±1/√hidden) (``nn.Linear``).

    Args:
        vocab_size: number of token ids.
        embed: embedding width (the paper: 64).
        hidden: LSTM hidden width (the paper: 256).
        layers: number of stacked LSTM layers (the paper: 2).
        outputs: number of logits (1 for a binary task).
        dtype: computation dtype (``None``: promoted from inputs and parameters).
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    >>> model = LSTMClassifier(100, embed=8, hidden=16, layers=2, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((4, 10), jnp.int32)).shape
    (4, 1)

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural
        Computation 9(8), 1735–1780.

        Lee, J., Kang, B. G., Kim, K., & Lee, K. M. (2024). Grokfast: Accelerated
        grokking by amplifying slow gradients. arXiv:2405.20233 (the IMDb experiment,
        ``main_imdb.py``).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        embed: int = 64,
        hidden: int = 256,
        layers: int = 2,
        outputs: int = 1,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        if min(vocab_size, embed, hidden, layers, outputs) < 1:
            raise ValueError(
                "vocab_size, embed, hidden, layers and outputs must be positive; got "
                f"{(vocab_size, embed, hidden, layers, outputs)}."
            )
        dtypes = {"dtype": dtype, "param_dtype": param_dtype}
        self.embedding = nnx.Embed(
            vocab_size, embed, embedding_init=nnx.initializers.normal(1.0), **dtypes, rngs=rngs
        )
        self.lstm = nnx.List(
            [
                LSTMLayer(embed if k == 0 else hidden, hidden, **dtypes, rngs=rngs)
                for k in range(layers)
            ]
        )
        bound = 1.0 / math.sqrt(hidden)
        self.head = nnx.Linear(
            hidden,
            outputs,
            kernel_init=uniform_init(bound),
            bias_init=uniform_init(bound),
            **dtypes,
            rngs=rngs,
        )

    def __call__(self, ids_BT: jax.Array) -> jax.Array:
        """Logits ``(B, outputs)`` of integer token ids ``(B, T)``."""
        # time-major throughout: the scans run over the leading axis and the flattened
        # (T·B, D) input projections need no transposes between layers
        x_TBD = self.embedding(ids_BT.T)
        for layer in self.lstm[:-1]:
            x_TBD, _ = layer(x_TBD)
        h_BH = self.lstm[-1].last(x_TBD)
        return self.head(h_BH)
