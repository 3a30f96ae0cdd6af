"""Data-parallel training of flows: TrainState, optimiser, jitted steps, loop, checkpoints.

Entry point: :func:`train_and_evaluate` ``(config, workdir)`` (used by
``experiments/train.py``); the pieces are exported for notebooks and custom loops.
"""
from jaxflows.train.checkpoint import Checkpoints, read_fingerprint, restore_for_eval
from jaxflows.train.config import (config_to_dict, dataset_pad, default_config,
                                   load_run_config, model_fingerprint, model_kwargs,
                                   validate_config)
from jaxflows.train.loop import (abstract_state, build_flow, evaluate_split, get_split_source,
                                 prepare_run, save_samples, train_and_evaluate)
from jaxflows.train.mesh import (BATCH_AXIS, batch_sharding, global_batch, make_mesh,
                                 replicated)
from jaxflows.train.metrics import MetricsLog, RunningMean
from jaxflows.train.optim import make_optimizer, make_schedule
from jaxflows.train.plots import image_grid, plot_curves, save_image_grid, to_pixels
from jaxflows.train.state import TrainState, ema_update
from jaxflows.train.step import Steps, dequantize, make_steps, nats_to_bits_per_dim

__all__ = [
    "train_and_evaluate", "prepare_run", "abstract_state", "build_flow", "evaluate_split",
    "save_samples", "get_split_source", "dataset_pad", "TrainState", "ema_update", "make_optimizer", "make_schedule",
    "Steps", "make_steps", "dequantize", "nats_to_bits_per_dim", "make_mesh",
    "batch_sharding", "replicated", "global_batch", "BATCH_AXIS", "Checkpoints",
    "read_fingerprint", "restore_for_eval", "default_config", "validate_config",
    "model_fingerprint", "model_kwargs", "load_run_config", "config_to_dict", "MetricsLog", "RunningMean",
    "image_grid", "save_image_grid", "plot_curves", "to_pixels",
]
