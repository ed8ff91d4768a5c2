"""Optimizers by name: the TOML form, any optax transform, sweeps, and clear errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tomli

from grokjax.optim.specs import Optimizer, keyed_transforms
from grokjax.train import ConfigError, apply_overrides, resolve, run_experiment
from grokjax.train.config import ExperimentConfig
from grokjax.train.loading import from_dict

# The issue's form, exactly as written (TOML 1.1: a newline inside an inline table).
GROKFAST_EMA = """
[[methods]]
label = "grokfast_ema"
seeds = [0, 1]
optimizer = [
  { transform = "grokjax.grokfast_ema", alpha = 0.98, lamb = 2.0 },
  { transform = "optax.add_decayed_weights", weight_decay = 0.005 },
  { transform = "optax.adam", b1 = 0.9, b2 = 0.98,
    learning_rate = { schedule = "optax.linear_schedule", init_value = 0.0, end_value = 1e-3, transition_steps = 10 } },
]
"""  # noqa: E501

TINY = [
    "data.p=11",
    "data.train_fraction=0.5",
    "model.depth=1",
    "model.width=16",
    "model.heads=2",
    "batch_size=32",
    "eval_every=4",
    "steps=8",
    "stop_when_grokked=false",
]


def tiny_config(methods_toml: str, *overrides: str) -> ExperimentConfig:
    base = resolve("grokfast_quick")
    methods = tomli.loads(methods_toml)["methods"]
    data = json.loads(json.dumps({**_to_dict(base), "methods": methods}))
    return apply_overrides(from_dict(ExperimentConfig, data), [*TINY, *overrides])


def _to_dict(config):
    from grokjax.train import to_dict

    return to_dict(config)


def _np_grokfast_adam(grads, lr_at, wd, params):
    """float64 reference: EMA filter (α 0.98, λ 2), coupled L2, Adam (0.9, 0.98, 1e-8)."""
    mu = m = v = None
    out = []
    w = params.copy()
    for t, g in enumerate(grads, start=1):
        mu = g if mu is None else 0.98 * mu + 0.02 * g
        h = g + 2.0 * mu + wd * w
        m = 0.1 * h if m is None else 0.9 * m + 0.1 * h
        v = 0.02 * h * h if v is None else 0.98 * v + 0.02 * h * h
        step = -lr_at(t - 1) * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.98**t)) + 1e-8)
        w = w + step
        out.append(step)
    return out


def test_the_issue_toml_form_builds_the_chain_it_names(rng):
    specs = tomli.loads(GROKFAST_EMA)["methods"][0]["optimizer"]
    tx = Optimizer(tuple(specs))()
    w = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(12)]
    expected = _np_grokfast_adam(grads, lambda k: 1e-3 * min(k, 10) / 10, 0.005, w)
    params = jnp.asarray(w, jnp.float32)
    state = tx.init(params)
    for g, e in zip(grads, expected, strict=True):
        u, state = jax.jit(tx.update)(jnp.asarray(g, jnp.float32), state, params)
        np.testing.assert_allclose(np.asarray(u, np.float64), e, rtol=2e-5, atol=1e-9)
        params = params + u
    assert np.abs(expected[0]).max() == 0.0  # the first update has lr 0 (warm-up)


def test_the_issue_toml_form_runs_in_the_trainer():
    result = run_experiment(tiny_config(GROKFAST_EMA), progress=False)
    assert result.compilations == 1
    assert np.isfinite(result.metric(0, "train_loss")).all()


@pytest.mark.parametrize(
    "spec",
    [
        '{ transform = "optax.lion", learning_rate = 1e-4, b1 = 0.9, b2 = 0.99 }',
        '{ transform = "optax.adamw", learning_rate = 1e-3, weight_decay = 0.1 }',
    ],
)
def test_any_optax_transform_runs_from_toml_without_code(spec):
    config = tiny_config(f'[[methods]]\nlabel = "m"\noptimizer = [{spec}]\n')
    result = run_experiment(config, progress=False)
    first, last = result.metric(0, "train_loss")[[0, -1], 0]
    assert np.isfinite(last) and last != first


def test_reduce_on_plateau_gets_the_loss_as_value():
    """``reduce_on_plateau`` needs ``value=`` (its update raises without it): the trainer
    passes the batch's mean loss. With rtol 1 no loss counts as an improvement, so with
    patience 1 the scale halves down to its floor within the 8 updates."""
    toml = """
[[methods]]
label = "plateau"
optimizer = [
  { transform = "optax.adam", learning_rate = 1e-3 },
  { transform = "optax.contrib.reduce_on_plateau", factor = 0.5, patience = 1, rtol = 1.0,
    min_scale = 0.125 },
]
"""
    result = run_experiment(tiny_config(toml), progress=False)
    (plateau,) = [
        s
        for s in jax.tree.leaves(
            result.final_states[0].opt_state,
            is_leaf=lambda n: isinstance(n, optax.contrib.ReduceLROnPlateauState),
        )
        if isinstance(s, optax.contrib.ReduceLROnPlateauState)
    ]
    np.testing.assert_allclose(np.asarray(plateau.scale), [0.125])


def test_a_sweep_expands_into_members_of_one_program():
    toml = GROKFAST_EMA + '[methods.sweep]\n"optimizer.0.lamb" = [1.0, 2.0, 5.0]\n'
    config = tiny_config(toml)
    members = config.methods[0].members()
    assert [(s, h["optimizer.0.lamb"]) for s, h in members] == [
        (0, 1.0),
        (1, 1.0),
        (0, 2.0),
        (1, 2.0),
        (0, 5.0),
        (1, 5.0),
    ]
    result = run_experiment(config, progress=False)
    assert result.compilations == 1
    lambs = result.final_states[0].opt_state.hyperparams["optimizer_0_lamb"]
    np.testing.assert_array_equal(np.asarray(lambs), [1, 1, 2, 2, 5, 5])
    loss = result.metric(0, "train_loss")[-1]
    assert loss[0] != loss[2] and loss[2] != loss[4]  # the values reach the filter


def test_a_sweep_of_a_schedule_keyword():
    toml = GROKFAST_EMA + '[methods.sweep]\n"optimizer.2.learning_rate.end_value" = [1e-3, 3e-3]\n'
    result = run_experiment(tiny_config(toml, "methods.0.seeds=[0]"), progress=False)
    loss = result.metric(0, "train_loss")[-1]
    assert loss[0] != loss[1]


def test_only_swept_keywords_are_injected():
    specs = tuple(tomli.loads(GROKFAST_EMA)["methods"][0]["optimizer"])
    state = Optimizer(specs, ("0.lamb",))({"0.lamb": 3.0}).init(jnp.zeros(3))
    assert set(state.hyperparams) == {"optimizer_0_lamb"}
    assert not hasattr(Optimizer(specs)().init(jnp.zeros(3)), "hyperparams")


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "methods.0.optimizer.0.transform='grokjax.grokfast_emma'",
            r"methods.0.optimizer.0.transform = 'grokjax.grokfast_emma': grokjax has no "
            r"transform 'grokfast_emma'; did you mean grokjax.grokfast_ema",
        ),
        (
            "methods.0.optimizer.0.transform='torch.optim.Adam'",
            r"a transform is named grokjax.NAME or optax.NAME or optax.contrib.NAME",
        ),
        (
            "methods.0.optimizer.0.alhpa=0.9",
            r"methods.0.optimizer.0.alhpa: grokjax.grokfast_ema has no keyword 'alhpa'; "
            r"its keywords are \['alpha', 'lamb'",
        ),
        (
            "methods.0.optimizer.2.learning_rate.schedule='optax.linear_shedule'",
            r"optax has no schedule 'linear_shedule'; did you mean optax.linear_schedule",
        ),
        (
            "methods.0.optimizer.0.alpha='fast'",
            r"methods.0.optimizer.0.alpha = 'fast': grokjax.grokfast_ema takes a number",
        ),
        (
            "methods.0.sweep={'optimizer.0.window'=[1.0]}",
            r"methods.0.sweep.optimizer.0.window: grokjax.grokfast_ema has no keyword 'window'",
        ),
        (
            "methods.0.sweep={'optimizer.7.lamb'=[1.0, 2.0]}",
            r"methods.0.sweep.optimizer.7.lamb: no transform or schedule keyword at this path",
        ),
        (
            "methods.0.sweep={'optimizer.0.transform'=[1.0]}",
            r"methods.0.sweep.optimizer.0.transform = \[1.0\]: must be a float keyword",
        ),
        (  # a left-out keyword whose default is not a float: refused before tracing
            "methods.0.sweep={'optimizer.2.learning_rate.transition_begin'=[1.0]}",
            r"sweep.optimizer.2.learning_rate.transition_begin = \[1.0\]: must be a float "
            r"keyword \(it is 0 here or by default\)",
        ),
    ],
)
def test_bad_optimizer_settings_name_the_thing_and_the_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(GROKFAST_EMA, override)


def test_a_transform_that_needs_an_extra_argument_fails_at_validation():
    toml = """
[[methods]]
label = "adaptive"
optimizer = [
  { transform = "grokjax.surge_collapse", schedule = "adaptive", inner = [
    { transform = "optax.adam", learning_rate = 1e-3 },
  ] },
]
"""
    with pytest.raises(ConfigError, match=r"methods.0.optimizer: .*activation_entropy"):
        tiny_config(toml)


def test_keys_go_to_keyed_transforms_in_order():
    specs = (
        {
            "transform": "grokjax.surge_collapse",
            "inner": [{"transform": "optax.sgd", "learning_rate": 0.1}],
        },
        {"transform": "grokjax.surge_collapse", "inner": []},
    )
    assert keyed_transforms(specs) == ["0", "1"]
    keys = [jax.random.PRNGKey(7), jax.random.PRNGKey(8)]
    state = Optimizer(specs[:1])(keys=keys[:1]).init({"w": jnp.ones(3)})
    np.testing.assert_array_equal(state[0].key, keys[0])
    with pytest.raises(ConfigError, match=r"the trainer gives grokjax\.surge_collapse its key"):
        Optimizer(({**specs[0], "key": 3},))()


def test_any_float64_dtype_keyword_turns_on_x64():
    toml = GROKFAST_EMA.replace("b2 = 0.98,", 'b2 = 0.98, mu_dtype = "float64",')
    assert tiny_config(toml).needs_x64 and not tiny_config(GROKFAST_EMA).needs_x64


def test_a_keyed_transform_that_refuses_raw_keys_fails_at_validation():
    """The trainer hands keyed transforms raw uint32[2] keys (Surge-Collapse takes them);
    optax.add_noise does not, and says so before anything runs."""
    toml = """
[[methods]]
label = "noisy"
optimizer = [
  { transform = "optax.add_noise", eta = 0.01, gamma = 0.55 },
  { transform = "optax.sgd", learning_rate = 0.1 },
]
"""
    with pytest.raises(ConfigError, match=r"methods.0.optimizer: .*raw uint32\[2\] PRNG key"):
        tiny_config(toml)


def test_integer_sweep_values_of_a_float_keyword_are_floats():
    """TOML writes 1 for 1.0: ``[1, 2, 5]`` sweeps lamb over 1.0, 2.0, 5.0; a bool does not."""
    config = tiny_config(GROKFAST_EMA, "methods.0.sweep={'optimizer.0.lamb'=[1, 2, 5]}")
    assert config.methods[0].sweep == {"optimizer.0.lamb": (1.0, 2.0, 5.0)}
    assert all(type(v) is float for v in config.methods[0].sweep["optimizer.0.lamb"])
    with pytest.raises(ConfigError, match=r"methods.0.sweep = True: must be a number"):
        tiny_config(GROKFAST_EMA, "methods.0.sweep={'optimizer.0.lamb'=[true]}")
