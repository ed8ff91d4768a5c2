"""Data sets for grokking research: binary-operation tables mod p (Power et al., 2022),
sparse parity (Barak et al., 2022), and the Surge-Collapse sets (Gaussian inputs with
random labels, next-byte windows of offline text), and streaming SlimPajama-layout text
for language models."""

from grokjax.data.modular import OPERATIONS, ModularArithmetic, modular_arithmetic
from grokjax.data.parity import SparseParity, sparse_parity
from grokjax.data.synthetic import (
    ByteWindows,
    GaussianClassification,
    byte_windows,
    gaussian_classification,
    offline_text,
)
from grokjax.data.text import (
    ByteTokenizer,
    MalformedRecord,
    PackedStream,
    ShardReader,
    gpt2_tokenizer,
    write_shard,
)

__all__ = [
    "OPERATIONS",
    "ByteTokenizer",
    "ByteWindows",
    "GaussianClassification",
    "MalformedRecord",
    "ModularArithmetic",
    "PackedStream",
    "ShardReader",
    "SparseParity",
    "byte_windows",
    "gaussian_classification",
    "gpt2_tokenizer",
    "modular_arithmetic",
    "offline_text",
    "sparse_parity",
    "write_shard",
]
