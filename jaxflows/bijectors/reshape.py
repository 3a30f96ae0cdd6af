"""Reshaping bijectors of multi-scale image flows: ``Squeeze`` and ``Split`` (factor-out).

Squeeze (Dinh et al. 2017, "Density estimation using Real NVP", Sec. 3.6 and Fig. 3;
Kingma & Dhariwal 2018, "Glow", Sec. 3) trades spatial resolution for channels:
every 2x2 block of a ``[B, H, W, C]`` image becomes one pixel with ``4 C`` channels.
It only permutes coordinates, so its log-det is zero.

Split (factor-out; Real NVP Sec. 3.6, Glow Sec. 3 / ``split2d`` of the reference code)
divides the channels into ``z1`` (kept, transformed further) and ``z2`` (factored
out), and models ``z2`` with a learned conditional Gaussian prior

    p(z2 | z1) = N(z2; mu(z1), diag(sigma(z1)^2)),
    [mu, log sigma] = Conv3x3(z1)     (zero-initialised: mu = 0, sigma = 1 at init).

As a bijector, ``Split`` *standardises* the factored-out half,

    forward:  (z1, z2) -> (z1, eps2),   eps2 = (z2 - mu(z1)) / sigma(z1),
    log|det J| = - sum log sigma(z1),

which is a conditional affine map of ``z2`` given ``z1`` (triangular Jacobian). Since
``log N(z2; mu, sigma^2) = log N(eps2; 0, 1) - sum log sigma``, a flow that applies
``Split`` and then puts a *standard* normal on every output coordinate has exactly
Glow's likelihood. Sampling at temperature ``T`` draws ``eps2 ~ N(0, T^2)``, so
``z2 = mu + T sigma eps``: Glow's temperature applies to every level's prior.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, Inverse, check_rank, sum_except_batch

__all__ = ["Squeeze", "Unsqueeze", "Split", "FlattenEvent", "squeeze2d", "unsqueeze2d",
           "concat_context"]

Array = jax.Array


def _check_image(x: Array, who: str, arg: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{who}: {arg} must be a batch of NHWC images of rank 4, got shape {tuple(x.shape)}.")


def squeeze2d(x: Array) -> Array:
    """2x2 space-to-depth, ``[B, H, W, C] -> [B, H/2, W/2, 4C]``.

    Output channel ``4 c + 2 dy + dx`` holds input pixel ``(2 i + dy, 2 j + dx)`` of
    channel ``c`` (the layout of Glow's ``squeeze2d``: the four sub-pixels of one
    input channel are adjacent).
    """
    _check_image(x, "squeeze2d")
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(
            f"Squeeze: x must have even height and width, got height={h}, width={w} "
            f"(shape {tuple(x.shape)}).")
    x = x.reshape(b, h // 2, 2, w // 2, 2, c)
    x = x.transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze2d(y: Array) -> Array:
    """Inverse of :func:`squeeze2d`, ``[B, H, W, 4C] -> [B, 2H, 2W, C]``."""
    _check_image(y, "unsqueeze2d", "y")
    b, h, w, c4 = y.shape
    if c4 % 4:
        raise ValueError(
            f"Unsqueeze: y must have a channel count divisible by 4, got {c4} "
            f"(shape {tuple(y.shape)}).")
    c = c4 // 4
    y = y.reshape(b, h, w, c, 2, 2)
    y = y.transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(b, 2 * h, 2 * w, c)


class Squeeze(Bijector):
    """2x2 space-to-depth: ``[B, H, W, C] -> [B, H/2, W/2, 4C]``, log-det 0.

    Real NVP (Dinh et al. 2017, Sec. 3.6) and Glow (Kingma & Dhariwal 2018, Sec. 3).
    The inverse is depth-to-space; ``Unsqueeze()`` is ``Inverse(Squeeze())``.
    A height or width that is not even raises ``ValueError``.
    """

    input_ranks = (4,)

    def transform(self, x, inverse, context, train):
        y = unsqueeze2d(x) if inverse else squeeze2d(x)
        return y, jnp.zeros(x.shape[:1], x.dtype)


def Unsqueeze() -> Bijector:  # noqa: N802  (a constructor, named like a class)
    """Depth-to-space ``[B, H, W, 4C] -> [B, 2H, 2W, C]``: ``Inverse(Squeeze())``."""
    return Inverse(Squeeze())


def concat_context(h: Array, context: Optional[Array], who: str) -> Array:
    """Concatenates a conditioning input to features ``h`` along the last axis.

    ``h`` is an image batch ``[B, H, W, C]`` or a vector batch ``[B, D]``. ``context``
    may be ``None`` (returns ``h``), a vector batch ``[B, K]`` (broadcast over the
    spatial positions of an image ``h``) or, for an image ``h``, an image batch
    ``[B, H, W, K]`` with the same spatial size. Used by every conditioner that takes
    a context (couplings, :class:`Split`), so all of them accept the same shapes.
    """
    if context is None:
        return h
    context = context.astype(h.dtype)
    if context.ndim < 2 or context.shape[0] != h.shape[0]:
        raise ValueError(
            f"{who}: `context` must be batched like the input (batch {h.shape[0]}, rank >= 2), "
            f"got shape {tuple(context.shape)}.")
    if h.ndim == 4 and context.ndim == 2:
        context = jnp.broadcast_to(context[:, None, None, :],
                                   h.shape[:3] + (context.shape[-1],))
    elif h.ndim == 4 and (context.ndim != 4 or context.shape[1:3] != h.shape[1:3]):
        raise ValueError(
            f"{who}: `context` must be [batch, K] or [batch, {h.shape[1]}, {h.shape[2]}, K], "
            f"got shape {tuple(context.shape)}.")
    elif h.ndim != 4 and context.ndim != h.ndim:
        raise ValueError(f"{who}: `context` for a rank-{h.ndim} input must have rank {h.ndim} "
                         f"([batch, K]), got shape {tuple(context.shape)}.")
    return jnp.concatenate([h, context], axis=-1)


class Split(Bijector):
    """Glow factor-out with a learned conditional Gaussian prior, as a bijector.

    Input ``[B, H, W, C]`` with ``C`` even; ``z1 = x[..., :C/2]`` and
    ``z2 = x[..., C/2:]`` (Glow's ``split2d``). A 3x3 convolution of ``z1`` (and of
    ``context``, if given, see :func:`concat_context`) whose kernel and bias start at
    zero gives ``mu`` and ``log sigma`` of ``p(z2 | z1) = N(mu, sigma^2)``; the
    output is ``concat(z1, (z2 - mu) / sigma)`` with log-det ``-sum log sigma``
    (see the module docstring). At initialisation it is the identity (``N(0, I)``
    prior on ``z2``).

    Attributes:
      kernel_size: spatial size of the prior's convolution (Glow: 3).
    """

    input_ranks = (4,)

    kernel_size: int = 3

    @nn.compact
    def transform(self, x, inverse, context, train):
        c = x.shape[-1]
        if c % 2:
            raise ValueError(
                f"Split: the input must have an even number of channels, got {c} "
                f"(shape {tuple(x.shape)}).")
        half = c // 2
        z1, z2 = x[..., :half], x[..., half:]
        h = concat_context(z1, context, "Split")
        in_features = h.shape[-1]
        prior = self.variables.get("params", {}).get("prior", {})
        if "kernel" in prior:
            k_shape = prior["kernel"].shape
            if k_shape[2] != in_features or k_shape[3] != c:
                raise ValueError(
                    f"Split: input has {c} channels (conditioning on {in_features} features), "
                    f"but the module was initialised for {k_shape[3]} channels "
                    f"conditioning on {k_shape[2]} features.")
        out = nn.Conv(2 * half, (self.kernel_size, self.kernel_size), padding="SAME",
                      kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                      dtype=x.dtype, name="prior")(h)
        # Interleaved as in Glow's split2d_prior: mean = h[..., 0::2], logs = h[..., 1::2].
        mu, log_sigma = out[..., 0::2], out[..., 1::2]
        ld = -sum_except_batch(log_sigma)
        if inverse:
            z2_new = z2 * jnp.exp(log_sigma) + mu
            return jnp.concatenate([z1, z2_new], axis=-1), -ld
        eps2 = (z2 - mu) * jnp.exp(-log_sigma)
        return jnp.concatenate([z1, eps2], axis=-1), ld


class FlattenEvent(Bijector):
    """Applies ``bijector`` to the flattened event ``[B, D]`` and restores the shape
    (Residual Flows' ``FCWrapper``: ActNorm over all ``D`` coordinates). Log-det unchanged.
    """

    bijector: Bijector

    def forward_and_log_det(self, x, *, context=None, train=False):
        check_rank(x, None, "FlattenEvent", "x")
        y, ld = self.bijector.forward_and_log_det(x.reshape(x.shape[0], -1), context=context,
                                                  train=train)
        return y.reshape(x.shape), ld

    def inverse_and_log_det(self, y, *, context=None, train=False):
        check_rank(y, None, "FlattenEvent", "y")
        x, ld = self.bijector.inverse_and_log_det(y.reshape(y.shape[0], -1), context=context,
                                                  train=train)
        return x.reshape(y.shape), ld
