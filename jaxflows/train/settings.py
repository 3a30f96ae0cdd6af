"""Typed run settings: the training config read once, checked, into frozen dataclasses.

:func:`read_settings` turns an ``ml_collections.ConfigDict`` following
:func:`~jaxflows.train.config.default_config` into a :class:`RunSettings` (with nested
:class:`DatasetSettings`, :class:`ModelSettings` and :class:`OptimSettings`). Every
field keeps the name of its config key. Unknown keys, wrong types and bad values raise
``ValueError`` naming the field (``config.optim.learning_rate``, ...); keys missing
from an older config (a run's saved ``config.json``) take their default. The trainer
reads nothing else from the ConfigDict afterwards.

``config.model`` stays a free mapping: ``name`` picks the factory of
``jaxflows.models.MODELS`` and every other key is passed to it as a keyword argument,
unchanged (values may be dicts of settings, e.g. ``estimator=dict(kind="roulette")``;
the factories convert them). Whether the factory accepts them is checked by building
the flow (:func:`jaxflows.train.build_flow`), not here.

``config.hybrid`` (optional; absent from older configs and from ``default_config``)
turns the flow into a hybrid model (:class:`HybridSettings`,
:mod:`jaxflows.models.hybrid`): a classifier head on the flow's latent, trained on
``-(lam log p(x) + log p(y | x))``. Its keys are ``lam`` (``None``: no hybrid), ``features``
and ``hidden``; unknown keys raise like those of any other section.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from jaxflows import models
from jaxflows.train.config import config_to_dict, default_config

__all__ = ["DatasetSettings", "ModelSettings", "OptimSettings", "HybridSettings",
           "RunSettings", "read_settings", "check_batch_sizes", "as_settings",
           "HYBRID_DEFAULTS"]

OPTIMIZERS = ("adam", "adamax", "adamw")
SCHEDULES = ("constant", "cosine")
# Factory arguments that come from the dataset, never from config.model (dim: vectors).
FROM_DATASET = ("image_shape", "num_bins", "dim")
# config.hybrid: its keys and defaults (lam None: a plain flow, no classifier head).
HYBRID_DEFAULTS = {"lam": None, "features": "final", "hidden": 0}
HYBRID_FEATURES = ("final", "pooled")


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    """``config.dataset``: which data, which splits, and padding.

    Attributes:
      name: a dataset name of ``jaxflows.data`` (``"digits"``, ``"mnist"``, ``"npz:..."``).
      data_dir: TFDS data directory (``None``: ``$TFDS_DATA_DIR`` or the default).
      download: download and prepare a TFDS dataset that is not prepared.
      train_split, val_split, test_split: TFDS split strings; an empty ``val_split``
        disables validation (the last evaluation is the "best"), an empty ``test_split``
        disables the test figures.
      pad: zero pixels added on each side of the images' height and width.
      context: the per-example context given to the flow: ``""`` none, ``"label"``
        (int32 labels ``[B]``), ``"lowres:F"`` (the integer image box-downsampled by
        ``F``, float32 ``[B, H/F, W/F, C]``), ``"mask:T"`` (int32 ``[B, H, W]``, 1 where
        the pixel is at least ``T``) or ``"segmentation"`` (the dataset's label maps, int32
        ``[B, H, W]``); see :func:`jaxflows.train.step.make_context`.
    """

    name: str
    data_dir: Optional[str]
    download: bool
    train_split: str
    val_split: str
    test_split: str
    pad: int
    context: str = ""


@dataclasses.dataclass(frozen=True)
class HybridSettings:
    """``config.hybrid``: a classifier head on the flow's latent and the hybrid objective.

    The run trains :class:`jaxflows.models.hybrid.HybridFlow` (the flow of
    ``config.model`` plus a head with ``num_classes`` of the dataset) on the per-example
    loss ``-(lam * log p(x) + log p(y | x))`` (nats; Residual Flows Table 4, Nalisnick
    et al. 2019), and evaluation reports the classifier's accuracy besides bits/dim
    (bits/dim from ``log p(x)`` alone). The dataset must have labels.

    Attributes:
      lam: the weight of ``log p(x)``: a number ``>= 0`` (the paper's ``0`` and ``1``), or
        ``"1/D"`` for ``1 / (number of dimensions)`` of the (padded) images.
      features: ``"final"`` (the head reads the latent's final part) or ``"pooled"``
        (every level's factored-out part, pooled per level).
      hidden: the head's width per part (0: a linear classifier on pooled features).
    """

    lam: Any
    features: str = "final"
    hidden: int = 0

    def weight(self, num_dims: int) -> float:
        """``lam`` as a number: ``1 / num_dims`` for ``"1/D"``."""
        return 1.0 / num_dims if self.lam == "1/D" else float(self.lam)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """``config.model``: a factory of ``jaxflows.models.MODELS`` and its keyword arguments.

    Attributes:
      name: the key of the factory in ``jaxflows.models.MODELS``.
      kwargs: every other ``config.model`` field, in JSON form (nested sections are
        plain dicts); top-level lists are tuples. Do not mutate it:
        :meth:`factory_kwargs` gives a copy to pass on.
      hybrid: the classifier head and hybrid objective of ``config.hybrid`` (``None``: a
        plain flow); also :attr:`RunSettings.hybrid`.
    """

    name: str
    kwargs: Dict[str, Any]
    hybrid: Optional["HybridSettings"] = None

    def factory_kwargs(self) -> Dict[str, Any]:
        """A fresh copy of :attr:`kwargs` for ``MODELS[name](image_shape, num_bins=..., **kw)``."""
        return copy.deepcopy(self.kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """``config.model`` as a plain JSON-able dict (``name`` and the keyword arguments)."""
        return {"name": self.name, **copy.deepcopy(self.kwargs)}


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """``config.optim``: the optimiser and learning-rate schedule (see ``make_optimizer``).

    Attributes:
      name: ``"adam"``, ``"adamax"`` or ``"adamw"``.
      learning_rate: peak learning rate (> 0).
      warmup_steps: steps of linear warm-up from 0 (>= 0).
      schedule: ``"constant"`` or ``"cosine"`` after the warm-up.
      final_lr_fraction: cosine: final learning rate as a fraction of the peak.
      b1, b2, eps: Adam's moment decay rates and epsilon.
      weight_decay: decoupled weight decay (``adamw`` only).
      grad_clip_norm: global-norm gradient clipping; ``<= 0`` disables it.
      max_consecutive_nonfinite: the run stops after more skipped steps than this in a row.
      max_skipped_fraction: a completed run that skipped more than this fraction of its
        steps (non-finite loss or gradient) fails, in ``[0, 1]``.
    """

    name: str
    learning_rate: float
    warmup_steps: int
    schedule: str
    final_lr_fraction: float
    b1: float
    b2: float
    eps: float
    weight_decay: float
    grad_clip_norm: float
    max_consecutive_nonfinite: int
    max_skipped_fraction: float


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a training run reads from its config (fields named as the config keys).

    Batch sizes are global (over all devices of all hosts). See
    ``experiments/configs/glow_digits.py`` for the meaning of every field.
    """

    seed: int
    dataset: DatasetSettings
    model: ModelSettings
    optim: OptimSettings
    batch_size: int
    eval_batch_size: int
    init_batch_size: int
    num_train_steps: int
    ema_decay: float
    eval_use_ema: bool
    lipschitz_refresh: int
    eval_lipschitz_rounds: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    eval_test_during_training: bool
    early_stopping_patience: int
    sample_temperatures: Tuple[float, ...]
    num_samples: int
    progress_bar: bool

    @property
    def hybrid(self) -> Optional[HybridSettings]:
        """``config.hybrid`` read (kept with the model settings), or ``None``."""
        return self.model.hybrid

    @property
    def use_ema(self) -> bool:
        """Whether evaluation and sampling use the EMA parameters (an EMA is kept and wanted)."""
        return bool(self.eval_use_ema and self.ema_decay > 0)

    def logs_at(self, step: int) -> bool:
        """Whether ``step`` writes the mean train metrics (every ``log_every`` and the last)."""
        return step % self.log_every == 0 or step == self.num_train_steps

    def evaluates_at(self, step: int) -> bool:
        """Whether ``step`` evaluates validation/test (every ``eval_every`` and the last)."""
        return step % self.eval_every == 0 or step == self.num_train_steps

    def patience_exhausted(self, step: int, best_step: Optional[int]) -> bool:
        """Whether early stopping ends the run after evaluation step ``step``.

        True when ``early_stopping_patience > 0`` and the last ``patience`` evaluations
        (every ``eval_every`` steps) did not improve on the best validation figure, of
        ``best_step``: ``step - best_step >= patience * eval_every``. Derived from the
        checkpointed ``best_step``, so a resumed run stops at the same step.
        """
        patience = self.early_stopping_patience
        if patience <= 0 or best_step is None or not self.evaluates_at(step):
            return False
        return step - best_step >= patience * self.eval_every

    def checkpoints_at(self, step: int) -> bool:
        """Whether ``step`` saves a checkpoint (every evaluation and ``checkpoint_every``)."""
        return self.evaluates_at(step) or step % self.checkpoint_every == 0


class _Section:
    """One section of a config, its defaults, and typed, checked access to its fields."""

    def __init__(self, values, defaults, where: str, *,
                 elsewhere: Optional[Mapping[str, Any]] = None):
        """Raises ``ValueError`` for a key of ``values`` that ``defaults`` lacks.

        ``elsewhere`` maps the prefix of another section (``"config.optim"``) to its
        keys, to suggest where a misplaced key belongs.
        """
        self.values, self.defaults, self.where = values, defaults, where
        for key in values.keys():
            if key not in defaults:
                hint = "".join(f" (did you mean {prefix}.{key}?)"
                               for prefix, keys in (elsewhere or {}).items() if key in keys)
                close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
                if not hint and close:
                    hint = f" (did you mean {where}.{close[0]}?)"
                raise ValueError(
                    f"Unknown config key {where}.{key}{hint}; known keys of {where}: "
                    f"{', '.join(sorted(defaults.keys()))}.")

    def _get(self, key: str):
        return self.values[key] if key in self.values else self.defaults[key]

    def _fail(self, key: str, what: str, value) -> ValueError:
        return ValueError(f"{self.where}.{key} must be {what}, got {value!r}.")

    def get_int(self, key: str, minimum: Optional[int] = None) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or (
                minimum is not None and value < minimum):
            raise self._fail(key, "an int" + (f" >= {minimum}" if minimum is not None else ""),
                             value)
        return int(value)

    def get_float(self, key: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
              lo_open: bool = False, hi_open: bool = False) -> float:
        value = self._get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if not ok:
            bounds = []
            if lo is not None:
                bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
            if hi is not None:
                bounds.append(f"{'<' if hi_open else '<='} {hi:g}")
            raise self._fail(key, "a number" + (" " + " and ".join(bounds) if bounds else ""),
                             value)
        return float(value)

    def get_bool(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._fail(key, "True or False", value)
        return value

    def get_str(self, key: str, choices: Sequence[str] = (), *, nonempty: bool = False) -> str:
        value = self._get(key)
        if not isinstance(value, str) or (choices and value not in choices) or (
                nonempty and not value):
            what = ("one of " + ", ".join(repr(c) for c in choices) if choices
                    else "a non-empty string" if nonempty else "a string")
            raise self._fail(key, what, value)
        return value

    def get_optional_str(self, key: str) -> Optional[str]:
        value = self._get(key)
        if value is None:
            return None
        return self.get_str(key)


def _section(config, name: str):
    if name not in config or not hasattr(config[name], "keys"):
        raise ValueError(f"config.{name} is missing (a section of the config: see "
                         "jaxflows.train.default_config()).")
    return config[name]


def _read_dataset(s: _Section) -> DatasetSettings:
    return DatasetSettings(
        name=s.get_str("name", nonempty=True),
        data_dir=s.get_optional_str("data_dir"),
        download=s.get_bool("download"),
        train_split=s.get_str("train_split", nonempty=True),
        val_split=s.get_str("val_split"),
        test_split=s.get_str("test_split"),
        pad=s.get_int("pad", 0),
        context=_read_context(s))


def _read_context(s: _Section) -> str:
    """``config.dataset.context`` normalised (``None`` -> ``""``), checked."""
    from jaxflows.train.step import parse_context
    value = s._get("context")
    kind, number = parse_context(value)
    return f"{kind}:{number}" if kind in ("lowres", "mask") else kind


def _read_model(config) -> ModelSettings:
    if "model" not in config or not hasattr(config.model, "keys") or "name" not in config.model:
        raise ValueError("config.model.name is missing: it must name a model of "
                         "jaxflows.models.MODELS, e.g. 'glow'.")
    fields = config_to_dict(config.model)
    name = fields.pop("name")
    if not isinstance(name, str) or name not in models.MODELS:
        raise ValueError(f"Unknown model config.model.name={name!r}; known models: "
                         f"{', '.join(sorted(models.MODELS))}.")
    for key in FROM_DATASET:
        if key in fields:
            raise ValueError(f"config.model.{key} cannot be set: image_shape and num_bins come "
                             f"from the dataset (config.dataset).")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return ModelSettings(name=name, kwargs=kwargs)


def _read_hybrid(s: _Section) -> Optional[HybridSettings]:
    """``config.hybrid`` checked: ``None`` when ``lam`` is ``None`` (no hybrid model)."""
    lam = s._get("lam")
    features = s.get_str("features", HYBRID_FEATURES)
    hidden = s.get_int("hidden", 0)
    if lam is None:
        others = [k for k in s.values.keys() if k != "lam"]
        if others:
            raise ValueError(f"config.hybrid.{others[0]} is set but config.hybrid.lam is "
                             "None: set config.hybrid.lam (0, '1/D', 1, ...) to train a "
                             "hybrid model, or remove config.hybrid.")
        return None
    number = isinstance(lam, (int, float)) and not isinstance(lam, bool)
    if not (lam == "1/D" or (number and math.isfinite(lam) and lam >= 0)):
        raise ValueError(f"config.hybrid.lam (the weight of log p(x) in the hybrid loss "
                         f"-(lam log p(x) + log p(y|x))) must be a finite number >= 0 or "
                         f"'1/D', got {lam!r}.")
    return HybridSettings(lam=lam if lam == "1/D" else float(lam), features=features,
                          hidden=hidden)


def _read_optim(s: _Section) -> OptimSettings:
    return OptimSettings(
        name=s.get_str("name", OPTIMIZERS),
        learning_rate=s.get_float("learning_rate", 0, lo_open=True),
        warmup_steps=s.get_int("warmup_steps", 0),
        schedule=s.get_str("schedule", SCHEDULES),
        final_lr_fraction=s.get_float("final_lr_fraction", 0),
        b1=s.get_float("b1", 0, 1, hi_open=True),
        b2=s.get_float("b2", 0, 1, hi_open=True),
        eps=s.get_float("eps", 0),
        weight_decay=s.get_float("weight_decay", 0),
        grad_clip_norm=s.get_float("grad_clip_norm"),
        max_consecutive_nonfinite=s.get_int("max_consecutive_nonfinite", 0),
        max_skipped_fraction=s.get_float("max_skipped_fraction", 0, 1))


def _read_temperatures(config, defaults) -> Tuple[float, ...]:
    temps = config["sample_temperatures"] if "sample_temperatures" in config else (
        defaults.sample_temperatures)
    if isinstance(temps, (int, float)) and not isinstance(temps, bool):
        temps = (temps,)
    if not isinstance(temps, (tuple, list)) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps):
        raise ValueError(f"config.sample_temperatures must be positive numbers, got {temps!r}.")
    return tuple(float(t) for t in temps)


def read_settings(config, *, num_devices: Optional[int] = None) -> RunSettings:
    """The typed, checked :class:`RunSettings` of ``config``; nothing is computed or written.

    Args:
      config: an ``ml_collections.ConfigDict`` (or nested mapping) following
        :func:`~jaxflows.train.config.default_config`; keys it lacks take their default.
      num_devices: when given, the global batch sizes must split evenly over this many
        devices.

    Raises:
      ValueError: naming the field, for an unknown key (top level, ``dataset``,
        ``optim``), a wrong type or a bad value, an unknown ``config.model.name``, a
        ``config.model`` field that comes from the dataset (``image_shape``,
        ``num_bins``), a bad ``config.hybrid`` (``lam`` negative, ...), or a batch size
        the devices cannot split.
    """
    defaults = default_config()
    if "hybrid" not in defaults:
        defaults.hybrid = dict(HYBRID_DEFAULTS)
    sections = ("dataset", "model", "optim", "hybrid")
    top_keys = tuple(k for k in defaults.keys() if k not in sections)
    top = _Section(config, defaults, "config",
                   elsewhere={"config.dataset": defaults.dataset, "config.optim": defaults.optim})
    dataset = _Section(_section(config, "dataset"), defaults.dataset, "config.dataset",
                       elsewhere={"config": top_keys, "config.optim": defaults.optim})
    optim = _Section(_section(config, "optim"), defaults.optim, "config.optim",
                     elsewhere={"config": top_keys, "config.dataset": defaults.dataset})
    model = _read_model(config)
    hybrid = None
    if "hybrid" in config and config["hybrid"] is not None:
        hybrid = _read_hybrid(_Section(_section(config, "hybrid"), defaults.hybrid,
                                       "config.hybrid", elsewhere={"config": top_keys}))
    if hybrid is not None:
        model = dataclasses.replace(model, hybrid=hybrid)
    settings = RunSettings(
        seed=top.get_int("seed"),
        dataset=_read_dataset(dataset),
        model=model,
        optim=_read_optim(optim),
        batch_size=top.get_int("batch_size", 1),
        eval_batch_size=top.get_int("eval_batch_size", 1),
        init_batch_size=top.get_int("init_batch_size", 1),
        num_train_steps=top.get_int("num_train_steps", 0),
        ema_decay=top.get_float("ema_decay", 0, 1, hi_open=True),
        eval_use_ema=top.get_bool("eval_use_ema"),
        lipschitz_refresh=top.get_int("lipschitz_refresh", 0),
        eval_lipschitz_rounds=top.get_int("eval_lipschitz_rounds", 1),
        log_every=top.get_int("log_every", 1),
        eval_every=top.get_int("eval_every", 1),
        checkpoint_every=top.get_int("checkpoint_every", 1),
        keep_checkpoints=top.get_int("keep_checkpoints", 1),
        eval_test_during_training=top.get_bool("eval_test_during_training"),
        early_stopping_patience=top.get_int("early_stopping_patience", 0),
        sample_temperatures=_read_temperatures(config, defaults),
        num_samples=top.get_int("num_samples", 1),
        progress_bar=top.get_bool("progress_bar"),
    )
    if num_devices is not None:
        check_batch_sizes(settings, num_devices)
    return settings


def check_batch_sizes(settings: RunSettings, num_devices: int) -> RunSettings:
    """``settings`` if its global batch sizes split evenly over ``num_devices``.

    Raises ``ValueError`` naming the first that does not.
    """
    for key in ("batch_size", "eval_batch_size", "init_batch_size"):
        value = getattr(settings, key)
        if value % num_devices:
            raise ValueError(
                f"config.{key}={value} is not divisible by the number of devices "
                f"({num_devices}); the global batch is split evenly over "
                f"jax.devices(). Use a multiple of {num_devices}.")
    return settings


def as_settings(config) -> RunSettings:
    """``config`` itself if it is a :class:`RunSettings`, else :func:`read_settings` of it."""
    return config if isinstance(config, RunSettings) else read_settings(config)
