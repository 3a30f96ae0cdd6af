"""The training configuration schema, and its validation before any compute.

Every experiment config (``experiments/configs/*.py``) starts from
:func:`default_config` and overrides fields; :func:`validate_config` then rejects
unknown keys, wrong types, unknown datasets and model keyword arguments that the
model factory does not accept, with a message naming the offending field. The
full schema, with the meaning of each field, is documented in
``experiments/configs/glow_digits.py``.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Mapping, Optional

import ml_collections
from ml_collections import config_dict

__all__ = ["default_config", "validate_config", "model_fingerprint", "model_kwargs",
           "config_to_dict", "load_run_config", "dataset_pad"]

# Fields of ``config.model`` that are not factory keyword arguments.
_MODEL_RESERVED = ("name",)


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

    c.ema_decay = 0.999             # 0 disables the EMA (evaluation uses raw params)
    c.eval_use_ema = True

    c.log_every = 50                # train metrics (mean over the interval)
    c.eval_every = 500              # val/test bits/dim, curves, checkpoint, best selection
    c.checkpoint_every = 500
    c.keep_checkpoints = 2          # last N regular checkpoints (+ the best one)
    c.eval_test_during_training = True

    c.sample_temperatures = (0.5, 0.7, 1.0)
    c.num_samples = 64
    c.progress_bar = True
    return c


_TOP_TYPES = {
    "seed": int, "batch_size": int, "eval_batch_size": int, "init_batch_size": int,
    "num_train_steps": int, "ema_decay": float, "eval_use_ema": bool, "log_every": int,
    "eval_every": int, "checkpoint_every": int, "keep_checkpoints": int,
    "eval_test_during_training": bool, "num_samples": int, "progress_bar": bool,
}


def config_to_dict(config) -> dict:
    """A plain, JSON-serialisable dict of a ConfigDict (tuples become lists)."""
    return json.loads(config.to_json_best_effort() if hasattr(config, "to_json_best_effort")
                      else json.dumps(config))


def _check_keys(section: Mapping, reference: Mapping, where: str):
    for key in section.keys():
        if key not in reference:
            known = ", ".join(sorted(reference.keys()))
            raise ValueError(f"Unknown config key {where}{key!r}; known keys of "
                             f"{where or 'config'}: {known}.")


def model_kwargs(config) -> dict:
    """``config.model`` without ``name``, as plain keyword arguments of the factory."""
    d = config_to_dict(config.model)
    for k in _MODEL_RESERVED:
        d.pop(k, None)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def validate_config(config, *, num_devices: Optional[int] = None):
    """Check ``config`` against the schema; raise ``ValueError`` naming the bad field.

    Checks, all before any compute: no unknown keys (top level, ``dataset``, ``optim``),
    types of the scalar fields, positive sizes, ``dataset.pad`` (an int >= 0), the
    dataset name (``get_info``), the
    model name (``jaxflows.models.MODELS``) and that every other ``config.model`` field
    is a keyword argument of the model factory (a factory that forwards ``**kwargs``
    may list the ones it accepts as ``factory.accepted_kwargs(model_kwargs)``); with ``num_devices``, that the global
    batch sizes divide evenly over the devices.

    Returns the dataset's :class:`DatasetInfo` as the model sees it: with
    ``config.dataset.pad = p`` its ``image_shape`` is the padded ``(H + 2p, W + 2p, C)``.
    """
    ref = default_config()
    _check_keys(config, ref, "")
    for sec in ("dataset", "optim"):
        if sec not in config:
            raise ValueError(f"config.{sec} is missing.")
        _check_keys(config[sec], ref[sec], f"{sec}.")
    if "model" not in config or "name" not in config.model:
        raise ValueError("config.model.name is missing: it must name a model of "
                         "jaxflows.models.MODELS, e.g. 'glow'.")
    for key, typ in _TOP_TYPES.items():
        if key in config:
            val = config[key]
            ok = (isinstance(val, (int, float)) and not isinstance(val, bool)
                  if typ is float else isinstance(val, typ))
            if typ is int and isinstance(val, bool):
                ok = False
            if not ok:
                raise ValueError(f"config.{key} must be {typ.__name__}, got {val!r}.")
    for key in ("batch_size", "eval_batch_size", "init_batch_size", "log_every", "eval_every",
                "checkpoint_every", "keep_checkpoints", "num_samples"):
        if config.get(key, 1) < 1:
            raise ValueError(f"config.{key} must be >= 1, got {config[key]}.")
    if config.get("num_train_steps", 0) < 0:
        raise ValueError(f"config.num_train_steps must be >= 0, got {config.num_train_steps}.")
    if not 0.0 <= float(config.get("ema_decay", 0.0)) < 1.0:
        raise ValueError(f"config.ema_decay must be in [0, 1), got {config.ema_decay}.")
    optim = config.optim
    if optim.get("name", "adam") not in ("adam", "adamax", "adamw"):
        raise ValueError(f"config.optim.name must be 'adam', 'adamax' or 'adamw', "
                         f"got {optim.name!r}.")
    if optim.get("schedule", "constant") not in ("constant", "cosine"):
        raise ValueError(f"config.optim.schedule must be 'constant' or 'cosine', "
                         f"got {optim.schedule!r}.")
    if optim.get("learning_rate", 1.0) <= 0:
        raise ValueError(f"config.optim.learning_rate must be > 0, got {optim.learning_rate}.")
    for t in config.get("sample_temperatures", ()):
        if not isinstance(t, (int, float)) or t <= 0:
            raise ValueError(f"config.sample_temperatures must be positive numbers, "
                             f"got {tuple(config.sample_temperatures)!r}.")

    if num_devices is not None:
        for key in ("batch_size", "eval_batch_size", "init_batch_size"):
            val = config.get(key, ref[key])
            if val % num_devices:
                raise ValueError(
                    f"config.{key}={val} is not divisible by the number of devices "
                    f"({num_devices}); the global batch is split evenly over "
                    f"jax.devices(). Use a multiple of {num_devices}.")

    pad = dataset_pad(config)
    from jaxflows import data as jdata  # pylint: disable=import-outside-toplevel
    info = jdata.get_info(config.dataset.name, pad=pad)   # ValueError for an unknown dataset

    from jaxflows import models  # pylint: disable=import-outside-toplevel
    if config.model.name not in models.MODELS:
        raise ValueError(f"Unknown model config.model.name={config.model.name!r}; known "
                         f"models: {', '.join(sorted(models.MODELS))}.")
    factory = models.MODELS[config.model.name]
    kwargs = model_kwargs(config)
    params = inspect.signature(factory).parameters
    if hasattr(factory, "accepted_kwargs"):
        # A factory forwarding **kwargs (e.g. acf to its base model) lists what it takes.
        names = tuple(factory.accepted_kwargs(kwargs))
    elif any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names = None   # cannot be checked here; the factory checks its own arguments
    else:
        names = tuple(k for k, p in params.items()
                      if p.kind is not inspect.Parameter.VAR_POSITIONAL)
    if names is not None:
        for key in kwargs:
            if key not in names or key in ("image_shape", "num_bins"):
                accepted = ", ".join(k for k in names if k not in ("image_shape", "num_bins"))
                raise ValueError(
                    f"Unknown config key model.{key!r} for model {config.model.name!r}; "
                    f"the factory accepts: {accepted} (image_shape and num_bins come "
                    f"from the dataset).")
    return info


def dataset_pad(config) -> int:
    """``config.dataset.pad`` (0 when absent, as in configs saved before it existed).

    Raises ``ValueError`` naming ``config.dataset.pad`` unless it is an int >= 0.
    """
    pad = config.dataset.get("pad", 0)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"config.dataset.pad must be an int >= 0 (zero pixels added on each "
                         f"side of the image height and width), got {pad!r}.")
    return pad


def model_fingerprint(config, info=None) -> str:
    """A short hash of what determines the parameters' shapes and meaning.

    The model config (name and factory kwargs) plus the dataset's image shape (padded
    by ``config.dataset.pad``, so another pad is another fingerprint) and number of levels. Stored with every checkpoint: a work directory whose checkpoint
    has another fingerprint is refused instead of silently mixed.
    """
    payload = {"model": config_to_dict(config.model)}
    if info is not None:
        payload["image_shape"] = list(info.image_shape)
        payload["num_bins"] = info.num_bins
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_fingerprint(config, info=None) -> Any:
    """The human-readable payload hashed by :func:`model_fingerprint`."""
    payload = {"model": config_to_dict(config.model)}
    if info is not None:
        payload["image_shape"] = list(info.image_shape)
        payload["num_bins"] = info.num_bins
    return payload


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a training run saved as ``workdir/config.json``."""
    import os  # pylint: disable=import-outside-toplevel
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the work directory must be one made by "
                                "experiments/train.py (train_and_evaluate).")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
