"""Model kinds: an experiment's ``[model]`` table, one small frozen dataclass per kind.

Each kind validates itself, says which inputs it reads (``input_kinds``: token
sequences, vectors or a token stream), builds its Flax NNX module for a
:class:`~grokjax.data.kinds.Task`, and gives the pure ``logits_fn(params, x)`` the
trainer differentiates. A new model is a new kind in :data:`MODEL_KINDS`.

**Initialisation scale.** The kinds of the Grokfast paper's non-algorithmic experiments
(``mlp``: MNIST, ``lstm``: IMDb, ``nnconv``: QM9) take ``init_scale``, a constant that
multiplies every parameter after PyTorch's default initialisation (Lee et al. 2024 use
8, 6 and 3 to make these tasks grok; 1 leaves the default).

**Internal activations.** A kind that can also gives ``intermediates_fn(graphdef)``:
``fn(params, x) -> (logits, sites)``, the evaluation-mode forward pass over whole
sequences (every position, not only the answer's) with ``sites`` a flat dict of the
model's internal activations by site name (read with ``nnx.capture``; traceable, so a
probe may call it under ``jit``, ``vmap`` or ``lax.map``). The site names:

- transformers (``decoder``, ``hooked``), logits ``(B, T, V)``:
  ``"embedding"`` (tokens + positions, the first block's input, ``(B, T, D)``);
  for each block ``i = 0 … depth−1``: ``"block{i}/attention"`` (attention
  probabilities, ``(B, H, T, T)``), ``"block{i}/attention_output"`` (what attention
  adds, ``(B, T, D)``), ``"block{i}/mlp_hidden"`` (the MLP's activation,
  ``(B, T, F)``), ``"block{i}/residual"`` (the block's output, ``(B, T, D)``); and
  ``"final"`` (the unembedding's or head's input, after any final LayerNorm,
  ``(B, T, D)``).
- ``mlp``, logits ``(B, C)``: ``"hidden{i}"`` (hidden layer ``i``'s activation, after
  the nonlinearity, ``(B, n_i)``) for ``i = 0 … len(hidden)−1``.

:data:`TRANSFORMER_SITES` and :data:`MLP_SITES` hold these patterns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from grokjax.errors import check, choice
from grokjax.nn.rope import RopeScaling

__all__ = [
    "MLP_SITES",
    "MODEL_KINDS",
    "TRANSFORMER_SITES",
    "DecoderModel",
    "GraphModel",
    "HookedModel",
    "LSTMModel",
    "MLPModel",
    "MambaModel",
]

#: Site names of a transformer's ``intermediates_fn`` (``{i}``: block index).
TRANSFORMER_SITES = (
    "embedding",
    "block{i}/attention",
    "block{i}/attention_output",
    "block{i}/mlp_hidden",
    "block{i}/residual",
    "final",
)
#: Site names of an MLP's ``intermediates_fn`` (``{i}``: hidden layer index).
MLP_SITES = ("hidden{i}",)
# block site → the name the block sows it under
_BLOCK_SOWN = {
    "attention": "attention",
    "attention_output": "attention_output",
    "mlp_hidden": "mlp_hidden",
    "residual": "block_output",
}


def _rngs(seed) -> nnx.Rngs:
    return nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(seed), 0))


def _scaled(model: nnx.Module, init_scale: float) -> nnx.Module:
    """``model`` with every parameter multiplied by ``init_scale`` (in place)."""
    if init_scale != 1.0:
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda p: p * jnp.asarray(init_scale, p.dtype), params))
    return model


def _check_init_scale(path: str, init_scale: float) -> None:
    check(
        f"{path}.init_scale",
        isinstance(init_scale, int | float) and 0 < init_scale < float("inf"),
        "a finite number > 0",
        init_scale,
    )


def _check_positive(path: str, model: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(model, name)
        check(f"{path}.{name}", value >= 1, "a positive integer", value)


def _is_ids(x: jax.Array) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.integer))


def _decoder_inputs(x: jax.Array) -> dict[str, jax.Array]:
    """The decoder's keyword inputs of a batch: ``(B, T)`` tokens, or ``(B, T, 4)``
    grid sequences (channels token, row, column, segment; see
    :mod:`grokjax.data.arc_tokens`)."""
    if x.ndim == 2:
        return {"tokens_BT": x}
    channels = ("tokens_BT", "rows_BT", "cols_BT", "segments_BT")
    return {name: x[..., i] for i, name in enumerate(channels)}


def _transformer_intermediates(
    graphdef: Any, forward: Callable[[nnx.Module, jax.Array], jax.Array] | None = None
) -> Callable[..., tuple[jax.Array, dict]]:
    """``intermediates_fn`` of a transformer sowing ``"embedding"``, ``"final_hidden"``
    and per block the names of :class:`grokjax.nn.transformer.Block`; ``forward(model,
    x)`` calls the model (default ``model(x)``)."""
    forward = forward or (lambda model, x: model(x))

    def intermediates(params, x):
        model = nnx.merge(graphdef, params)
        logits, inter = nnx.capture(forward, nnx.Intermediate)(model, x)
        sites = {"embedding": inter["embedding"][0]}
        for i in range(len(model.blocks)):
            for site, sown in _BLOCK_SOWN.items():
                sites[f"block{i}/{site}"] = inter["blocks"][i][sown][0]
        sites["final"] = inter["final_hidden"][0]
        return logits, sites

    return intermediates


@dataclass(frozen=True)
class DecoderModel:
    """The Grokfast paper's decoder (:class:`grokjax.nn.Decoder`): ``depth`` pre-LN
    blocks of ``width`` with ``heads``, MLP ``mlp_ratio·width``, learned positions,
    RoPE by sequence index (``"rope"``) or by grid row and column (``"rope2d"``, ARC
    sequences); ``dropout`` in training steps (as torch's TransformerEncoderLayer, so
    the logged training metrics are those of the masked forward; evaluation is
    unmasked).

    ``rope_scaling`` extends 1-D RoPE to longer contexts in training and evaluation
    (a table ``{kind, factor, original_max_position}``, see
    :class:`grokjax.nn.RopeScaling`); ``eval_rope_scaling``, when set, replaces it in
    evaluation only, so a model trained at one length is evaluated at another with
    another scaling and no retraining. A task whose rows carry grid segments (ARC)
    adds a learned segment embedding."""

    kind: str = "decoder"
    depth: int = 2
    width: int = 128
    heads: int = 4
    mlp_ratio: int = 4
    activation: str = "gelu"
    positions: str = "learned"
    rope_base: float = 10000.0
    rope_scaling: RopeScaling | None = None
    eval_rope_scaling: RopeScaling | None = None
    dropout: float = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("tokens", "grid_sequence")
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
        choice(f"{path}.positions", self.positions, ["learned", "rope", "rope2d"])
        check(f"{path}.rope_base", self.rope_base > 1.0, "> 1", self.rope_base)
        for name in ("rope_scaling", "eval_rope_scaling"):
            check(
                f"{path}.{name}",
                getattr(self, name) is None or self.positions == "rope",
                "left out unless positions = 'rope' (2-D coordinates are not scaled)",
                getattr(self, name),
            )
        if self.positions == "rope2d":
            check(
                f"{path}.width",
                (self.width // self.heads) % 4 == 0,
                f"a multiple of 4·heads ({4 * self.heads}) for positions = 'rope2d' (half of "
                "each head rotates by row, half by column)",
                self.width,
            )
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
            rope_scaling=self.rope_scaling,
            num_segments=int(task.facts.get("num_segments", 0)),
            dropout=self.dropout,
            dtype=jnp.dtype(dtype),
            param_dtype=jnp.dtype(dtype),
            rngs=_rngs(seed),
        )

    def logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        """``(params, x, dropout_key=None) -> logits`` of the training steps: the last
        position's ``(B, V)`` when ``task`` grades one answer per row (then the rest
        of the last block is skipped), else every position's ``(B, T, V)``."""
        last_only = task is None or task.answer == "last"
        return lambda params, x, dropout_key=None: nnx.merge(graphdef, params)(
            **_decoder_inputs(x), last_only=last_only, dropout_key=dropout_key
        )

    def eval_logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        """As :meth:`logits_fn`, in evaluation: with ``eval_rope_scaling`` if set."""
        last_only = task is None or task.answer == "last"
        return lambda params, x: nnx.merge(graphdef, params)(
            **_decoder_inputs(x), last_only=last_only, rope_scaling=self._eval_scaling()
        )

    def intermediates_fn(self, graphdef: Any) -> Callable[..., tuple[jax.Array, dict]]:
        """``(logits (B, T, V), sites)``, evaluation mode (see the module docstring)."""
        scaling = self._eval_scaling()
        return _transformer_intermediates(
            graphdef, lambda model, x: model(**_decoder_inputs(x), rope_scaling=scaling)
        )

    def _eval_scaling(self) -> RopeScaling | str | None:
        from grokjax.nn.transformer import OWN

        return OWN if self.eval_rope_scaling is None else self.eval_rope_scaling


@dataclass(frozen=True)
class HookedModel:
    """Nanda et al.'s TransformerLens transformer (:class:`grokjax.nn.HookedTransformer`):
    ``depth`` blocks of ``width`` with ``heads``, MLP ``mlp_width``, optional pre-LN
    ``layer_norm`` and trainable zero-initialised ``biases`` (off: none at all, as
    Nanda et al.'s frozen zero biases); weights ~ N(0, ``init_std``²), default
    ``0.8/√width``. Outputs one logit per class (``num_classes``), not per token.
    The defaults are Nanda et al.'s model; seed 003's is ``width = 64, mlp_width = 256``."""

    kind: str = "hooked"
    depth: int = 1
    width: int = 128
    heads: int = 4
    mlp_width: int = 512
    activation: str = "relu"
    layer_norm: bool = False
    biases: bool = False
    init_std: float | None = None
    dropout: ClassVar[float] = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("tokens",)
    has_features: ClassVar[bool] = False

    def validate(self, path: str = "model") -> None:
        for name in ("depth", "width", "heads", "mlp_width"):
            value = getattr(self, name)
            check(f"{path}.{name}", value >= 1, "a positive integer", value)
        check(
            f"{path}.width",
            self.width % self.heads == 0,
            f"divisible by heads ({self.heads})",
            self.width,
        )
        choice(f"{path}.activation", self.activation, ["gelu", "relu", "silu"])
        if self.init_std is not None:
            check(f"{path}.init_std", self.init_std > 0, "> 0 (or left out)", self.init_std)

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import HookedTransformer

        return HookedTransformer(
            task.vocab_size,
            task.num_classes,
            seq_len=task.seq_len,
            depth=self.depth,
            width=self.width,
            heads=self.heads,
            mlp_width=self.mlp_width,
            activation=self.activation,
            layer_norm=self.layer_norm,
            biases=self.biases,
            init_std=self.init_std,
            dtype=jnp.dtype(dtype),
            param_dtype=jnp.dtype(dtype),
            rngs=_rngs(seed),
        )

    def logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        # the loss and accuracy read the answer position only
        return lambda params, x: nnx.merge(graphdef, params)(x, last_only=True)

    def intermediates_fn(self, graphdef: Any) -> Callable[..., tuple[jax.Array, dict]]:
        """``(logits (B, T, C), sites)`` (see the module docstring)."""
        return _transformer_intermediates(graphdef)


@dataclass(frozen=True)
class MLPModel:
    """A multilayer perceptron (:class:`grokjax.nn.MLP`) with ``hidden`` widths.
    Integer inputs are read as the positions of one-hot ones (a gather). ``init_scale``
    multiplies every parameter after initialisation (the Grokfast paper's MNIST model:
    ``hidden = [200, 200]``, ``activation = "relu"``, ``use_bias = true``,
    ``init_scale = 8``)."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "gelu"
    use_bias: bool = False
    init_scale: float = 1.0
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
        _check_init_scale(path, self.init_scale)

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import MLP

        sizes = [task.input_width, *self.hidden, task.num_classes]
        dtypes = {"dtype": jnp.dtype(dtype), "param_dtype": jnp.dtype(dtype)}
        model = MLP(
            sizes, activation=self.activation, use_bias=self.use_bias, **dtypes, rngs=_rngs(seed)
        )
        return _scaled(model, self.init_scale)

    def logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        return lambda params, x: nnx.merge(graphdef, params)(x, one_hot_ids=_is_ids(x))

    def features_fn(self, graphdef: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
        """``(logits, last hidden activation)``, read with ``nnx.capture``."""

        def features(params, x):
            model = nnx.merge(graphdef, params)
            logits, inter = nnx.capture(model, nnx.Intermediate)(x, one_hot_ids=_is_ids(x))
            return logits, inter[f"hidden_{len(model.layers) - 2}"][0]

        return features

    def intermediates_fn(self, graphdef: Any) -> Callable[..., tuple[jax.Array, dict]]:
        """``(logits (B, C), {"hidden{i}": activation})`` (see the module docstring)."""

        def intermediates(params, x):
            model = nnx.merge(graphdef, params)
            logits, inter = nnx.capture(model, nnx.Intermediate)(x, one_hot_ids=_is_ids(x))
            sites = {f"hidden{i}": inter[f"hidden_{i}"][0] for i in range(len(model.layers) - 1)}
            return logits, sites

        return intermediates


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

    def logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        return lambda params, x: nnx.merge(graphdef, params)(x)


@dataclass(frozen=True)
class LSTMModel:
    """The Grokfast paper's IMDb sentiment model (:class:`grokjax.nn.LSTMClassifier`):
    an ``embed``-wide embedding of ``task.vocab_size`` tokens, ``layers`` stacked LSTM
    layers of ``hidden`` (as ``torch.nn.LSTM``) and a linear head at the last time step.
    It gives logits, no sigmoid: one per row for a two-class task (``task.num_classes
    == 2``, the logit of class 1, for a binary cross-entropy on logits), else one per
    class. ``init_scale`` multiplies every parameter after PyTorch's default
    initialisation (the paper: 6). The defaults are the paper's model."""

    kind: str = "lstm"
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    init_scale: float = 1.0
    dropout: ClassVar[float] = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("tokens",)
    has_features: ClassVar[bool] = False

    def validate(self, path: str = "model") -> None:
        _check_positive(path, self, ("embed", "hidden", "layers"))
        _check_init_scale(path, self.init_scale)

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import LSTMClassifier

        outputs = 1 if task.num_classes == 2 else task.num_classes
        model = LSTMClassifier(
            task.vocab_size,
            embed=self.embed,
            hidden=self.hidden,
            layers=self.layers,
            outputs=outputs,
            dtype=jnp.dtype(dtype),
            param_dtype=jnp.dtype(dtype),
            rngs=_rngs(seed),
        )
        return _scaled(model, self.init_scale)

    def logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        """``(params, tokens (B, T)) -> logits (B, outputs)``."""
        return lambda params, x: nnx.merge(graphdef, params)(x)


@dataclass(frozen=True)
class GraphModel:
    """The Grokfast paper's QM9 network (:class:`grokjax.nn.GraphRegressor`): edge-
    conditioned convolutions (PyG's ``NNConv``) of ``widths`` with edge networks of
    ``edge_hidden``, an add-pool over each graph's nodes and a head ``Linear(widths[-1],
    readout) → ReLU → Linear(readout, 1)``; one prediction per graph, ``(B, 1)``. It
    reads padded graph batches (a dict, see :mod:`grokjax.nn.graph`); the node and edge
    feature widths are the task's ``node_features`` and ``edge_features`` (11 and 4,
    QM9's in PyG, where the task does not say). ``init_scale`` multiplies every
    parameter after initialisation (the paper: 3). The defaults are the paper's model."""

    kind: str = "nnconv"
    widths: tuple[int, ...] = (32, 16)
    edge_hidden: int = 32
    readout: int = 32
    init_scale: float = 1.0
    dropout: ClassVar[float] = 0.0
    input_kinds: ClassVar[tuple[str, ...]] = ("graph",)
    has_features: ClassVar[bool] = False

    def validate(self, path: str = "model") -> None:
        check(
            f"{path}.widths",
            len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
            "a non-empty list of positive widths",
            self.widths,
        )
        _check_positive(path, self, ("edge_hidden", "readout"))
        _check_init_scale(path, self.init_scale)

    def build(self, task, seed, dtype: str) -> nnx.Module:
        from grokjax.nn import GraphRegressor

        model = GraphRegressor(
            int(getattr(task, "node_features", 11)),
            int(getattr(task, "edge_features", 4)),
            widths=self.widths,
            edge_hidden=self.edge_hidden,
            readout=self.readout,
            dtype=jnp.dtype(dtype),
            param_dtype=jnp.dtype(dtype),
            rngs=_rngs(seed),
        )
        return _scaled(model, self.init_scale)

    def logits_fn(self, graphdef: Any, task=None) -> Callable[..., jax.Array]:
        """``(params, graph batch dict) -> predictions (B, 1)``."""
        return lambda params, x: nnx.merge(graphdef, params)(x)


MODEL_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (DecoderModel, HookedModel, MLPModel, MambaModel, LSTMModel, GraphModel)
}
