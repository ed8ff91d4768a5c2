"""Data sets for grokking research: binary-operation tables mod p (Power et al., 2022)
and sparse parity (Barak et al., 2022)."""

from grokjax.data.modular import OPERATIONS, ModularArithmetic, modular_arithmetic
from grokjax.data.parity import SparseParity, sparse_parity

__all__ = ["OPERATIONS", "ModularArithmetic", "SparseParity", "modular_arithmetic", "sparse_parity"]
