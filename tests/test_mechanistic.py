"""The mechanistic probes inside the trainer: one compilation, the same values as the
functions computed outside on the same state, and float64 numpy references."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import grokjax.analysis as ga
from grokjax.analysis.mechanistic import probe_rows
from grokjax.train import ConfigError, apply_overrides, resolve, run_experiment
from grokjax.train.state import init_groups
from grokjax.train.step import member_probe_context

P = 11
# progress_measures at toy size: (a + b) mod 11, a width-16 hooked transformer
SMALL = [
    f"data.p={P}",
    "model.width=16",
    "model.heads=2",
    "model.mlp_width=32",
    "batch_size=1000",
    "checkpoint_every=0",
    "methods.0.seeds=[0, 1]",
]


def small(*overrides: str):
    return apply_overrides(resolve("progress_measures"), [*SMALL, *overrides])


def _rows(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _member(state, m):
    return jax.tree.map(lambda x: x[m], state)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """20 steps, evaluations at 10 and 20, every analysis probe on."""
    run_dir = tmp_path_factory.mktemp("mech") / "run"
    config = small("steps=20", "eval_every=10")
    task, groups, (initial,) = init_groups(config)
    result = run_experiment(config, run_dir=run_dir, progress=False)
    return config, task, groups[0], initial, result, run_dir


def _ctx(trained, m):
    _, task, group, _, result, _ = trained
    state = _member(result.final_states[0], m)
    return member_probe_context(group, task, state, step=jnp.asarray(20))


def test_every_probe_runs_in_the_one_compiled_program(trained):
    _, _, _, _, result, run_dir = trained
    assert result.compilations == 1
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [10, 10, 20, 20]
    names = set(rows[0])
    for prefix in ("progress/", "attn_entropy/", "act/", "grad/", "weights/"):
        assert any(n.startswith(prefix) for n in names), prefix
    with np.load(run_dir / "analysis" / "step_00000020.npz") as saved:
        assert saved["adamw/attention/block0"].shape == (2, 2, 3, 3)  # (M, H, T, T)
        assert saved["adamw/progress/embed_fourier_norms"].shape == (2, (P - 1) // 2 + 1)
        assert saved["adamw/progress/key_freqs"].shape == (2, 5)


@pytest.mark.parametrize(
    "probe",
    ["progress_measures", "attention_patterns", "activation_site_statistics", "weight_evolution"],
)
def test_recorded_values_equal_the_probe_computed_outside(trained, probe):
    run_dir = trained[-1]
    last = [r for r in _rows(run_dir) if r["step"] == 20]
    with np.load(run_dir / "analysis" / "step_00000020.npz") as saved:
        arrays = {k.removeprefix("adamw/"): saved[k] for k in saved.files}
    for m in range(2):
        out = getattr(ga, probe)(_ctx(trained, m))
        assert out
        for name, value in out.items():
            recorded = last[m][name] if np.ndim(value) == 0 else arrays[name][m]
            np.testing.assert_allclose(recorded, np.asarray(value), rtol=1e-5, atol=1e-6)


def _np_ce(logits, labels):
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def _np_fourier_norms(W, p):
    x = np.arange(p)
    rows = [np.full(p, 1 / np.sqrt(p))]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [np.cos(2 * np.pi * k * x / p), np.sin(2 * np.pi * k * x / p)]
    basis = np.stack([rows[0]] + [r * np.sqrt(2 / p) for r in rows[1:]])
    F = basis @ W[:p]
    sq = (F**2).sum(1)
    return np.sqrt(np.concatenate([[sq[0]], sq[1::2] + sq[2::2]]))


def _np_gini(x):
    x = np.sort(x)
    n = x.size
    return np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / (n * x.sum())


def test_progress_measures_against_numpy(trained):
    """The restricted/excluded losses, Gini coefficients and key frequencies of the
    final weights, recomputed in float64 numpy from the model's logit table."""
    _, task, group, *_ = trained
    for m in range(2):
        ctx = _ctx(trained, m)
        out = ga.progress_measures(ctx)
        params = ctx.params
        W_E = np.asarray(params["embed"]["W_E"], np.float64)
        W_U = np.asarray(params["unembed"]["W_U"], np.float64).T
        norms = _np_fourier_norms(W_E, P)
        freqs = sorted(range(1, (P - 1) // 2 + 1), key=lambda f: (-norms[f], f))[:5]
        np.testing.assert_array_equal(out["progress/key_freqs"], freqs)
        logits = np.asarray(group.logits_fn(params, task.inputs_N), np.float64)[:, :P]
        labels = np.asarray(task.labels_N)
        L = logits.reshape(P, P, P)
        a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
        proj = np.zeros_like(L)
        for w in freqs:
            for trig in (np.cos, np.sin):
                d = trig(2 * np.pi * w * (a + b) / P) / (P / np.sqrt(2))
                proj += d[:, :, None] * np.einsum("ab,abc->c", d, L)[None, None]
        restricted = proj + (L - proj).mean(axis=(0, 1), keepdims=True)
        excluded = L - proj
        train = np.asarray(ctx.train_idx)
        want = {
            "progress/restricted_loss_online": _np_ce(restricted.reshape(-1, P), labels).mean(),
            "progress/excluded_loss_online": _np_ce(excluded.reshape(-1, P), labels)[train].mean(),
            "progress/train_loss": _np_ce(logits, labels)[train].mean(),
            "progress/test_loss": _np_ce(logits, labels)[np.asarray(ctx.val_idx)].mean(),
            "progress/gini_embed": _np_gini(norms[1:]),
            "progress/gini_unembed": _np_gini(_np_fourier_norms(W_U, P)[1:]),
            "progress/key_fraction": (norms[freqs] ** 2).sum() / (norms**2).sum(),
            "progress/weight_norm_sq": sum(
                np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(params)
            ),
        }
        for name, value in want.items():
            np.testing.assert_allclose(float(out[name]), value, rtol=2e-4, err_msg=name)
        np.testing.assert_allclose(out["progress/embed_fourier_norms"], norms, rtol=1e-4)
        # given frequencies (grokjax analyze's final-checkpoint choice): other names
        fixed = ga.progress_measures(ctx, freqs=np.asarray(freqs))
        np.testing.assert_allclose(
            float(fixed["progress/restricted_loss"]),
            want["progress/restricted_loss_online"],
            rtol=2e-4,
        )
        assert "progress/restricted_loss_online" not in fixed


def test_attention_and_activation_statistics_against_numpy(trained):
    _, task, group, *_ = trained
    ctx = _ctx(trained, 1)
    idx = probe_rows(task.inputs_N.shape[0], 256)
    _, sites = group.intermediates_fn(ctx.params, task.inputs_N[idx])
    probs = np.asarray(sites["block0/attention"], np.float64)  # (B, H, T, T)
    out = ga.attention_patterns(ctx)
    np.testing.assert_allclose(out["attention/block0"], probs.mean(0), rtol=1e-5, atol=1e-7)
    plogp = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0)
    entropy = -plogp.sum(-1).mean(axis=(0, 2))  # (H,)
    for h in range(2):
        np.testing.assert_allclose(out[f"attn_entropy/block0/head{h}"], entropy[h], rtol=1e-5)
    stats = ga.activation_site_statistics(ctx)
    assert not any("attention/" in k for k in stats)
    hidden = np.asarray(sites["block0/mlp_hidden"], np.float64)
    np.testing.assert_allclose(stats["act/block0/mlp_hidden/mean"], hidden.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["act/block0/mlp_hidden/std"], hidden.std(), rtol=1e-4)
    np.testing.assert_allclose(
        stats["act/block0/mlp_hidden/zero_fraction"], np.mean(hidden == 0), rtol=1e-6
    )
    assert 0 < float(stats["act/block0/mlp_hidden/zero_fraction"]) < 1  # ReLU
    rms = np.sqrt(np.mean(np.asarray(sites["final"], np.float64) ** 2))
    np.testing.assert_allclose(stats["act/final/rms"], rms, rtol=1e-5)


def test_weight_evolution_against_the_initial_weights(trained):
    *_, initial, result, _ = trained
    for m in range(2):
        out = ga.weight_evolution(_ctx(trained, m))
        names = ga.leaf_names(_member(initial.params, m))
        pairs = zip(
            jax.tree.leaves(_member(initial.params, m)),
            jax.tree.leaves(_member(result.final_states[0].params, m)),
            strict=True,
        )
        for name, (w0, w) in zip(names, pairs, strict=True):
            w0, w = np.asarray(w0, np.float64).ravel(), np.asarray(w, np.float64).ravel()
            cos = w @ w0 / np.linalg.norm(w) / np.linalg.norm(w0)
            np.testing.assert_allclose(out[f"weights/{name}/cos_init"], cos, rtol=1e-5)
            np.testing.assert_allclose(out[f"weights/{name}/norm"], np.linalg.norm(w), rtol=1e-5)
            assert cos < 1 - 1e-6  # 20 AdamW steps moved every matrix


@pytest.mark.parametrize("member_axis", ["map", "vmap"])
def test_gradient_flow_equals_separately_computed_gradients(member_axis, tmp_path):
    """At step 1 the recorded gradient is the full-batch gradient at the initial
    weights, computed here with jax.grad of the cross entropy outside the trainer, and
    the update is AdamW's first step, −lr·(g/(|g| + eps) + wd·w₀)."""
    config = small("steps=1", "eval_every=1", f"member_axis='{member_axis}'")
    task, (group,), (initial,) = init_groups(config)
    result = run_experiment(config, run_dir=tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    for m in range(2):
        w0 = _member(initial.params, m)
        x, y = task.rows(initial.train_idx[m])

        def loss(params, x=x, y=y):
            logits = group.logits_fn(params, x).astype(jnp.float32)
            return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

        grads = jax.tree.leaves(jax.grad(loss)(w0))
        final = jax.tree.leaves(_member(result.final_states[0].params, m))
        for name, g, w_init, w in zip(
            ga.leaf_names(w0), grads, jax.tree.leaves(w0), final, strict=True
        ):
            g, w_init = np.asarray(g, np.float64), np.asarray(w_init, np.float64)
            u = -1e-3 * (g / (np.abs(g) + 1e-8) + 1.0 * w_init)
            row = rows[m]
            np.testing.assert_allclose(
                row[f"grad/{name}/grad_norm"], np.linalg.norm(g), rtol=1e-4, err_msg=name
            )
            np.testing.assert_allclose(
                row[f"grad/{name}/update_norm"], np.linalg.norm(u), rtol=1e-4
            )
            w_norm = np.linalg.norm(np.asarray(w, np.float64))
            np.testing.assert_allclose(row[f"grad/{name}/param_norm"], w_norm, rtol=1e-5)
            np.testing.assert_allclose(
                row[f"grad/{name}/update_ratio"], np.linalg.norm(u) / w_norm, rtol=1e-4
            )


def test_progress_measures_refuse_data_they_cannot_read():
    with pytest.raises(ConfigError, match="full table of x\\+y mod p"):
        run_experiment(small("data.op=x*y", "steps=1", "eval_every=1"), progress=False)
    with pytest.raises(ConfigError, match="y_min = 0"):
        run_experiment(small("data.y_min=1", "steps=1", "eval_every=1"), progress=False)


@pytest.mark.slow
def test_nanda_progress_measures_on_a_grokking_run(tmp_path):
    """One member of ``progress_measures`` trained through grokking, then analysed:
    Nanda et al.'s qualitative results hold (restricted loss with the final key
    frequencies below 0.1 well before the test loss, excluded loss rising between
    memorisation and cleanup, a few frequencies holding the embedding's Fourier norm,
    its Gini rising)."""
    from grokjax.analysis import grokking_phases
    from grokjax.analyze import analyze_run

    run_dir = tmp_path / "run"
    config = apply_overrides(
        resolve("progress_measures"),
        ["methods.0.seeds=[2]", "steps=2500", "evals_per_sync=1", "checkpoint_every=100"],
    )
    run_experiment(config, run_dir=run_dir, progress=False)
    analyze_run(run_dir, progress=False, figures=False)
    rows = _rows(run_dir)
    steps = np.array([r["step"] for r in rows])
    phases = grokking_phases(
        steps, np.array([r["train_acc"] for r in rows]), np.array([r["val_acc"] for r in rows])
    )
    assert phases.separate and phases.cleaned_up is not None, phases.describe()
    test_below = steps[np.array([r["progress/test_loss"] for r in rows]) < 0.1]
    checkpoints = [json.loads(x) for x in (run_dir / "analysis/checkpoints.jsonl").open()]
    ck_steps = np.array([r["step"] for r in checkpoints])
    restricted = np.array([r["progress/restricted_loss"] for r in checkpoints])
    excluded = np.array([r["progress/excluded_loss"] for r in checkpoints])
    assert test_below.size and (restricted < 0.1).any()
    lead = test_below[0] - ck_steps[restricted < 0.1][0]
    assert lead >= 0.1 * config.steps, (lead, ck_steps, restricted)
    at_m = excluded[np.argmin(np.abs(ck_steps - phases.memorised))]
    span = (ck_steps >= phases.memorised) & (ck_steps <= phases.cleaned_up)
    assert excluded[span].max() > at_m
    with np.load(run_dir / f"analysis/checkpoint_{ck_steps[-1]:08d}.npz") as final:
        norms = final["adamw/progress/embed_fourier_norms"][0].astype(np.float64)
    top = np.sort(norms[1:] ** 2)[::-1]
    assert top[:7].sum() / (norms**2).sum() >= 0.9
    gini = [r["progress/gini_embed"] for r in rows]
    assert gini[-1] > gini[0]
