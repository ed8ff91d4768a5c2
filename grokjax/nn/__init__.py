"""Model modules: the Grokfast decoder, the TransformerLens-style transformer of Nanda et
al., a plain MLP, rotary position embeddings and the learnable-shape activations SWELU
and swish_k, and Mamba blocks and language model."""

from grokjax.nn.activations import SWELU, ActivationShape, SwishK, swelu, swish_k
from grokjax.nn.hooked import HookedTransformer
from grokjax.nn.mamba import MambaBlock, MambaLM, RMSNorm
from grokjax.nn.mlp import MLP
from grokjax.nn.rope import apply_rope, rope_frequencies
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
    "SwishK",
    "apply_rope",
    "rope_frequencies",
    "swelu",
    "swish_k",
]
