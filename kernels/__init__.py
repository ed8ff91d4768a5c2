"""Triton kernels for grokjax, installed as ``grokjax.kernels``.

Raw ``@triton.jit`` kernels live here and are launched from JAX with jax-triton
(the ``cuda`` extra). Importing this package never imports triton: each kernel
module does so itself, so CPU-only installs can import ``grokjax`` freely.
"""
