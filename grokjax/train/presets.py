"""Built-in experiment configs (``grokjax list`` shows them with ``experiments/*.toml``)."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

from grokjax.train.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    OptimizerConfig,
    SurgeCollapseConfig,
    load_toml,
)

__all__ = ["DEFAULT", "PRESETS", "available", "experiment_dirs", "resolve"]

# The Grokfast paper's algorithmic recipe: Adam (β 0.9, 0.98), lr 1e-3 with a 10-update
# warm-up, coupled L2 weight decay, on x·y mod 97 with the reference's 97×96 table.
_GROKFAST_ADAM = OptimizerConfig(
    name="adam", learning_rate=1e-3, b1=0.9, b2=0.98, eps=1e-8, decay="coupled", warmup_steps=10
)
_GROKFAST_DATA = DataConfig(op="x*y", p=97, train_fraction=0.5, y_min=1, encoding="tokens")


def grokfast_methods(seeds: tuple[int, ...]) -> tuple[MethodConfig, ...]:
    """Baseline, Grokfast-EMA (α 0.98, λ 2, wd 0.005) and Grokfast-MA (w 100, λ 5, wd 0.01)."""
    replace = dataclasses.replace
    return (
        MethodConfig("baseline", _GROKFAST_ADAM, seeds),
        MethodConfig(
            "grokfast_ema",
            replace(_GROKFAST_ADAM, filter="ema", alpha=0.98, lamb=2.0, weight_decay=0.005),
            seeds,
        ),
        MethodConfig(
            "grokfast_ma",
            replace(_GROKFAST_ADAM, filter="ma", window_size=100, lamb=5.0, weight_decay=0.01),
            seeds,
        ),
    )


def grokfast_modmul() -> ExperimentConfig:
    """The main job: the Grokfast comparison on a budget that suits a 2-core CPU."""
    return ExperimentConfig(
        name="grokfast_modmul",
        description=(
            "Grokfast (Lee et al. 2024) on x·y mod 97, 50% train, the 2-layer decoder (width "
            "128, 4 heads), batch 512: baseline vs Grokfast-EMA vs Grokfast-MA, all members in "
            "one compiled program. The paper reports 95% validation accuracy at step 39,890 "
            "(baseline), 910 (EMA) and 790 (MA); the baseline cannot grok within this budget. "
            "`grokjax run grokfast_modmul_full` runs the paper's 300k-step setting."
        ),
        methods=grokfast_methods((0, 1)),
        data=_GROKFAST_DATA,
        model=ModelConfig(kind="decoder", depth=2, width=128, heads=4, mlp_ratio=4),
        steps=1500,  # every EMA and MA seed of 0 and 1 groks by 1310 (measured)
        batch_size=512,
        sampling="epoch",
        stop_when_grokked=True,
    )


def grokfast_quick() -> ExperimentConfig:
    """A CPU-sized Grokfast contrast: EMA groks, the baseline has memorised but not yet."""
    return ExperimentConfig(
        name="grokfast_quick",
        description=(
            "Grokfast-EMA (α 0.98, λ 2, wd 0.005) vs the baseline (the paper's Adam recipe) "
            "on x·y mod 47 (47×46 table), 70% train, a 1-layer decoder (width 64, 4 heads), "
            "batch 256, 3 seeds, 1,200 steps. Every EMA seed reaches 95% validation "
            "accuracy (steps 760-1030 measured); the baseline memorises by step ~500 and "
            "stays below 95% validation accuracy."
        ),
        methods=grokfast_methods((0, 1, 2))[:2],
        data=dataclasses.replace(_GROKFAST_DATA, p=47, train_fraction=0.7),
        model=ModelConfig(kind="decoder", depth=1, width=64, heads=4, mlp_ratio=4),
        steps=1200,
        batch_size=256,
        sampling="epoch",
        stop_when_grokked=False,
    )


def orthograd_quick() -> ExperimentConfig:
    """⊥AdamW vs AdamW (wd 0) on Prieto et al.'s one-hot MLP setting, full batch."""
    adam = OptimizerConfig(
        name="adam",
        learning_rate=0.01,
        b1=0.9,
        b2=0.99,
        eps=1e-25,
        decay="decoupled",
        warmup_steps=0,
    )
    return ExperimentConfig(
        name="orthograd_quick",
        description=(
            "Prieto et al. 2025: (a + b) mod 113 as one-hot pairs, 40% train, full batch, "
            "bias-free MLP 226 -> 200 -> 200 -> 113, softmax cross entropy in float32, lr 0.01, "
            "β2 0.99, eps 1e-25, no weight decay. The paper: ⊥AdamW reaches ~100% test "
            "accuracy by epoch ~150; AdamW stays at ~0.1%."
        ),
        methods=(
            MethodConfig("adamw", adam, (0,)),
            MethodConfig("ortho_adamw", dataclasses.replace(adam, orthograd=True), (0,)),
        ),
        data=DataConfig(op="x+y", p=113, train_fraction=0.4, encoding="onehot"),
        model=ModelConfig(kind="mlp", hidden=(200, 200), activation="relu", use_bias=False),
        steps=300,
        batch_size=5107,  # the whole training split: 40% of 113²
        eval_every=10,
        stop_when_grokked=False,
    )


def stability_quick() -> ExperimentConfig:
    """Prieto et al.'s Fig. 1 contrast, ⊥AdamW vs AdamW (wd 0), 3 seeds, with diagnostics."""
    adam = orthograd_quick().methods[0].optimizer  # Prieto et al.: lr 0.01, β2 0.99, eps 1e-25
    return ExperimentConfig(
        name="stability-quick",
        description=(
            "Prieto et al. 2025, Fig. 1: (a + b) mod 113 as one-hot pairs, 40% train, full "
            "batch, bias-free ReLU MLP 226 -> 200 -> 200 -> 113, softmax cross entropy in "
            "float32, lr 0.01, β2 0.99, eps 1e-25, no weight decay; AdamW vs ⊥AdamW, 3 seeds "
            "each, with the numerical-stability diagnostics (Softmax Collapse fraction, "
            "zero losses, NLM cosine, weight and logit norms) every 10 steps. The paper: "
            "⊥AdamW reaches ~100% test accuracy by epoch ~150; AdamW stays at ~0.1% while "
            "its Softmax Collapse fraction rises."
        ),
        methods=(
            MethodConfig("adamw", adam, (0, 1, 2)),
            MethodConfig("ortho_adamw", dataclasses.replace(adam, orthograd=True), (0, 1, 2)),
        ),
        data=DataConfig(op="x+y", p=113, train_fraction=0.4, encoding="onehot"),
        model=ModelConfig(kind="mlp", hidden=(200, 200), activation="relu", use_bias=False),
        steps=300,
        batch_size=5107,  # the whole training split: 40% of 113²
        eval_every=10,
        diagnostics=True,
        stop_when_grokked=False,
    )


def surge_collapse_methods(seeds: tuple[int, ...] = (0,)) -> tuple[MethodConfig, ...]:
    """Baseline, fixed-schedule and adaptive Surge-Collapse, each at σ ∈ {0, .05, .1, .2}.

    The source's optimizer: PyTorch ``Adam(lr=1e-3, weight_decay=1e-5)`` (coupled L2,
    β 0.9/0.999, eps 1e-8, no warm-up).
    """
    adam = OptimizerConfig(
        name="adam",
        learning_rate=1e-3,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=1e-5,
        decay="coupled",
        warmup_steps=0,
    )
    noise = {"input_noise": (0.0, 0.05, 0.1, 0.2)}
    replace = dataclasses.replace
    return (
        MethodConfig("baseline", adam, seeds, sweep=noise),
        MethodConfig(
            "surge_collapse_fixed",
            replace(adam, surge_collapse=SurgeCollapseConfig(schedule="fixed")),
            seeds,
            sweep=noise,
        ),
        MethodConfig(
            "surge_collapse_adaptive",
            replace(adam, surge_collapse=SurgeCollapseConfig(schedule="adaptive")),
            seeds,
            sweep=noise,
        ),
    )


def surge_collapse() -> ExperimentConfig:
    """Seed 001's experiment: {baseline, fixed, adaptive} × input noise, one program."""
    return ExperimentConfig(
        name="surge-collapse",
        description=(
            "Surge-Collapse training (Aragon, seed 001): the auto-regressive network "
            "128 -> Dense(256) -> ReLU -> Dense(128) on the source's dummy data (x ~ N(0, I), "
            "128 random classes, 10,000 samples, 80% train, batch 64), Adam lr 1e-3 wd 1e-5. "
            "Baseline vs Surge-Collapse on its fixed schedule (collapse 50% every 100 updates, "
            "surge every 200, recovery 0.1) vs the adaptive entropy controller (a documented "
            "reconstruction), each with input noise σ ∈ {0, 0.05, 0.1, 0.2}: 12 members in one "
            "program. Labels are random, so validation accuracy is chance (1/128) by "
            "construction: the comparison is of memorisation, loss and entropy dynamics."
        ),
        methods=surge_collapse_methods(),
        data=DataConfig(
            kind="gaussian",
            encoding="dense",
            num_samples=10_000,
            features=128,
            classes=128,
            train_fraction=0.8,
        ),
        model=ModelConfig(kind="mlp", hidden=(256,), activation="relu", use_bias=True),
        steps=3000,  # 24 epochs of 125 steps
        batch_size=64,
        eval_every=0,  # once per epoch
        track_entropy=True,
        stop_when_grokked=False,
    )


def mamba_swelu() -> ExperimentConfig:
    """Seed 004's comparison on a CPU budget: SiLU vs SWELU vs swish_k in a small Mamba LM."""
    adam = OptimizerConfig(
        name="adam",
        learning_rate=2e-3,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.0,
        decay="decoupled",
        warmup_steps=50,
    )
    seeds = (0, 1)
    return ExperimentConfig(
        name="mamba-swelu",
        description=(
            "Mamba with SWELU (seed 004) on a CPU budget: a 2-layer Mamba LM (d_model 64, "
            "d_state 16, expand 2, tied embeddings) on byte-level offline text (the standard "
            "library's pydoc topics, 90% train), sequences of 64 bytes, batch 64, AdamW lr "
            "2e-3, a Chinchilla budget of 20 tokens per parameter. The same seeds train with "
            "SiLU, SWELU (learnable k at both activation sites) and swish_k, all in one "
            "program; the seed's claim of 30-40% faster convergence with SWELU is tested, "
            "not assumed."
        ),
        methods=(
            MethodConfig("silu", adam, seeds, activation="silu"),
            MethodConfig("swelu", adam, seeds, activation="swelu"),
            MethodConfig("swish_k", adam, seeds, activation="swish_k"),
        ),
        # short sequences, large batches: on a CPU the sequential scan's per-step cost
        # grows with the length, not the batch (benchmarks/scan_backends.py)
        data=DataConfig(kind="lm", seq_len=64, train_fraction=0.9, val_windows=128),
        model=ModelConfig(kind="mamba", width=64, depth=2, activation="silu", d_state=16),
        steps=1,  # replaced by the token budget
        tokens_per_param=20.0,
        batch_size=64,
        sampling="iid",
        eval_every=25,
        stop_when_grokked=False,
        checkpoint_every=500,
    )


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    "grokfast_modmul": grokfast_modmul,
    "grokfast_quick": grokfast_quick,
    "orthograd_quick": orthograd_quick,
    "stability-quick": stability_quick,
    "surge-collapse": surge_collapse,
    "mamba-swelu": mamba_swelu,
}
DEFAULT = "grokfast_modmul"


def experiment_dirs() -> list[pathlib.Path]:
    """``./experiments`` and the repository's ``experiments/`` (for editable installs)."""
    dirs = [
        pathlib.Path.cwd() / "experiments",
        pathlib.Path(__file__).resolve().parents[2] / "experiments",
    ]
    unique: list[pathlib.Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def available() -> dict[str, str]:
    """Every runnable config name -> where it comes from."""
    names = {name: "built-in" for name in PRESETS}
    for d in experiment_dirs():
        for path in sorted(d.glob("*.toml")):
            names.setdefault(path.stem, str(path))
    return names


def resolve(name_or_path: str | None) -> ExperimentConfig:
    """A config from a TOML path, a built-in name or an ``experiments/`` name."""
    name = name_or_path or DEFAULT
    path = pathlib.Path(name)
    if path.suffix == ".toml" and path.exists():
        return load_toml(str(path))
    if name in PRESETS:
        return PRESETS[name]()
    for d in experiment_dirs():
        if (d / f"{name}.toml").exists():
            return load_toml(str(d / f"{name}.toml"))
    raise ConfigError(
        f"unknown config {name!r}: give a .toml file or one of {sorted(available())} "
        "(`grokjax list` shows them)."
    )
