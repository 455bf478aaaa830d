"""Training and evaluation machinery: solver, checkpoints, distributed helpers, metrics, the trainer."""

from ..distributed import (
    all_gather_object,
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    resolve_device,
)
from .checkpoint import Checkpointer, CheckpointError, OutputDirError, atomic_save, rng_state, set_rng_state
from .config import ConfigError, validate_eval_config, validate_train_config
from .inference import draw_dataset_predictions, inference_on_dataset
from .metrics import MetricsLogger
from .solver import LRMultiplier, build_lr_scheduler, build_optimizer
from .trainer import NonFiniteLossError, Trainer, unwrap

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "LRMultiplier",
    "MetricsLogger",
    "NonFiniteLossError",
    "OutputDirError",
    "Trainer",
    "all_gather_object",
    "atomic_save",
    "barrier",
    "broadcast_object",
    "build_lr_scheduler",
    "build_optimizer",
    "draw_dataset_predictions",
    "get_rank",
    "get_world_size",
    "inference_on_dataset",
    "init_distributed",
    "is_main_process",
    "resolve_device",
    "rng_state",
    "set_rng_state",
    "unwrap",
    "validate_eval_config",
    "validate_train_config",
]
