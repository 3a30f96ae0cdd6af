"""What a run is made of, checked before any compute: settings, data, flow, compiled steps.

:func:`prepare_run` reads the config once (:func:`~jaxflows.train.settings.read_settings`),
opens the dataset, builds the flow and checks it by an abstract initialisation
(:func:`build_flow`), refuses a work directory holding another model's checkpoint, and
returns the immutable :class:`Run` that the training loop, ``experiments/evaluate.py``
and ``experiments/sample.py`` share. Nothing is written and nothing is computed on the
devices.

A config with ``config.hybrid`` (:class:`~jaxflows.train.settings.HybridSettings`) gets
a :class:`~jaxflows.models.hybrid.HybridFlow` as ``run.flow`` (the flow of
``config.model`` with a classifier head; it samples like its flow) and
``run.hybrid_lam``, the weight of ``log p(x)`` in its loss.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxflows import models
from jaxflows.train import checkpoint as ckpt_lib
from jaxflows.train.mesh import global_batch, make_mesh, replicated
from jaxflows.train.optim import make_optimizer, make_schedule
from jaxflows.train.settings import (
    DatasetSettings,
    RunSettings,
    as_settings,
    check_batch_sizes,
    read_settings,
)
from jaxflows.train.state import TrainState
from jaxflows.train.step import Steps, make_steps, parse_context

__all__ = ["Run", "prepare_run", "build_flow", "validate_config", "dataset_info",
           "get_split_source", "model_fingerprint", "describe_model", "abstract_state",
           "init_state", "score_name", "context_shape", "device_batch", "needs_labels",
           "label_shape"]

# Compiled functions shared by runs of the same model/optimiser in one process
# (tests, notebooks re-running a cell): jax.jit caches per function object.
_STEPS_CACHE: Dict[str, Steps] = {}
_STEPS_CACHE_SIZE = 8


@dataclasses.dataclass(frozen=True)
class Run:
    """What does not change during a run (made by :func:`prepare_run`).

    Attributes:
      settings: the run's typed settings.
      mesh: the data-parallel device mesh.
      info: the dataset's ``DatasetInfo`` as the model sees it (padded image shape).
      fingerprint: :func:`model_fingerprint` of the model and image shape.
      flow: the ``jaxflows`` flow of ``settings.model``.
      tx: the optax optimiser; schedule: its learning-rate schedule.
      steps: the jitted ``init``, ``train``, ``evaluate`` and ``sample`` functions.
      train_src, val_src, test_src: the splits' sources (``None`` for a disabled split).
      num_dims: pixels per image (``D`` of bits/dim), or the vector dimension.
      score: the name of the per-dimension figure: ``"bpd"`` (bits/dim, images) or
        ``"nats_per_dim"`` (negative log-likelihood in nats per dimension, vectors);
        metrics are ``train_<score>``, ``val_<score>``, ``test_<score>``.
      sample_cond: the ``{"image", "label"}`` host batch of ``num_samples`` examples whose
        context the samples get (``None`` without a context): for ``"label"``,
        labels ``arange(num_samples) % num_classes``; for ``"lowres:F"``, ``"mask:T"``
        and ``"segmentation"``, the first ``num_samples`` records (images and their
        labels or label maps) of the validation split (else test, else train).
      hybrid_lam: a hybrid model's weight of ``log p(x)`` (``config.hybrid.lam``, with
        ``"1/D"`` resolved), ``None`` for a plain flow.
    """

    settings: RunSettings
    mesh: Mesh
    info: Any
    fingerprint: str
    flow: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps: Steps
    train_src: Any
    val_src: Any
    test_src: Any
    num_dims: int
    score: str = "bpd"
    sample_cond: Any = None
    hybrid_lam: Optional[float] = None


def score_name(info) -> str:
    """``"nats_per_dim"`` for vector datasets, ``"bpd"`` for images."""
    return "nats_per_dim" if getattr(info, "is_vector", False) else "bpd"


def label_shape(info) -> tuple:
    """The shape of one record's label: ``()`` (a class) or ``(H, W)`` (a label map)."""
    return tuple(getattr(info, "label_shape", ()) or ())


_NO_NUM_CLASSES = object()


def context_shape(context: str, info, num_classes: Any = _NO_NUM_CLASSES):
    """``(shape without the batch axis, dtype)`` of the flow's context, or None.

    Raises ``ValueError`` naming ``config.dataset.context`` when the dataset cannot give
    it (no labels, or label maps, for ``"label"``; vectors, or ``H``/``W`` not divisible
    by ``F``, for ``"lowres:F"``; for ``"segmentation"``: no label maps of the images'
    ``(H, W)`` (``info.label_shape``), no ``num_classes``, or -- when the model's
    ``num_classes`` (``config.model.num_classes``) is passed -- a model that has fewer
    classes than the dataset, or none).

    ``num_classes``: the model's number of classes (``None``: the model has none), checked
    for ``"segmentation"``; leave it out to check the dataset only.
    """
    kind, factor = parse_context(context)
    if kind == "":
        return None
    if kind == "label":
        if not info.num_classes:
            raise ValueError(f"config.dataset.context='label': dataset {info.name!r} has no "
                             "class labels.")
        if label_shape(info):
            raise ValueError(f"config.dataset.context='label': dataset {info.name!r} has a "
                             f"label map {label_shape(info)} per record, not a class; use "
                             "config.dataset.context='segmentation'.")
        return (), jnp.int32
    shape = tuple(info.image_shape)
    if len(shape) != 3:
        what = {"lowres": "a low-resolution", "mask": "a segmentation-mask",
                "segmentation": "a segmentation"}[kind]
        raise ValueError(f"config.dataset.context={context!r}: {what} context needs "
                         f"images, but dataset {info.name!r} gives vectors of shape {shape}.")
    h, w, c = shape
    if kind == "segmentation":
        return _segmentation_shape(info, (h, w), num_classes), jnp.int32
    if kind == "mask":
        if factor >= info.num_bins:
            raise ValueError(f"config.dataset.context={context!r}: the threshold must lie "
                             f"below the dataset's {info.num_bins} pixel levels (every mask "
                             f"would be empty).")
        return (h, w), jnp.int32
    if h % factor or w % factor:
        raise ValueError(f"config.dataset.context={context!r}: the image height and width "
                         f"({h}x{w}, after config.dataset.pad) must be divisible by {factor}.")
    return (h // factor, w // factor, c), jnp.float32


def _segmentation_shape(info, size, num_classes) -> tuple:
    """``(H, W)`` of a ``"segmentation"`` context after checking the dataset and model."""
    where = "config.dataset.context='segmentation'"
    if label_shape(info) != tuple(size):
        what = ("a class per record" if not label_shape(info)
                else f"label maps of shape {label_shape(info)}")
        raise ValueError(f"{where}: the context is the dataset's per-pixel label map, of the "
                         f"images' size {tuple(size)} (after config.dataset.pad), but "
                         f"dataset {info.name!r} (config.dataset.name) has {what}. Use a "
                         "dataset with label maps (cityscapes_256, npz: with [N, H, W] "
                         "labels), or config.dataset.context='mask:T' for masks computed "
                         "from the images.")
    if not info.num_classes:
        raise ValueError(f"{where}: dataset {info.name!r} does not state its number of "
                         "classes (its label maps hold no labels).")
    if num_classes is _NO_NUM_CLASSES:
        return tuple(size)
    if num_classes is None:
        raise ValueError(f"{where} needs config.model.num_classes (the classes the model's "
                         f"segmentation encoder takes): dataset {info.name!r} has "
                         f"{info.num_classes}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or (
            num_classes < info.num_classes):
        raise ValueError(f"{where}: config.model.num_classes={num_classes!r} does not cover "
                         f"the {info.num_classes} classes of dataset {info.name!r} (label "
                         f"ids 0..{info.num_classes - 1}): set config.model.num_classes >= "
                         f"{info.num_classes}.")
    return tuple(size)


def needs_labels(settings: RunSettings) -> bool:
    """Whether the steps take the labels: a context (``config.dataset.context``) or a
    hybrid model (``config.hybrid``).
    """
    return bool(settings.dataset.context) or settings.hybrid is not None


def device_batch(run, batch) -> Any:
    """This process's loader batch as the global array(s) the steps take.

    The images alone when the run needs no labels (:func:`needs_labels`), else
    ``{"image", "label"}``.
    """
    images = global_batch(batch["image"], run.mesh)
    if not needs_labels(run.settings):
        return images
    return {"image": images, "label": global_batch(np.asarray(batch["label"], np.int32),
                                                   run.mesh)}


def dataset_info(dataset: DatasetSettings):
    """``jaxflows.data.get_info`` of ``dataset`` (image shape padded by ``dataset.pad``).

    Raises ``ValueError`` for an unknown dataset name.
    """
    from jaxflows import data as jdata
    return jdata.get_info(dataset.name, data_dir=dataset.data_dir, pad=dataset.pad)


def get_split_source(dataset: DatasetSettings, split: str):
    """The source of ``split`` of ``dataset`` as the model sees it.

    ``jaxflows.data.get_source`` with the data directory, download flag and ``pad``
    (images zero-padded by ``dataset.pad`` pixels on each side) of ``dataset``
    (a :class:`~jaxflows.train.settings.DatasetSettings`, e.g. ``run.settings.dataset``).
    """
    from jaxflows import data as jdata
    return jdata.get_source(dataset.name, split, data_dir=dataset.data_dir,
                            download=dataset.download, pad=dataset.pad)


_UNKNOWN_ARG = re.compile(r"unexpected keyword argument '(\w+)'|unknown argument '(\w+)'")


def _is_vector_factory(factory) -> bool:
    """Whether a ``MODELS`` factory builds flows on vectors (first argument ``dim``)."""
    params = list(inspect.signature(factory).parameters)
    return bool(params) and params[0] == "dim"


def _model_error(model, info, error: Exception) -> str:
    """The message of a factory's (or its initialisation's) error, naming the config key."""
    message = str(error)
    match = _UNKNOWN_ARG.search(message)
    if match and (match.group(1) or match.group(2)) in model.kwargs:
        keys = [match.group(1) or match.group(2)]
    else:
        keys = [k for k in model.kwargs if re.search(rf"\b{re.escape(k)}\b", message)]
    where = " or ".join(f"config.model.{k}" for k in keys) if keys else "config.model"
    data = (f"vectors of dimension {info.image_shape[0]}" if getattr(info, "is_vector", False)
            else f"images of shape {tuple(info.image_shape)} with {info.num_bins} bins")
    return (f"{where}: {message.rstrip('. ')} (model {model.name!r} for {data}, from the "
            f"dataset; the other config.model fields are keyword arguments of "
            f"jaxflows.models.{model.name}).")


def build_flow(config, info, *, check: bool = True):
    """The flow of ``config.model`` for images of the dataset ``info``.

    ``MODELS[name](info.image_shape, num_bins=info.num_bins, **model_kwargs)`` for image
    datasets, ``MODELS[name](D, **model_kwargs)`` for vector datasets (the flows on
    vectors: maf, iaf, naf, nsf, realnvp_vector); with
    ``check`` the flow is also initialised abstractly (``jax.eval_shape`` of its ``init``
    on a one-example batch: shapes only, nothing computed), so that errors raised when
    its modules are set up surface here too.

    Args:
      config: a :class:`~jaxflows.train.settings.RunSettings`, or a ConfigDict (read
        with :func:`~jaxflows.train.settings.read_settings`).
      info: the dataset's ``DatasetInfo`` (``image_shape``, ``num_bins``).
      check: initialise abstractly as well.

    Raises:
      ValueError: any ``TypeError`` (e.g. an unknown keyword argument) or
        ``ValueError`` (a bad value) of the factory or of the initialisation, as one
        message naming ``config.model.<key>`` where the key can be told from it.
    """
    settings = as_settings(config)
    model = settings.model
    shape = tuple(info.image_shape)
    factory = models.MODELS[model.name]
    vector_data = getattr(info, "is_vector", False)
    if _is_vector_factory(factory) != vector_data:
        raise ValueError(
            f"config.model.name={model.name!r} is a flow on "
            f"{'vectors' if _is_vector_factory(factory) else 'images'}, but dataset "
            f"{info.name!r} (config.dataset.name) gives "
            f"{'vectors' if vector_data else 'images'}: use "
            f"{'maf, iaf, naf, nsf or realnvp_vector' if vector_data else 'an image model'}.")
    ctx = context_shape(settings.dataset.context, info,
                        model.kwargs.get("num_classes") if settings.dataset.context
                        == "segmentation" else _NO_NUM_CLASSES)
    try:
        if vector_data:
            flow = factory(shape[0], **model.factory_kwargs())
        else:
            flow = factory(shape, num_bins=info.num_bins, **model.factory_kwargs())
        if check:
            def init(x, c):
                key = jax.random.PRNGKey(0)
                kw = {} if c is None else {"context": c}
                return flow.init({"params": key, "dropout": key, "logdet": key}, x,
                                 train=False, **kw)
            c = None if ctx is None else jax.ShapeDtypeStruct((1,) + ctx[0], ctx[1])
            jax.eval_shape(init, jax.ShapeDtypeStruct((1,) + shape, jnp.float32), c)
    except (TypeError, ValueError) as e:
        raise ValueError(_model_error(model, info, e)) from e
    if settings.hybrid is not None:
        flow = _hybrid_model(settings, info, flow, check=check)
    return flow


def _hybrid_model(settings: RunSettings, info, flow, *, check: bool):
    """The :class:`~jaxflows.models.hybrid.HybridFlow` of ``flow`` (``config.hybrid``).

    Raises ``ValueError`` naming the field: a dataset without labels, vector data, a
    conditional flow (``config.dataset.context``) or a flow with a variational
    dequantiser (the hybrid loss is on ``log p(x)`` of uniformly dequantised images).
    """
    from jaxflows.models.hybrid import hybrid
    from jaxflows.train.step import variational
    h = settings.hybrid
    if not getattr(info, "num_classes", None):
        raise ValueError(f"config.hybrid: a hybrid model's classifier head needs class "
                         f"labels, but dataset {info.name!r} (config.dataset.name) has none "
                         "(remove config.hybrid, or use a labelled dataset such as 'digits' "
                         "or 'mnist_8k').")
    if getattr(info, "is_vector", False) or len(tuple(info.image_shape)) != 3:
        raise ValueError(f"config.hybrid: hybrid models are built on images; dataset "
                         f"{info.name!r} gives vectors.")
    if label_shape(info):
        raise ValueError(f"config.hybrid: the classifier head predicts a class per image, "
                         f"but dataset {info.name!r} has a label map {label_shape(info)} "
                         "per image.")
    if settings.dataset.context:
        raise ValueError(f"config.hybrid with config.dataset.context="
                         f"{settings.dataset.context!r}: a hybrid model classifies "
                         "x, so its flow is unconditional (set config.dataset.context='').")
    if variational(flow):
        raise ValueError(f"config.hybrid with config.model.name={settings.model.name!r}: "
                         "a flow with a variational dequantiser is not supported by the "
                         "hybrid objective (use config.model.dequantization='uniform').")
    model = hybrid(flow, int(info.num_classes), features=h.features, hidden=h.hidden)
    if check:
        def init(x):
            key = jax.random.PRNGKey(0)
            return model.init({"params": key, "dropout": key, "logdet": key}, x, train=False)
        try:
            jax.eval_shape(init, jax.ShapeDtypeStruct((1,) + tuple(info.image_shape),
                                                      jnp.float32))
        except (TypeError, ValueError) as e:
            raise ValueError(f"config.hybrid: {str(e).rstrip('. ')} (features="
                             f"{h.features!r}, hidden={h.hidden}).") from e
    return model


def validate_config(config, *, num_devices: Optional[int] = None):
    """Check ``config`` completely before any compute; raise ``ValueError`` naming the field.

    :func:`~jaxflows.train.settings.read_settings` (schema, types, values, batch sizes
    against ``num_devices`` when given), the dataset name, and the model: the flow is
    built and initialised abstractly (:func:`build_flow`).

    Returns the dataset's ``DatasetInfo`` as the model sees it: with
    ``config.dataset.pad = p`` its ``image_shape`` is the padded ``(H + 2p, W + 2p, C)``.
    """
    settings = read_settings(config, num_devices=num_devices)
    info = dataset_info(settings.dataset)
    build_flow(settings, info)
    return info


def describe_model(config, info=None) -> Dict[str, Any]:
    """The human-readable payload hashed by :func:`model_fingerprint`."""
    settings = as_settings(config)
    payload: Dict[str, Any] = {"model": settings.model.to_dict()}
    if info is not None:
        payload["image_shape"] = list(info.image_shape)
        payload["num_bins"] = info.num_bins
    if settings.dataset.context:    # absent when unconditional (older fingerprints hold)
        payload["context"] = settings.dataset.context
    if settings.hybrid is not None:  # absent for plain flows (older fingerprints hold)
        payload["hybrid"] = dataclasses.asdict(settings.hybrid)
    return payload


def model_fingerprint(config, info=None) -> str:
    """A short hash of what determines the parameters' shapes and meaning.

    The model config (name and factory kwargs) plus the dataset's image shape (padded
    by ``config.dataset.pad``, so another pad is another fingerprint) and number of
    bins, and ``config.dataset.context`` when it is set (a conditional model).
    Stored with every checkpoint: a work directory whose checkpoint has another
    fingerprint is refused instead of silently mixed. ``config`` is a ConfigDict or a
    :class:`~jaxflows.train.settings.RunSettings`.
    """
    text = json.dumps(describe_model(config, info), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _steps_for(settings: RunSettings, fingerprint: str, flow, tx, mesh, num_dims: int,
               schedule, continuous: bool, hybrid_lam: Optional[float] = None) -> Steps:
    """The compiled steps of this model and optimiser (cached across runs in a process)."""
    key = json.dumps({
        "fp": fingerprint, "optim": dataclasses.asdict(settings.optim),
        "steps": settings.num_train_steps, "ema": settings.ema_decay,
        "use_ema": settings.eval_use_ema, "n": settings.num_samples,
        "devices": [d.id for d in mesh.devices.flat],
        "context": settings.dataset.context, "continuous": continuous,
        "hybrid_lam": hybrid_lam, "lipschitz_refresh": settings.lipschitz_refresh,
        "eval_lipschitz_rounds": settings.eval_lipschitz_rounds}, sort_keys=True)
    steps = _STEPS_CACHE.get(key)
    if steps is None:
        steps = make_steps(flow, tx, mesh, num_dims=num_dims, ema_decay=settings.ema_decay,
                           use_ema=settings.eval_use_ema, num_samples=settings.num_samples,
                           schedule=schedule, context=settings.dataset.context,
                           continuous=continuous, hybrid_lam=hybrid_lam,
                           lipschitz_refresh=settings.lipschitz_refresh,
                           eval_lipschitz_rounds=settings.eval_lipschitz_rounds)
        if len(_STEPS_CACHE) > _STEPS_CACHE_SIZE:
            _STEPS_CACHE.pop(next(iter(_STEPS_CACHE)))
        _STEPS_CACHE[key] = steps
    return steps


def prepare_run(config, workdir: Optional[str] = None, *, check_workdir: bool = True) -> Run:
    """Check ``config`` and build the run's pieces; nothing is written or computed.

    Args:
      config: a ConfigDict following ``default_config()``, or its
        :class:`~jaxflows.train.settings.RunSettings`.
      workdir: the run's work directory (``None``: none yet).
      check_workdir: refuse a ``workdir`` holding a checkpoint of another model.

    Raises:
      ValueError: (before any compute) a bad config (see :func:`validate_config`), a
        batch size the devices cannot split or larger than the train split, a
        ``workdir`` holding a checkpoint of another model, or (several processes)
        processes whose configs differ
        (:func:`~jaxflows.train.distributed.check_same_config`).
    """
    mesh = make_mesh()
    if isinstance(config, RunSettings):
        settings = check_batch_sizes(config, mesh.devices.size)
    else:
        settings = read_settings(config, num_devices=mesh.devices.size)
    if jax.process_count() > 1:     # every host must train the same model on the same data
        from jaxflows.train.distributed import check_same_config
        check_same_config(settings)
    info = dataset_info(settings.dataset)
    flow = build_flow(settings, info)
    fingerprint = model_fingerprint(settings, info)
    if workdir is not None and check_workdir:
        found = ckpt_lib.read_fingerprint(workdir)
        if found is not None and found[0] != fingerprint:
            raise ValueError(
                f"workdir {workdir!r} holds a checkpoint of a different model "
                f"(stored model: {json.dumps(found[1], sort_keys=True)}; this config: "
                f"{json.dumps(describe_model(settings, info), sort_keys=True)}). "
                "Use another --workdir, or the config it was trained with.")
    ds = settings.dataset
    train_src = get_split_source(ds, ds.train_split)
    val_src = get_split_source(ds, ds.val_split) if ds.val_split else None
    test_src = get_split_source(ds, ds.test_split) if ds.test_split else None
    if settings.early_stopping_patience and val_src is None:
        raise ValueError("config.early_stopping_patience > 0 needs a validation split "
                         "(config.dataset.val_split is empty).")
    if len(train_src) < settings.batch_size:
        raise ValueError(f"config.batch_size={settings.batch_size} is larger than the train "
                         f"split {ds.train_split!r} ({len(train_src)} examples).")
    tx = make_optimizer(settings.optim, settings.num_train_steps)
    schedule = make_schedule(settings.optim, settings.num_train_steps)
    num_dims = int(np.prod(info.image_shape))
    continuous = bool(getattr(info, "is_vector", False))
    hybrid_lam = None if settings.hybrid is None else settings.hybrid.weight(num_dims)
    steps = _steps_for(settings, fingerprint, flow, tx, mesh, num_dims, schedule, continuous,
                       hybrid_lam)
    return Run(settings=settings, mesh=mesh, info=info, fingerprint=fingerprint, flow=flow,
               tx=tx, schedule=schedule, steps=steps, train_src=train_src, val_src=val_src,
               test_src=test_src, num_dims=num_dims, score=score_name(info),
               sample_cond=_sample_cond(settings, info, (val_src, test_src, train_src)),
               hybrid_lam=hybrid_lam)


def _sample_cond(settings: RunSettings, info, sources):
    """The conditioning batch of the samples (see :attr:`Run.sample_cond`), or None.

    ``"label"``: ``labels = arange(num_samples) % num_classes`` -- sample ``i`` is of
    class ``i mod C``, so in a grid of ``C`` columns (what :func:`save_samples` draws)
    column ``c`` holds class ``c`` and every row one sample of each class.
    ``"lowres:F"``, ``"mask:T"`` and ``"segmentation"``: the first ``num_samples``
    records (images, and labels or label maps) of the validation split, else the test
    split, else the train split (fixed for the whole run).
    """
    kind, _ = parse_context(settings.dataset.context)
    n = settings.num_samples
    shape = tuple(info.image_shape)
    if kind == "":
        return None
    if kind == "label":
        dtype = np.float32 if getattr(info, "is_vector", False) else np.uint8
        return {"image": np.zeros((n,) + shape, dtype),
                "label": (np.arange(n) % info.num_classes).astype(np.int32)}
    source = next(src for src in sources if src is not None)
    if len(source) < n:
        raise ValueError(f"config.num_samples={n}: the contexts of the samples are those of "
                         f"the first num_samples records of the validation (or test) "
                         f"split, which has only {len(source)}.")
    from jaxflows.data import sources as sources_lib
    batch = sources_lib._get_batch(source, np.arange(n))
    return {"image": np.asarray(batch["image"], np.uint8),
            "label": np.asarray(batch["label"], np.int32)}


def _init_batch_size(run: Run) -> int:
    ndev = run.mesh.devices.size
    return max(ndev, min(run.settings.init_batch_size, (len(run.train_src) // ndev) * ndev))


def abstract_state(run: Run) -> TrainState:
    """Shapes/dtypes/shardings of the run's TrainState, without computing it."""
    n = _init_batch_size(run)
    dtype = jnp.float32 if run.score != "bpd" else jnp.uint8
    images = jax.ShapeDtypeStruct((n,) + tuple(run.info.image_shape), dtype)
    if needs_labels(run.settings):
        images = {"image": images,
                  "label": jax.ShapeDtypeStruct((n,) + label_shape(run.info), jnp.int32)}
    shapes = jax.eval_shape(run.steps.init, images, jax.ShapeDtypeStruct((), jnp.int32))
    rep = replicated(run.mesh)
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def init_state(run: Run) -> TrainState:
    """A fresh TrainState: ``flow.init`` (ActNorm's data-dependent init) on one global batch.

    The batch is the first of a loader over the train split shuffled with
    ``seed + 1``; the parameters' key comes from ``seed``.
    """
    from jaxflows import data as jdata
    loader = jdata.make_loader(run.train_src, global_batch_size=_init_batch_size(run),
                               seed=run.settings.seed + 1, shuffle=True)
    return run.steps.init(device_batch(run, next(iter(loader))), np.int32(run.settings.seed))
