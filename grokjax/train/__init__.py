"""The grokking trainer: configs, vmapped members, sharding, checkpoints, detection."""

from grokjax.errors import ConfigError
from grokjax.optim.specs import Optimizer, resolve_callable
from grokjax.runs import CheckpointError, RunCheckpointer, new_run_dir
from grokjax.train.config import ExperimentConfig
from grokjax.train.detect import GrokDetector
from grokjax.train.experiments import DEFAULT, available, resolve
from grokjax.train.loading import (
    apply_overrides,
    from_dict,
    load_config,
    load_toml,
    select_methods,
    to_dict,
)
from grokjax.train.loop import (
    RunResult,
    TrainingDiverged,
    TrainingInterrupted,
    resume_experiment,
    run_experiment,
)
from grokjax.train.method import MethodConfig

__all__ = [
    "DEFAULT",
    "CheckpointError",
    "ConfigError",
    "ExperimentConfig",
    "GrokDetector",
    "MethodConfig",
    "Optimizer",
    "RunCheckpointer",
    "RunResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "apply_overrides",
    "available",
    "from_dict",
    "load_config",
    "load_toml",
    "new_run_dir",
    "resolve",
    "resolve_callable",
    "resume_experiment",
    "run_experiment",
    "select_methods",
    "to_dict",
]
