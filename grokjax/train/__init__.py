"""The grokking trainer: configs, vmapped members, sharding, checkpoints, detection."""

from grokjax.train.checkpoint import CheckpointError, RunCheckpointer
from grokjax.train.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    OptimizerConfig,
    apply_overrides,
    from_dict,
    load_toml,
    select_methods,
    to_dict,
)
from grokjax.train.detect import GrokDetector
from grokjax.train.loop import (
    RunResult,
    TrainingDiverged,
    load_config,
    new_run_dir,
    resume_experiment,
    run_experiment,
)
from grokjax.train.presets import DEFAULT, PRESETS, available, resolve

__all__ = [
    "DEFAULT",
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "GrokDetector",
    "MethodConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RunCheckpointer",
    "RunResult",
    "TrainingDiverged",
    "apply_overrides",
    "available",
    "from_dict",
    "load_config",
    "load_toml",
    "new_run_dir",
    "resolve",
    "resume_experiment",
    "run_experiment",
    "select_methods",
    "to_dict",
]
