"""The training configuration schema: :func:`default_config`, and configs saved by runs.

Every experiment config (``experiments/configs/*.py``) starts from
:func:`default_config` and overrides fields. The trainer reads a config once into typed
run settings (:func:`jaxflows.train.read_settings`), which reject unknown keys, wrong
types and bad values with a message naming the field; the model section is checked by
building the flow (:func:`jaxflows.train.validate_config`). The full schema, with the
meaning of each field, is documented in ``experiments/configs/glow_digits.py``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

__all__ = ["default_config", "set_fields", "config_to_dict", "load_run_config"]


def default_config() -> ml_collections.ConfigDict:
    """Every known field with its default value (see glow_digits.py for their meaning)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"
    c.dataset.data_dir = config_dict.placeholder(str)
    c.dataset.download = False
    c.dataset.train_split = "train[:90%]"
    c.dataset.val_split = "train[90%:]"   # "" disables validation (best = last)
    c.dataset.test_split = "test"
    # Zero pixels added on each side of H and W of every split's images (MNIST 28x28 with
    # pad=2 -> 32x32). The model, the fingerprint and bits/dim see the padded shape, so
    # bits/dim with pad > 0 is not comparable to bits/dim without (see glow_digits.py).
    c.dataset.pad = 0
    # Per-example context passed to the flow (conditional flows): "" none, "label" (int32
    # labels [B]), "lowres:F" (the integer image box-downsampled by F, float32
    # [B, H/F, W/F, C] in [0, num_bins)), "mask:T" (int32 [B, H, W]: 1 where the pixel is
    # >= T, a segmentation stand-in), "segmentation" (the dataset's own label maps, int32
    # [B, H, W]: cityscapes_256, mnist_8k_seg, npz: with [N, H, W] labels). See
    # docs/training.md, "Conditional training".
    c.dataset.context = ""

    # config.model.name is a key of jaxflows.models.MODELS; every other field is a
    # keyword argument of that factory (image_shape and num_bins come from the data).
    c.model = ml_collections.ConfigDict()
    c.model.name = "glow"

    c.batch_size = 64               # global batch (all devices of all hosts)
    c.eval_batch_size = 256         # global; the last batch is padded and masked
    c.init_batch_size = 256         # global batch for ActNorm's data-dependent init
    c.num_train_steps = 1000

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"           # "adam" | "adamax" | "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "constant"   # "constant" | "cosine" (after warm-up)
    c.optim.final_lr_fraction = 0.0  # cosine: final lr = fraction * learning_rate
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0      # adamw only
    c.optim.grad_clip_norm = 50.0   # global-norm clipping; <= 0 disables
    c.optim.max_consecutive_nonfinite = 100  # abort after this many skipped steps in a row
    # A completed run that skipped more than this fraction of its steps fails (non-zero
    # exit of experiments/train.py, FloatingPointError of train_and_evaluate).
    c.optim.max_skipped_fraction = 0.05

    c.ema_decay = 0.999             # 0 disables the EMA (evaluation uses raw params)
    c.eval_use_ema = True
    # Spectrally normalised layers (residual flows) keep power-iteration vectors in the
    # "lipschitz" collection. lipschitz_refresh > 0 runs that many more training-mode
    # passes after each optimiser step, so the vectors fit the new weights (0: only the
    # iterations inside the step's forward pass, on the weights before the update).
    # Evaluation and sampling with the EMA weights always refresh the vectors for them
    # first, with eval_lipschitz_rounds passes.
    c.lipschitz_refresh = 0
    c.eval_lipschitz_rounds = 50

    c.log_every = 50                # train metrics (mean over the interval)
    c.eval_every = 500              # val/test bits/dim, curves, checkpoint, best selection
    c.checkpoint_every = 500
    c.keep_checkpoints = 2          # last N regular checkpoints (+ the best one)
    c.eval_test_during_training = True
    # Early stopping: stop once this many evaluations in a row have not improved the
    # best validation figure (0 disables; needs a validation split). The best checkpoint
    # is then evaluated, as at the end of a full run.
    c.early_stopping_patience = 0

    c.sample_temperatures = (0.5, 0.7, 1.0)
    c.num_samples = 64
    c.progress_bar = True
    return c


def set_fields(config: ml_collections.ConfigDict, fields: Mapping[str, Any] = None, /,
               **kwargs: Any) -> ml_collections.ConfigDict:
    """Sets fields of ``config`` in place and returns it; a typo is an error, not a new key.

    Fields come as ``{"section.key": value}`` in ``fields`` and as keyword arguments,
    where a section takes a dict (``optim=dict(learning_rate=1e-3)``), so a training
    schedule is one call::

        set_fields(c, batch_size=64, num_train_steps=300, ema_decay=0.995,
                   optim=dict(learning_rate=1e-3, warmup_steps=100, schedule="cosine"))

    Every key must already exist in ``config`` (the schema of :func:`default_config`),
    except inside ``model``, whose keys are the model factory's keyword arguments.

    Raises:
      ValueError: a key that is not in the config (naming it and the known keys of its
        section), or a dict given for a field that is not a section.
    """
    for key, value in list((fields or {}).items()) + list(kwargs.items()):
        _set_field(config, key.split("."), value, prefix="", free=False)
    return config


def _set_field(section, path, value, *, prefix: str, free: bool) -> None:
    name, where = path[0], prefix + path[0]
    free = free or where == "model"      # the model section takes any factory keyword
    if name not in section and not (free and where != "model"):
        raise ValueError(f"set_fields: unknown config key {where!r}; known keys here: "
                         f"{sorted(section.keys())}.")
    if len(path) > 1 or isinstance(value, Mapping):
        if name not in section:
            section[name] = ml_collections.ConfigDict()
        elif not isinstance(section[name], ml_collections.ConfigDict):
            raise ValueError(f"set_fields: {where!r} is a field, not a section.")
        items = [(path[1:], value)] if len(path) > 1 else [([k], v) for k, v in value.items()]
        for sub, v in items:
            _set_field(section[name], sub, v, prefix=where + ".", free=free)
    else:
        section[name] = value


def config_to_dict(config) -> dict:
    """A plain, JSON-serialisable dict of a ConfigDict (tuples become lists)."""
    return json.loads(config.to_json_best_effort() if hasattr(config, "to_json_best_effort")
                      else json.dumps(config))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a training run saved as ``workdir/config.json``.

    Raises ``FileNotFoundError`` when ``workdir`` holds none.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the work directory must be one made by "
                                "experiments/train.py (train_and_evaluate).")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
