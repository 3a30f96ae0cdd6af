"""Channel-mixing linear bijectors: invertible 1x1 convolution, permutations.

All act on the last (channel) axis of an input of rank >= 2 (NHWC images,
``[B, D]`` vectors, ...), as a matrix product ``x @ W`` over that axis (one GEMM
over ``batch * positions`` rows: fast on CPU, GPU and TPU alike).

References:
  Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
  NeurIPS 2018, Section 3.2 (invertible 1x1 convolution, LU decomposition).
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017
  (fixed channel permutations / reversals between couplings).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxflows.bijectors.base import Bijector
from jaxflows.nn.utils import check_channels, param_dtype

__all__ = ["Conv1x1", "Permute", "Reverse"]


def _channel_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``y[..., j] = sum_i x[..., i] w[i, j]`` as one 2-D matrix product."""
    c = x.shape[-1]
    return (x.reshape(-1, c) @ w).reshape(x.shape[:-1] + (w.shape[-1],))


@functools.partial(jax.jit, static_argnames=("inverse",))
def _plain_conv(x, w, inverse):
    """``x @ W`` (or ``x @ W^{-1}``) over the last axis, and the per-example log-det."""
    w = w.astype(x.dtype)
    log_det = math.prod(x.shape[1:-1]) * jnp.linalg.slogdet(w)[1]
    if inverse:
        return _channel_matmul(x, jnp.linalg.inv(w)), jnp.broadcast_to(-log_det, x.shape[:1])
    return _channel_matmul(x, w), jnp.broadcast_to(log_det, x.shape[:1])


@functools.partial(jax.jit, static_argnames=("inverse",))
def _lu_conv(x, perm, sign, lower, upper, log_s, inverse):
    """``x @ W`` with ``W = P L (U + diag(sign * exp(log_s)))`` (or ``x @ W^{-1}``)."""
    perm, sign, lower, upper, log_s = (a.astype(x.dtype) for a in (perm, sign, lower, upper, log_s))
    c = x.shape[-1]
    eye = jnp.eye(c, dtype=x.dtype)
    l_mat = jnp.tril(lower, -1) + eye
    u_mat = jnp.triu(upper, 1) + jnp.diag(sign * jnp.exp(log_s))
    log_det = jnp.broadcast_to(math.prod(x.shape[1:-1]) * jnp.sum(log_s), x.shape[:1])
    if inverse:
        # W^{-1} = U^{-1} L^{-1} P^T.
        l_inv = solve_triangular(l_mat, eye, lower=True, unit_diagonal=True)
        u_inv = solve_triangular(u_mat, eye, lower=False)
        return _channel_matmul(x, u_inv @ (l_inv @ perm.T)), -log_det
    return _channel_matmul(x, perm @ (l_mat @ u_mat)), log_det


@functools.partial(jax.jit, static_argnames=("n", "dtype"))
def random_rotation(key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    """A random orthogonal ``n x n`` matrix: ``Q`` of the QR decomposition of a
    standard normal matrix (Glow's initialisation of the 1x1 convolution).
    """
    q, _ = jnp.linalg.qr(jax.random.normal(key, (n, n), dtype))
    return q


@functools.partial(jax.jit, static_argnames=("c", "dtype"))
def _lu_init(key, c, dtype):
    """LU decomposition ``W0 = P L U`` of a random rotation ``W0``, split into
    Conv1x1's buffers (``P``, ``sign``) and params (``lower``, ``upper``, ``log_s``).
    """
    p, l, u = jax.scipy.linalg.lu(random_rotation(key, c, dtype))
    diag = jnp.diagonal(u)
    return {"P": p, "sign": jnp.sign(diag), "lower": jnp.tril(l, -1),
            "upper": jnp.triu(u, 1), "log_s": jnp.log(jnp.abs(diag))}


class Conv1x1(Bijector):
    r"""Invertible 1x1 convolution (Glow, Sec. 3.2): ``y = x W`` over the channel axis.

    .. math::  \log|\det J| = N \log|\det W|,

    ``N`` being the number of positions per example (``H * W`` for images, 1 for
    vectors). ``W`` is initialised as a random rotation (``log|det W| = 0``).

    ``lu=True`` (default), Glow's LU parameterisation (Glow, Eq. 10):

    .. math::  W = P\, L\, (U + \mathrm{diag}(\mathrm{sign} \odot e^{\log s})),
               \qquad \log|\det W| = \sum_c \log s_c,

    with trainable ``"params"``: ``lower`` (only its strictly lower triangle is
    used; ``L`` has a unit diagonal), ``upper`` (only its strictly upper
    triangle is used) and ``log_s``; fixed ``"buffers"``: ``P`` (permutation
    matrix) and ``sign`` (signs of the diagonal of ``U``), both drawn at
    ``init`` from the LU decomposition of the random rotation. Any value of the
    params gives an invertible ``W``; the log-det costs O(C) and the inverse
    two triangular solves.

    ``lu=False``: a plain ``"kernel"`` ``W`` of shape ``[C, C]``, log-det by
    ``slogdet`` (O(C^3)), inverse by ``inv``; invertible unless training drives
    ``W`` singular.

    Args:
      lu: LU-parameterised (True) or plain weight (False).
    """

    lu: bool = True

    @nn.compact
    def transform(self, x, inverse, context, train):
        c = x.shape[-1]
        pdtype = param_dtype(x.dtype)

        if not self.lu:
            check_channels(self, "params", "kernel", x)
            w = self.param("kernel", lambda key: random_rotation(key, c, jnp.dtype(pdtype)))
            return _plain_conv(x, w, inverse)

        check_channels(self, "params", "log_s", x)
        if self.has_variable("params", "log_s"):
            init = None  # already initialised: the initialisers are only shape-checked
        else:
            init = _lu_init(self.make_rng("params"), c, jnp.dtype(pdtype))

        def value(name, shape):
            return lambda *_: (jnp.zeros(shape, pdtype) if init is None else init[name])

        perm = self.variable("buffers", "P", value("P", (c, c))).value
        sign = self.variable("buffers", "sign", value("sign", (c,))).value
        lower = self.param("lower", value("lower", (c, c)))
        upper = self.param("upper", value("upper", (c, c)))
        log_s = self.param("log_s", value("log_s", (c,)))
        return _lu_conv(x, perm, sign, lower, upper, log_s, inverse)


class Permute(Bijector):
    """A fixed random permutation of the channel (last) axis; log-det 0.

    The permutation indices are drawn at ``init`` and stored in the
    ``"buffers"`` collection (``"perm"``, int32), never in ``"params"``.

    Args:
      seed: if ``None`` (default) the permutation is drawn from the ``"params"``
        rng stream at ``init`` (so each step of a :class:`Repeat` gets its own);
        an int fixes it to ``jax.random.permutation(PRNGKey(seed), C)``.
    """

    seed: Optional[int] = None

    @nn.compact
    def transform(self, x, inverse, context, train):
        check_channels(self, "buffers", "perm", x)
        c = x.shape[-1]

        def init_perm():
            key = (self.make_rng("params") if self.seed is None
                   else jax.random.PRNGKey(self.seed))
            return jax.random.permutation(key, c).astype(jnp.int32)

        perm = self.variable("buffers", "perm", init_perm).value
        if inverse:
            perm = jnp.argsort(perm)
        return jnp.take(x, perm, axis=-1), jnp.zeros(x.shape[:1], x.dtype)


class Reverse(Bijector):
    """Reverses the order of the channel (last) axis (RealNVP/Glow); log-det 0."""

    def transform(self, x, inverse, context, train):
        return x[..., ::-1], jnp.zeros(x.shape[:1], x.dtype)
