"""Bits per dimension.

A flow in jaxflows returns ``log p(x)`` in nats for dequantised pixel values
``x`` in ``[0, 2^b)^D`` (``b = num_bits``; the preprocessing bijector is part of the
flow). Its bits/dim is the negative log-likelihood in base 2 divided by ``D``:

    bpd = -log p(x) / (D ln 2).

Because the density of uniformly dequantised data lower-bounds the discrete
log-likelihood, this is the standard upper bound on the discrete model's bits/dim
(Theis et al. 2016, "A note on the evaluation of generative models", Sec. 3.1).

If instead ``log_prob`` is the density of ``u = x / 2^b`` in ``[0, 1)^D`` (as in
code that rescales before the flow), then ``log p_x(x) = log p_u(x / 2^b) - D b ln 2``
and, with ``unit_scale=True``,

    bpd = -log p_u(u) / (D ln 2) + b.

``num_bits`` may be fractional (``log2(K)`` for ``K`` levels, e.g. ``log2(17)`` for the
8x8 digits).
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence, Union

import jax
import jax.numpy as jnp

__all__ = ["bits_per_dim"]


def bits_per_dim(log_prob: jax.Array, num_dims: Union[int, Sequence[int]],
                 num_bits: float = 8, *, unit_scale: bool = False) -> jax.Array:
    """Bits per dimension of a log-density (nats), elementwise over ``log_prob``.

    Args:
      log_prob: log-density in nats, any shape (e.g. ``[batch]``).
      num_dims: the number of dimensions ``D`` of one example, or its shape (e.g.
        ``(32, 32, 3)``, whose product is taken).
      num_bits: bits per dimension of the data, ``log2`` of the number of levels.
        Only used with ``unit_scale=True``.
      unit_scale: ``log_prob`` is the density of data rescaled to ``[0, 1)``; adds
        ``num_bits`` (see the module docstring).

    Returns:
      ``-log_prob / (D ln 2)`` (``+ num_bits`` if ``unit_scale``), same shape as
      ``log_prob``.
    """
    if isinstance(num_dims, numbers.Integral):
        num_dims = int(num_dims)
    else:
        try:
            num_dims = int(math.prod(int(d) for d in num_dims))
        except TypeError:
            raise ValueError(
                f"bits_per_dim: num_dims must be an int or a shape, got {num_dims!r}.") from None
    if num_dims < 1:
        raise ValueError(f"bits_per_dim: num_dims must be >= 1, got {num_dims}.")
    log_prob = jnp.asarray(log_prob)
    if not jnp.issubdtype(log_prob.dtype, jnp.floating):
        log_prob = log_prob.astype(jnp.float32)
    bpd = -log_prob / (num_dims * math.log(2.0))
    if unit_scale:
        bpd = bpd + jnp.asarray(num_bits, bpd.dtype)
    return bpd
