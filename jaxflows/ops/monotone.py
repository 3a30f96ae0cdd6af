r"""Elementwise inverse of strictly increasing scalar maps by bisection, with implicit gradients.

Transformers such as the mixture-of-logistics CDF of Flow++ (``y = logit F(x)``) or the
sigmoidal flows of NAF have no closed-form inverse, but they are strictly increasing in
each element, so ``x = f^{-1}(y)`` can be found by bisection: keep a bracket
``[lo, hi]`` with ``f(lo) <= y <= f(hi)``, evaluate ``f`` at the midpoint and keep the
half that still holds the target. :func:`monotone_inverse` does this for every element of
an array at once.

Why bisection (rather than Newton or secant iterations):

* **Robust.** It needs neither a derivative nor a good starting point and cannot diverge;
  saturated regions (``f'`` ~ 0, where Newton overshoots) cost nothing extra.
* **An exact error bound.** The solution is always inside the current bracket, so the
  bracket width is a guaranteed bound on the error of ``x``, not an estimate.
* **A static iteration count**, known before tracing from the bracket width and the
  tolerance, so the loop is a plain ``lax.fori_loop`` that XLA compiles once and that has
  the same cost for every element and every call (no data-dependent ``while_loop`` over
  the batch).

The same choice is made elsewhere: zuko's monotonic transforms bisect a fixed bracket a
fixed number of times, tfp's ``ScalarFunctionWithInferredInverse`` uses a secant search
and ``jaxopt.Bisection`` bisects a single scalar problem (batched inverses need a
``vmap`` wrapper); here brackets, convergence and diagnostics are per element.

Bracket. Either given, ``bracket=(lo, hi)`` (scalars or arrays broadcastable to ``y``),
or found by *geometric expansion* around 0: start from ``[-r, r]`` (``r =
initial_radius``) and, while ``f(lo) > y``, move to ``[c lo, lo]`` (``c =
expand_factor``), or while ``f(hi) < y`` to ``[hi, c hi]``. After ``k >= 1`` steps the
bracket is ``[-r c^k, -r c^{k-1}]`` (or its mirror image): of width ``(c - 1) |hi|``,
i.e. the bracket grows geometrically but stays proportionate to the solution, which
bounds the bisection count below. Each expansion step costs one evaluation of ``f`` and
runs in a ``lax.while_loop`` that stops as soon as every element is bracketed, or after
``max_expansions`` steps; an element still not bracketed then (a target outside the
reachable range, e.g. ``y = 2`` for a sigmoid) is reported with ``bracketed = False``
and ``converged = False``, never silently.

Iteration count. Each bisection step halves the width, so ``n`` steps reduce ``W = hi -
lo`` to ``W / 2^n`` and the count needed for an absolute tolerance ``tol`` is

.. math::

    n_{\rm tol} = \lceil \log_2 (W / \mathrm{tol}) \rceil .

A bracket that does not contain 0, with ``m = min(|lo|, |hi|) > 0``, can only shrink
until ``lo`` and ``hi`` are adjacent floating-point numbers (the round-off floor): its
smallest spacing is at least ``m 2^{-p-1}`` (``p`` = mantissa bits, :attr:`finfo.nmant`:
23 in float32, 52 in float64), so it reaches the floor after at most

.. math::

    n_{\rm floor} = p + 2 + \lceil \log_2 (W / m) \rceil

steps (one step of margin for the rounding of the midpoints). The static count of a
bracket is ``min(n_tol, n_floor)`` (``n_tol`` alone for a bracket containing 0), see
:func:`num_bisections`. It is computed in Python:

* given bracket of Python numbers or concrete (numpy / non-traced) arrays: the maximum
  over the elements;
* expanded bracket: the maximum over the brackets the expansion can produce, i.e.
  ``max(n_tol(2 r), min(n_tol(W_K), n_floor))`` with ``W_K = r c^{K-1} (c - 1)`` the
  widest bracket after ``K = max_expansions`` steps. With the defaults (``r = 1``, ``c =
  2``, ``tol = 4 eps``) this is **25 steps in float32 and 54 in float64**, whatever the
  targets;
* traced bracket (e.g. computed from parameters under ``jit``): the width is unknown,
  and the count is :func:`default_max_bisections` ``= 2 (p + 1)`` (48 in float32, 106 in
  float64), which reaches ``tol`` from any width up to ``2^{2(p+1)} tol`` and the
  round-off floor of any bracket not containing 0 with ``W / m <= 2^p``;
* ``max_bisections`` overrides all of these.

Convergence (per element). An element stops updating (``jnp.where`` freeze) once its
width is within ``tol``; it is ``converged`` iff the final bracket holds the target
(``f(lo) <= y <= f(hi)``) and its width is within ``tol`` (up to two units of round-off
of the endpoints, ``2 eps max(|lo|, |hi|)``) or it has reached the round-off floor (the
midpoint rounds to an endpoint). An element whose bracket was too wide for the count
(only possible with ``max_bisections`` or a traced bracket) is reported not converged.

Result. By default one regula-falsi step inside the final bracket, ``x = lo + (y -
f(lo)) (hi - lo) / (f(hi) - f(lo))`` (clipped to the bracket), using the values of ``f``
the bisection already has, so it costs no evaluation; it keeps the error below the
width and, for smooth ``f``, makes it second order in the width. ``interpolate=False``
returns the midpoint instead (and the interpolation falls back to it when ``f(lo)`` or
``f(hi)`` is not finite). The ``residual |f(x) - y|`` of the returned ``x`` costs one
more evaluation.

Gradients (implicit function theorem). At the solution ``f(theta, x) = y``, so
``f'(x) dx = dy - (df/dtheta) dtheta``, and for a cotangent ``xbar``

.. math::

    v = \bar x / f'(x), \qquad \bar y = v, \qquad \bar\theta = -(\partial f / \partial\theta)^T v .

Since ``f`` is elementwise, ``f'(x)`` is one ``jax.jvp`` with a tangent of ones, and
``thetabar`` one ``jax.vjp`` of ``f`` at the solution (the parameter leaves may have
extra axes, e.g. mixture components; the vjp sums over them as it should). This is a
``jax.custom_vjp``: the expansion and bisection loops are never differentiated (that
would be an error for the ``while_loop`` and meaningless for the bisection, whose output
is piecewise constant in ``theta``). Where ``f'(x)`` is not a positive finite number
(``f`` saturated in floating point, typically for a target outside the reachable range)
the gradient of that element is **set to zero** instead of ``inf``/``NaN``; such an
element is normally flagged not converged. Values ``f`` closes over (e.g. tracers of an
outer transformation) are hoisted with :func:`jax.closure_convert` and receive gradients
too, but passing everything to differentiate through ``params`` is clearer. The bracket
receives a zero gradient (the solution does not depend on it).

Example (inverse of ``logit`` of a mixture-of-logistics CDF, per-element parameters
with a trailing component axis)::

    def f(p, x):                                   # x: [B, D]; p leaves: [B, D, K]
        z = (x[..., None] - p["mu"]) * jnp.exp(-p["log_s"])
        logw = jax.nn.log_softmax(p["logits"], axis=-1)
        log_cdf = jax.nn.logsumexp(logw + jax.nn.log_sigmoid(z), axis=-1)
        log_sf = jax.nn.logsumexp(logw + jax.nn.log_sigmoid(-z), axis=-1)
        return log_cdf - log_sf                    # logit F(x), computed in log space
    x, info = monotone_inverse(f, params, y)       # bracket found by expansion
    assert bool(jnp.all(info.converged))
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxflows.ops.fixed_point import default_tolerance

__all__ = ["MonotoneInverseInfo", "monotone_inverse", "inverse_summary", "num_bisections",
           "default_max_bisections"]

PyTree = Any


class MonotoneInverseInfo(NamedTuple):
    """Diagnostics of :func:`monotone_inverse`, one entry per element of ``y`` (except
    ``num_bisections``). None of them carries a gradient.

    Attributes:
      residual: ``|f(params, x) - y|`` at the returned ``x``.
      bracket_width: ``hi - lo`` of the final bracket, a bound on the error of ``x`` when
        ``bracketed``.
      converged: bool, ``bracketed`` and the final width within ``tol`` (or at the
        round-off floor); see the module docstring.
      bracketed: bool, whether the bracket (given, or after expansion) held the target,
        ``f(lo) <= y <= f(hi)``. False means the target is outside ``f([lo, hi])`` (given
        bracket) or outside the range the expansion reached (``max_expansions`` steps), or
        ``f`` / ``y`` is NaN; such an element is never ``converged``.
      expansions: int32, number of expansion steps spent on the element (0 for a given
        bracket).
      iterations: int32, number of bisection steps in which the element's bracket was still
        wider than ``tol`` (at most ``num_bisections``; frozen afterwards).
      num_bisections: int32 scalar, the static number of bisection steps of the loop
        (:func:`num_bisections`), the same for every element.
    """

    residual: jax.Array
    bracket_width: jax.Array
    converged: jax.Array
    bracketed: jax.Array
    expansions: jax.Array
    iterations: jax.Array
    num_bisections: jax.Array


def _ceil_log2(r):
    """Elementwise smallest integer ``n`` with ``r <= 2**n`` (``r > 0``), as float64 numpy."""
    r = np.asarray(r, np.float64)
    n = np.ceil(np.log2(r))
    n = n + (r > np.exp2(n))           # guard against rounding of log2
    n = n - (r <= np.exp2(n - 1))
    return n


def _mantissa_bits(dtype) -> int:
    return int(jnp.finfo(jnp.dtype(dtype)).nmant)


def num_bisections(lo, hi, tol: float, dtype) -> int:
    r"""Static number of bisection steps for brackets ``[lo, hi]`` and absolute ``tol``.

    Per element ``min(n_tol, n_floor)`` with ``n_tol = ceil(log2((hi - lo) / tol))`` (at
    least 0) and, for a bracket not containing 0 (``m = min(|lo|, |hi|) > 0``), ``n_floor
    = p + 2 + ceil(log2((hi - lo) / m))`` the steps after which ``lo`` and ``hi`` are
    adjacent floats of ``dtype`` (``p`` = mantissa bits); the maximum over the elements is
    returned. ``lo`` and ``hi`` are Python numbers or concrete arrays (broadcast together).
    """
    lo, hi = np.broadcast_arrays(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    if lo.size == 0:
        return 0
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("num_bisections: the bracket must be finite")
    if np.any(lo > hi):
        raise ValueError("num_bisections: the bracket must satisfy lo <= hi")
    with np.errstate(over="ignore"):  # width / tol beyond float64: n_tol = inf
        width = hi - lo
        n_tol = np.where(width > tol, _ceil_log2(np.maximum(width, tol) / tol), 0.0)
        m = np.minimum(np.abs(lo), np.abs(hi))
        away = (lo > 0) | (hi < 0)
        ratio = np.where(away & (width > 0), width / np.where(away, m, 1.0), 1.0)
        n_floor = np.maximum(_mantissa_bits(dtype) + 2 + _ceil_log2(ratio), 0.0)
        n = np.max(np.where(away, np.minimum(n_tol, n_floor), n_tol))
    if not np.isfinite(n):
        raise ValueError(f"num_bisections: a bracket of width {np.max(width):g} around 0 is too "
                         f"wide for tol={tol:g}")
    return int(n)


def default_max_bisections(dtype) -> int:
    """Count used when the bracket is traced (width unknown): ``2 (p + 1)`` with ``p`` the
    mantissa bits, i.e. 48 in float32 and 106 in float64 (module docstring).
    """
    return 2 * (_mantissa_bits(dtype) + 1)


def _expansion_count(radius, factor, max_expansions, tol, dtype) -> int:
    """Static count covering every bracket the expansion can produce: ``[-r, r]`` and
    ``[-r c^k, -r c^{k-1}]`` for ``k = 1 .. max_expansions`` (mirror images have the same
    count); brackets beyond the float64 range are never reached and are skipped.
    """
    n = num_bisections(-radius, radius, tol, dtype)
    if max_expansions == 0:
        return n
    with np.errstate(over="ignore"):
        hi = -radius * np.power(float(factor), np.arange(max_expansions, dtype=np.float64))
        lo = hi * factor
    keep = np.isfinite(lo)
    if np.any(keep):
        n = max(n, num_bisections(lo[keep], hi[keep], tol, dtype))
    return n


def _concrete(v):
    """Numpy value of ``v``, or None when it is traced."""
    if isinstance(v, jax.core.Tracer):
        return None
    try:
        return np.asarray(v)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _expand(fx, y, radius, factor, max_expansions):
    """Geometric bracket expansion around 0; returns lo, hi, f(lo), f(hi), expansions."""
    dt = y.dtype
    lo = jnp.full(y.shape, -radius, dt)
    hi = jnp.full(y.shape, radius, dt)
    flo, fhi = fx(lo), fx(hi)
    count = jnp.zeros(y.shape, jnp.int32)
    c = jnp.asarray(factor, dt)

    def needs(s):
        _, _, flo, fhi, _, _ = s
        return flo > y, fhi < y  # at most one holds for increasing f; NaN: neither

    def cond(s):
        down, up = needs(s)
        return jnp.logical_and(s[-1] < max_expansions, jnp.any(jnp.logical_or(down, up)))

    def body(s):
        lo, hi, flo, fhi, count, k = s
        down, up = needs(s)
        z = jnp.where(down, c * lo, c * hi)
        fz = fx(z)
        new_lo = jnp.where(down, z, jnp.where(up, hi, lo))
        new_flo = jnp.where(down, fz, jnp.where(up, fhi, flo))
        new_hi = jnp.where(down, lo, jnp.where(up, z, hi))
        new_fhi = jnp.where(down, flo, jnp.where(up, fz, fhi))
        count = count + jnp.logical_or(down, up).astype(jnp.int32)
        return new_lo, new_hi, new_flo, new_fhi, count, k + 1

    init = (lo, hi, flo, fhi, count, jnp.asarray(0, jnp.int32))
    lo, hi, flo, fhi, count, _ = lax.while_loop(cond, body, init)
    return lo, hi, flo, fhi, count


def _within_tol(lo, hi, tol):
    """Width within ``tol`` up to two units of round-off of the endpoints."""
    eps = jnp.finfo(lo.dtype).eps
    slack = 2 * eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    return (hi - lo) <= tol + slack


def _bisect(fx, y, lo, hi, flo, fhi, n, tol):
    """``n`` bisection steps, freezing elements whose bracket is within ``tol``."""

    def body(_, s):
        lo, hi, flo, fhi, it = s
        active = jnp.logical_not(_within_tol(lo, hi, tol))
        mid = lo + 0.5 * (hi - lo)
        fm = fx(mid)
        right = fm < y  # the target lies in [mid, hi]
        move_lo = jnp.logical_and(active, right)
        move_hi = jnp.logical_and(active, jnp.logical_not(right))
        return (jnp.where(move_lo, mid, lo), jnp.where(move_hi, mid, hi),
                jnp.where(move_lo, fm, flo), jnp.where(move_hi, fm, fhi),
                it + active.astype(jnp.int32))

    it = jnp.zeros(y.shape, jnp.int32)
    return lax.fori_loop(0, n, body, (lo, hi, flo, fhi, it))


def _check_number(name, val, lower, strict=True):
    ok = isinstance(val, numbers.Real) and not isinstance(val, bool) and math.isfinite(val)
    ok = ok and (val > lower if strict else val >= lower)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(
            f"monotone_inverse: {name} must be a finite number {rel} {lower}, got {val!r}")


def inverse_summary(info: MonotoneInverseInfo) -> dict:
    """``{"max_residual", "num_not_converged", "max_iterations"}`` of ``info``: the summary
    that bijectors with a numerical elementwise inverse sow under ``"monotone_inverse"``
    (couplings and autoregressive flows whose transformer has ``inverse_and_info``), read
    back by :func:`jaxflows.bijectors.monotone_inverse_report`.
    """
    return {"max_residual": jnp.max(info.residual),
            "num_not_converged": jnp.sum(~info.converged).astype(jnp.int32),
            "max_iterations": jnp.max(info.iterations)}


def monotone_inverse(
    f: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    y: jax.Array,
    *,
    bracket: Optional[Tuple[Any, Any]] = None,
    tol: Optional[float] = None,
    max_bisections: Optional[int] = None,
    initial_radius: float = 1.0,
    expand_factor: float = 2.0,
    max_expansions: int = 64,
    interpolate: bool = True,
) -> Tuple[jax.Array, MonotoneInverseInfo]:
    r"""Solves ``f(params, x) = y`` elementwise for a strictly increasing ``f``, by bisection.

    Args:
      f: ``f(params, x) -> array of x's shape and dtype``, elementwise and strictly
        increasing: ``f(params, x)[i]`` depends on ``x[i]`` only. It is always called on a
        full array of ``y``'s shape, so parameter leaves may have the shape of ``y`` plus
        trailing axes (e.g. ``[*y.shape, K]`` mixture components, used as
        ``x[..., None] - mu``), or anything else that broadcasts inside ``f``.
      params: pytree of ``f``'s parameters; differentiable (implicit gradients).
      y: floating array, the targets.
      bracket: ``(lo, hi)`` with ``lo <= hi``, Python numbers or arrays broadcastable to
        ``y`` (concrete or traced). ``None`` (default): found by geometric expansion from
        ``[-initial_radius, initial_radius]`` (module docstring).
      tol: absolute tolerance on the bracket width, i.e. on the error of ``x`` (> 0).
        Default :func:`~jaxflows.ops.fixed_point.default_tolerance` of ``y.dtype``
        (``4 eps``); where the spacing of floats around ``x`` is larger, the bisection
        stops at the round-off floor and the element still counts as converged.
      max_bisections: static number of bisection steps (>= 0). Default: derived from the
        bracket and ``tol`` (:func:`num_bisections`; :func:`default_max_bisections` for a
        traced bracket).
      initial_radius: half-width of the initial bracket of the expansion (> 0).
      expand_factor: growth factor of the expanded bracket per step (> 1).
      max_expansions: cap on expansion steps (>= 0); the reachable range is ``|x| <=
        initial_radius * expand_factor ** max_expansions`` (about 1.8e19 by default).
      interpolate: finish with a regula-falsi step inside the final bracket (no extra
        evaluation of ``f``); ``False`` returns the midpoint.

    Returns:
      ``(x, info)``: the solution, of ``y``'s shape and dtype, and a
      :class:`MonotoneInverseInfo` (per-element ``residual``, ``bracket_width``,
      ``converged``, ``bracketed``, ``expansions``, ``iterations``, and the static
      ``num_bisections``). ``info`` carries no gradient.

    Gradients w.r.t. ``params`` and ``y`` (and values ``f`` closes over) follow the
    implicit function theorem (module docstring); elements where ``f'(x)`` is not a
    positive finite number get a zero gradient.

    Works under ``jit`` and ``vmap``; the count is static, so one compilation serves every
    ``y`` of a given shape.

    Raises:
      ValueError: non-floating ``y``; ``f`` changing the shape/dtype of its input; bad
        ``tol``, ``max_bisections``, ``initial_radius``, ``expand_factor``,
        ``max_expansions``; a concrete bracket with ``lo > hi``, non-finite entries, or
        not broadcastable to ``y``.
    """
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"monotone_inverse: y must be a floating-point array, got dtype {y.dtype}")
    dtype = y.dtype
    tol = default_tolerance(dtype) if tol is None else tol
    _check_number("tol", tol, 0.0)
    if max_bisections is not None and not (isinstance(max_bisections, int) and max_bisections >= 0):
        raise ValueError(f"monotone_inverse: max_bisections must be an integer >= 0 or None, "
                         f"got {max_bisections!r}")
    out = jax.eval_shape(f, params, y)
    if out.shape != y.shape or out.dtype != y.dtype:
        raise ValueError(f"monotone_inverse: f(params, x) must return the shape and dtype of x "
                         f"{y.shape} {y.dtype}, got {out.shape} {out.dtype}")

    if bracket is None:
        _check_number("initial_radius", initial_radius, 0.0)
        _check_number("expand_factor", expand_factor, 1.0)
        if not (isinstance(max_expansions, int) and max_expansions >= 0):
            raise ValueError(f"monotone_inverse: max_expansions must be an integer >= 0, "
                             f"got {max_expansions!r}")
        n = (_expansion_count(float(initial_radius), float(expand_factor), max_expansions,
                              float(tol), dtype) if max_bisections is None else max_bisections)
        bracket_args = ()
    else:
        if not (isinstance(bracket, (tuple, list)) and len(bracket) == 2):
            raise ValueError(f"monotone_inverse: bracket must be a pair (lo, hi), got {bracket!r}")
        lo_c, hi_c = _concrete(bracket[0]), _concrete(bracket[1])
        for name, v in (("lo", lo_c), ("hi", hi_c)):
            if v is not None:
                try:
                    np.broadcast_shapes(v.shape, y.shape)
                except ValueError:
                    raise ValueError(f"monotone_inverse: bracket {name} of shape {v.shape} "
                                     f"does not broadcast to y's shape {y.shape}") from None
        static = lo_c is not None and hi_c is not None
        if static:
            lo_b, hi_b = np.broadcast_arrays(lo_c.astype(np.float64), hi_c.astype(np.float64))
            if not (np.all(np.isfinite(lo_b)) and np.all(np.isfinite(hi_b))):
                raise ValueError("monotone_inverse: the bracket must be finite")
            if np.any(lo_b > hi_b):
                raise ValueError("monotone_inverse: the bracket must satisfy lo <= hi")
        if max_bisections is not None:
            n = max_bisections
        elif static:
            n = num_bisections(lo_c, hi_c, float(tol), dtype)
        else:
            n = default_max_bisections(dtype)
        bracket_args = tuple(jnp.broadcast_to(jnp.asarray(b, dtype), y.shape) for b in bracket)
    n = int(n)
    tol = float(tol)

    # Hoist closed-over tracers so that custom_vjp sees every differentiable input.
    f_conv, consts = jax.closure_convert(lambda p, x: f(p, x), params, y)

    def forward_solve(params, y, bracket_args, consts):
        fx = lambda x: f_conv(params, x, *consts)
        if bracket_args:
            lo, hi = bracket_args
            flo, fhi = fx(lo), fx(hi)
            expansions = jnp.zeros(y.shape, jnp.int32)
        else:
            lo, hi, flo, fhi, expansions = _expand(fx, y, float(initial_radius),
                                                   float(expand_factor), max_expansions)
        bracketed = jnp.logical_and(flo <= y, y <= fhi)
        lo, hi, flo, fhi, iters = _bisect(fx, y, lo, hi, flo, fhi, n, tol)
        width = hi - lo
        mid = lo + 0.5 * width
        at_floor = jnp.logical_or(mid == lo, mid == hi)
        converged = jnp.logical_and(bracketed, jnp.logical_or(_within_tol(lo, hi, tol), at_floor))
        if interpolate:
            denom = fhi - flo
            ok = jnp.isfinite(flo) & jnp.isfinite(fhi) & (denom > 0) & bracketed
            t = jnp.where(ok, (y - flo) / jnp.where(ok, denom, 1), 0.5)
            x = lo + jnp.clip(t, 0, 1) * width
        else:
            x = mid
        residual = jnp.abs(fx(x) - y)
        info = MonotoneInverseInfo(residual, width, converged, bracketed, expansions, iters,
                                   jnp.asarray(n, jnp.int32))
        return x, info

    @jax.custom_vjp
    def solve(params, y, bracket_args, consts):
        return forward_solve(params, y, bracket_args, consts)

    def solve_fwd(params, y, bracket_args, consts):
        x, info = forward_solve(params, y, bracket_args, consts)
        return (x, info), (params, consts, bracket_args, x)

    def solve_bwd(res, cotangents):
        params, consts, bracket_args, x = res
        x_bar = cotangents[0]
        # f is elementwise: its Jacobian in x is diagonal, f'(x) = J_x @ ones.
        _, dfdx = jax.jvp(lambda xx: f_conv(params, xx, *consts), (x,), (jnp.ones_like(x),))
        ok = jnp.logical_and(jnp.isfinite(dfdx), dfdx > 0)
        v = jnp.where(ok, x_bar / jnp.where(ok, dfdx, 1), 0).astype(x.dtype)
        _, vjp_fn = jax.vjp(lambda p, c: f_conv(p, x, *c), params, consts)
        p_bar, c_bar = vjp_fn(v)
        neg = lambda t: jax.tree_util.tree_map(jnp.negative, t)
        return neg(p_bar), v, jax.tree_util.tree_map(jnp.zeros_like, bracket_args), neg(c_bar)

    solve.defvjp(solve_fwd, solve_bwd)
    x, info = solve(params, y, bracket_args, consts)
    return x, jax.tree_util.tree_map(lax.stop_gradient, info)
