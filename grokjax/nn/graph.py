"""Edge-conditioned graph convolution (PyG's ``NNConv``) and the Grokfast paper's QM9 net.

Graphs come as padded dense batches, a dict of arrays (:data:`GRAPH_KEYS`):

- ``"nodes"``: ``(B, A, F)`` float node features, ``A`` node slots per graph;
- ``"node_mask"``: ``(B, A)`` float, 1 for a real node, 0 for padding;
- ``"edges"``: ``(B, E, 2)`` int32 ``[sender, receiver]`` indices into the ``A`` slots,
  one row per directed edge (an undirected bond is two rows);
- ``"edge_features"``: ``(B, E, F_e)`` float edge features;
- ``"edge_mask"``: ``(B, E)`` float, 1 for a real edge, 0 for padding.

Padding never reaches the output: padded nodes' features are zeroed on input and left out
of the pooling, padded edges send no message (their indices must lie in ``[0, A)``; the
values of padded slots are otherwise arbitrary).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from grokjax.nn.mlp import uniform_init

__all__ = ["GRAPH_KEYS", "GraphRegressor", "NNConv", "scatter_add"]

#: The keys of a padded graph batch (see the module docstring).
GRAPH_KEYS = ("nodes", "node_mask", "edges", "edge_features", "edge_mask")


def _linear(n_in: int, n_out: int, *, use_bias: bool = True, **kwargs) -> nnx.Linear:
    """``nn.Linear(n_in, n_out)`` with PyTorch's default U(±1/√n_in) initialisation."""
    bound = 1.0 / math.sqrt(n_in)
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=use_bias,
        kernel_init=uniform_init(bound),
        bias_init=uniform_init(bound),
        **kwargs,
    )


def scatter_add(values_BEC: jax.Array, receivers_BE: jax.Array, num_slots: int) -> jax.Array:
    """``out[b, a] = Σ_{e : receivers[b, e] = a} values[b, e]``, shape ``(B, num_slots, C)``.

    ``jax.ops.segment_sum`` over the flattened ``(B·E)`` rows with ids ``b·A + a``. On
    CPU this beat a one-hot ``(B, E, A)`` matrix contracted with the values (a batched
    matmul) for QM9-sized graphs: at ``A = 32, E = 64, C = 32``, forward and backward
    76 µs against 119 µs for ``B = 32`` and 216 µs against 550 µs for ``B = 128``
    (jitted, 2-core CPU). Receivers outside ``[0, num_slots)`` add nothing.

    >>> scatter_add(jnp.ones((1, 3, 2)), jnp.array([[0, 2, 2]]), 4)[0, :, 0]
    Array([1., 0., 2., 0.], dtype=float32)
    """
    B, E, C = values_BEC.shape
    valid_BE = (receivers_BE >= 0) & (receivers_BE < num_slots)
    ids_BE = jnp.where(valid_BE, receivers_BE + num_slots * jnp.arange(B)[:, None], B * num_slots)
    out_NC = jax.ops.segment_sum(
        values_BEC.reshape(B * E, C), ids_BE.reshape(B * E), num_segments=B * num_slots
    )
    return out_NC.reshape(B, num_slots, C)


class NNConv(nnx.Module):
    """Edge-conditioned convolution (Gilmer et al. 2017; PyG's ``NNConv``, aggregation
    ``"add"``, ``root_weight=True``, ``bias=True``):

        x'_i = x_i W_root + Σ_{edges j → i} x_j Θ(e_ji) + b,
        Θ(e) = reshape(ReLU(e V_1 + c_1) V_2 + c_2, (in, out)),

    where the edge network is ``Linear(edge_features, edge_hidden) → ReLU →
    Linear(edge_hidden, in·out)``. Padded edges (``edge_mask = 0``) send no message;
    the sum over edges is :func:`scatter_add`.

    Initialisation as PyG: the edge network's weights and biases and ``W_root`` (no
    bias) from PyTorch's default U(±1/√fan_in), ``b = 0``.

    Args:
        in_features: node feature width ``in``.
        out_features: output width ``out``.
        edge_features: edge feature width.
        edge_hidden: hidden width of the edge network.
        dtype: computation dtype (``None``: promoted from inputs and parameters).
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    >>> conv = NNConv(3, 5, edge_features=4, rngs=nnx.Rngs(0))
    >>> edges = jnp.array([[[0, 1], [1, 0]]], jnp.int32)
    >>> conv(jnp.ones((1, 2, 3)), edges, jnp.ones((1, 2, 4)), jnp.ones((1, 2))).shape
    (1, 2, 5)

    References:
        Gilmer, J., Schoenholz, S. S., Riley, P. F., Vinyals, O., & Dahl, G. E. (2017).
        Neural message passing for quantum chemistry. ICML.

        Fey, M. & Lenssen, J. E. (2019). Fast graph representation learning with PyTorch
        Geometric. ICLR Workshop on Representation Learning on Graphs and Manifolds.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        edge_features: int = 4,
        edge_hidden: int = 32,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        dtypes = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.in_features, self.out_features = in_features, out_features
        self.edge_net1 = _linear(edge_features, edge_hidden, **dtypes)
        self.edge_net2 = _linear(edge_hidden, in_features * out_features, **dtypes)
        self.root = _linear(in_features, out_features, use_bias=False, **dtypes)
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype))

    def __call__(
        self,
        x_BAI: jax.Array,
        edges_BE2: jax.Array,
        edge_features_BEF: jax.Array,
        edge_mask_BE: jax.Array,
    ) -> jax.Array:
        """Node outputs ``(B, A, out)`` of node features ``(B, A, in)`` and the edges.

        A padded edge's features and its sender's features are zeroed before use, so
        that even non-finite padding leaves the outputs and the gradients untouched.
        """
        B, E, _ = edges_BE2.shape
        A = x_BAI.shape[1]
        real_BE1 = edge_mask_BE[:, :, None] > 0
        e_BEF = jnp.where(real_BE1, edge_features_BEF, 0)
        theta_BEIO = self.edge_net2(jax.nn.relu(self.edge_net1(e_BEF)))
        theta_BEIO = theta_BEIO.reshape(B, E, self.in_features, self.out_features)
        senders_BE1 = edges_BE2[:, :, 0:1]
        x_src_BEI = jnp.take_along_axis(x_BAI, senders_BE1, axis=1, mode="clip")
        x_src_BEI = jnp.where(real_BE1, x_src_BEI, 0).astype(theta_BEIO.dtype)
        msg_BEO = jnp.einsum("bei,beio->beo", x_src_BEI, theta_BEIO)
        agg_BAO = scatter_add(msg_BEO, edges_BE2[:, :, 1], A)
        bias = self.bias[...]
        dtype = agg_BAO.dtype
        return self.root(x_BAI) + agg_BAO + bias.astype(dtype)[None, None, :]


class GraphRegressor(nnx.Module):
    """The Grokfast paper's QM9 network (the authors' ``ExampleNet``): two edge-conditioned
    convolutions, an add-pool over each graph's real nodes and a two-layer head,

        h_1 = ReLU(NNConv_1(x)),  h_2 = ReLU(NNConv_2(h_1)),
        g   = Σ_{real nodes i} h_2[i],
        y   = ReLU(g W_1 + c_1) W_2 + c_2        (shape ``(B, 1)``),

    with ``NNConv(node_features → widths[0])`` and ``NNConv(widths[0] → widths[1])``
    (:class:`NNConv`, edge networks of ``edge_hidden``), the head ``Linear(widths[-1],
    readout) → ReLU → Linear(readout, 1)``. The defaults are the paper's:
    ``11 → 32 → 16``, ``edge_hidden = 32``, ``readout = 32``. Takes a padded graph
    batch (a dict, see :mod:`grokjax.nn.graph`).

    Args:
        node_features: node feature width (QM9 in PyG: 11).
        edge_features: edge feature width (QM9 in PyG: 4).
        widths: output widths of the convolutions, in order.
        edge_hidden: hidden width of each convolution's edge network.
        readout: hidden width of the head.
        dtype: computation dtype (``None``: promoted from inputs and parameters).
        param_dtype: parameter dtype.
        rngs: random number streams; the ``params`` stream initialises the weights.

    >>> model = GraphRegressor(rngs=nnx.Rngs(0))
    >>> batch = {
    ...     "nodes": jnp.ones((2, 5, 11)), "node_mask": jnp.ones((2, 5)),
    ...     "edges": jnp.zeros((2, 8, 2), jnp.int32), "edge_features": jnp.ones((2, 8, 4)),
    ...     "edge_mask": jnp.ones((2, 8)),
    ... }
    >>> model(batch).shape
    (2, 1)

    References:
        Gilmer, J., Schoenholz, S. S., Riley, P. F., Vinyals, O., & Dahl, G. E. (2017).
        Neural message passing for quantum chemistry. ICML.

        Fey, M. & Lenssen, J. E. (2019). Fast graph representation learning with PyTorch
        Geometric. ICLR Workshop on Representation Learning on Graphs and Manifolds.

        Lee, J., Kang, B. G., Kim, K., & Lee, K. M. (2024). Grokfast: Accelerated
        grokking by amplifying slow gradients. arXiv:2405.20233 (the QM9 experiment,
        ``main_qm9.py``).
    """

    def __init__(
        self,
        node_features: int = 11,
        edge_features: int = 4,
        *,
        widths: tuple[int, ...] = (32, 16),
        edge_hidden: int = 32,
        readout: int = 32,
        dtype: DTypeLike | None = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        widths = tuple(int(w) for w in widths)
        if not widths or min(node_features, edge_features, edge_hidden, readout, *widths) < 1:
            raise ValueError(
                "node_features, edge_features, edge_hidden, readout and widths (at least "
                f"one) must be positive; got {(node_features, edge_features, edge_hidden)}, "
                f"{readout}, {widths}."
            )
        dtypes = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        sizes = (node_features, *widths)
        self.convs = nnx.List(
            [
                NNConv(n_in, n_out, edge_features=edge_features, edge_hidden=edge_hidden, **dtypes)
                for n_in, n_out in itertools.pairwise(sizes)
            ]
        )
        self.fc = _linear(widths[-1], readout, **dtypes)
        self.out = _linear(readout, 1, **dtypes)

    def __call__(self, graph: dict[str, jax.Array]) -> jax.Array:
        """Predictions ``(B, 1)`` of a padded graph batch (keys :data:`GRAPH_KEYS`)."""
        real_BA1 = graph["node_mask"][:, :, None] > 0
        h_BAC = jnp.where(real_BA1, graph["nodes"], 0)
        for conv in self.convs:
            h_BAC = jax.nn.relu(
                conv(h_BAC, graph["edges"], graph["edge_features"], graph["edge_mask"])
            )
        g_BC = jnp.where(real_BA1, h_BAC, 0).sum(axis=1)
        return self.out(jax.nn.relu(self.fc(g_BC)))
