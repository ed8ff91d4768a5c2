"""The analysis figures and the report's analysis section, on a run folder built by hand:
2 methods × 2 members × 12 evaluations with planted grokking phases, the probes'
arrays in ``analysis/step_*.npz`` and, for one method, ``grokjax analyze``'s
``analysis/checkpoints.jsonl`` and ``checkpoint_*.npz``."""

from __future__ import annotations

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from grokjax.viz import (
    analysis_section,
    plot_activation_statistics,
    plot_attention,
    plot_fourier_spectrum,
    plot_gradient_flow,
    plot_progress_measures,
    write_analysis_figures,
    write_figures,
    write_report,
)
from grokjax.viz.analysis import member_phases
from grokjax.viz.records import load_run

STEPS = np.arange(0, 1200, 100)  # 12 evaluations
CKPT_STEPS = np.array([0, 200, 400, 600, 800, 1000, 1100])
P, K, HEADS, T = 13, 6, 4, 3
SEEDS = {"adamw": [0, 1], "grokfast": [5, 6]}
# planted evaluation indices: train acc crosses 0.99 at M, val acc 0.95 at C (None:
# never), the online excluded loss peaks at `peak`
PLAN = {
    ("adamw", 0): {"M": 3, "C": 8, "peak": 5},
    ("adamw", 1): {"M": 4, "C": 4, "peak": 6},  # no separate memorisation
    ("grokfast", 0): {"M": 2, "C": 9, "peak": 7},
    ("grokfast", 1): {"M": 3, "C": None, "peak": 5},  # never cleaned up
}
CKPT_PEAK = {0: 600, 1: 800}  # adamw's Nanda excluded loss peaks here (checkpoint steps)
LEAVES = ("embed/W_E", "blocks/0/attn/W_Q", "unembed/W_U")
SITES = ("embedding", "block0/mlp_hidden", "final")
STEP_FREQS = {
    "adamw": [[6, 1, 2, 3, 4], [2, 3, 4, 5, 6]],
    "grokfast": [[4, 2, 6, 1, 3], [1, 2, 3, 4, 5]],
}
CKPT_FREQS = [[1, 2, 3, 5, 6], [5, 4, 3, 2, 1]]


def _curve(method: str, member: int) -> dict[str, np.ndarray]:
    plan, i = PLAN[method, member], np.arange(STEPS.size)
    rng = np.random.default_rng(hash((method, member)) % 2**32)
    c = plan["C"] if plan["C"] is not None else STEPS.size
    return {
        "train_acc": np.where(i >= plan["M"], 1.0, 0.5),
        "val_acc": np.where(i >= c, 0.97, 0.1),
        "train_loss": 0.01 + np.exp(-0.7 * i) + 0.002 * rng.random(STEPS.size),
        "val_loss": np.where(i >= c, 0.05, 3.0) + 0.1 * rng.random(STEPS.size),
        "excluded": 1.0 + 2.0 * np.exp(-((i - plan["peak"]) ** 2)),
    }


def _rows() -> list[dict]:
    rows = []
    for e, step in enumerate(STEPS):
        for g, method in enumerate(SEEDS):
            for m, seed in enumerate(SEEDS[method]):
                c = _curve(method, m)
                row = {"step": int(step), "method": method, "group": g, "member": m}
                row["seed"] = seed
                for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                    row[key] = float(c[key][e])
                scale = 1 + e + 10 * g + 100 * m  # distinct per method, member and step
                row |= {
                    "progress/train_loss": float(c["train_loss"][e]),
                    "progress/test_loss": float(c["val_loss"][e]),
                    "progress/restricted_loss_online": 0.5 / scale,
                    "progress/excluded_loss_online": float(c["excluded"][e]),
                    "progress/gini_embed": 0.05 * e + 0.01 * m,
                    "progress/gini_unembed": 0.04 * e + 0.02 * m,
                    "progress/key_fraction": 0.07 * e + 0.001 * m,
                    "progress/weight_norm_sq": 100.0 / scale,
                    "weights/cos_init": 1.0 - 0.05 * e,
                }
                for j, leaf in enumerate(LEAVES):
                    for k, stat in enumerate(("grad_norm", "update_norm", "param_norm")):
                        row[f"grad/{leaf}/{stat}"] = float(scale * (j + 1) * (k + 1))
                    row[f"grad/{leaf}/update_ratio"] = 1e-3 * scale * (j + 1)
                if method == "adamw":
                    for j, site in enumerate(SITES):
                        for k, stat in enumerate(("mean", "std", "zero_fraction", "rms")):
                            row[f"act/{site}/{stat}"] = 0.01 * scale * (j + 1) + 0.1 * k
                    for h in range(HEADS):
                        row[f"attn_entropy/block0/head{h}"] = 1.0 - 0.01 * e * (h + 1)
                rows.append(row)
    return rows


def _attention(step_index: int) -> np.ndarray:
    """(M, H, T, T) row-stochastic, causal."""
    rng = np.random.default_rng(step_index)
    a = rng.random((2, HEADS, T, T)) * np.tril(np.ones((T, T)))
    return a / a.sum(-1, keepdims=True)


def _norms(method: str, step_index: int) -> np.ndarray:
    return np.random.default_rng(1000 + step_index + len(method)).random((2, K + 1))


def _build(root: pathlib.Path, *, probes: bool = True, checkpoints: bool = True) -> pathlib.Path:
    run = root / "run"
    (run / "analysis").mkdir(parents=True)
    config = {
        "name": "synthetic_progress",
        "description": "hand-built",
        "steps": 1100,
        "batch_size": 512,
        "sampling": "full",
        "train_threshold": 0.99,
        "val_threshold": 0.95,
        "data": {
            "kind": "modular",
            "op": "x+y",
            "p": P,
            "train_fraction": 0.3,
            "encoding": "tokens_no_op",
        },
        "model": {"kind": "hooked", "depth": 1, "width": 16, "heads": HEADS, "mlp_width": 32},
        "methods": [
            {"label": m, "seeds": s, "optimizer": [{"transform": "optax.adamw"}]}
            for m, s in SEEDS.items()
        ],
        "probes": [{"probe": "grokjax.analysis.progress_measures"}] if probes else [],
    }
    (run / "config.json").write_text(json.dumps(config))
    rows = _rows()
    if not probes:
        keep = ("step", "method", "group", "member", "seed")
        keep += ("train_loss", "train_acc", "val_loss", "val_acc")
        rows = [{k: r[k] for k in keep} for r in rows]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not probes:
        return run
    for e, step in enumerate(STEPS):
        arrays = {"adamw/attention/block0": _attention(e)}
        for method in SEEDS:
            arrays[f"{method}/progress/embed_fourier_norms"] = _norms(method, e)
            freqs = STEP_FREQS[method] if e == STEPS.size - 1 else [[1, 2, 3, 4, 5]] * 2
            arrays[f"{method}/progress/key_freqs"] = np.array(freqs, np.int32)
        np.savez(run / "analysis" / f"step_{step:08d}.npz", **arrays)
    if checkpoints:
        lines = []
        for step in CKPT_STEPS:
            for m, seed in enumerate(SEEDS["adamw"]):
                excluded = 1.0 + (2.0 if step == CKPT_PEAK[m] else 0.1 * step / 1000)
                row = {"step": int(step), "method": "adamw", "group": 0, "member": m}
                row |= {"seed": seed, "progress/restricted_loss": 0.3 / (1 + step / 100)}
                row |= {"progress/excluded_loss": excluded, "progress/gini_embed": 0.5}
                lines.append(json.dumps(row) + "\n")
            np.savez(
                run / "analysis" / f"checkpoint_{step:08d}.npz",
                **{"adamw/progress/key_freqs": np.array(CKPT_FREQS, np.int32)},
            )
        (run / "analysis" / "checkpoints.jsonl").write_text("".join(lines))
    return run


@pytest.fixture
def run(tmp_path):
    return _build(tmp_path)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _metric(method: str, member: int, key: str) -> np.ndarray:
    return np.array([r[key] for r in _rows() if r["method"] == method and r["member"] == member])


def test_phases_follow_the_planted_crossings_and_nandas_excluded_loss(run):
    adamw = member_phases(run, "adamw")
    assert [(p.memorised, p.circuit, p.cleaned_up, p.separate) for p in adamw] == [
        (300, 600, 800, True),  # circuit from checkpoints.jsonl (600), not online (500)
        (400, None, 400, False),
    ]
    grokfast = member_phases(run, "grokfast")
    assert [(p.memorised, p.circuit, p.cleaned_up, p.separate) for p in grokfast] == [
        (200, 700, 900, True),  # online excluded loss: no checkpoints for this method
        (300, None, None, True),
    ]
    # without analyze's file the online excluded loss decides
    (run / "analysis" / "checkpoints.jsonl").unlink()
    assert member_phases(run, "adamw")[0].circuit == 500


def test_attention_heatmaps_show_the_saved_means_at_the_phase_steps(run):
    fig = plot_attention(run, "adamw", member=0)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 5 * HEADS  # rows: first, M, midway, C, last; a column per head
    assert len(fig.axes) == 5 * HEADS + 1  # and a colour bar
    rows = [0, 300, 500, 800, 1100]  # (300 + 800) / 2 = 550: the earlier of 500 and 600
    for r, step in enumerate(rows):
        saved = _attention(int(step // 100))
        for h in range(HEADS):
            np.testing.assert_array_equal(axes[r * HEADS + h].images[0].get_array(), saved[0, h])
        assert f"step {step}" in axes[r * HEADS].get_ylabel()
    assert axes[0].get_xlabel() == "" and axes[-1].get_xlabel() == "key position"
    # member 1 has no separate memorisation: five evenly spaced steps instead
    fig = plot_attention(run, "adamw", member=1)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.images][::HEADS]
    assert [lab.split("\n")[0] for lab in labels] == [f"step {s}" for s in (0, 300, 600, 800, 1100)]
    explicit = plot_attention(run, "adamw", member=1, steps=[120, 1000])
    images = [ax for ax in explicit.axes if ax.images]
    assert len(images) == 2 * HEADS
    np.testing.assert_array_equal(images[HEADS + 1].images[0].get_array(), _attention(10)[1, 1])
    assert plot_attention(run, "grokfast") is None  # no attention arrays saved
    with pytest.raises(ValueError, match="no method 'sgd'"):
        plot_attention(run, "sgd")


def test_fourier_spectrum_is_frequency_by_step_per_member(run):
    fig = plot_fourier_spectrum(run, "adamw")
    panels = [ax for ax in fig.axes if ax.collections and ax.get_ylabel() == "frequency k"]
    assert len(panels) == 2
    norms = np.stack([_norms("adamw", e) for e in range(STEPS.size)])  # (S, M, K+1)
    for m, ax in enumerate(panels):
        mesh = ax.collections[0]
        np.testing.assert_allclose(mesh.get_array(), norms[:, m, 1:].T)  # (K, S)
        marks = [c for c in ax.collections if c.get_offsets().shape[0] == 5]
        assert sorted(marks[0].get_offsets()[:, 1].tolist()) == sorted(CKPT_FREQS[m])
        assert "final checkpoint" in ax.get_title()
    grokfast = plot_fourier_spectrum(run, "grokfast")
    assert "key frequencies 1, 2, 3, 4, 6 (last evaluation" in grokfast.axes[0].get_title()


def test_progress_measures_panels_hold_the_metrics(run):
    fig = plot_progress_measures(run, "adamw")
    a, b, c, d = fig.axes
    assert a.get_yscale() == "log" and b.get_yscale() == "log"
    for ax, keys in ((a, ("progress/train_loss", "progress/test_loss")),
                     (c, ("progress/gini_embed", "progress/gini_unembed")),
                     (d, ("progress/weight_norm_sq",))):  # fmt: skip
        assert len(ax.lines) == 2 * len(keys)  # a thin line per member
        for j, key in enumerate(keys):
            for m in range(2):
                line = ax.lines[2 * j + m]
                np.testing.assert_array_equal(line.get_xdata(), STEPS)
                np.testing.assert_allclose(line.get_ydata(), _metric("adamw", m, key))
    # (b): Nanda's losses from checkpoints.jsonl at the checkpoint steps, labelled so
    assert len(b.lines) == 4
    np.testing.assert_array_equal(b.lines[0].get_xdata(), CKPT_STEPS)
    np.testing.assert_allclose(b.lines[0].get_ydata(), 0.3 / (1 + CKPT_STEPS / 100))
    labels = b.get_legend_handles_labels()[1]
    assert all("Nanda" in lab for lab in labels), labels
    # the phase ends: vertical lines at M, circuit and C of each member
    xs = sorted(x for col in a.collections for x in col.get_segments() for x in {x[0, 0]})
    assert xs == [300, 400, 400, 600, 800]
    # grokfast has no checkpoint analysis: the online losses from metrics.jsonl
    b = plot_progress_measures(run, "grokfast").axes[1]
    np.testing.assert_array_equal(b.lines[2].get_xdata(), STEPS)
    np.testing.assert_allclose(
        b.lines[2].get_ydata(), _metric("grokfast", 0, "progress/excluded_loss_online")
    )
    assert all("online (current key frequencies)" in s for s in b.get_legend_handles_labels()[1])


def test_gradient_flow_and_activation_statistics_are_member_medians_per_name(run):
    fig = plot_gradient_flow(run, "grokfast")
    assert len(fig.axes) == 2
    for ax, stat in zip(fig.axes, ("grad_norm", "update_ratio"), strict=True):
        assert ax.get_yscale() == "log"
        assert sorted(line.get_label() for line in ax.lines) == sorted(LEAVES)
        for line in ax.lines:
            key = f"grad/{line.get_label()}/{stat}"
            median = np.median([_metric("grokfast", m, key) for m in range(2)], axis=0)
            np.testing.assert_allclose(line.get_ydata(), median)
    fig = plot_activation_statistics(run, "adamw")
    assert len(fig.axes) == 4
    for ax, stat in zip(fig.axes, ("mean", "std", "zero_fraction", "rms"), strict=True):
        assert sorted(line.get_label() for line in ax.lines) == sorted(SITES)
        line = next(x for x in ax.lines if x.get_label() == "final")
        median = np.median([_metric("adamw", m, f"act/final/{stat}") for m in range(2)], axis=0)
        np.testing.assert_allclose(line.get_ydata(), median)
    assert plot_activation_statistics(run, "grokfast") is None


def test_write_analysis_figures_writes_every_available_png(run):
    paths = write_analysis_figures(run)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [f"{f}_adamw.png" for f in ("attention", "fourier", "progress", "gradient_flow")]
        + ["activations_adamw.png"]
        + [f"{f}_grokfast.png" for f in ("fourier", "progress", "gradient_flow")]
    )
    for p in paths:
        assert p.parent == run / "analysis" / "figures"
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []  # every figure closed


def _tables(section: str) -> dict[str, list[list[list[str]]]]:
    """Per method, its markdown tables as rows of cells (header and rule left out)."""
    out = {}
    for part in section.split("### ")[1:]:
        name, body = part.split("\n", 1)
        tables, current = [], []
        for line in [*body.splitlines(), ""]:
            if line.startswith("|"):
                current.append([c.strip() for c in line.strip("|").split("|")])
            elif current:
                tables.append(current[2:])
                current = []
        out[name.strip()] = tables
    return out


def _early(method: str, member: int, window: int, cleaned_up: int | None):
    """Seed 003's score by hand: first step above 0.1, (above, windows) before C and
    from C on."""
    r = _metric(method, member, "train_loss")
    t = _metric(method, member, "val_loss")
    above, ends = [], []
    for j in range(r.size - window + 1):
        rw, tw = r[j : j + window], t[j : j + window]
        score = (tw[0] - tw[-1]) / tw[0] * (tw.mean() / rw.mean()) / (rw.std() + 1e-8)
        above.append(score > 0.1)
        ends.append(int(STEPS[j + window - 1]))
    above, ends = np.array(above), np.array(ends)
    first = str(ends[above][0]) if above.any() else "never"

    def frac(mask):
        n = int(mask.sum())
        return "—" if n == 0 else f"{int(above[mask].sum())}/{n} ({above[mask].sum() / n:.0%})"

    if cleaned_up is None:
        return first, frac(np.ones_like(above)), "—"
    return first, frac(ends < cleaned_up), frac(ends >= cleaned_up)


@pytest.mark.parametrize("window", [100, 5])
def test_analysis_section_tables_phases_keys_and_early_scores(run, window):
    section = analysis_section(run, window=window)
    assert section.startswith("## Analysis")
    tables = _tables(section)
    assert list(tables) == ["adamw", "grokfast"]
    phases, scores = tables["adamw"]
    assert phases[0][:6] == ["0", "0", "300", "600", "800", ""]
    assert phases[1][:6] == ["1", "1", "400", "—", "400", "no separate memorisation"]
    assert phases[0][6] == "1, 2, 3, 5, 6"  # the final checkpoint's key frequencies
    assert phases[0][7] == f"{0.07 * 11:.3f}"  # final key fraction
    assert phases[1][8] == f"{0.05 * 11 + 0.01:.3f} / {0.04 * 11 + 0.02:.3f}"
    phases_g, scores_g = tables["grokfast"]
    assert phases_g[0][:6] == ["0", "5", "200", "700", "900", ""]
    assert phases_g[1][:6] == ["1", "6", "300", "—", "—", "not cleaned up"]
    assert phases_g[0][6] == "1, 2, 3, 4, 6"  # no checkpoints: the last evaluation's
    w = min(window, STEPS.size)
    for table, method, cs in ((scores, "adamw", (800, 400)), (scores_g, "grokfast", (900, None))):
        for m, c in enumerate(cs):
            assert table[m][2:] == list(_early(method, m, w, c)), (method, m)
    assert f"windows of {w} evaluations" in section
    assert "](analysis/figures/progress_adamw.png)" in section
    assert "](analysis/figures/attention_adamw.png)" in section
    assert "attention_grokfast" not in section and "activations_grokfast" not in section
    assert "Nanda's definition" in section and "online (current key frequencies)" in section


def test_window_of_five_counts_windows_on_both_sides_of_c(run):
    _, scores = _tables(analysis_section(run, window=5))["adamw"]
    # 12 evaluations, window 5: windows end at 400…1100; 4 end before C = 800, 4 from it
    assert scores[0][3].split(" ")[0].endswith("/4") and scores[0][4].split(" ")[0].endswith("/4")


def test_a_run_without_analysis_probes_gets_no_figures_and_no_section(tmp_path):
    run = _build(tmp_path, probes=False)
    assert write_analysis_figures(run) == []
    assert analysis_section(run) == ""
    for plot in (plot_attention, plot_fourier_spectrum, plot_progress_measures):
        assert plot(run, "adamw") is None
    assert plot_gradient_flow(run, "grokfast") is None
    assert not (run / "analysis" / "figures").exists()
    report = write_report(run).read_text()
    assert "## Analysis" not in report and "## Results" in report
    # a folder without metrics: nothing to draw, nothing raised
    assert plot_progress_measures(tmp_path / "nowhere", "adamw") is None
    assert analysis_section(tmp_path / "nowhere") == ""


def test_report_and_figures_include_the_analysis(run):
    paths = write_figures(load_run(run))
    assert run / "analysis" / "figures" / "progress_adamw.png" in paths
    assert run / "plots" / "accuracy.png" in paths
    report = write_report(run).read_text()
    assert "## Analysis" in report
    assert "model: hooked (depth 1, width 16, 4 heads, MLP 32)" in report
    assert report.index("## Figures") < report.index("## Analysis")
    assert "![adamw: progress measures](analysis/figures/progress_adamw.png)" in report
