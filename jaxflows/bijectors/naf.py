r"""Neural autoregressive flow transformers: DSF and DDSF (Huang et al. 2018, NAF).

Both are strictly increasing scalar maps whose parameters come from an autoregressive
conditioner (:class:`~jaxflows.bijectors.MaskedAutoregressive` with a MADE); they follow
the transformer protocol of :mod:`jaxflows.bijectors.transformers`.

**DSF** (deep sigmoidal flow, NAF Eq. 8), with ``d`` sigmoid units:

.. math::

    y = \sigma^{-1}\Big(\sum_{j=1}^d w_j\, \sigma(a_j x + b_j)\Big), \qquad
    a_j > 0,\ w_j > 0,\ \textstyle\sum_j w_j = 1.

**DDSF** (deep dense sigmoidal flow, NAF Eq. 9), ``L`` such layers with dense
connections, ``h^{(0)} = x``, ``h^{(L)} = y``, widths ``d_0 = d_L = 1`` and ``d`` between:

.. math::

    h^{(l+1)}_i = \sigma^{-1}\Big(\sum_k w^{(l+1)}_{ik}\,
        \sigma\big(a^{(l+1)}_k \textstyle\sum_j u^{(l+1)}_{kj} h^{(l)}_j + b^{(l+1)}_k\big)\Big),

with ``a > 0`` and the rows of ``u`` and ``w`` on the simplex (``softmax``), so every layer
is strictly increasing (NAF Prop. 1).

Parameterisation (as the reference code ``CW-Huang/torchkit`` ``flows.py``, ``delta =
1e-6``): ``a = softplus(p_a + log(e^{1 - delta} - 1)) + delta`` (``a = 1`` at ``p_a = 0``),
``b = p_b``, ``w = softmax(p_w)``, ``u = softmax(p_u)``; the sigmoid mixture ``s`` is squeezed
to ``(1 - delta) s + delta / 2`` before the logit, which keeps ``y`` finite. All-zero
parameters give the identity up to that squeeze (every unit computes ``sigma(x)``; ``|y -
x| < 1e-3`` for ``|x| <= 6`` with ``delta = 1e-6``, and exactly up to rounding with
``delta = 0``).

Numerics. Everything is computed in log space: ``log s = logsumexp_j(log w_j + log
sigma(pre_j))`` and ``log(1 - s) = logsumexp_j(log w_j + log sigma(-pre_j))``, so ``y = log
s' - log(1 - s')`` never forms ``1 - s`` by subtraction, and the log-derivative is

.. math::

    \log \frac{dy}{dx} = \operatorname{logsumexp}_j\big(\log w_j + \log\sigma(pre_j)
        + \log\sigma(-pre_j) + \log a_j\big) + \log(1 - \delta) - \log s' - \log(1 - s'),

(the reference's formula). For DDSF the derivative of every unit w.r.t. ``x`` is positive,
so the chain rule is carried as a vector of log-derivatives and the layer products are
log-domain matrix-vector products, ``logsumexp_j(log u_kj + log dh_j/dx)`` (the
reference's ``logdet`` tensor, and flowjax's ``logmatmulexp``).

Inverse. Neither map has a closed-form inverse (the NAF reference code has none); it is
computed by bisection, :func:`jaxflows.ops.monotone_inverse` (bracket by geometric
expansion, static step count, implicit-function gradients, per-element diagnostics).
``inverse_and_info`` also returns the diagnostics, which
:class:`~jaxflows.bijectors.MaskedAutoregressive` reports.

Range. Because of the ``delta`` squeeze, ``|y| < logit(1 - delta / 2)`` (about 14.5 for
``delta = 1e-6``): the map is a bijection from ``R`` onto that interval. A target outside
it (a latent beyond 14.5 standard deviations) has no preimage; its inverse is reported not
converged. ``delta=0`` gives a map onto ``R`` (safe here, in log space).

Departures from the reference code: (1) DDSF's ``u`` and ``w`` are produced entirely by
the conditioner, per entry; the reference adds per-column pseudo-parameters to learned
base matrices shared by all entries, a special case (the conditioner's output bias plays
the base matrices' role). (2) The reference initialises the conditioner's last layer from
``U(-0.001, 0.001)``; the same is done here (``conditioner_init_scale``), because with
all-zero parameters the ``d`` units are interchangeable and would stay equal.

Reference: Huang, Krueger, Lacoste, Courville. Neural Autoregressive Flows. ICML 2018.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxflows.bijectors.transformers import Transformer
from jaxflows.ops.monotone import monotone_inverse

__all__ = ["DSF", "DDSF"]

Array = jax.Array


def _check_int(name, value, low, who):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{who}: `{name}` must be an integer >= {low}, got {value!r}.")


def _check_delta(delta, who):
    ok = (isinstance(delta, numbers.Real) and not isinstance(delta, bool)
          and math.isfinite(delta) and 0 <= delta < 1)
    if not ok:
        raise ValueError(f"{who}: `delta` must be a number in [0, 1), got {delta!r}.")


def _log_sigmoid_mixture(log_w, pre, log_dpre, delta):
    """``(h, log dh/dx)`` of ``h = logit((1-delta) sum_k w_k sigma(pre_k) + delta/2)``.

    ``log_w``: ``[..., out, K]``; ``pre`` and ``log_dpre`` (log of ``dpre/dx > 0``):
    ``[..., K]``. Returns arrays ``[..., out]``.
    """
    ls, lsn = jax.nn.log_sigmoid(pre), jax.nn.log_sigmoid(-pre)
    log_s = jax.nn.logsumexp(log_w + ls[..., None, :], axis=-1)
    log_1ms = jax.nn.logsumexp(log_w + lsn[..., None, :], axis=-1)
    log_ds = jax.nn.logsumexp(log_w + (ls + lsn + log_dpre)[..., None, :], axis=-1)
    if delta > 0:
        log_keep, log_half = math.log1p(-delta), math.log(delta / 2)
        log_s = jnp.logaddexp(log_s + log_keep, log_half)
        log_1ms = jnp.logaddexp(log_1ms + log_keep, log_half)
        log_ds = log_ds + log_keep
    return log_s - log_1ms, log_ds - log_s - log_1ms


def _positive(raw, delta):
    """``softplus(raw + log(e^{1-delta} - 1)) + delta``: 1 at ``raw = 0``, always > 0."""
    shift = math.log(math.expm1(1.0 - delta)) if delta < 1 else 0.0
    return jax.nn.softplus(raw + shift) + delta


class _Numerical(Transformer):
    """Shared inverse by bisection (subclasses define :meth:`forward`)."""

    #: Output init of the conditioner when MaskedAutoregressive builds it (module docstring).
    conditioner_init_scale: ClassVar[float] = 1e-3

    def inverse_and_info(self, y, params):
        """``(x, log dx/dy, info)``: the inverse and the solver's per-element diagnostics
        (:class:`~jaxflows.ops.MonotoneInverseInfo`), as :class:`~jaxflows.bijectors.MixLogCDF`.
        """
        if params.shape != y.shape + (self.num_params,):
            raise ValueError(f"{type(self).__name__}: params must have shape "
                             f"{y.shape + (self.num_params,)} (x's shape + num_params), got "
                             f"{tuple(params.shape)}.")
        x, info = monotone_inverse(lambda p, xx: self.forward(xx, p)[0], params, y)
        _, ld = self.forward(x, params)
        return x, -ld, info

    def inverse(self, y, params):
        x, ld, _ = self.inverse_and_info(y, params)
        return x, ld


@dataclasses.dataclass(frozen=True)
class DSF(_Numerical):
    """Deep sigmoidal flow transformer (NAF Eq. 8); ``num_params = 3 * hidden``.

    ``params[..., :d]`` are ``p_a``, ``[..., d:2d]`` ``p_b``, ``[..., 2d:]`` ``p_w`` (module
    docstring).

    Args:
      hidden: number ``d`` of sigmoid units (>= 1; the NAF experiments use 16).
      delta: the reference's safeguard ``delta`` (``[0, 1)``).
    """

    hidden: int = 16
    delta: float = 1e-6

    def __post_init__(self):
        _check_int("hidden", self.hidden, 1, "DSF")
        _check_delta(self.delta, "DSF")
        object.__setattr__(self, "hidden", int(self.hidden))
        object.__setattr__(self, "delta", float(self.delta))

    @property
    def num_params(self) -> int:  # type: ignore[override]
        """``3 d``: ``p_a``, ``p_b``, ``p_w``."""
        return 3 * self.hidden

    def forward(self, x, params):
        d = self.hidden
        a = _positive(params[..., :d], self.delta)
        b = params[..., d:2 * d]
        log_w = jax.nn.log_softmax(params[..., 2 * d:], axis=-1)
        pre = a * x[..., None] + b
        y, ld = _log_sigmoid_mixture(log_w[..., None, :], pre, jnp.log(a), self.delta)
        return y[..., 0], ld[..., 0]


@dataclasses.dataclass(frozen=True)
class DDSF(_Numerical):
    """Deep dense sigmoidal flow transformer (NAF Eq. 9).

    Layer ``l`` maps ``h^(l)`` (width ``n_in``: 1 for the first layer, ``hidden`` after) to
    ``h^(l+1)`` (width ``n_out``: 1 for the last layer, ``hidden`` before) through
    ``hidden`` sigmoid units; its parameters, in order, are ``p_a`` (``hidden``), ``p_b``
    (``hidden``), ``p_u`` (``hidden x n_in``, row-major) and ``p_w`` (``n_out x hidden``), and
    ``num_params`` is their total over the layers.

    Args:
      hidden: width ``d`` of every layer's sigmoid units and of the inner ``h`` (>= 1).
      layers: number ``L`` of layers (>= 1; ``L = 1`` is DSF with the same parameters
        plus a trivial ``u``).
      delta: the reference's safeguard ``delta`` (``[0, 1)``).
    """

    hidden: int = 16
    layers: int = 2
    delta: float = 1e-6

    def __post_init__(self):
        _check_int("hidden", self.hidden, 1, "DDSF")
        _check_int("layers", self.layers, 1, "DDSF")
        _check_delta(self.delta, "DDSF")
        object.__setattr__(self, "hidden", int(self.hidden))
        object.__setattr__(self, "layers", int(self.layers))
        object.__setattr__(self, "delta", float(self.delta))

    def _widths(self):
        d, n = self.hidden, self.layers
        return [(1 if l == 0 else d, 1 if l == n - 1 else d) for l in range(n)]

    @property
    def num_params(self) -> int:  # type: ignore[override]
        """Total over the layers of ``2 d + d n_in + n_out d``."""
        d = self.hidden
        return sum(2 * d + d * n_in + n_out * d for n_in, n_out in self._widths())

    def forward(self, x, params):
        d = self.hidden
        h = x[..., None]                          # [..., n_in]
        log_dh = jnp.zeros_like(h)                # log dh/dx
        start = 0
        lead = x.shape
        for n_in, n_out in self._widths():
            take = lambda n, start_: params[..., start_:start_ + n]
            a = _positive(take(d, start), self.delta)
            b = take(d, start + d)
            log_u = jax.nn.log_softmax(
                take(d * n_in, start + 2 * d).reshape(lead + (d, n_in)), axis=-1)
            log_w = jax.nn.log_softmax(
                take(n_out * d, start + 2 * d + d * n_in).reshape(lead + (n_out, d)), axis=-1)
            start += 2 * d + d * n_in + n_out * d
            # pre_k = a_k sum_j u_kj h_j + b_k; dpre_k/dx = a_k sum_j u_kj dh_j/dx (> 0).
            pre = a * jnp.sum(jnp.exp(log_u) * h[..., None, :], axis=-1) + b
            log_dpre = jnp.log(a) + jax.nn.logsumexp(log_u + log_dh[..., None, :], axis=-1)
            h, log_dh = _log_sigmoid_mixture(log_w, pre, log_dpre, self.delta)
        return h[..., 0], log_dh[..., 0]

