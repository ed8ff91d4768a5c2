"""A plain multilayer perceptron with PyTorch's default initialisation.

This is the model of Prieto et al. (2025, "Grokking at the edge of numerical
stability") for modular arithmetic: the two operands one-hot encoded and concatenated,
``2p → 200 → 200 → p``, ReLU, no biases. The helpers here (activation registry,
PyTorch-style uniform initialiser, capture-only ``sow``) are shared by
:mod:`grokjax.nn.transformer`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

__all__ = ["ACTIVATIONS", "MLP", "get_activation", "sow_if_capturing", "uniform_init"]


def _gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


#: Activation functions by name. ``"gelu"`` is the exact erf form, as ``torch.nn.GELU()``.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": _gelu_exact,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`).

    >>> get_activation("relu")(jnp.array([-1.0, 2.0]))
    Array([0., 2.], dtype=float32)
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"Unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}."
        ) from None


def uniform_init(bound: float) -> nnx.Initializer:
    """Initialiser drawing i.i.d. from U(−bound, bound).

    With ``bound = 1/sqrt(fan_in)`` this is PyTorch's default for ``nn.Linear`` weights
    (``kaiming_uniform_(a=√5)``) and biases.

    >>> w = uniform_init(0.5)(jax.random.key(0), (1000,))
    >>> bool(jnp.all(jnp.abs(w) <= 0.5)), bool(jnp.abs(w).max() > 0.49)
    (True, True)
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def sow_if_capturing(module: nnx.Module, name: str, value: Any) -> None:
    """``module.sow(nnx.Intermediate, name, value)``, but only under :func:`nnx.capture`.

    Since flax 0.12 intermediates are read with ``nnx.capture``; a ``sow`` outside it
    (deprecated) would store the value on the module itself, where a stateful
    ``nnx.jit`` training step would carry it as state (and the default tuple reduction
    would grow it on every call). Plain calls therefore record nothing, and under
    ``jax.jit`` the analysis values are dead code.
    """
    if hasattr(module, "__captures__"):
        module.sow(nnx.Intermediate, name, value)


class MLP(nnx.Module):
    """Multilayer perceptron ``sizes[0] → sizes[1] → … → sizes[-1]``.

    With layer weights ``W_l`` (shape ``(n_{l-1}, n_l)``), biases ``b_l`` and activation
    ``σ``, ``h_0 = x`` and

        h_l = σ(h_{l-1} W_l + b_l)   for hidden layers l = 1 … L−1,
        y   = h_{L-1} W_L + b_L      (no activation on the output).

    **One-hot inputs as indices.** With ``one_hot_ids=True`` an integer input ``ids_BK``
    stands for the one-hot row ``x = Σ_k e_{ids_k}`` of width ``sizes[0]`` (the
    positions of its ones). Then ``x W_1 = Σ_k W_1[ids_k]``: a gather of ``K`` rows
    replaces the ``(B, sizes[0])`` matmul, and a scatter-add its gradient
    (``benchmarks/onehot_gather.py`` measures the saving). For ``K ≤ 2`` the values
    equal the dense product's exactly (it adds only exact zeros); for more ones they
    agree to rounding (the summation order differs). An id outside ``[0, sizes[0])``
    gives NaN. On GPUs the scatter-add may use atomics, so gradients can differ in the
    last bits between runs unless XLA's deterministic ops are requested
    (``--xla_gpu_deterministic_ops=true``).

    Weights (and biases, if ``use_bias``) are drawn from U(±1/√n_{l-1}), PyTorch's
    ``nn.Linear`` default. Each hidden activation ``h_l`` (after ``σ``) is sown as
    ``"hidden_{l-1}"`` (read it with ``nnx.capture(model, nnx.Intermediate)``).

    Args:
        sizes: layer widths, input first and output last (at least two).
        activation: one of ``"gelu"`` (exact), ``"relu"``, ``"silu"``.
        use_bias: whether the layers have biases.
        dtype: computation dtype (``None``: promoted from inputs and parameters).
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    Prieto et al.'s model for p = 113:

    >>> model = MLP([226, 200, 200, 113], rngs=nnx.Rngs(0))
    >>> model(jnp.ones((8, 226))).shape
    (8, 113)
    >>> _, inter = nnx.capture(model, nnx.Intermediate)(jnp.ones((8, 226)))
    >>> inter["hidden_1"][0].shape
    (8, 200)

    The indices of the ones give the same logits as the one-hot rows:

    >>> ids_B2 = jnp.array([[0, 113 + 5], [7, 113 + 112]])
    >>> x_B226 = jax.nn.one_hot(ids_B2, 226).sum(1)
    >>> bool(jnp.array_equal(model(ids_B2, one_hot_ids=True), model(x_B226)))
    True
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: str = "relu",
        use_bias: bool = False,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output width, got {sizes}.")
        get_activation(activation)  # fail early on an unknown name
        self.activation = activation
        self.sizes = sizes
        self.layers = nnx.List(
            [
                nnx.Linear(
                    n_in,
                    n_out,
                    use_bias=use_bias,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    kernel_init=uniform_init(1.0 / math.sqrt(n_in)),
                    bias_init=uniform_init(1.0 / math.sqrt(n_in)),
                    rngs=rngs,
                )
                for n_in, n_out in itertools.pairwise(sizes)
            ]
        )

    def __call__(self, x_BI: jax.Array, *, one_hot_ids: bool = False) -> jax.Array:
        """Map inputs ``(..., sizes[0])`` to outputs ``(..., sizes[-1])``.

        With ``one_hot_ids=True`` the input is integer ``(..., K)``: the positions of
        the ones of one-hot rows (see the class docstring).
        """
        if one_hot_ids and not jnp.issubdtype(x_BI.dtype, jnp.integer):
            raise TypeError(
                f"one_hot_ids=True reads integer positions of ones; got {x_BI.dtype} inputs."
            )
        act = get_activation(self.activation)
        first = self._gather_first_layer if one_hot_ids else self.layers[0]
        h = x_BI
        for i, layer in enumerate(self.layers[:-1]):
            h = act(first(h) if i == 0 else layer(h))
            sow_if_capturing(self, f"hidden_{i}", h)
        return first(h) if len(self.layers) == 1 else self.layers[-1](h)

    def _gather_first_layer(self, ids: jax.Array) -> jax.Array:
        """``onehot(ids) W_1 + b_1`` as ``Σ_k W_1[ids_k] + b_1``."""
        layer = self.layers[0]
        kernel = layer.kernel[...]
        bias = layer.bias[...] if layer.bias is not None else None
        kernel, bias = layer.promote_dtype((kernel, bias), dtype=layer.dtype)
        # mode="fill" turns ids >= n into NaN rows; negative ids would wrap, so move them there
        ids = jnp.where(ids < 0, kernel.shape[0], ids)
        h = jnp.take(kernel, ids, axis=0, mode="fill").sum(axis=-2)
        return h if bias is None else h + jax.lax.broadcast_to_rank(bias, h.ndim)
