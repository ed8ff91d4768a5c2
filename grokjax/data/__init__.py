"""Data sets for grokking research: binary-operation tables mod p (Power et al., 2022)."""

from grokjax.data.modular import OPERATIONS, ModularArithmetic, modular_arithmetic

__all__ = ["OPERATIONS", "ModularArithmetic", "modular_arithmetic"]
