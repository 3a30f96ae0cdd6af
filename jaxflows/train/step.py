"""Jitted, mesh-sharded functions of training: init, train step, evaluation, sampling.

Objective. Images arrive as integers ``k in {0, ..., L-1}`` (uint8). On device, the
train step draws uniform dequantisation noise ``u ~ U[0, 1)^D`` and maximises the
flow's density of ``x = k + u`` on ``[0, L)^D``; by Jensen's inequality
``E_u[log p(k + u)] <= log P(k)`` for the discrete model ``P(k) = int p(k + u) du``
(Theis et al., 2016, eq. 3; Dinh et al., 2017, sec. 4.1), so the reported

    bits/dim = -log p(k + u) / (D ln 2)

is an upper bound on the discrete negative log-likelihood in bits per dimension. The
loss is its mean over the global batch. A flow with a variational dequantiser (Flow++,
``flow.dequantizer``) instead draws ``u ~ q(u | k)`` and is scored by
``log p(k + u) - log q(u | k)`` (:func:`dequantized_log_prob`; Ho et al., 2019, sec. 3.1),
a tighter bound whose dequantiser trains jointly with the flow.

Vector data. Float vectors of :mod:`jaxflows.data.tabular` (``continuous=True``) are not
dequantised: the loss is the negative log-density in **nats per dimension**,
``-log p(x) / D``, and evaluation reports the same (the run turns it into the test
log-likelihood in nats per example, ``-D`` times it).

Context. A run may condition the flow on a per-example context computed on device from
the batch (``config.dataset.context``, :func:`make_context`): ``"label"`` gives the
int32 labels ``[B]``, ``"lowres:F"`` the integer image box-downsampled by ``F``
(float32 in ``[0, num_bins)``, ``[B, H/F, W/F, C]``, computed before dequantisation),
``"mask:T"`` the image's two-class mask (int32 ``[B, H, W]``, 1 where the pixel is at
least ``T``), ``"segmentation"`` the dataset's own per-pixel label map (int32 ``[B, H,
W]``, e.g. Cityscapes' label ids: the batch's ``"label"``).
Every step then takes the batch as a dict ``{"image": ..., "label": ...}`` (a bare
image array is still accepted when there is no context) and passes ``context=`` to
the flow's ``log_prob`` (and to :func:`dequantized_log_prob`); the sampling step takes
the conditioning images and labels of its samples.

Hybrid models. With ``hybrid_lam`` (``config.hybrid``, a
:class:`~jaxflows.models.hybrid.HybridFlow`, whose ``apply`` gives ``(log p(x),
logits)``) the train step minimises the mean over the batch of
``-(lam log p(x) + log p(y | x))`` in nats per example
(:func:`~jaxflows.models.hybrid.hybrid_loss`; ``log p(x)`` of the uniformly dequantised
image), the batch carries the labels, the ``loss`` metric is still the bits/dim of
``log p(x)`` (so ``train_bpd`` keeps its meaning) and the metrics add ``objective``
(the hybrid loss), ``accuracy`` and ``nll_y``; evaluation also sums correct
predictions (argmax of the logits).

Sharding. Every function is ``jax.jit``-ed with the batch split over the mesh's
``"batch"`` axis and the :class:`TrainState` replicated; XLA inserts the all-reduce of
the gradients. Random numbers are generated for the *global* batch from a replicated
key (``jax_threefry_partitionable``), so results do not depend on the device count.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxflows.metrics import bits_per_dim
from jaxflows.nn.lipschitz import LIPSCHITZ
from jaxflows.train.mesh import batch_sharding, replicated
from jaxflows.train.state import TrainState, ema_update

__all__ = ["dequantize", "dequantized_log_prob", "variational", "Steps", "make_steps",
           "MUTABLE_EXCLUDED", "make_context", "parse_context", "split_batch"]

# Collections that are never updated by a train step.
MUTABLE_EXCLUDED = ("params", "buffers", "intermediates")


def init_compiler_options() -> Optional[dict]:
    """XLA options of the ``init`` program: no LLVM optimisation passes on a CPU.

    ``init`` runs once per run (parameter initialisers, data-dependent ActNorm, spectral
    norms' power iterations, the optimiser state), yet its program is large (every
    initialiser's threefry draws), and optimising its machine code dominates its cost on
    a CPU: measured on a 2-core CPU shared with other jobs, the 8x8 digits Glow's init (L=2,
    K=2, hidden 32, 256 images, Adam) compiled in 13.1 s at
    XLA's default level and 3.0 s at level 0, a residual flow's in 28.8 s and 8.2 s, while
    running it took 0.04-0.16 s either way. Other backends keep XLA's defaults (not
    measured there).
    """
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def dequantize(rng: jax.Array, images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``x = k + u`` with ``u ~ U[0, 1)`` per pixel: uniform dequantisation, on device."""
    return images.astype(dtype) + jax.random.uniform(rng, images.shape, dtype)


def parse_context(value) -> tuple:
    """``config.dataset.context`` as ``(kind, value)``: ``("", 0)``, ``("label", 0)``,
    ``("lowres", F)``, ``("mask", T)`` or ``("segmentation", 0)``.

    Raises ``ValueError`` naming ``config.dataset.context`` for anything else.
    """
    if value is None or value == "":
        return "", 0
    if value in ("label", "segmentation"):
        return value, 0
    for kind in ("lowres", "mask"):
        if isinstance(value, str) and value.startswith(kind + ":"):
            number = value[len(kind) + 1:]
            if number.isdigit() and int(number) >= 1:
                return kind, int(number)
    raise ValueError(f"config.dataset.context must be '' (none), 'label', 'lowres:F' with "
                     f"an integer factor F >= 1, 'mask:T' with an integer threshold "
                     f"T >= 1 or 'segmentation' (the dataset's label maps), got {value!r}.")


def make_context(context: str) -> Callable[[jax.Array, Optional[jax.Array]], Any]:
    """``(images, labels) -> context`` of a run's ``config.dataset.context`` (on device).

    * ``""``: ``None`` (unconditional);
    * ``"label"``: the labels as int32 ``[B]`` (the flow embeds them itself);
    * ``"lowres:F"``: the integer images ``[B, H, W, C]`` averaged over ``F x F`` boxes,
      float32 ``[B, H/F, W/F, C]`` in ``[0, num_bins)``, from the integer pixels (before
      dequantisation, so the context carries no noise). ``H`` and ``W`` must be
      divisible by ``F`` (checked by the trainer).
    * ``"mask:T"``: a two-class segmentation map of the image itself, int32 ``[B, H, W]``:
      1 where the pixel (averaged over channels) is at least ``T``, else 0 (the
      segmentation-to-image stand-in of the offline data: foreground / background of
      each digit).
    * ``"segmentation"``: the batch's per-pixel label maps, int32 ``[B, H, W]`` (a
      dataset whose ``DatasetInfo.label_shape`` is the images' ``(H, W)``, e.g.
      ``cityscapes_256``; checked by the trainer). Labels of another rank are a
      ``ValueError``.
    """
    kind, factor = parse_context(context)
    if kind == "":
        return lambda images, labels: None
    if kind == "segmentation":
        def segmentation(images, labels):
            if labels is None:
                raise ValueError("config.dataset.context='segmentation' needs the batch's "
                                 "label maps: pass the batch as {'image': ..., 'label': ...}.")
            if labels.ndim != 3 or (images is not None
                                    and tuple(labels.shape) != tuple(images.shape[:3])):
                shape = None if images is None else tuple(images.shape[:3])
                raise ValueError(f"config.dataset.context='segmentation': expected label "
                                 f"maps [B, H, W] of the images' size {shape}, got labels "
                                 f"of shape {tuple(labels.shape)}.")
            return labels.astype(jnp.int32)
        return segmentation
    if kind == "mask":
        def mask(images, labels):
            del labels
            level = jnp.mean(images.astype(jnp.float32), axis=-1)
            return (level >= factor).astype(jnp.int32)
        return mask
    if kind == "label":
        def label_context(images, labels):
            if labels is None:
                raise ValueError("config.dataset.context='label' needs the batch's labels: "
                                 "pass the batch as {'image': ..., 'label': ...}.")
            return labels.astype(jnp.int32)
        return label_context

    def lowres(images, labels):
        del labels
        b, h, w, c = images.shape
        x = images.astype(jnp.float32).reshape(b, h // factor, factor, w // factor, factor, c)
        return jnp.mean(x, axis=(2, 4))
    return lowres


def split_batch(batch):
    """``(images, labels)`` of a batch given as an array or ``{"image", "label"}`` dict."""
    if isinstance(batch, dict):
        return batch["image"], batch.get("label")
    return batch, None


def variational(flow) -> bool:
    """Whether ``flow`` carries a variational dequantiser (``flow.dequantizer``, e.g. Flow++)."""
    return getattr(flow, "dequantizer", None) is not None


def dequantized_log_prob(flow, variables, images, key, *, train: bool, rngs=None,
                         mutable=(), context=None, continuous: bool = False):
    """``(log-density bound per image, updated collections)`` for integer ``images``.

    ``context`` is passed to the flow (``None``: unconditional). ``continuous=True``
    (float vectors of tabular data): ``images`` are used as they are, with no
    dequantisation, and the result is the exact ``log p(x)`` (``key`` unused).

    Uniform dequantisation (every flow without a dequantiser): ``log p(k + u)``,
    ``u = U[0, 1)`` drawn from ``key`` by :func:`dequantize`. A flow with a variational
    dequantiser (``flow.dequantizer``, :class:`jaxflows.models.FlowPP`): its
    ``dequantized_log_prob`` method, ``log p(k + u) - log q(u | k)`` with ``u ~ q`` drawn
    from ``key`` as the ``"dequantize"`` rng stream. Both are lower bounds on
    ``log P(k)``; the dequantiser's parameters are in ``variables["params"]`` and train
    with the flow's. ``mutable``: the collections to update (empty: none).
    """
    rngs = dict(rngs or {})
    kw = {} if context is None else {"context": context}
    if continuous:
        arg = images
    elif variational(flow):
        rngs["dequantize"] = key
        kw["method"] = "dequantized_log_prob"
        arg = images
    else:
        arg = dequantize(key, images)
    if mutable:
        return flow.apply(variables, arg, train=train, rngs=rngs, mutable=mutable, **kw)
    return flow.apply(variables, arg, train=train, rngs=rngs, **kw), {}


class Steps(NamedTuple):
    """The compiled functions of a run (see :func:`make_steps`)."""

    init: Callable[..., TrainState]
    train: Callable[..., Any]
    evaluate: Callable[..., Any]
    sample: Callable[..., Any]
    refresh: Optional[Callable[..., TrainState]] = None


def _key_from(ids: jax.Array) -> jax.Array:
    """``fold_in(... fold_in(PRNGKey(ids[0]), ids[1]) ..., ids[-1])``."""
    key = jax.random.PRNGKey(ids[0])
    for i in range(1, ids.shape[0]):
        key = jax.random.fold_in(key, ids[i])
    return key


def _mutable(model_state) -> Sequence[str]:
    return [k for k in model_state if k not in MUTABLE_EXCLUDED]


def make_steps(flow, tx: optax.GradientTransformation, mesh, *, num_dims: int,
               ema_decay: float, use_ema: bool, num_samples: int,
               schedule: Optional[optax.Schedule] = None, context: str = "",
               continuous: bool = False, hybrid_lam: Optional[float] = None,
               lipschitz_refresh: int = 0, eval_lipschitz_rounds: int = 50) -> Steps:
    """Build the jitted functions of training a ``flow`` (a ``jaxflows.Flow``).

    Keys are derived inside the compiled functions from integer seeds (no eager
    PRNG ops, each of which would compile separately).

    ``context`` (``config.dataset.context``, see :func:`make_context`): the steps
    compute the flow's context from each batch, given as ``{"image", "label"}`` (the
    ``images`` arguments below accept that dict, or a bare array when the context does
    not need labels). ``continuous``: vector data, not dequantised, scored in nats per
    dimension instead of bits per dimension (``loss`` and ``evaluate``'s sums).
    ``hybrid_lam``: ``flow`` is a hybrid model trained on ``-(hybrid_lam log p(x) +
    log p(y | x))`` (module docstring); the batches must carry labels.

    Power-iteration vectors (the ``"lipschitz"`` collection of spectrally normalised
    layers) are updated by the training step's own forward pass, which sees the weights
    *before* the optimiser's update, so the stored vectors trail the weights by one
    step. ``lipschitz_refresh > 0`` runs that many further training-mode passes (no
    gradient) with the updated weights at the end of each step. The EMA weights never
    pass through a training step: ``refresh`` (below) fits the vectors to them before
    evaluation and sampling, with ``eval_lipschitz_rounds`` passes. Without it the EMA
    weights would be divided by a norm estimated along the live weights' singular
    vector, an underestimate, so a block could exceed its Lipschitz coefficient.

    * ``init(images, seed) -> TrainState``: ``flow.init`` on a dequantised *global*
      batch (so ActNorm's data-dependent statistics are global-batch statistics).
    * ``train(state, images) -> (state, metrics)``: one optimiser step. The step's
      key is ``fold_in(state.rng, state.step)``, split into the dequantisation noise,
      the ``"dropout"`` and the ``"logdet"`` rng streams. Non-parameter collections
      other than ``"buffers"`` are mutable (``"lipschitz"``). A non-finite loss or
      gradient leaves params, optimiser state, EMA and model state unchanged and
      increments ``num_skipped``. ``metrics``: ``loss`` (bits/dim; nats/dim when
      ``continuous``), ``grad_norm``, ``finite``, ``lr`` (``schedule(step)`` if given).
    * ``evaluate(state, images, mask, ids) -> (sum of the per-example score over
      mask, mask count)`` with EMA params when ``use_ema``; padded rows have ``mask = 0``; the
      dequantisation key is ``fold_in``-ed from the int32 vector ``ids``. A hybrid model
      returns ``(sum, count, number of correct predictions over mask)``.
    * ``refresh(state, images, use_ema) -> state`` (``use_ema`` static): ``state`` whose
      ``"lipschitz"`` vectors are refreshed for the EMA parameters (``use_ema``) or the
      live ones, by ``eval_lipschitz_rounds`` training-mode passes over ``images`` (a
      batch of the data's shape; the vectors depend on the weights only). For
      evaluation and sampling; training goes on from the unrefreshed state. Call it
      through :func:`jaxflows.train.evaluation.evaluation_state`, which skips flows
      without such vectors.
    * ``sample(variables, ids, temperature, cond=None) -> (samples, intermediates)``:
      ``num_samples`` draws at temperature ``T`` (base ``N(0, T^2 I)``), key from ``ids``;
      with a context, ``cond`` is the ``{"image", "label"}`` batch of ``num_samples``
      examples whose context each sample gets (see ``Run.sample_cond``).
    """
    for name, value, low in (("lipschitz_refresh", lipschitz_refresh, 0),
                             ("eval_lipschitz_rounds", eval_lipschitz_rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"make_steps: {name} must be an int >= {low}, got {value!r}.")
    rep = replicated(mesh)
    data = batch_sharding(mesh)
    context_of = make_context(context)
    hybrid = hybrid_lam is not None
    if hybrid:
        from jaxflows.models.hybrid import hybrid_loss
        if continuous or context:
            raise ValueError("make_steps: a hybrid model (hybrid_lam) is trained on images "
                             "without a context.")

    def labels_of(labels):
        if labels is None:
            raise ValueError("a hybrid model's steps need the batch's labels: pass the batch "
                             "as {'image': ..., 'label': ...}.")
        return labels.astype(jnp.int32)

    def score(log_prob):
        """Per-example loss: bits/dim of images, nats/dim of vectors."""
        log_prob = log_prob.astype(jnp.float32)
        if continuous:
            return -log_prob / num_dims
        return bits_per_dim(log_prob, num_dims)

    def init(batch, seed):
        images, labels = split_batch(batch)
        ctx = context_of(images, labels)
        ckw = {} if ctx is None else {"context": ctx}
        rng = jax.random.PRNGKey(seed)
        k_params, k_noise, k_drop, k_logdet, k_run = jax.random.split(rng, 5)
        rngs = {"params": k_params, "dropout": k_drop, "logdet": k_logdet}
        if continuous:
            variables = flow.init(rngs, images, train=False, **ckw)
        elif variational(flow):
            variables = flow.init({**rngs, "dequantize": k_noise}, images, train=False,
                                  method="dequantized_log_prob", **ckw)
        else:
            variables = flow.init(rngs, dequantize(k_noise, images), train=False, **ckw)
        variables = dict(variables)
        variables.pop("intermediates", None)
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
            ema_params=params, model_state=variables, rng=k_run,
            num_skipped=jnp.zeros((), jnp.int32))

    def lipschitz_rounds(params, model_state, images, labels, key, rounds: int):
        """The ``"lipschitz"`` collection after ``rounds`` training-mode passes with
        ``params`` (each pass runs every layer's ``n_iterations`` power iterations).
        """
        ctx = context_of(images, labels)
        mutable = _mutable(model_state)

        def one(lip, k):
            k_noise, k_drop, k_logdet = jax.random.split(k, 3)
            variables = {"params": params, **model_state, LIPSCHITZ: lip}
            _, updates = dequantized_log_prob(
                flow, variables, images, k_noise, train=True,
                rngs={"dropout": k_drop, "logdet": k_logdet}, mutable=mutable,
                context=ctx, continuous=continuous)
            return updates[LIPSCHITZ], None

        return lax.scan(one, model_state[LIPSCHITZ], jax.random.split(key, rounds))[0]

    def train(state: TrainState, batch):
        images, labels = split_batch(batch)
        ctx = context_of(images, labels)
        key = jax.random.fold_in(state.rng, state.step)
        k_noise, k_drop, k_logdet = jax.random.split(key, 3)
        mutable = _mutable(state.model_state)

        def loss_fn(params):
            variables = {"params": params, **state.model_state}
            rngs = {"dropout": k_drop, "logdet": k_logdet}
            out, updates = dequantized_log_prob(flow, variables, images, k_noise,
                                                train=True, rngs=rngs, mutable=mutable,
                                                context=ctx, continuous=continuous)
            if not hybrid:
                return jnp.mean(score(out)), (dict(updates), {})
            log_px, logits = out
            log_px = log_px.astype(jnp.float32)
            objective, parts = hybrid_loss(log_px, logits.astype(jnp.float32),
                                           labels_of(labels), hybrid_lam)
            return objective, (dict(updates), {
                "loss": jnp.mean(score(log_px)), "objective": objective,
                "accuracy": parts["accuracy"], "nll_y": parts["nll_y"]})

        (loss, (updates, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)

        def keep(new, old):
            """``new`` where the step was finite, else ``old`` (leaf by leaf)."""
            return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)

        # A skipped step leaves the optimiser state as it was too (Adam's moments and
        # count, apply_if_finite's counters): the loop counts skipped steps itself.
        opt_state = keep(opt_state, state.opt_state)
        model_state = dict(state.model_state)
        for name, value in updates.items():
            model_state[name] = keep(value, state.model_state[name])
        if lipschitz_refresh > 0 and LIPSCHITZ in model_state:
            fresh = lipschitz_rounds(params, model_state, images, labels,
                                     jax.random.fold_in(key, 3), lipschitz_refresh)
            model_state[LIPSCHITZ] = keep(fresh, model_state[LIPSCHITZ])
        if ema_decay > 0:
            ema = keep(ema_update(state.ema_params, params, ema_decay,
                                  state.step - state.num_skipped), state.ema_params)
        else:
            ema = params
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
            model_state=model_state, num_skipped=state.num_skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite, **extra}
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    def evaluate(state: TrainState, batch, mask, ids):
        images, labels = split_batch(batch)
        key = _key_from(ids)
        # "logdet": only a stochastic evaluation estimator draws from it (residual flows'
        # eval_estimator kind="roulette"); the default deterministic one ignores it.
        out, _ = dequantized_log_prob(flow, state.variables(use_ema and ema_decay > 0),
                                      images, key, train=False,
                                      rngs={"logdet": jax.random.fold_in(key, 1)},
                                      context=context_of(images, labels),
                                      continuous=continuous)
        log_prob = out[0] if hybrid else out
        per_example = score(log_prob)
        mask = mask.astype(jnp.float32)
        total = jnp.sum(jnp.where(mask > 0, per_example, 0.0))
        if not hybrid:
            return total, jnp.sum(mask)
        correct = (jnp.argmax(out[1], axis=-1) == labels_of(labels)).astype(jnp.float32)
        return total, jnp.sum(mask), jnp.sum(jnp.where(mask > 0, correct, 0.0))

    def refresh(state: TrainState, batch, use_ema_params: bool):
        images, labels = split_batch(batch)
        params = state.ema_params if use_ema_params else state.params
        key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 0x7FFFFFFF)
        lip = lipschitz_rounds(params, state.model_state, images, labels, key,
                               eval_lipschitz_rounds)
        return state.replace(model_state={**state.model_state, LIPSCHITZ: lip})

    def sample(variables, ids, temperature, cond=None):
        ckw = {}
        if cond is not None:
            ctx = context_of(*split_batch(cond))
            if ctx is not None:
                ckw["context"] = ctx
        out, state = flow.apply(variables, num_samples, temperature=temperature,
                                rngs={"sample": _key_from(ids)}, method="sample",
                                mutable=["intermediates"], **ckw)
        return out, state.get("intermediates", {})

    return Steps(
        init=jax.jit(init, in_shardings=(data, rep), out_shardings=rep,
                     compiler_options=init_compiler_options()),
        train=jax.jit(train, in_shardings=(rep, data), out_shardings=(rep, rep),
                      donate_argnums=(0,)),
        evaluate=jax.jit(evaluate, in_shardings=(rep, data, data, rep),
                         out_shardings=(rep, rep, rep) if hybrid else (rep, rep)),
        sample=jax.jit(sample, out_shardings=rep),
        refresh=jax.jit(refresh, static_argnums=2, in_shardings=(rep, data),
                        out_shardings=rep),
    )
