"""Data-parallel training of flows: settings, TrainState, optimiser, jitted steps, loop.

Entry point: :func:`train_and_evaluate` ``(config, workdir)`` (used by
``experiments/train.py``); the pieces are exported for notebooks and custom loops.
"""
from jaxflows.train.checkpoint import (
                                 CheckpointError,
                                 Checkpoints,
                                 read_fingerprint,
                                 restore_for_eval,
)
from jaxflows.train.config import config_to_dict, default_config, load_run_config, set_fields
from jaxflows.train.evaluation import (
                                 evaluate_split,
                                 evaluation_state,
                                 evaluation_variables,
                                 fixed_point_summary,
                                 save_density_plot,
                                 save_samples,
)
from jaxflows.train.loop import (
                                 Progress,
                                 RunFiles,
                                 evaluate_and_checkpoint,
                                 finish,
                                 restore_or_init,
                                 train_and_evaluate,
                                 train_steps,
)
from jaxflows.train.mesh import BATCH_AXIS, batch_sharding, global_batch, make_mesh, replicated
from jaxflows.train.metrics import MetricsLog, RunningMean
from jaxflows.train.optim import make_optimizer, make_schedule
from jaxflows.train.plots import (
                                 image_grid,
                                 plot_curves,
                                 plot_density_2d,
                                 save_image_grid,
                                 to_pixels,
)
from jaxflows.train.run import (
                                 Run,
                                 abstract_state,
                                 build_flow,
                                 context_shape,
                                 dataset_info,
                                 describe_model,
                                 device_batch,
                                 get_split_source,
                                 init_state,
                                 model_fingerprint,
                                 prepare_run,
                                 score_name,
                                 validate_config,
)
from jaxflows.train.settings import (
                                 DatasetSettings,
                                 ModelSettings,
                                 OptimSettings,
                                 RunSettings,
                                 read_settings,
)
from jaxflows.train.state import TrainState, ema_update
from jaxflows.train.step import Steps, dequantize, make_context, make_steps, parse_context

__all__ = [
    # the whole run, and its parts
    "train_and_evaluate", "prepare_run", "Run", "restore_or_init", "train_steps",
    "evaluate_and_checkpoint", "finish", "Progress", "RunFiles",
    # config and settings
    "default_config", "set_fields", "read_settings", "validate_config", "RunSettings",
    "DatasetSettings",
    "ModelSettings", "OptimSettings", "load_run_config", "config_to_dict",
    # model, data, state
    "build_flow", "dataset_info", "get_split_source", "model_fingerprint", "describe_model",
    "abstract_state", "init_state", "TrainState", "ema_update", "score_name",
    "context_shape", "device_batch", "make_context", "parse_context",
    # evaluation and outputs
    "evaluate_split", "evaluation_state", "evaluation_variables", "save_samples",
    "fixed_point_summary", "MetricsLog", "RunningMean",
    "image_grid", "save_image_grid", "plot_curves", "to_pixels", "save_density_plot",
    "plot_density_2d",
    # optimiser, steps, devices, checkpoints
    "make_optimizer", "make_schedule", "Steps", "make_steps", "dequantize",
    "make_mesh", "batch_sharding", "replicated", "global_batch",
    "BATCH_AXIS", "Checkpoints", "CheckpointError", "read_fingerprint", "restore_for_eval",
]
