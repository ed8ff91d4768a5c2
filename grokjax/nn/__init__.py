"""Model modules: the Grokfast decoder, a plain MLP and rotary position embeddings."""

from grokjax.nn.mlp import MLP
from grokjax.nn.rope import apply_rope, rope_frequencies
from grokjax.nn.transformer import Decoder

__all__ = [
    "MLP",
    "Decoder",
    "apply_rope",
    "rope_frequencies",
]
