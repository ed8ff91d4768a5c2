"""Model modules: the Grokfast decoder, the TransformerLens-style transformer of Nanda et
al., a plain MLP, rotary position embeddings (with context scaling, and 2-D), the
learnable-shape activations SWELU and swish_k, and Mamba blocks and language model."""

from grokjax.nn.activations import SWELU, ActivationShape, SwishK, swelu, swish_k
from grokjax.nn.hooked import HookedTransformer
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
    "HookedTransformer",
    "MambaBlock",
    "MambaLM",
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
