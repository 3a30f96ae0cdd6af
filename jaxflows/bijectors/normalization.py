"""Normalisation bijectors: activation normalisation (ActNorm) from Glow.

References:
  Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
  NeurIPS 2018, Section 3.1 and Table 1 (row "Actnorm").
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector
from jaxflows.nn.utils import channel_moments, check_channels, param_dtype

__all__ = ["ActNorm"]


@functools.partial(jax.jit, static_argnames=("inverse",))
def _actnorm(x, loc, log_scale, inverse):
    """``(x + loc) * exp(log_scale)`` or its inverse, and the per-example log-det."""
    loc, log_scale = loc.astype(x.dtype), log_scale.astype(x.dtype)
    log_det = math.prod(x.shape[1:-1]) * jnp.sum(log_scale)
    if inverse:
        return x * jnp.exp(-log_scale) - loc, jnp.broadcast_to(-log_det, x.shape[:1])
    return (x + loc) * jnp.exp(log_scale), jnp.broadcast_to(log_det, x.shape[:1])


class ActNorm(Bijector):
    r"""Per-channel affine normalisation with data-dependent initialisation.

    Forward (data -> latent), over the last (channel) axis ``c``:

    .. math::  y_{\dots c} = (x_{\dots c} + b_c)\, e^{s_c},
               \qquad \log|\det J| = N \sum_c s_c,

    where ``N`` is the number of positions per example (``H * W`` for NHWC
    images, 1 for ``[batch, D]`` vectors) -- Glow, Table 1. Parameters:
    ``"loc"`` (``b``) and ``"log_scale"`` (``s``), both of shape ``[C]``.

    Data-dependent initialisation (Glow, Sec. 3.1): at ``init`` the parameter
    initialisers read the init batch and set ``b = -mean(x)``,
    ``s = -log(std(x) + eps)`` (statistics over every axis but the last), so
    that the init batch comes out with zero mean and unit variance per
    channel. (If the module is first called in the inverse direction, the
    initialisers instead make the *output* ``x = f^{-1}(y)`` standardised.)
    This happens inside ``init``; ``apply`` needs no mutable collection.

    Works on any input of rank >= 2 (``[B, D]``, ``[B, T, C]``, NHWC ...).
    Computes in the dtype of the input.

    Args:
      eps: added to the standard deviation at initialisation.
    """

    eps: float = 1e-6

    @nn.compact
    def transform(self, x, inverse, context, train):
        check_channels(self, "params", "loc", x)
        pdtype = param_dtype(x.dtype)

        def stats():
            return channel_moments(x, jnp.dtype(pdtype), float(self.eps))

        def init_loc(_):
            mean, std = stats()
            # forward: (x - mean) / std;  inverse: x = y / std - loc = (y - mean) / std.
            return mean / std if inverse else -mean

        def init_log_scale(_):
            _, std = stats()
            return jnp.log(std) if inverse else -jnp.log(std)

        loc = self.param("loc", init_loc)
        log_scale = self.param("log_scale", init_log_scale)
        return _actnorm(x, loc, log_scale, inverse)
