"""Data and model sections are chosen by kind: one small dataclass each, checked alone."""

from __future__ import annotations

import dataclasses

import pytest

from grokjax.data.kinds import DATA_KINDS, GaussianData, SparseParityData, TextWindowData
from grokjax.nn.kinds import MODEL_KINDS, MLPModel
from grokjax.train import ConfigError, apply_overrides, resolve


def test_each_kind_has_only_its_own_fields():
    config = resolve("surge_collapse")
    assert isinstance(config.data, GaussianData) and isinstance(config.model, MLPModel)
    for kinds in (DATA_KINDS, MODEL_KINDS):
        for kind, cls in kinds.items():
            names = {f.name for f in dataclasses.fields(cls)}
            # small: the decoder's 11 include four position keys the design names
            # (positions, rope_base, rope_scaling, eval_rope_scaling); larger kinds
            # group their settings in sub-tables (ARC's generated and real)
            assert cls().kind == kind and len(names) <= 11, (kind, names)


def test_a_new_kind_keeps_the_shared_fields_and_the_keys_set_after_it():
    config = apply_overrides(
        resolve("surge_collapse"), ["data.features=3", "data.kind=text", "data.context=4"]
    )
    assert isinstance(config.data, TextWindowData)
    # shared with the Gaussian kind: kept; set after the change: applied
    assert (config.data.num_samples, config.data.train_fraction) == (10_000, 0.8)
    assert config.data.context == 4
    # an encoding belongs to its kind: onehot modular data becomes dense Gaussian data
    gaussian = apply_overrides(resolve("stability_fig6_mlp"), ["data.kind=gaussian"])
    assert gaussian.data.encoding == "dense"
    with pytest.raises(ConfigError, match=r"data: unknown key 'features'"):
        apply_overrides(resolve("surge_collapse"), ["data.kind=text", "data.features=3"])
    # switching twice: keys set for the kind in between leave with it
    twice = apply_overrides(
        resolve("surge_collapse"), ["data.kind=text", "data.context=4", "data.kind=sparse_parity"]
    )
    assert isinstance(twice.data, SparseParityData) and twice.data.num_samples == 10_000


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.kind=images"], r"data.kind = 'images' is not allowed; choose one of \['modular'"),
        (
            ["model.kind=mamba"],
            r"model.kind = 'mamba': must be one of \['decoder', 'hooked', 'lstm'\] for tokens",
        ),
        (["model.kind=decoder"], r"model.kind = 'decoder': must be one of \['mlp'\] for vector"),
        (["data.p=1"], r"data.p = 1: must be an integer >= 2"),
        (["model.hidden=[]"], r"model.hidden = \(\): must be a non-empty list"),
    ],
)
def test_mismatched_or_bad_kinds_name_the_key(overrides, message):
    base = "grokfast_quick" if overrides[0].startswith("model.kind=mamba") else "orthograd_quick"
    if overrides[0] == "data.p=1":
        base = "grokfast_quick"
    with pytest.raises(ConfigError, match=message):
        apply_overrides(resolve(base), overrides)


def test_experiments_resolve_by_name_alias_folder_and_path():
    names = ["stability_quick", "stability-quick", "experiments/stability_quick"]
    names += ["experiments/stability_quick.toml"]
    assert {resolve(n).name for n in names} == {"stability_quick"}
    with pytest.raises(ConfigError, match="unknown experiment 'stability_quik'"):
        resolve("stability_quik")


def test_a_run_folder_of_the_old_config_form_is_refused_in_words(tmp_path):
    import json

    from grokjax.train import resume_experiment

    old = {"name": "x", "methods": [{"label": "a", "optimizer": {"learning_rate": 1e-3}}]}
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"written by an older grokjax.*cannot resume"):
        resume_experiment(tmp_path, progress=False)
