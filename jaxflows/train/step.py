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

from jaxflows.metrics import bits_per_dim
from jaxflows.train.mesh import batch_sharding, replicated
from jaxflows.train.state import TrainState, ema_update

__all__ = ["dequantize", "dequantized_log_prob", "variational", "Steps", "make_steps",
           "MUTABLE_EXCLUDED"]

# Collections that are never updated by a train step.
MUTABLE_EXCLUDED = ("params", "buffers", "intermediates")


def dequantize(rng: jax.Array, images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``x = k + u`` with ``u ~ U[0, 1)`` per pixel: uniform dequantisation, on device."""
    return images.astype(dtype) + jax.random.uniform(rng, images.shape, dtype)


def variational(flow) -> bool:
    """Whether ``flow`` carries a variational dequantiser (``flow.dequantizer``, e.g. Flow++)."""
    return getattr(flow, "dequantizer", None) is not None


def dequantized_log_prob(flow, variables, images, key, *, train: bool, rngs=None,
                         mutable=()):
    """``(log-density bound per image, updated collections)`` for integer ``images``.

    Uniform dequantisation (every flow without a dequantiser): ``log p(k + u)``,
    ``u = U[0, 1)`` drawn from ``key`` by :func:`dequantize`. A flow with a variational
    dequantiser (``flow.dequantizer``, :class:`jaxflows.models.FlowPP`): its
    ``dequantized_log_prob`` method, ``log p(k + u) - log q(u | k)`` with ``u ~ q`` drawn
    from ``key`` as the ``"dequantize"`` rng stream. Both are lower bounds on
    ``log P(k)``; the dequantiser's parameters are in ``variables["params"]`` and train
    with the flow's. ``mutable``: the collections to update (empty: none).
    """
    rngs = dict(rngs or {})
    if variational(flow):
        rngs["dequantize"] = key
        kw = dict(method="dequantized_log_prob")
        arg = images
    else:
        kw = {}
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
               schedule: Optional[optax.Schedule] = None) -> Steps:
    """Build the jitted functions of training a ``flow`` (a ``jaxflows.Flow``).

    Keys are derived inside the compiled functions from integer seeds (no eager
    PRNG ops, each of which would compile separately).

    * ``init(images, seed) -> TrainState``: ``flow.init`` on a dequantised *global*
      batch (so ActNorm's data-dependent statistics are global-batch statistics).
    * ``train(state, images) -> (state, metrics)``: one optimiser step. The step's
      key is ``fold_in(state.rng, state.step)``, split into the dequantisation noise,
      the ``"dropout"`` and the ``"logdet"`` rng streams. Non-parameter collections
      other than ``"buffers"`` are mutable (``"lipschitz"``). A non-finite loss or
      gradient leaves params, optimiser state, EMA and model state unchanged and
      increments ``num_skipped``. ``metrics``: ``loss`` (bits/dim), ``grad_norm``,
      ``finite``, ``lr`` (``schedule(step)`` if given).
    * ``evaluate(state, images, mask, ids) -> (sum of bits/dim over mask, mask count)``
      with EMA params when ``use_ema``; padded rows have ``mask = 0``; the
      dequantisation key is ``fold_in``-ed from the int32 vector ``ids``.
    * ``sample(variables, ids, temperature) -> (samples, intermediates)``:
      ``num_samples`` draws at temperature ``T`` (base ``N(0, T^2 I)``), key from ``ids``.
    """
    rep = replicated(mesh)
    data = batch_sharding(mesh)

    def init(images, seed):
        rng = jax.random.PRNGKey(seed)
        k_params, k_noise, k_drop, k_logdet, k_run = jax.random.split(rng, 5)
        rngs = {"params": k_params, "dropout": k_drop, "logdet": k_logdet}
        if variational(flow):
            variables = flow.init({**rngs, "dequantize": k_noise}, images, train=False,
                                  method="dequantized_log_prob")
        else:
            variables = flow.init(rngs, dequantize(k_noise, images), train=False)
        variables = dict(variables)
        variables.pop("intermediates", None)
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
            ema_params=params, model_state=variables, rng=k_run,
            num_skipped=jnp.zeros((), jnp.int32))

    def train(state: TrainState, images):
        key = jax.random.fold_in(state.rng, state.step)
        k_noise, k_drop, k_logdet = jax.random.split(key, 3)
        mutable = _mutable(state.model_state)

        def loss_fn(params):
            variables = {"params": params, **state.model_state}
            rngs = {"dropout": k_drop, "logdet": k_logdet}
            log_prob, updates = dequantized_log_prob(flow, variables, images, k_noise,
                                                     train=True, rngs=rngs, mutable=mutable)
            bpd = bits_per_dim(log_prob.astype(jnp.float32), num_dims)
            return jnp.mean(bpd), dict(updates)

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)

        def keep(new, old):
            """``new`` where the step was finite, else ``old`` (leaf by leaf)."""
            return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)

        model_state = dict(state.model_state)
        for name, value in updates.items():
            model_state[name] = keep(value, state.model_state[name])
        if ema_decay > 0:
            ema = keep(ema_update(state.ema_params, params, ema_decay,
                                  state.step - state.num_skipped), state.ema_params)
        else:
            ema = params
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
            model_state=model_state, num_skipped=state.num_skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    def evaluate(state: TrainState, images, mask, ids):
        log_prob, _ = dequantized_log_prob(flow, state.variables(use_ema and ema_decay > 0),
                                           images, _key_from(ids), train=False)
        bpd = bits_per_dim(log_prob.astype(jnp.float32), num_dims)
        mask = mask.astype(jnp.float32)
        return jnp.sum(jnp.where(mask > 0, bpd, 0.0)), jnp.sum(mask)

    def sample(variables, ids, temperature):
        out, state = flow.apply(variables, num_samples, temperature=temperature,
                                rngs={"sample": _key_from(ids)}, method="sample",
                                mutable=["intermediates"])
        return out, state.get("intermediates", {})

    return Steps(
        init=jax.jit(init, in_shardings=(data, rep), out_shardings=rep),
        train=jax.jit(train, in_shardings=(rep, data), out_shardings=(rep, rep),
                      donate_argnums=(0,)),
        evaluate=jax.jit(evaluate, in_shardings=(rep, data, data, rep),
                         out_shardings=(rep, rep)),
        sample=jax.jit(sample, out_shardings=rep),
    )
