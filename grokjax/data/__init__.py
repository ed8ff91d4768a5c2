"""Data sets for grokking research: binary-operation tables mod p (Power et al., 2022),
sparse parity (Barak et al., 2022), and the Surge-Collapse sets (Gaussian inputs with
random labels, next-byte windows of offline text)."""

from grokjax.data.modular import OPERATIONS, ModularArithmetic, modular_arithmetic
from grokjax.data.parity import SparseParity, sparse_parity
from grokjax.data.synthetic import (
    ByteWindows,
    GaussianClassification,
    byte_windows,
    gaussian_classification,
    offline_text,
)

__all__ = [
    "OPERATIONS",
    "ByteWindows",
    "GaussianClassification",
    "ModularArithmetic",
    "SparseParity",
    "byte_windows",
    "gaussian_classification",
    "modular_arithmetic",
    "offline_text",
    "sparse_parity",
]
