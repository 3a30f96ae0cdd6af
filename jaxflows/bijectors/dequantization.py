r"""Variational dequantisation (Flow++, Ho et al. 2019, Sec. 3.1).

A flow ``p`` of continuous values models integer pixels ``k in {0, ..., L-1}^D`` through
the discrete model ``P(k) = int_{[0,1)^D} p(k + u) du``. Uniform dequantisation bounds
``log P(k) >= E_{u ~ U}[log p(k + u)]``; Flow++ replaces the uniform noise by a learned
conditional density ``q(u | k)`` on ``[0, 1)^D`` and maximises the tighter bound

.. math::

    \log P(k) \ge \mathbb{E}_{u \sim q(\cdot|k)}\big[\log p(k + u) - \log q(u | k)\big]

(one sample per image in training), whose importance-weighted version with ``S``
samples (:func:`jaxflows.train.evaluation.importance_weighted_log_prob`) is tighter
still and converges to ``log P(k)`` as ``S`` grows.

:class:`VariationalDequantizer` is ``q`` written as a conditional bijector from noise to
``u``: ``eps ~ N(0, I)`` (the image's shape) ``->`` ``num_steps`` x [per-pixel ActNorm,
1x1 convolution, :class:`~jaxflows.bijectors.MixLogCDFCoupling` (checkerboard, alternate
parities) whose Flow++ conditioner also reads a context embedding of ``k``] ``->``
sigmoid, so ``u in (0, 1)^D`` and

.. math::  \log q(u | k) = \log N(\varepsilon; 0, I) - \log|\det \partial u / \partial\varepsilon| .

The context embedding is the reference code's: ``k / L - 0.5 -> conv3x3`` to
``context_channels`` ``->`` ``context_blocks`` gated convolutions. Departures from the
reference code (``flows/run_cifar.py``, ``Dequant``): the checkerboard is a true
checkerboard mask (the reference's "CheckerboardSplit" takes alternate columns and
concatenates the two halves of the context on channels); the 1x1 convolution acts on
all channels of a pixel with one matrix (the reference has one per half of its split).

As a :class:`~jaxflows.bijectors.Bijector`, ``forward`` maps ``eps -> u`` and takes the
pixel values ``k`` (floats or integers, ``[B, H, W, C]``) as ``context``; it passes the
generic bijector checks. :meth:`VariationalDequantizer.sample_and_log_prob` draws ``u``
(rng stream ``"dequantize"``) and :meth:`VariationalDequantizer.log_prob` evaluates
``log q(u | k)`` at a given ``u`` (through the inverse, by bisection).
"""
from __future__ import annotations

import functools
import math
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.bijectors.base import Bijector, sum_except_batch
from jaxflows.bijectors.linear import Conv1x1
from jaxflows.bijectors.mixlogcdf import MixLogCDFCoupling
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.reshape import FlattenEvent
from jaxflows.nn.conditioners import Conv2D
from jaxflows.nn.flowpp import FlowppConditioner, GatedConv
from jaxflows.nn.utils import check_int_args

__all__ = ["VariationalDequantizer", "check_pixels"]

Array = jax.Array


def check_pixels(images, num_bins: float, who: str) -> None:
    """Raises a ``ValueError`` naming ``who`` for NaN or out-of-range pixel values.

    Checks concrete arrays only (under ``jit`` the values are unknown; the trainer's data
    pipeline delivers ``uint8`` images). Pixels must lie in ``[0, num_bins)``.
    """
    if isinstance(images, jax.core.Tracer):
        return
    a = np.asarray(images)
    if a.size == 0:
        return
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: the images contain {int(np.sum(~np.isfinite(a)))} NaN or "
                         f"infinite pixel values.")
    lo, hi = float(np.min(a)), float(np.max(a))
    if lo < 0 or hi >= num_bins:
        raise ValueError(f"{who}: pixel values must lie in [0, num_bins={num_bins:g}); got "
                         f"values in [{lo:g}, {hi:g}].")


class VariationalDequantizer(Bijector):
    """Flow++'s dequantisation flow ``q(u | k)``; see the module docstring.

    Attributes:
      num_bins: ``L``, the number of pixel values (256 for 8-bit images).
      num_steps: couplings (Flow++: 4).
      components: logistic components of each MixLogCDF coupling (Flow++: 32).
      filters: width of the couplings' conditioners (Flow++: 96).
      num_blocks: blocks per conditioner (Flow++: 2).
      heads: attention heads (Flow++: 4).
      dropout: conditioner dropout (``train=True``).
      attention: self-attention in the conditioners (False: the pointwise ablation).
      context_channels: channels of the context embedding of ``k`` (Flow++: 32).
      context_blocks: gated convolutions of the context network (Flow++: 3).
    """

    num_bins: float = 256
    num_steps: int = 4
    components: int = 32
    filters: int = 96
    num_blocks: int = 2
    heads: int = 4
    dropout: float = 0.0
    attention: bool = True
    context_channels: int = 32
    context_blocks: int = 3

    input_ranks = (4,)

    def _validate(self, x, context):
        name = type(self).__name__
        if context is None:
            raise ValueError(f"{name}: `context` must be the pixel values k, [batch, H, W, C] "
                             f"like `x`; got None.")
        if tuple(context.shape) != tuple(x.shape):
            raise ValueError(f"{name}: `context` (the pixel values) must have the shape of the "
                             f"noise/dequantisation `x` {tuple(x.shape)}; got "
                             f"{tuple(context.shape)}.")
        check_int_args(name, {a: getattr(self, a) for a in ("num_steps", "context_channels",
                                                            "context_blocks")},
                       {"num_steps": 1, "context_channels": 1, "context_blocks": 0})
        if not self.num_bins > 1:
            raise ValueError(f"{name}: `num_bins` must be > 1, got {self.num_bins!r}.")

    @nn.compact
    def transform(self, x, inverse, context, train):
        self._validate(x, context)
        k = context.astype(x.dtype)
        h = Conv2D(self.context_channels, 3, name="context_in")(k / self.num_bins - 0.5)
        for i in range(self.context_blocks):
            h = GatedConv(self.dropout, name=f"context_conv_{i}")(h, train=train)
        cond = functools.partial(FlowppConditioner, filters=self.filters,
                                 num_blocks=self.num_blocks, heads=self.heads,
                                 dropout=self.dropout, attention=self.attention,
                                 context_channels=self.context_channels)
        steps = []
        for i in range(self.num_steps):
            steps.append((FlattenEvent(ActNorm(), name=f"norm_{i}"),
                          Conv1x1(lu=False, name=f"pointwise_{i}"),
                          MixLogCDFCoupling(components=self.components, mask="checkerboard",
                                            parity=i % 2, conditioner=cond,
                                            name=f"coupling_{i}")))
        total = jnp.zeros(x.shape[:1], x.dtype)
        if not inverse:
            for step in steps:
                for b in step:
                    x, ld = b.forward_and_log_det(x, context=h, train=train)
                    total = total + ld
            # u = sigmoid(z): log du/dz = log sigmoid(z) + log sigmoid(-z).
            ld = sum_except_batch(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x))
            return jax.nn.sigmoid(x), total + ld
        u = x
        z = jnp.log(u) - jnp.log1p(-u)
        total = total - sum_except_batch(jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z))
        for step in reversed(steps):
            for b in reversed(step):
                z, ld = b.inverse_and_log_det(z, context=h, train=train)
                total = total + ld
        return z, total

    def sample_and_log_prob(self, images: Array, *, train: bool = False,
                            dtype=jnp.float32) -> Tuple[Array, Array]:
        """``(u, log q(u | k))`` with ``u ~ q(. | k)``, one sample per image.

        ``images`` are the pixel values ``k`` in ``[0, num_bins)``, ``[B, H, W, C]``; the
        noise comes from the rng stream ``"dequantize"``.
        """
        check_pixels(images, self.num_bins, type(self).__name__)
        k = images.astype(dtype)
        eps = jax.random.normal(self.make_rng("dequantize"), k.shape, dtype)
        u, ld = self.forward_and_log_det(eps, context=k, train=train)
        return u, _std_normal_log_prob(eps) - ld

    def log_prob(self, u: Array, images: Array, *, train: bool = False) -> Array:
        """``log q(u | k)`` per image for ``u in (0, 1)^D`` (through the inverse flow)."""
        check_pixels(images, self.num_bins, type(self).__name__)
        eps, ld = self.inverse_and_log_det(u, context=images.astype(u.dtype), train=train)
        return _std_normal_log_prob(eps) + ld


def _std_normal_log_prob(eps: Array) -> Array:
    return sum_except_batch(-0.5 * eps * eps - 0.5 * math.log(2 * math.pi))
