r"""Interpolation between two images through a flow's latent space.

For a flow ``f`` (data -> latent) with a standard normal base, the latent of an image is
``z = f(x)``. With mAR-SCF (:func:`~jaxflows.models.mar_scf.mar_scf`) the latent holds the
**standardised** mAR variables (every factored-out half and the top level mapped through
its autoregressive prior). :func:`linear_latent_interpolation` follows a straight line in
``z`` (for any flow):

    z_t = (1 - t) f(x_A) + t f(x_B),     x_t = f^{-1}(z_t),     t in [0, 1].

Both ends are reproduced exactly up to the round-trip error of the flow. The linear
interpolation that mAR-SCF compares with its optimised one (supplement Fig. 11) is the
straight line in the un-standardised mAR variables below (:func:`linear_mar_interpolation`).

**The mAR latent space.** The functions below work in the space of the *un-standardised*
mAR variables ``l = (l_1, ..., l_{L-1}, h_L)``: every factored-out half and the top
level's output as the flow layers produce them, before the mAR priors standardise them.
This is the space in which the mAR prior ``p(l) = prod_i p(l_i | r_i)`` is multimodal
(mAR-SCF supplement Sec. E: "the multimodal latent space of our mAR prior"); in the
standardised ``z`` above the density is ``N(0, I)`` and has a single mode.
:func:`mar_latents` maps images to ``l`` and :func:`mar_decode` back (the flow with
every prior replaced by the identity, through ``flax.linen.intercept_methods`` on
:class:`~jaxflows.distributions.mar.MARPrior`), :func:`mar_log_prior` is ``log p(l)``
(decode, then the flow's forward pass, summing ``log N(eps) - sum log sigma`` of every
prior: the kept halves ``r_i`` are functions of the coarser levels' ``l``).

**Optimised interpolation** (:func:`optimized_latent_interpolation`). mAR-SCF (CVPR 2020,
Sec. 5, Eq. 11; supplement Sec. E) optimises the interpolants so that they lie in
high-density regions of the mAR prior between ``x_A`` and ``x_B``, with Adamax (learning
rate ``5e-2``, about 100 iterations) and two weights ``lambda_2 ~ lambda_1`` in
``[0.2, 0.5]``. The equation itself is in the main paper, which is not among this
project's sources (only its supplement is; the reference code ``visinf/mar-scf`` has no
interpolation). **Our reading**, the simplest objective consistent with every stated
fact: for the interior points ``t_k = k/(n-1)``, ``k = 1 .. n-2``, starting from the
linear path ``l_k = (1 - t_k) l_A + t_k l_B``,

.. math::

    \min_{l_k}\; -\log p_{\mathrm{mAR}}(l_k)
        + \lambda_1 (1 - t_k) \lVert l_k - l_A \rVert^2
        + \lambda_2\, t_k \lVert l_k - l_B \rVert^2,

independently per point (the ends stay ``l_A`` and ``l_B``, so the ends are the two
images). The two proximity terms add up to
``lambda (||l_k - lin_k||^2 + t_k (1 - t_k) ||l_A - l_B||^2)`` when
``lambda_1 = lambda_2 = lambda``, so the point is pulled towards the linear interpolant
``lin_k`` and up the prior's density; ``lambda_1 != lambda_2`` shifts the anchor towards
one end, which is why the two weights are kept about equal. Choices made where the text
is silent: squared Euclidean distances summed over all ``D`` latent dimensions (the
log-density is also a sum over ``D``: with the unsquared norm the distance terms would be
negligible against ``log p`` at any ``lambda`` in ``[0.2, 0.5]`` and every point would
collapse onto a mode); the weights ``(1 - t_k)`` and ``t_k`` (without them every
interior point would have the same objective and the same optimum); defaults
``lambda_1 = lambda_2 = 0.3``. Limits: ``lambda -> infinity`` gives the linear path in
``l``; ``lambda = 0`` is pure density ascent (every point climbs to a mode of the prior).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxflows.distributions.mar import MARPrior

__all__ = ["linear_latent_interpolation", "linear_mar_interpolation", "mar_decode",
           "mar_latents", "mar_log_prior", "optimized_latent_interpolation"]


def linear_latent_interpolation(flow, variables: Any, x_a: jax.Array, x_b: jax.Array,
                                num_points: int = 8, *,
                                context: Optional[jax.Array] = None) -> jax.Array:
    """Images along the straight line between ``f(x_a)`` and ``f(x_b)`` in latent space.

    Args:
      flow: a :class:`~jaxflows.distributions.Flow`.
      variables: its variables.
      x_a: the first end, of the flow's event shape (no batch axis), e.g. dequantised
        pixel values ``[H, W, C]``.
      x_b: the second end, of the same shape.
      num_points: number of points ``t = 0, 1/(n-1), ..., 1`` (>= 2), ends included.
      context: the flow's context for both images (batch axis of size 1), if any.

    Returns:
      ``[num_points, *event_shape]``: ``f^{-1}(z_t)``.
    """
    if not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"linear_latent_interpolation: num_points must be an int >= 2, got "
                         f"{num_points!r}.")
    shape = tuple(flow.event_shape)
    for name, x in (("x_a", x_a), ("x_b", x_b)):
        if tuple(jnp.shape(x)) != shape:
            raise ValueError(f"linear_latent_interpolation: `{name}` must have the flow's event "
                             f"shape {shape} (no batch axis), got {tuple(jnp.shape(x))}.")
    ends = jnp.stack([jnp.asarray(x_a), jnp.asarray(x_b)]).astype(jnp.float32)
    ctx2 = None if context is None else jnp.concatenate([context, context], axis=0)
    z = flow.apply(variables, ends, context=ctx2, method=flow.forward)
    t = jnp.linspace(0.0, 1.0, num_points).reshape((-1,) + (1,) * len(z.shape[1:]))
    zt = (1.0 - t) * z[0] + t * z[1]
    ctx = None if context is None else jnp.repeat(context, num_points, axis=0)
    return flow.apply(variables, zt, context=ctx, method=flow.inverse)


# ---------------------------------------------------------------------------------------
# The mAR latent space (un-standardised prior variables) and the optimised interpolation.


def _prior_method(context, names) -> bool:
    return isinstance(context.module, MARPrior) and context.method_name in names


@contextlib.contextmanager
def _identity_priors():
    """Every :class:`MARPrior` ``standardize``/``generate`` becomes ``x -> (x, 0)``."""
    def interceptor(next_fun, args, kwargs, context):
        if _prior_method(context, ("standardize", "generate")):
            x = args[0]
            return x, jnp.zeros(x.shape[:1], x.dtype)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


def _check_images(flow, x, arg: str, who: str) -> jax.Array:
    shape = tuple(flow.event_shape)
    x = jnp.asarray(x)
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"{who}: `{arg}` must be a batch [B, *{shape}] of the flow's event "
                         f"shape, got {tuple(x.shape)}.")
    return x


def _has_core(flow) -> bool:
    """Whether ``flow`` is ``Chain(preprocessing + [MultiScale])`` (as ``mar_scf`` builds)."""
    from jaxflows.bijectors.base import Chain
    from jaxflows.models.multiscale import MultiScale
    bij = getattr(flow, "bijector", None)
    return (isinstance(bij, Chain) and len(bij.bijectors) > 0
            and isinstance(bij.bijectors[-1], MultiScale))


def _core_inverse(module, l, context):
    return module.bijector.bijectors[-1].inverse(l, context=context)


def _core_forward(module, y, context):
    return module.bijector.bijectors[-1].forward(y, context=context)


def mar_latents(flow, variables: Any, x: jax.Array, *,
                context: Optional[jax.Array] = None) -> jax.Array:
    """The mAR latents ``l`` of images ``x`` ``[B, *event]`` (module docstring).

    The flow's forward pass with every mAR prior replaced by the identity: the factored-out
    halves and the top level as the flow layers produce them, in the latent layout of
    ``flow.forward`` (``[B, *event]`` for mAR-SCF). Raises ``ValueError`` when the flow has
    no :class:`~jaxflows.distributions.mar.MARPrior`.
    """
    x = _check_images(flow, x, "x", "mar_latents")
    calls = []

    def count(next_fun, args, kwargs, context):
        if _prior_method(context, ("standardize",)):
            calls.append(context.method_name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(count), _identity_priors():
        l = flow.apply(variables, x, context=context, method=flow.forward)
    if not calls:
        raise ValueError("mar_latents: the flow has no mAR prior (no MARPrior is called in "
                         "its forward pass); the mAR latent space exists only for mAR-SCF "
                         "flows (jaxflows.models.mar_scf).")
    return l


def mar_decode(flow, variables: Any, l: jax.Array, *,
               context: Optional[jax.Array] = None) -> jax.Array:
    """Images ``f^{-1}(l)`` of mAR latents ``l`` (the inverse of :func:`mar_latents`)."""
    with _identity_priors():
        return flow.apply(variables, l, context=context, method=flow.inverse)


def mar_log_prior(flow, variables: Any, l: jax.Array, *,
                  context: Optional[jax.Array] = None) -> jax.Array:
    r"""``log p_mAR(l) = sum_i log p(l_i | r_i)`` in nats, ``[B]``.

    ``l`` is decoded to an image (:func:`mar_decode`), and the flow's forward pass on that
    image recomputes every kept half ``r_i`` and standardises every ``l_i``:
    ``log p(l) = log N(z; 0, I) + sum_i (-sum log sigma_i)``, the log-dets of the priors'
    ``standardize`` calls. Differentiable in ``l`` (through the decode and the forward pass).
    For ``Chain(preprocessing + [MultiScale])`` flows (``mar_scf``) the decode and the
    forward pass stop before the preprocessing, which does not enter ``p(l)`` and whose
    sigmoid saturates in float32 far from the data.
    """
    log_dets = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if _prior_method(context, ("standardize",)):
            log_dets.append(out[1])
        return out

    if _has_core(flow):
        # Through the multi-scale body only: the preprocessing (e.g. the logit's sigmoid)
        # would saturate in float32 for latents far from the data and give NaN.
        with _identity_priors():
            y = flow.apply(variables, l, context, method=_core_inverse)
        with nn.intercept_methods(record):
            z = flow.apply(variables, y, context, method=_core_forward)
    else:
        x = mar_decode(flow, variables, l, context=context)
        with nn.intercept_methods(record):
            z = flow.apply(variables, x, context=context, method=flow.forward)
    if not log_dets:
        raise ValueError("mar_log_prior: the flow has no mAR prior (no MARPrior is called in "
                         "its forward pass).")
    d = math.prod(z.shape[1:])
    sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
    return -0.5 * sq - 0.5 * d * math.log(2 * math.pi) + sum(log_dets)


def _pairs(flow, x_a, x_b, who: str) -> Tuple[jax.Array, jax.Array, bool]:
    """``(x_a, x_b)`` as batches ``[P, *event]`` and whether a single pair was given."""
    shape = tuple(flow.event_shape)
    x_a, x_b = jnp.asarray(x_a, jnp.float32), jnp.asarray(x_b, jnp.float32)
    single = tuple(x_a.shape) == shape
    for name, x in (("x_a", x_a), ("x_b", x_b)):
        if tuple(x.shape) != shape and tuple(x.shape[1:]) != shape:
            raise ValueError(f"{who}: `{name}` must have the flow's event shape {shape} or be "
                             f"a batch [P, *{shape}] of pairs, got {tuple(x.shape)}.")
    if x_a.shape != x_b.shape:
        raise ValueError(f"{who}: `x_a` {tuple(x_a.shape)} and `x_b` {tuple(x_b.shape)} must "
                         "have the same shape.")
    if single:
        x_a, x_b = x_a[None], x_b[None]
    return x_a, x_b, single


def _check_num_points(num_points, who: str) -> None:
    if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 2:
        raise ValueError(f"{who}: num_points must be an int >= 2, got {num_points!r}.")


def _tile_context(context, times: int):
    """``context`` ``[P, ...]`` repeated for ``times`` points per pair (pair-major)."""
    return None if context is None else jnp.repeat(context, times, axis=0)


def linear_mar_interpolation(flow, variables: Any, x_a: jax.Array, x_b: jax.Array,
                             num_points: int = 8, *,
                             context: Optional[jax.Array] = None) -> jax.Array:
    """Images along the straight line between the mAR latents of ``x_a`` and ``x_b``.

    ``l_t = (1 - t) l_A + t l_B`` in the mAR latent space (:func:`mar_latents`), the
    "simple linear interpolation in the multimodal latent space of our mAR prior" that
    mAR-SCF (supplement Fig. 11) compares with its optimised interpolation, and the
    starting point of :func:`optimized_latent_interpolation`. (:func:`linear_latent_interpolation`
    is linear in the standardised ``z`` instead.)

    Args:
      flow: an mAR-SCF :class:`~jaxflows.distributions.Flow`.
      variables: its variables.
      x_a: the first end: one image (the flow's event shape) or ``P`` of them
        ``[P, *event]``.
      x_b: the second end, of the same shape.
      num_points: points ``t = 0, 1/(n-1), ..., 1`` (>= 2), ends included.
      context: the flow's context, one row per pair (``[P, ...]``), if any.

    Returns:
      ``[num_points, *event]`` for one pair, ``[P, num_points, *event]`` for ``P``.
    """
    who = "linear_mar_interpolation"
    _check_num_points(num_points, who)
    x_a, x_b, single = _pairs(flow, x_a, x_b, who)
    p = x_a.shape[0]
    ends = mar_latents(flow, variables, jnp.concatenate([x_a, x_b]),
                       context=None if context is None else jnp.concatenate([context, context]))
    l_a, l_b = ends[:p], ends[p:]
    t = jnp.linspace(0.0, 1.0, num_points).reshape((1, -1) + (1,) * (l_a.ndim - 1))
    path = (1.0 - t) * l_a[:, None] + t * l_b[:, None]
    flat = path.reshape((p * num_points,) + path.shape[2:])
    x = mar_decode(flow, variables, flat, context=_tile_context(context, num_points))
    x = x.reshape((p, num_points) + x.shape[1:])
    return x[0] if single else x


def optimized_latent_interpolation(
        flow, variables: Any, x_a: jax.Array, x_b: jax.Array, num_points: int = 8, *,
        lambda1: float = 0.3, lambda2: Optional[float] = None, num_steps: int = 100,
        learning_rate: float = 5e-2, context: Optional[jax.Array] = None,
        return_info: bool = False):
    r"""mAR-SCF's optimised interpolation in the mAR latent space (module docstring).

    For every pair, the interior points ``l_k`` (``t_k = k / (n-1)``, ``k = 1 .. n-2``)
    start on the linear path and take ``num_steps`` Adamax steps (``optax.adamax``) on

    .. math::

        J(l_k) = -\log p_{\mathrm{mAR}}(l_k) + \lambda_1 (1 - t_k) \lVert l_k - l_A\rVert^2
                 + \lambda_2 t_k \lVert l_k - l_B \rVert^2,

    (our reading of the paper's Eq. 11, see the module docstring; the sum of ``J`` over the
    points is minimised, and the points do not interact). All pairs and points are one
    batch; the whole optimisation is one compiled ``lax.scan`` (one step = one decode and
    one forward pass with their gradients, about a training step, as the paper says).
    The ends stay ``l_A``, ``l_B``: the first and last images are ``x_a`` and ``x_b`` up to
    the flow's round-trip error. A point whose objective or gradient is not finite (the
    inverse of an under-trained flow can overflow far from the data) goes back to its
    last finite iterate and skips that step (the other points are not affected).

    Args:
      flow: an mAR-SCF :class:`~jaxflows.distributions.Flow` (``ValueError`` for a flow
        without mAR priors).
      variables: its variables.
      x_a: the first end: one image (event shape) or ``P`` of them ``[P, *event]``
        (dequantised pixel values, as the flow's ``log_prob`` takes them).
      x_b: the second end, of the same shape.
      num_points: points along the path (>= 2), ends included.
      lambda1: the weight of the distance to ``l_A`` (>= 0; the paper:
        ``lambda_2 ~ lambda_1`` in ``[0.2, 0.5]``).
      lambda2: the weight of the distance to ``l_B``; ``None`` is ``lambda1``.
      num_steps: Adamax iterations (the paper: about 100); 0 returns the linear path.
      learning_rate: Adamax learning rate (the paper: ``5e-2``).
      context: the flow's context, one row per pair, if any.
      return_info: also return a dict with ``"objective"`` ``[num_steps + 1, P]`` (the
        summed ``J`` of each pair's interior points before every step and after the last),
        ``"log_prior"`` ``[P, num_points]`` (``log p_mAR`` of the final points),
        ``"latents"`` ``[P, num_points, *latent]``, and the starting point: ``"linear"``
        (the images of the linear path, as :func:`linear_mar_interpolation`) and
        ``"linear_log_prior"`` (without the pair axis for one pair).

    Returns:
      Images ``[num_points, *event]`` (one pair) or ``[P, num_points, *event]``, and the
      info dict if ``return_info``.
    """
    who = "optimized_latent_interpolation"
    _check_num_points(num_points, who)
    lambda2 = lambda1 if lambda2 is None else lambda2
    for name, v in (("lambda1", lambda1), ("lambda2", lambda2)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{who}: {name} must be a finite number >= 0, got {v!r}.")
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
        raise ValueError(f"{who}: num_steps must be an int >= 0, got {num_steps!r}.")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
            and learning_rate > 0):
        raise ValueError(f"{who}: learning_rate must be a finite number > 0, got "
                         f"{learning_rate!r}.")
    x_a, x_b, single = _pairs(flow, x_a, x_b, who)
    p, n = x_a.shape[0], num_points
    inner = n - 2
    ctx_all = _tile_context(context, n)
    ctx_ends = None if context is None else jnp.concatenate([context, context])
    if inner == 0:
        images = lin = jnp.stack([x_a, x_b], axis=1)
        hist = jnp.zeros((num_steps + 1, p))
        ends = mar_latents(flow, variables, jnp.concatenate([x_a, x_b]), context=ctx_ends)
        path = jnp.stack([ends[:p], ends[p:]], axis=1)
        log_prior = lin_log_prior = mar_log_prior(
            flow, variables, path.reshape((2 * p,) + path.shape[2:]),
            context=ctx_all).reshape(p, 2)
    else:
        run = _compiled_optimizer(flow, p, n, num_steps)
        images, hist, log_prior, path, lin, lin_log_prior = run(
            variables, x_a, x_b, context, jnp.float32(lambda1), jnp.float32(lambda2),
            jnp.float32(learning_rate))
    info: Dict[str, jax.Array] = {"objective": hist, "log_prior": log_prior, "latents": path,
                                  "linear": lin, "linear_log_prior": lin_log_prior}
    if single:
        images = images[0]
        info = {k: (a[:, 0] if k == "objective" else a[0]) for k, a in info.items()}
    if not return_info:
        return images
    return images, info


# Compiled optimisers, one per (flow object, pairs, points, steps): the weights and the
# learning rate are traced, so changing them does not recompile. Flax modules built from
# lists are not hashable, hence the key on ``id`` (the flow is kept alive by the entry).
_COMPILED: Dict[Tuple[int, int, int, int], Tuple[Any, Any]] = {}
_COMPILED_SIZE = 8


def _compiled_optimizer(flow, p: int, n: int, num_steps: int):
    key = (id(flow), p, n, num_steps)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is flow:
        return hit[1]
    inner = n - 2

    def objective(l, v, l_a, l_b, t, lam1, lam2, ctx_inner):
        # l: [P * inner, *latent]; l_a, l_b: [P, *latent]; t: [inner]
        lp = mar_log_prior(flow, v, l, context=ctx_inner)
        la = jnp.repeat(l_a, inner, axis=0)
        lb = jnp.repeat(l_b, inner, axis=0)
        tt = jnp.tile(t, p)
        axes = tuple(range(1, l.ndim))
        per = (-lp + lam1 * (1.0 - tt) * jnp.sum((l - la) ** 2, axis=axes)
               + lam2 * tt * jnp.sum((l - lb) ** 2, axis=axes))
        return jnp.sum(per), per

    @jax.jit
    def run(v, x_a, x_b, context, lam1, lam2, lr):
        ctx_inner = _tile_context(context, inner)
        ctx_ends = None if context is None else jnp.concatenate([context, context])
        ends = mar_latents(flow, v, jnp.concatenate([x_a, x_b]), context=ctx_ends)
        l_a, l_b = ends[:p], ends[p:]
        t = jnp.linspace(0.0, 1.0, n)[1:-1]
        tb = t.reshape((1, -1) + (1,) * (l_a.ndim - 1))
        l0 = ((1.0 - tb) * l_a[:, None] + tb * l_b[:, None]).reshape(
            (p * inner,) + l_a.shape[1:])
        tx = optax.adamax(lr)
        grad_fn = jax.value_and_grad(objective, has_aux=True)

        axes = tuple(range(1, l0.ndim))

        def guard(l, per, g, good, per_good):
            """Points whose objective or gradient is not finite go back to their last
            finite iterate (and get no gradient).
            """
            ok = jnp.isfinite(per) & jnp.all(jnp.isfinite(g), axis=axes)
            okb = ok.reshape((-1,) + (1,) * len(axes))
            return (jnp.where(okb, l, good), jnp.where(ok, per, per_good),
                    jnp.where(okb, g, 0.0), okb)

        def step(carry, _):
            l, opt, good, per_good = carry
            (_, per), g = grad_fn(l, v, l_a, l_b, t, lam1, lam2, ctx_inner)
            good, per_good, g, okb = guard(l, per, g, good, per_good)
            upd, opt = tx.update(g, opt, good)
            l = jnp.where(okb, optax.apply_updates(l, upd), good)
            return (l, opt, good, per_good), per_good.reshape(p, inner).sum(-1)

        (_, per0), _ = grad_fn(l0, v, l_a, l_b, t, lam1, lam2, ctx_inner)
        carry = (l0, tx.init(l0), l0, per0)
        (l, _, good, per_good), hist = jax.lax.scan(step, carry, None, length=num_steps)
        _, per = objective(l, v, l_a, l_b, t, lam1, lam2, ctx_inner)
        ok = jnp.isfinite(per)
        l = jnp.where(ok.reshape((-1,) + (1,) * len(axes)), l, good)
        per = jnp.where(ok, per, per_good)
        hist = jnp.concatenate([hist, per.reshape(p, inner).sum(-1)[None]])
        ctx_all = _tile_context(context, n)

        def finish(l):
            path = jnp.concatenate([l_a[:, None], l.reshape((p, inner) + l.shape[1:]),
                                    l_b[:, None]], axis=1)
            flat = path.reshape((p * n,) + path.shape[2:])
            x = mar_decode(flow, v, flat, context=ctx_all)
            log_prior = mar_log_prior(flow, v, flat, context=ctx_all).reshape(p, n)
            return x.reshape((p, n) + x.shape[1:]), log_prior, path

        x, log_prior, path = finish(l)
        x_lin, log_prior_lin, _ = finish(l0)
        return x, hist, log_prior, path, x_lin, log_prior_lin

    if len(_COMPILED) >= _COMPILED_SIZE:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = (flow, run)
    return run
