"""The Grokfast paper's non-algorithmic models (MNIST MLP, IMDb LSTM, QM9 NNConv net)
against straightforward float64 numpy references, their padding, init_scale and
initialisation, and their model kinds' validation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grokjax.errors import ConfigError
from grokjax.nn import GraphRegressor, LSTMClassifier, NNConv
from grokjax.nn.kinds import MODEL_KINDS, GraphModel, LSTMModel, MLPModel


def _params(model: nnx.Module) -> dict:
    """The model's parameters as a nested dict of float64 numpy arrays."""
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.tree.map(lambda a: np.asarray(a, np.float64), pure)


def _close(actual, desired, rtol=1e-5, atol=1e-5):
    desired = np.asarray(desired)
    scale = max(1.0, float(np.abs(desired).max()))
    np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol, atol * scale)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------- LSTM


def _lstm_reference(p: dict, ids_BT: np.ndarray) -> np.ndarray:
    """PyTorch's nn.LSTM equations, one sample and one time step at a time."""
    x_BTD = p["embedding"]["embedding"][ids_BT]
    B, T, _ = x_BTD.shape
    for k in range(len(p["lstm"])):
        layer = p["lstm"][k]
        H = layer["w_hh"].shape[0]
        out_BTH = np.zeros((B, T, H))
        for b in range(B):
            h, c = np.zeros(H), np.zeros(H)
            for t in range(T):
                z = x_BTD[b, t] @ layer["w_ih"] + layer["b_ih"] + h @ layer["w_hh"] + layer["b_hh"]
                i, f = _sigmoid(z[:H]), _sigmoid(z[H : 2 * H])
                g, o = np.tanh(z[2 * H : 3 * H]), _sigmoid(z[3 * H :])
                c = f * c + i * g
                h = o * np.tanh(c)
                out_BTH[b, t] = h
        x_BTD = out_BTH
    return x_BTD[:, -1] @ p["head"]["kernel"] + p["head"]["bias"]


@pytest.mark.parametrize("layers, outputs", [(2, 1), (1, 3)])
def test_lstm_matches_a_loop_over_time_steps(layers, outputs):
    model = LSTMClassifier(17, embed=5, hidden=6, layers=layers, outputs=outputs, rngs=nnx.Rngs(1))
    ids_BT = np.random.default_rng(0).integers(0, 17, size=(3, 9))
    logits = model(jnp.asarray(ids_BT, jnp.int32))
    assert logits.shape == (3, outputs) and logits.dtype == jnp.float32
    _close(logits, _lstm_reference(_params(model), ids_BT))


def test_lstm_matches_torch_nn_lstm():
    torch = pytest.importorskip("torch")
    model = LSTMClassifier(13, embed=4, hidden=5, layers=2, rngs=nnx.Rngs(2))
    p = _params(model)
    emb = torch.nn.Embedding(13, 4).double()
    lstm = torch.nn.LSTM(4, 5, num_layers=2, batch_first=True).double()
    fc = torch.nn.Linear(5, 1).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(p["embedding"]["embedding"]))
        for k in range(2):
            for name in ("w_ih", "w_hh"):  # torch stores (4H, in): ours transposed
                getattr(lstm, f"weight_{name[2:]}_l{k}").copy_(
                    torch.from_numpy(p["lstm"][k][name].T)
                )
            for name in ("b_ih", "b_hh"):
                getattr(lstm, f"bias_{name[2:]}_l{k}").copy_(torch.from_numpy(p["lstm"][k][name]))
        fc.weight.copy_(torch.from_numpy(p["head"]["kernel"].T))
        fc.bias.copy_(torch.from_numpy(p["head"]["bias"]))
        ids_BT = np.random.default_rng(3).integers(0, 13, size=(4, 11))
        out, _ = lstm(emb(torch.from_numpy(ids_BT)))  # zero initial state
        # the authors' head: fc (and sigmoid) at every position, the last one kept
        expected = fc(out)[:, -1].numpy()
    _close(model(jnp.asarray(ids_BT, jnp.int32)), expected)


def test_lstm_initialisation_is_pytorchs():
    hidden = 16
    model = LSTMClassifier(500, embed=64, hidden=hidden, layers=2, rngs=nnx.Rngs(0))
    p = _params(model)
    bound = 1 / math.sqrt(hidden)
    for k in range(2):
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            w = p["lstm"][k][name]
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound, (k, name)
    assert np.abs(p["head"]["kernel"]).max() <= bound
    assert np.abs(p["head"]["bias"]).max() <= bound
    emb = p["embedding"]["embedding"]  # N(0, 1), as nn.Embedding
    assert abs(emb.mean()) < 0.02 and abs(emb.std() - 1) < 0.02


# ---------------------------------------------------------------- graphs


def _random_graphs(rng, B=3, A=6, E=10, F=11, Fe=4, pad_nodes=0, pad_edges=0):
    """Padded batch; graph b has A - b real nodes, edges among them, the rest padding."""
    nodes = rng.normal(size=(B, A, F))
    node_mask = np.zeros((B, A))
    edges = np.zeros((B, E, 2), np.int32)
    edge_mask = np.zeros((B, E))
    for b in range(B):
        n = A - b
        node_mask[b, :n] = 1
        m = E - 2 * b
        edges[b, :m] = rng.integers(0, n, size=(m, 2))
        edge_mask[b, :m] = 1
    batch = {
        "nodes": nodes,
        "node_mask": node_mask,
        "edges": edges,
        "edge_features": rng.normal(size=(B, E, Fe)),
        "edge_mask": edge_mask,
    }
    return batch


def _nnconv_reference(p, x, edges, e, edge_mask):
    """out_i = x_i W_root + Σ_{j→i} x_j Θ(e_ji) + b, one edge at a time."""
    n_in, n_out = p["root"]["kernel"].shape
    out = x @ p["root"]["kernel"] + p["bias"]
    for k in range(edges.shape[0]):
        if edge_mask[k]:
            j, i = edges[k]
            h = np.maximum(e[k] @ p["edge_net1"]["kernel"] + p["edge_net1"]["bias"], 0)
            theta = (h @ p["edge_net2"]["kernel"] + p["edge_net2"]["bias"]).reshape(n_in, n_out)
            out[i] += x[j] @ theta
    return out


def _regressor_reference(p, g):
    out = []
    for b in range(g["nodes"].shape[0]):
        real = g["node_mask"][b] > 0
        x = g["nodes"][b] * real[:, None]
        for k in range(len(p["convs"])):
            args = g["edges"][b], g["edge_features"][b], g["edge_mask"][b]
            x = np.maximum(_nnconv_reference(p["convs"][k], x, *args), 0)
        pooled = x[real].sum(0)
        h = np.maximum(pooled @ p["fc"]["kernel"] + p["fc"]["bias"], 0)
        out.append(h @ p["out"]["kernel"] + p["out"]["bias"])
    return np.stack(out)


def _jnp(batch):
    return {k: jnp.asarray(v, jnp.int32 if k == "edges" else jnp.float32) for k, v in batch.items()}


def test_nnconv_matches_a_loop_over_edges():
    rng = np.random.default_rng(0)
    conv = NNConv(5, 3, edge_features=4, edge_hidden=7, rngs=nnx.Rngs(0))
    # PyG initialises the bias to zero; make it matter here
    conv.bias[...] = jnp.asarray(rng.normal(size=3), jnp.float32)
    g = _random_graphs(rng, F=5)
    out = conv(*(_jnp(g)[k] for k in ("nodes", "edges", "edge_features", "edge_mask")))
    assert out.shape == (3, 6, 3)
    p = _params(conv)
    for b in range(3):
        args = g["nodes"][b], g["edges"][b], g["edge_features"][b], g["edge_mask"][b]
        _close(out[b], _nnconv_reference(p, *args))


def test_graph_regressor_matches_the_reference_and_ignores_padding():
    rng = np.random.default_rng(1)
    model = GraphRegressor(rngs=nnx.Rngs(3))
    g = _random_graphs(rng)
    out = model(_jnp(g))
    assert out.shape == (3, 1)
    _close(out, _regressor_reference(_params(model), g))

    # more padding slots, holding garbage (NaN included): same output, same gradient
    padded = {k: v.copy() for k, v in g.items()}
    padded["nodes"] = np.concatenate([g["nodes"], np.full((3, 4, 11), np.nan)], 1)
    padded["node_mask"] = np.concatenate([g["node_mask"], np.zeros((3, 4))], 1)
    padded["nodes"][padded["node_mask"] == 0] = np.nan
    garbage_edges = rng.integers(0, 10, size=(3, 5, 2)).astype(np.int32)
    padded["edges"] = np.concatenate([g["edges"], garbage_edges], 1)
    padded["edge_features"] = np.concatenate([g["edge_features"], np.full((3, 5, 4), 1e30)], 1)
    padded["edge_features"][padded["edge_features"][..., 0] > 1e29, 1] = np.nan
    padded["edge_mask"] = np.concatenate([g["edge_mask"], np.zeros((3, 5))], 1)
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params, batch):
        return (nnx.merge(graphdef, params)(batch) ** 2).sum()

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grads = value_and_grad(params, _jnp(g))
    value_p, grads_p = value_and_grad(params, _jnp(padded))
    _close(value_p, value)
    for a, b in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads), strict=True):
        assert np.all(np.isfinite(a))
        _close(a, b)


def test_graph_initialisation_is_pyg_and_pytorchs():
    p = _params(GraphRegressor(rngs=nnx.Rngs(0)))
    fan_in = {"edge_net1": 4, "edge_net2": 32}
    for k, width in enumerate((11, 32)):
        conv = p["convs"][k]
        assert not conv["bias"].any()  # PyG: zeros
        assert np.abs(conv["root"]["kernel"]).max() <= 1 / math.sqrt(width)
        for name, n in fan_in.items():
            for leaf in conv[name].values():
                assert np.abs(leaf).max() <= 1 / math.sqrt(n)
    for name, n in (("fc", 16), ("out", 32)):
        for leaf in p[name].values():
            assert np.abs(leaf).max() <= 1 / math.sqrt(n)


# ---------------------------------------------------------------- kinds

_TASK = SimpleNamespace(
    input_width=12, num_classes=2, vocab_size=30, node_features=11, edge_features=4
)


def test_mlp_kind_with_init_scale_matches_numpy():
    kind = MLPModel(hidden=(8, 8), activation="relu", use_bias=True, init_scale=8.0)
    kind.validate()
    model = kind.build(_TASK, 0, "float32")
    p = _params(model)
    x = np.random.default_rng(0).normal(size=(5, 12))
    h = x
    for k in range(3):
        h = h @ p["layers"][k]["kernel"] + p["layers"][k]["bias"]
        h = np.maximum(h, 0) if k < 2 else h
    fn = kind.logits_fn(*nnx.split(model, nnx.Param)[:1])
    _close(fn(nnx.state(model, nnx.Param), jnp.asarray(x, jnp.float32)), h)
    for k, n in enumerate((12, 8, 8)):  # PyTorch's bounds, scaled
        assert np.abs(p["layers"][k]["kernel"]).max() <= 8.0 / math.sqrt(n)


@pytest.mark.parametrize(
    "kind",
    [
        MLPModel(hidden=(6,), use_bias=True, init_scale=6.0),
        LSTMModel(embed=4, hidden=5, layers=2, init_scale=6.0),
        GraphModel(widths=(8, 4), edge_hidden=6, readout=5, init_scale=6.0),
    ],
    ids=lambda k: k.kind,
)
def test_init_scale_multiplies_every_parameter_exactly(kind):
    kind.validate()
    base = type(kind)(**{**kind.__dict__, "init_scale": 1.0})
    scaled_p = nnx.state(kind.build(_TASK, 7, "float32"), nnx.Param)
    base_p = nnx.state(base.build(_TASK, 7, "float32"), nnx.Param)
    leaves, base_leaves = jax.tree.leaves(scaled_p), jax.tree.leaves(base_p)
    assert len(leaves) == len(base_leaves) > 0
    for a, b in zip(leaves, base_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b) * np.float32(6.0))


def test_kinds_build_and_give_logits():
    lstm = LSTMModel(embed=4, hidden=5, layers=1)
    model = lstm.build(_TASK, 0, "float32")
    graphdef, params = nnx.split(model, nnx.Param)
    ids = jnp.zeros((2, 7), jnp.int32)
    assert lstm.logits_fn(graphdef)(params, ids).shape == (2, 1)  # two classes: one logit
    three = lstm.build(SimpleNamespace(vocab_size=30, num_classes=3), 0, "float32")
    assert three(ids).shape == (2, 3)
    graph = GraphModel()
    model = graph.build(SimpleNamespace(), 0, "float32")  # QM9's widths by default
    assert model.convs[0].in_features == 11
    graphdef, params = nnx.split(model, nnx.Param)
    batch = _jnp(_random_graphs(np.random.default_rng(0)))
    assert jax.jit(graph.logits_fn(graphdef))(params, batch).shape == (3, 1)
    assert MODEL_KINDS["lstm"] is LSTMModel and MODEL_KINDS["nnconv"] is GraphModel


@pytest.mark.parametrize(
    "kind, message",
    [
        (MLPModel(init_scale=0.0), r"model\.init_scale = 0\.0: must be a finite number > 0"),
        (MLPModel(init_scale=-8.0), r"model\.init_scale = -8\.0"),
        (LSTMModel(hidden=0), r"model\.hidden = 0: must be a positive integer"),
        (LSTMModel(embed=0), r"model\.embed = 0"),
        (LSTMModel(layers=0), r"model\.layers = 0"),
        (LSTMModel(init_scale=float("inf")), r"model\.init_scale = inf"),
        (GraphModel(widths=()), r"model\.widths = \(\): must be a non-empty list"),
        (GraphModel(widths=(32, 0)), r"model\.widths = \(32, 0\)"),
        (GraphModel(edge_hidden=0), r"model\.edge_hidden = 0"),
        (GraphModel(readout=0), r"model\.readout = 0"),
        (GraphModel(init_scale=0), r"model\.init_scale = 0:"),
    ],
)
def test_kinds_name_the_bad_key(kind, message):
    with pytest.raises(ConfigError, match=message):
        kind.validate()


def test_lstm_recurrence_backward_equals_autodiff_through_the_plain_scan():
    """The hand-written backward pass against JAX's autodiff of a plain scan of the
    same recursion, for gradients reaching every hidden state."""
    from grokjax.nn.lstm import lstm_recurrence

    T, B, H = 9, 3, 4
    zx = jax.random.normal(jax.random.key(0), (T, B, 4 * H)) * 2
    w = jax.random.normal(jax.random.key(1), (H, 4 * H))
    probe = jax.random.normal(jax.random.key(2), (T, B, H))

    def plain(w, zx):
        def step(carry, z):
            h, c = carry
            z = z + h @ w
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        return jax.lax.scan(step, (jnp.zeros((B, H)), jnp.zeros((B, H))), zx)[1]

    def loss(fn):
        return lambda w, zx: jnp.sum(jnp.sin(fn(w, zx)) * probe)

    want = jax.grad(loss(plain), argnums=(0, 1))(w, zx)
    got = jax.grad(loss(lstm_recurrence), argnums=(0, 1))(w, zx)
    np.testing.assert_allclose(lstm_recurrence(w, zx), plain(w, zx), rtol=1e-6, atol=1e-6)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    # under vmap (members) too
    got_v = jax.vmap(jax.grad(loss(lstm_recurrence)), in_axes=(0, None))(jnp.stack([w, -w]), zx)
    want_v = jax.vmap(jax.grad(loss(plain)), in_axes=(0, None))(jnp.stack([w, -w]), zx)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5, atol=1e-5)
