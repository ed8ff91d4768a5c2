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

    def __call__(self, x_BI: jax.Array) -> jax.Array:
        """Map inputs ``(..., sizes[0])`` to outputs ``(..., sizes[-1])``."""
        act = get_activation(self.activation)
        h = x_BI
        for i, layer in enumerate(self.layers[:-1]):
            h = act(layer(h))
            sow_if_capturing(self, f"hidden_{i}", h)
        return self.layers[-1](h)
