"""Preprocessing bijectors: from dequantised pixel values to an unbounded space.

Image flows are trained on dequantised pixels ``x`` in ``[0, K)`` (``K = 256`` for 8-bit
data, ``K = num_bins`` in general). Including the preprocessing in the flow, with its
exact log-det, makes ``log_prob`` the density of the pixel values themselves, so
bits/dim are reported in the ``K``-level data space (see :mod:`jaxflows.metrics`).

* :class:`ScaleToUnit`: ``y = x / K`` to ``[0, 1)``, log-det ``-D log K``.
* :class:`Shift`: ``y = x + offset`` (Glow uses ``x / K - 0.5``: ``ScaleToUnit`` then
  ``Shift(-0.5)``), log-det 0.
* :class:`LogitTransform`: ``y = logit(alpha + (1 - 2 alpha) u)`` for ``u`` in
  ``[0, 1)`` (Real NVP, Dinh et al. 2017, Sec. 4.1 with ``alpha = 0.05``; Residual
  Flows, Chen et al. 2019, and their reference code use ``alpha = 0.05`` for CIFAR-10
  and ``1e-6`` for MNIST), whose log-det is

      log|dy/du| = log(1 - 2 alpha) - log p - log(1 - p),   p = alpha + (1 - 2 alpha) u,

  summed over the ``D`` coordinates. The inverse is ``u = (sigmoid(y) - alpha) /
  (1 - 2 alpha)``; we compute ``log p = -softplus(-y)`` and ``log(1 - p) =
  -softplus(y)`` there, which are stable for large ``|y|``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, sum_except_batch

__all__ = ["ScaleToUnit", "Shift", "LogitTransform"]

Array = jax.Array


def _num_dims(x: Array) -> int:
    return int(math.prod(x.shape[1:]))


class ScaleToUnit(Bijector):
    """``y = x / num_bins``: pixel values in ``[0, num_bins)`` to ``[0, 1)``.

    Log-det ``-D log(num_bins)`` with ``D`` the number of coordinates per example.

    Attributes:
      num_bins: number of quantisation levels ``K`` (256 for 8-bit images; may be
        fractional, e.g. 17 levels of the 8x8 digits, or ``2 ** 5`` for 5-bit CelebA).
    """

    num_bins: float = 256

    def transform(self, x, inverse, context, train):
        if not self.num_bins > 0:
            raise ValueError(f"ScaleToUnit: num_bins must be > 0, got {self.num_bins}.")
        k = jnp.asarray(self.num_bins, x.dtype)
        ld = jnp.full(x.shape[:1], -_num_dims(x) * jnp.log(k), x.dtype)
        if inverse:
            return x * k, -ld
        return x / k, ld


class Shift(Bijector):
    """``y = x + offset`` (a constant), log-det 0. Glow centres ``[0, 1)`` with ``-0.5``."""

    offset: float = -0.5

    def transform(self, x, inverse, context, train):
        off = jnp.asarray(self.offset, x.dtype)
        zeros = jnp.zeros(x.shape[:1], x.dtype)
        return (x - off if inverse else x + off), zeros


class LogitTransform(Bijector):
    """``y = logit(alpha + (1 - 2 alpha) u)`` for ``u`` in ``[0, 1)``, with exact log-det.

    The squeeze by ``alpha`` keeps the logit finite at the boundary of the unit cube
    (Real NVP Sec. 4.1; Residual Flows use ``alpha = 0.05`` on CIFAR-10 and ``1e-6`` on
    MNIST). See the module docstring for the log-det.

    Attributes:
      alpha: boundary margin in ``[0, 0.5)``.
    """

    alpha: float = 0.05

    def transform(self, x, inverse, context, train):
        if not 0.0 <= self.alpha < 0.5:
            raise ValueError(f"LogitTransform: alpha must be in [0, 0.5), got {self.alpha}.")
        a = jnp.asarray(self.alpha, x.dtype)
        log_scale = jnp.log1p(-2 * a)  # log(1 - 2 alpha)
        if inverse:
            y = x
            u = (jax.nn.sigmoid(y) - a) / (1 - 2 * a)
            # log|du/dy| = log p + log(1 - p) - log(1 - 2 alpha), p = sigmoid(y).
            ld = sum_except_batch(-jax.nn.softplus(-y) - jax.nn.softplus(y) - log_scale)
            return u, ld
        p = a + (1 - 2 * a) * x
        y = jnp.log(p) - jnp.log1p(-p)
        ld = sum_except_batch(log_scale - jnp.log(p) - jnp.log1p(-p))
        return y, ld
