r"""Fixed-point inversion of residual maps ``y = x + g(x)`` with implicit gradients.

A residual block ``f(x) = x + g(x)`` with ``Lip(g) < 1`` is invertible, and its inverse
is the unique fixed point of the contraction ``T(x) = y - g(x)`` (Banach; Behrmann et
al. 2019, *Invertible Residual Networks*, Algorithm 1):

.. math::

    x_{k+1} = y - g(x_k), \qquad x_0 = y,

so the first iterate is ``x_1 = y - g(y)``. The error after ``k`` steps obeys
``|x_k - x^*| <= Lip^k / (1 - Lip) |x_1 - x_0|`` and, in terms of the last update,
``|x_{k+1} - x^*| <= Lip / (1 - Lip) |x_{k+1} - x_k|``: a tolerance on the update is
amplified by up to ``1 / (1 - Lip)`` (50 at ``Lip = 0.98``), which is why the default
tolerance is a small multiple of the dtype's machine epsilon.

Stopping rule (per example, i.e. per index of the leading ``batch_axes`` axes), with
``rms`` the root mean square over the event axes and ``d_k = rms(x_{k} - x_{k-1})``::

    converged: d_k <= atol + rtol * rms(x_k)
    stalled:   d_k >= d_{k-1}      (no progress: round-off floor reached, or Lip(g) >= 1)
    capped:    k == max_iter

An example stops updating at the first of these; the loop stops when every example has
stopped. In exact arithmetic ``d_k <= Lip * d_{k-1}`` strictly, so "stalled" only
happens at the floating-point floor (or when ``g`` is not a contraction); it saves the
iterations a too-tight tolerance would waste. Only ``converged`` sets the flag, so a
stalled or capped example is reported as not converged, never silently.

Gradients (implicit function theorem). At the solution ``x^* + g(theta, x^*) = y``,
differentiating gives ``(I + J_x) dx = dy - J_theta dtheta``. For a cotangent ``xbar``
the adjoint ``v = (I + J_x)^{-T} xbar`` solves the linear fixed point

.. math::

    v = \bar x - J_x^T v,

a contraction with the same rate ``Lip(g)``, solved by its own ``lax.while_loop``
(same tolerances and cap). Then ``ybar = v`` and ``thetabar = -J_theta^T v``. Memory
is one vjp closure at ``x^*``, independent of the number of iterations, and
``jax.grad`` works (differentiating the forward ``while_loop`` itself would be an
error). Values ``g`` closes over (e.g. tracers of an outer transformation) are hoisted
with :func:`jax.closure_convert` and receive gradients too, but passing everything to
differentiate through ``params`` is clearer.

Example::

    def g(params, x):                        # batched [B, D] -> [B, D], Lip < 1
        return 0.5 * jnp.tanh(x @ params["w"])
    x, info = fixed_point_inverse(g, params, y)
    assert bool(jnp.all(info.converged))
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["FixedPointInfo", "fixed_point_inverse", "default_tolerance"]

PyTree = Any


class FixedPointInfo(NamedTuple):
    """Diagnostics of :func:`fixed_point_inverse`, one entry per example.

    Attributes:
      iterations: int32 ``[*batch]``, number of evaluations of ``g`` spent on the example.
      residual: ``[*batch]`` rms of the last update ``x_k - x_{k-1}`` (this equals the
        equation residual ``x + g(x) - y`` of the previous iterate and bounds, times
        ``Lip(g)``, the residual of the returned one).
      converged: bool ``[*batch]``, whether ``residual <= atol + rtol * rms(x)``.
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def default_tolerance(dtype) -> float:
    """Default ``rtol`` = ``atol`` for a dtype: ``8 * eps`` (about 9.5e-7 in float32,
    1.8e-15 in float64).

    This is close to the round-off floor of the update, so that even at ``Lip(g) = 0.98``
    the error after stopping (at most ``Lip / (1 - Lip)`` times the tolerance, usually far
    less) is at float32 precision; the stall rule stops examples that hit the floor first.
    """
    return float(8 * jnp.finfo(jnp.dtype(dtype)).eps)


def _check_settings(rtol, atol, max_iter, batch_axes, y):
    for name, val in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(val, (int, float)) and val > 0):
            raise ValueError(f"fixed_point_inverse: {name} must be a positive number, got {val!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"fixed_point_inverse: max_iter must be an integer >= 1, got {max_iter!r}")
    if not (isinstance(batch_axes, int) and 0 <= batch_axes <= y.ndim):
        raise ValueError(f"fixed_point_inverse: batch_axes must be an integer in [0, y.ndim={y.ndim}], "
                         f"got {batch_axes!r}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"fixed_point_inverse: y must be a floating-point array, got dtype {y.dtype}")


def _rms(a, batch_axes):
    axes = tuple(range(batch_axes, a.ndim))
    return jnp.sqrt(jnp.mean(jnp.square(a), axis=axes)) if axes else jnp.abs(a)


def _expand(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def _iterate(step, x0, *, rtol, atol, max_iter, batch_axes):
    """Runs ``x <- step(x)`` per example until converged/stalled/capped.

    Returns ``(x, FixedPointInfo)``. ``step`` maps a full ``[*batch, *event]`` array.
    """
    batch_shape = x0.shape[:batch_axes]
    dt = x0.dtype
    inf = jnp.full(batch_shape, jnp.inf, dt)
    init = (x0, inf, jnp.zeros(batch_shape, jnp.int32), jnp.zeros(batch_shape, bool),
            jnp.zeros(batch_shape, bool), jnp.asarray(0, jnp.int32))

    def cond(state):
        _, _, _, _, stopped, k = state
        return jnp.logical_and(k < max_iter, jnp.logical_not(jnp.all(stopped)))

    def body(state):
        x, r, iters, conv, stopped, k = state
        x_new = step(x)
        d = _rms(x_new - x, batch_axes)
        active = jnp.logical_not(stopped)
        x = jnp.where(_expand(active, x), x_new, x)
        conv_new = d <= atol + rtol * _rms(x_new, batch_axes)
        stall = jnp.logical_not(d < r)  # also true for NaN
        conv = jnp.where(active, conv_new, conv)
        stopped = jnp.logical_or(stopped, jnp.logical_and(active, jnp.logical_or(conv_new, stall)))
        r = jnp.where(active, d, r)
        iters = iters + active.astype(jnp.int32)
        return x, r, iters, conv, stopped, k + 1

    x, r, iters, conv, _, _ = lax.while_loop(cond, body, init)
    return x, FixedPointInfo(iters, r, conv)


def fixed_point_inverse(
    g: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    y: jax.Array,
    *,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    max_iter: int = 1000,
    batch_axes: int = 1,
) -> Tuple[jax.Array, FixedPointInfo]:
    r"""Solves ``x + g(params, x) = y`` by the fixed-point iteration ``x <- y - g(params, x)``.

    Args:
      g: residual function ``g(params, x) -> same shape as x``, a contraction in ``x``
        (``Lip < 1``) acting on each example independently. It is called on the full
        batched array ``[*batch, *event]``.
      params: pytree of ``g``'s parameters; differentiable (implicit gradients).
      y: ``[*batch, *event]`` floating array, the output of the residual map.
      rtol, atol: relative and absolute tolerances on the rms of the update per example
        (see module docstring); both must be > 0. Default :func:`default_tolerance`
        of ``y.dtype`` (8 eps). The adjoint solve of the backward pass uses the same.
      max_iter: iteration cap (>= 1), also for the adjoint solve.
      batch_axes: number of leading axes of ``y`` that index examples (default 1; 0 treats
        ``y`` as a single example, e.g. under ``vmap``).

    Returns:
      ``(x, info)``: the solution and a :class:`FixedPointInfo` with per-example
      ``iterations``, ``residual`` and ``converged``. ``info`` carries no gradient.

    Gradients w.r.t. ``params``, ``y`` (and values ``g`` closes over) follow the implicit
    function theorem (module docstring); the adjoint solve's convergence is not reported.

    Raises:
      ValueError: ``rtol``/``atol`` not positive, ``max_iter < 1``, bad ``batch_axes``,
        non-floating ``y``, or ``g`` changing the shape/dtype of its input.
    """
    y = jnp.asarray(y)
    rtol = default_tolerance(y.dtype) if rtol is None else rtol
    atol = default_tolerance(y.dtype) if atol is None else atol
    _check_settings(rtol, atol, max_iter, batch_axes, y)
    out = jax.eval_shape(g, params, y)
    if out.shape != y.shape or out.dtype != y.dtype:
        raise ValueError(f"fixed_point_inverse: g(params, x) must return the shape and dtype of x "
                         f"{y.shape} {y.dtype}, got {out.shape} {out.dtype}")
    settings = dict(rtol=float(rtol), atol=float(atol), max_iter=int(max_iter), batch_axes=batch_axes)

    # Hoist closed-over tracers so that custom_vjp sees every differentiable input.
    g_conv, consts = jax.closure_convert(lambda p, x: g(p, x), params, y)

    def forward_solve(params, y, consts):
        step = lambda x: y - g_conv(params, x, *consts)
        return _iterate(step, y, **settings)

    @jax.custom_vjp
    def solve(params, y, consts):
        return forward_solve(params, y, consts)

    def solve_fwd(params, y, consts):
        x, info = forward_solve(params, y, consts)
        return (x, info), (params, consts, x)

    def solve_bwd(res, cotangents):
        params, consts, x = res
        x_bar = cotangents[0]
        _, vjp_fn = jax.vjp(lambda p, xx, c: g_conv(p, xx, *c), params, x, consts)
        # Adjoint: v = x_bar - J_x^T v, a contraction with rate Lip(g).
        step = lambda v: x_bar - vjp_fn(v)[1]
        v, _ = _iterate(step, x_bar, **settings)
        p_bar, _, c_bar = vjp_fn(v)
        neg = lambda t: jax.tree_util.tree_map(jnp.negative, t)
        return neg(p_bar), v, neg(c_bar)

    solve.defvjp(solve_fwd, solve_bwd)
    x, info = solve(params, y, consts)
    return x, jax.tree_util.tree_map(lax.stop_gradient, info)
