r"""Monotone rational-quadratic spline transformer (Durkan et al. 2019, Neural Spline Flows).

On ``[-B, B]`` (``B = bound``) the map is a monotone rational-quadratic spline with ``K``
bins (Gregory & Delbourgo 1982; Durkan et al. 2019, Sec. 3.1); outside it is the identity
(the *linear tails* of NSF, Sec. 3.3, with the boundary derivatives fixed to 1 so that the
map is continuously differentiable at ``+-B``). The spline's knots ``(x_k, y_k)``, ``k = 0
.. K``, run from ``(-B, -B)`` to ``(B, B)``; inside bin ``k``, with ``w_k = x_{k+1} - x_k``,
``h_k = y_{k+1} - y_k``, ``s_k = h_k / w_k``, ``xi = (x - x_k) / w_k`` and knot derivatives
``d_k``,

.. math::

    y = y_k + \frac{h_k [s_k \xi^2 + d_k \xi (1 - \xi)]}
                   {s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)},

    \log \frac{dy}{dx} = 2 \log s_k + \log\big(d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi)
        + d_k (1 - \xi)^2\big) - 2 \log\big(s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)\big)

(NSF Eq. 4 and App. A). The inverse solves the quadratic ``a xi^2 + b xi + c = 0`` of NSF
App. A in its stable form ``xi = 2 c / (-b - sqrt(b^2 - 4 a c))``.

Parameters (``num_params = 3 K - 1`` per entry, any real values): ``K`` unnormalised bin
widths, ``K`` unnormalised bin heights and ``K - 1`` unconstrained derivatives at the
inner knots. Widths (and heights) are ``min_bin_size + (1 - K min_bin_size) softmax(.)``
times ``2 B``; derivatives are ``min_derivative + softplus(. + c)`` with ``c = log(e^{1 -
min_derivative} - 1)``, so that **all-zero parameters give equal bins and unit
derivatives, i.e. the identity** (up to rounding; ``identity_at_zero`` is therefore
False, see :mod:`jaxflows.bijectors.transformers`). A zero-initialised conditioner starts
the flow at the identity, as distrax's spline does.

Numerics (*clip before compute*). Both directions evaluate the spline at the input
clipped to ``[-B, B]`` and select the identity outside with ``jnp.where``: the unselected
branch is then always evaluated at a valid point, so the gradient of an input outside the
bound, or of the parameters for such an input, is exactly that of the tail (finite), never
``NaN`` from a ``sqrt`` of a negative discriminant or a ``log`` of zero in the discarded
branch (flowjax #239, nflows #87, pyro #3139). ``xi`` is clipped to ``[0, 1]`` and the
discriminant to ``>= 0`` against rounding.

Departures: the defaults (``bound=5``, ``bins=8``, minimum bin size and derivative
``1e-3``) follow zuko and nflows rather than NSF's per-dataset tail bounds (3 in the UCI
experiments): a wider domain is less likely to leave heavy-tailed data on the identity
tails (bayesflow #721). distrax's ``RationalQuadraticSpline`` is not reused: this module
needs the clip-before-compute selection in both directions and the transformer
protocol's per-entry parameter layout, and is short.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxflows.bijectors.transformers import Transformer

__all__ = ["RationalQuadraticSpline"]

Array = jax.Array


def _check_positive(name: str, value, who: str, upper=None) -> None:
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0 and (upper is None or value < upper))
    if not ok:
        extra = "" if upper is None else f" and < {upper:g}"
        raise ValueError(f"{who}: `{name}` must be a finite number > 0{extra}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class RationalQuadraticSpline(Transformer):
    """Rational-quadratic spline transformer with identity (linear) tails; see the module
    docstring for the maths.

    Example::

        from jaxflows.bijectors import Coupling, RationalQuadraticSpline
        nsf_coupling = Coupling(transformer=RationalQuadraticSpline(bins=8, bound=5.0),
                                mask="alternating", conditioner="resnet")

    Args:
      bins: number of bins ``K`` (>= 2); ``num_params = 3 K - 1``.
      bound: half-width ``B`` of the spline's domain ``[-B, B]`` (> 0); the map is the
        identity outside.
      min_bin_size: smallest bin width and height, as a fraction of ``2 B`` (> 0 and
        < 1 / K).
      min_derivative: smallest derivative at the inner knots (> 0 and < 1).
    """

    bins: int = 8
    bound: float = 5.0
    min_bin_size: float = 1e-3
    min_derivative: float = 1e-3

    identity_at_zero: ClassVar[bool] = False

    def __post_init__(self):
        who = "RationalQuadraticSpline"
        if isinstance(self.bins, bool) or not isinstance(self.bins, numbers.Integral) \
                or self.bins < 2:
            raise ValueError(f"{who}: `bins` must be an integer >= 2, got {self.bins!r}.")
        _check_positive("bound", self.bound, who)
        _check_positive("min_bin_size", self.min_bin_size, who, upper=1.0 / self.bins)
        _check_positive("min_derivative", self.min_derivative, who, upper=1.0)
        # One static value (and hash) for 5, 5.0 and np.float32(5).
        object.__setattr__(self, "bins", int(self.bins))
        for name in ("bound", "min_bin_size", "min_derivative"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def num_params(self) -> int:  # type: ignore[override]
        """``3 K - 1``: ``K`` widths, ``K`` heights, ``K - 1`` inner derivatives."""
        return 3 * self.bins - 1

    def knots(self, params: Array):
        """Knot positions and derivatives from raw parameters ``[..., 3K - 1]``.

        Returns ``(xs, ys, ds)``: ``xs`` and ``ys`` of shape ``[..., K + 1]`` (from ``-B``
        to ``B``) and ``ds`` of shape ``[..., K + 1]`` (1 at both ends).
        """
        k, b = self.bins, self.bound
        if params.shape[-1] != self.num_params:
            raise ValueError(f"RationalQuadraticSpline: params must have {self.num_params} "
                             f"entries on the last axis (3 * bins - 1), got shape "
                             f"{tuple(params.shape)}.")
        dt = params.dtype

        def positions(raw):
            sizes = self.min_bin_size + (1 - self.min_bin_size * k) * jax.nn.softmax(raw, -1)
            edges = jnp.cumsum(sizes, axis=-1)
            zero = jnp.zeros(edges.shape[:-1] + (1,), dt)
            edges = jnp.concatenate([zero, edges], axis=-1)
            # Exact end points (the cumulative sum may be off by rounding).
            edges = edges.at[..., -1].set(1.0)
            return 2 * b * edges - b

        xs = positions(params[..., :k])
        ys = positions(params[..., k:2 * k])
        shift = math.log(math.expm1(1.0 - self.min_derivative))
        inner = self.min_derivative + jax.nn.softplus(params[..., 2 * k:] + shift)
        one = jnp.ones(inner.shape[:-1] + (1,), dt)
        ds = jnp.concatenate([one, inner, one], axis=-1)
        return xs, ys, ds

    @staticmethod
    def _bin(knots: Array, v: Array) -> Array:
        """Index of the bin of ``v`` (already in ``[-B, B]``) among ``knots`` ``[..., K+1]``."""
        return jnp.sum(v[..., None] >= knots[..., 1:-1], axis=-1)

    def _bin_values(self, params, v, use_y):
        xs, ys, ds = self.knots(params)
        idx = self._bin(ys if use_y else xs, v)
        # Gathers as one-hot masked sums over the K + 1 knots: dense elementwise work whose
        # gradient is dense too (a gather's gradient is a scatter-add, slow on CPU).
        onehot = (idx[..., None] == jnp.arange(self.bins + 1)).astype(xs.dtype)
        nxt = jnp.concatenate([jnp.zeros_like(onehot[..., :1]), onehot[..., :-1]], axis=-1)
        g = lambda a, m: jnp.sum(a * m, axis=-1)  # noqa: E731
        x_k, x_k1, y_k, y_k1 = g(xs, onehot), g(xs, nxt), g(ys, onehot), g(ys, nxt)
        d_k, d_k1 = g(ds, onehot), g(ds, nxt)
        w, h = x_k1 - x_k, y_k1 - y_k
        return x_k, y_k, w, h, h / w, d_k, d_k1

    @staticmethod
    def _log_det(xi, s, d_k, d_k1):
        """``log dy/dx`` inside a bin (module docstring)."""
        t = xi * (1 - xi)
        denom = s + (d_k1 + d_k - 2 * s) * t
        num = d_k1 * xi ** 2 + 2 * s * t + d_k * (1 - xi) ** 2
        return 2 * jnp.log(s) + jnp.log(num) - 2 * jnp.log(denom)

    def forward(self, x, params):
        b = self.bound
        inside = (x > -b) & (x < b)
        xc = jnp.clip(x, -b, b)                      # clip before compute
        x_k, y_k, w, h, s, d_k, d_k1 = self._bin_values(params, xc, use_y=False)
        xi = jnp.clip((xc - x_k) / w, 0, 1)
        t = xi * (1 - xi)
        denom = s + (d_k1 + d_k - 2 * s) * t
        y = y_k + h * (s * xi ** 2 + d_k * t) / denom
        ld = self._log_det(xi, s, d_k, d_k1)
        return jnp.where(inside, y, x), jnp.where(inside, ld, jnp.zeros_like(ld))

    def inverse(self, y, params):
        b = self.bound
        inside = (y > -b) & (y < b)
        yc = jnp.clip(y, -b, b)                      # clip before compute
        x_k, y_k, w, h, s, d_k, d_k1 = self._bin_values(params, yc, use_y=True)
        dy = yc - y_k
        curv = d_k1 + d_k - 2 * s
        qa = h * (s - d_k) + dy * curv
        qb = h * d_k - dy * curv
        qc = -s * dy
        disc = jnp.maximum(qb ** 2 - 4 * qa * qc, 0)
        denom = -qb - jnp.sqrt(disc)                 # < 0 (qb > 0 wherever qc = 0)
        safe = jnp.where(denom < 0, denom, -1)
        xi = jnp.clip(jnp.where(denom < 0, 2 * qc / safe, 0), 0, 1)
        x = x_k + xi * w
        ld = -self._log_det(xi, s, d_k, d_k1)
        return jnp.where(inside, x, y), jnp.where(inside, ld, jnp.zeros_like(ld))
