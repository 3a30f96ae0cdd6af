r"""Flow++'s mixture-of-logistics CDF transformer (``MixLogCDF``) and its coupling.

Flow++ (Ho, Chen, Srinivas, Duan & Abbeel 2019, "Flow++: Improving Flow-Based Generative
Models with Variational Dequantization and Architecture Design", Sec. 3.2) replaces the
affine map of a coupling by

.. math::

    y = \sigma^{-1}\big(F(x; \pi, \mu, s)\big)\, e^{a} + b, \qquad
    F(x) = \sum_{k=1}^{K} \pi_k\, \sigma\big((x - \mu_k)\, e^{-\ell_k}\big),

a mixture of ``K`` logistic CDFs followed by the logit and an affine map, all of whose
parameters come from the conditioner. (The lecture notes' "``exp(a + b)``" is a typo for
``exp(a) + b``.) Parameters per entry (``num_params = 2 + 3K``), in this order on the last
axis of ``params``:

========================  =====================================================
``params[..., 0]``        ``b``, the shift
``params[..., 1]``        raw scale: ``a = tanh(raw)`` (the reference code's bound
                          ``|a| <= 1``)
``params[..., 2:2+K]``    mixture logits (``pi = softmax``)
``params[..., 2+K:2+2K]`` means ``mu_k``
``params[..., 2+2K:]``    log-scales ``l_k``, clamped below at ``min_log_scale`` (-7)
========================  =====================================================

At ``params = 0`` every component is the standard logistic, so ``F = sigma`` and
``y = x`` up to rounding (not bit for bit: ``identity_at_zero`` is ``False``).

Log space. Everything is computed from ``z_k = (x - mu_k) e^{-l_k}`` with
``logsumexp``, never through ``F`` itself:

.. math::

    \log F = \operatorname{lse}_k(\log\pi_k + \log\sigma(z_k)),\quad
    \log(1 - F) = \operatorname{lse}_k(\log\pi_k + \log\sigma(-z_k)),\quad
    \sigma^{-1}(F) = \log F - \log(1 - F),

    \log \frac{dy}{dx} = \operatorname{lse}_k\big(\log\pi_k + \log\sigma(z_k)
        + \log\sigma(-z_k) - \ell_k\big) - \log F - \log(1 - F) + a .

The references (TF ``flows/logistic.py`` and the PyTorch ports) form ``F = exp(log F)``
and then ``logit(F)``, which loses every digit once ``F > 1 - 1e-7`` in float32, and the
PyTorch ports clamp ``F`` to ``[1e-5, 1 - 1e-5]``, which silently breaks the round trip
for latents beyond about ``|y| = 11.5``. Here ``sigma^{-1}(F)`` is exact to round-off for
any ``x`` (tested to ``|y| = 30`` in float32).

Inverse. ``u = (y - b) e^{-a}``, then ``x`` solves ``g(x) = sigma^{-1}(F(x)) = u``, by
bisection on the strictly increasing, unbounded ``g`` with
:func:`jaxflows.ops.monotone_inverse` (geometric bracket expansion around 0, a static
number of bisection steps, per-element convergence, residual diagnostics, gradients by
the implicit function theorem). The references instead bisect ``F`` against
``sigma(u)`` (saturating) with a global stopping test and a host sync per step.
:meth:`MixLogCDF.inverse_and_info` also returns the solver's
:class:`~jaxflows.ops.MonotoneInverseInfo`; :class:`MixLogCDFCoupling` sows a summary of
it (``"intermediates"`` collection, name ``"monotone_inverse"``) on every inverse pass,
so a sample whose inverse did not converge is reported, never silent
(:func:`monotone_inverse_report`).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.bijectors.coupling import (
    Coupling,
)
from jaxflows.bijectors.transformers import Transformer
from jaxflows.ops.monotone import MonotoneInverseInfo, monotone_inverse

__all__ = ["MixLogCDF", "MixLogCDFCoupling", "monotone_inverse_report"]

Array = jax.Array


def _split(params: Array, k: int):
    """``(b, a, log_pi, mu, log_scale_unclamped)`` from ``params[..., 2 + 3K]``."""
    b = params[..., 0]
    a = jnp.tanh(params[..., 1])
    logits = params[..., 2:2 + k]
    mu = params[..., 2 + k:2 + 2 * k]
    ls = params[..., 2 + 2 * k:2 + 3 * k]
    return b, a, jax.nn.log_softmax(logits, axis=-1), mu, ls


def _logit_cdf(mix, x):
    """``(sigma^{-1}(F(x)), log F, log(1 - F), z, log-scales)`` in log space."""
    log_pi, mu, ls = mix
    z = (x[..., None] - mu) * jnp.exp(-ls)
    log_f = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(z), axis=-1)
    log_1mf = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(-z), axis=-1)
    return log_f - log_1mf, log_f, log_1mf, z


def _log_pdf(mix, z):
    """Log-density of the mixture, ``lse_k(log pi_k + log sigma(z_k) + log sigma(-z_k) - l_k)``."""
    log_pi, _, ls = mix
    return jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z) - ls,
                            axis=-1)


@dataclasses.dataclass(frozen=True)
class MixLogCDF(Transformer):
    """Flow++'s ``y = logit(F(x)) exp(a) + b``; see the module docstring.

    Example::

        from jaxflows.bijectors import Coupling, MixLogCDF
        Coupling(transformer=MixLogCDF(components=32), mask="checkerboard",
                 hidden_channels=96)

    Args:
      components: ``K >= 1``, the number of logistic components (Flow++: 32).
      min_log_scale: lower clamp of the components' log-scales (Flow++: -7).
      tol: absolute tolerance of the inverse's bisection on ``x`` (``None``: the solver's
        default, ``4 eps`` of the dtype).
    """

    components: int = 32
    min_log_scale: float = -7.0
    tol: Optional[float] = None

    identity_at_zero: ClassVar[bool] = False

    def __post_init__(self):
        k = self.components
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"MixLogCDF: `components` must be an int >= 1, got {k!r}.")
        object.__setattr__(self, "components", int(k))
        m = self.min_log_scale
        if isinstance(m, bool) or not isinstance(m, numbers.Real) or not np.isfinite(m):
            raise ValueError(f"MixLogCDF: `min_log_scale` must be a finite number, got {m!r}.")
        object.__setattr__(self, "min_log_scale", float(m))
        if self.tol is not None:
            if (isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real)
                    or not self.tol > 0):
                raise ValueError(f"MixLogCDF: `tol` must be positive or None, got {self.tol!r}.")
            object.__setattr__(self, "tol", float(self.tol))

    @property
    def num_params(self) -> int:  # type: ignore[override]
        """``2 + 3K``: shift, scale, and K logits, means and log-scales."""
        return 2 + 3 * self.components

    def _check(self, x: Array, params: Array, method: str) -> None:
        if params.shape != x.shape + (self.num_params,):
            raise ValueError(f"MixLogCDF.{method}: `params` must have shape x.shape + "
                             f"({self.num_params},) = {x.shape + (self.num_params,)} for "
                             f"K={self.components}; got {tuple(params.shape)}.")

    def _mixture(self, params: Array):
        b, a, log_pi, mu, ls = _split(params, self.components)
        return b, a, (log_pi, mu, jnp.maximum(ls, self.min_log_scale))

    def forward(self, x, params):
        self._check(x, params, "forward")
        b, a, mix = self._mixture(params)
        logit, log_f, log_1mf, z = _logit_cdf(mix, x)
        log_det = _log_pdf(mix, z) - log_f - log_1mf + a
        return logit * jnp.exp(a) + b, log_det

    def inverse_and_info(self, y: Array, params: Array) -> Tuple[Array, Array,
                                                                 MonotoneInverseInfo]:
        """``(x, log(dx/dy), info)``: the inverse and the solver's per-element diagnostics."""
        self._check(y, params, "inverse")
        b, a, mix = self._mixture(params)
        u = (y - b) * jnp.exp(-a)
        x, info = monotone_inverse(lambda m, xx: _logit_cdf(m, xx)[0], mix, u, tol=self.tol)
        _, log_f, log_1mf, z = _logit_cdf(mix, x)
        log_det = _log_pdf(mix, z) - log_f - log_1mf + a
        return x, -log_det, info

    def inverse(self, y, params):
        x, log_det, _ = self.inverse_and_info(y, params)
        return x, log_det


def monotone_inverse_report(intermediates: Any) -> Dict[str, float]:
    """Reduces the ``"monotone_inverse"`` summaries sown by numerical inverses: every
    :class:`~jaxflows.bijectors.Coupling` and
    :class:`~jaxflows.bijectors.MaskedAutoregressive` whose transformer has
    ``inverse_and_info`` (MixLogCDF, DSF, DDSF).

    Args:
      intermediates: the ``"intermediates"`` collection returned by
        ``flow.apply(..., mutable=["intermediates"])`` (or the whole variables dict).

    Returns:
      ``{"num_solves", "num_not_converged", "max_residual", "max_iterations"}``
      (``num_solves == 0`` if no numerical inverse ran).
    """
    found = []

    def walk(t):
        if isinstance(t, dict) or hasattr(t, "items"):
            for k, v in t.items():
                if k == "monotone_inverse":
                    found.extend(v if isinstance(v, (tuple, list)) else [v])
                else:
                    walk(v)
    walk(intermediates)
    if not found:
        return {"num_solves": 0, "num_not_converged": 0, "max_residual": 0.0,
                "max_iterations": 0}
    return {"num_solves": len(found),
            "num_not_converged": int(sum(int(np.sum(s["num_not_converged"])) for s in found)),
            "max_residual": float(max(float(np.max(s["max_residual"])) for s in found)),
            "max_iterations": int(max(int(np.max(s["max_iterations"])) for s in found))}


class MixLogCDFCoupling(Coupling):
    """:class:`~jaxflows.bijectors.Coupling` with a :class:`MixLogCDF` transformer.

    Computes the same function of the same variables as
    ``Coupling(transformer=MixLogCDF(components, min_log_scale), ...)``; like every coupling
    with a numerical inverse, in the inverse direction it sows
    ``{"max_residual", "num_not_converged", "max_iterations"}`` into the
    ``"intermediates"`` collection under ``"monotone_inverse"`` (kept only when the
    caller makes ``"intermediates"`` mutable; see :func:`monotone_inverse_report`).

    Args:
      components: ``K``, logistic components per entry (Flow++: 32).
      min_log_scale: lower clamp of the log-scales (Flow++: -7).
      hidden_channels, mask, conditioner, num_blocks, dropout, kernel_size, parity:
        as for :class:`~jaxflows.bijectors.Coupling` (``conditioner`` may be a callable
        ``out_channels -> nn.Module``, e.g. a :class:`jaxflows.nn.FlowppConditioner`).
    """

    components: int = 32
    min_log_scale: float = -7.0

    def get_transformer(self):
        if self.transformer is not None:
            raise ValueError(f"MixLogCDFCoupling builds its own transformer; got "
                             f"`transformer`={self.transformer!r}. Use `components`.")
        return MixLogCDF(self.components, self.min_log_scale)
