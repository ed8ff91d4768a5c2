"""Model kinds: an experiment's ``[model]`` table, one small frozen dataclass per kind.

Each kind validates itself, says which inputs it reads (``input_kinds``: token
sequences, vectors or a token stream), builds its Flax NNX module for a
:class:`~grokjax.data.kinds.Task`, and gives the pure ``logits_fn(params, x)`` the
trainer differentiates. A new model is a new kind in :data:`MODEL_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from grokjax.errors import check, choice

__all__ = ["MODEL_KINDS", "DecoderModel", "MLPModel", "MambaModel"]


def _rngs(seed) -> nnx.Rngs:
    return nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(seed), 0))


def _is_ids(x: jax.Array) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.integer))


@dataclass(frozen=True)
class DecoderModel:
    """The Grokfast paper's decoder (:class:`grokjax.nn.Decoder`): ``depth`` pre-LN
    blocks of ``width`` with ``heads``, MLP ``mlp_ratio·width``, learned positions or
    RoPE; ``dropout`` in training steps (as torch's TransformerEncoderLayer, so the
    logged training metrics are those of the masked forward; evaluation is unmasked)."""

    kind: str = "decoder"
    depth: int = 2
    width: int = 128
    heads: int = 4
    mlp_ratio: int = 4
    activation: str = "gelu"
    positions: str = "learned"
    rope_base: float = 10000.0
    dropout: float = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("tokens",)
    has_features: ClassVar[bool] = False

    def validate(self, path: str = "model") -> None:
        for name in ("depth", "width", "heads", "mlp_ratio"):
            value = getattr(self, name)
            check(f"{path}.{name}", value >= 1, "a positive integer", value)
        check(
            f"{path}.width",
            self.width % self.heads == 0,
            f"divisible by heads ({self.heads})",
            self.width,
        )
        choice(f"{path}.activation", self.activation, ["gelu", "relu", "silu"])
        choice(f"{path}.positions", self.positions, ["learned", "rope"])
        check(f"{path}.rope_base", self.rope_base > 1.0, "> 1", self.rope_base)
        check(f"{path}.dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)", self.dropout)

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import Decoder

        return Decoder(
            task.vocab_size,
            seq_len=task.seq_len,
            depth=self.depth,
            width=self.width,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            activation=self.activation,
            positions=self.positions,
            rope_base=self.rope_base,
            dropout=self.dropout,
            dtype=jnp.dtype(dtype),
            param_dtype=jnp.dtype(dtype),
            rngs=_rngs(seed),
        )

    def logits_fn(self, graphdef: Any) -> Callable[..., jax.Array]:
        # The loss and accuracy use the answer position only: skip the rest of the last
        # block. ``dropout_key``: training steps of a model with dropout.
        return lambda params, x, dropout_key=None: nnx.merge(graphdef, params)(
            x, last_only=True, dropout_key=dropout_key
        )


@dataclass(frozen=True)
class MLPModel:
    """A multilayer perceptron (:class:`grokjax.nn.MLP`) with ``hidden`` widths.
    Integer inputs are read as the positions of one-hot ones (a gather)."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "gelu"
    use_bias: bool = False
    dropout: ClassVar[float] = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("vector",)
    has_features: ClassVar[bool] = True  # the last hidden layer (activation entropy)

    def validate(self, path: str = "model") -> None:
        choice(f"{path}.activation", self.activation, ["gelu", "relu", "silu"])
        check(
            f"{path}.hidden",
            len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
            "a non-empty list of positive widths",
            self.hidden,
        )

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import MLP

        sizes = [task.input_width, *self.hidden, task.num_classes]
        dtypes = {"dtype": jnp.dtype(dtype), "param_dtype": jnp.dtype(dtype)}
        return MLP(
            sizes, activation=self.activation, use_bias=self.use_bias, **dtypes, rngs=_rngs(seed)
        )

    def logits_fn(self, graphdef: Any) -> Callable[..., jax.Array]:
        return lambda params, x: nnx.merge(graphdef, params)(x, one_hot_ids=_is_ids(x))

    def features_fn(self, graphdef: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
        """``(logits, last hidden activation)``, read with ``nnx.capture``."""

        def features(params, x):
            model = nnx.merge(graphdef, params)
            logits, inter = nnx.capture(model, nnx.Intermediate)(x, one_hot_ids=_is_ids(x))
            return logits, inter[f"hidden_{len(model.layers) - 2}"][0]

        return features


@dataclass(frozen=True)
class MambaModel:
    """A Mamba language model (:class:`grokjax.nn.MambaLM`): ``depth`` blocks of
    d_model ``width``, ``activation`` (silu | swelu | swish_k) at both sites."""

    kind: str = "mamba"
    depth: int = 2
    width: int = 128
    activation: str = "silu"
    d_state: int = 16
    expand: int = 2
    dropout: ClassVar[float] = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("stream",)
    has_features: ClassVar[bool] = False

    def validate(self, path: str = "model") -> None:
        for name in ("depth", "width", "expand"):
            value = getattr(self, name)
            check(f"{path}.{name}", value >= 1, "a positive integer", value)
        choice(f"{path}.activation", self.activation, ["silu", "swelu", "swish_k"])
        check(
            f"{path}.d_state",
            self.d_state >= 1 and not self.d_state & (self.d_state - 1),
            "a power of two",
            self.d_state,
        )

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import MambaLM

        return MambaLM(
            task.vocab_size,
            self.width,
            self.depth,
            conv_activation=self.activation,
            gate_activation=self.activation,
            d_state=self.d_state,
            expand=self.expand,
            rngs=_rngs(seed),
        )

    def logits_fn(self, graphdef: Any) -> Callable[..., jax.Array]:
        return lambda params, x: nnx.merge(graphdef, params)(x)


MODEL_KINDS: dict[str, type] = {cls.kind: cls for cls in (DecoderModel, MLPModel, MambaModel)}
