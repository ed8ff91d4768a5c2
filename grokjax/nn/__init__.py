"""Model modules: the Grokfast decoder, the TransformerLens-style transformer of Nanda et
al., a plain MLP, rotary position embeddings (with context scaling, and 2-D), the
learnable-shape activations SWELU and swish_k, Mamba blocks and language model, and the
Grokfast paper's LSTM sentiment classifier and edge-conditioned graph network (QM9)."""

from grokjax.nn.activations import SWELU, ActivationShape, SwishK, swelu, swish_k
from grokjax.nn.graph import GraphRegressor, NNConv
from grokjax.nn.hooked import HookedTransformer
from grokjax.nn.lstm import LSTMClassifier, LSTMLayer
from grokjax.nn.mamba import MambaBlock, MambaLM, RMSNorm
from grokjax.nn.mlp import MLP
from grokjax.nn.rope import (
    RopeScaling,
    apply_rope,
    apply_rope_2d,
    rope_attention_scale,
    rope_frequencies,
    rope_scaling_from_config,
)
from grokjax.nn.transformer import Decoder

__all__ = [
    "MLP",
    "SWELU",
    "ActivationShape",
    "Decoder",
    "GraphRegressor",
    "HookedTransformer",
    "LSTMClassifier",
    "LSTMLayer",
    "MambaBlock",
    "MambaLM",
    "NNConv",
    "RMSNorm",
    "RopeScaling",
    "SwishK",
    "apply_rope",
    "apply_rope_2d",
    "rope_attention_scale",
    "rope_frequencies",
    "rope_scaling_from_config",
    "swelu",
    "swish_k",
]
