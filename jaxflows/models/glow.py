"""Glow (Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions").

Architecture (Glow, Sec. 3 and Fig. 2): ``L`` levels; each level squeezes the image
(2x2 space-to-depth), applies ``K`` steps of flow

    ActNorm -> invertible 1x1 convolution -> affine (or additive) coupling

and, except at the last level, factors out half of the channels with a learned
conditional Gaussian prior (``split2d``). See :mod:`jaxflows.models.multiscale` for
the level structure and the layout of the latent (same shape as the image).

The flow takes dequantised pixel values ``x`` in ``[0, num_bins)`` and starts with
Glow's preprocessing ``x / num_bins - 0.5`` (``ScaleToUnit`` then ``Shift(-0.5)``,
whose log-det ``-D log(num_bins)`` is Glow's ``-log(n_bins) * D`` term), so
``Flow.log_prob`` is the density of the pixel values and
:func:`jaxflows.bits_per_dim` of it is the usual bits/dim. ``preprocessing="logit"``
uses Real NVP's logit transform instead.

The ``K`` steps of a level are one :class:`~jaxflows.bijectors.Repeat` (``nn.scan``):
compile time does not grow with ``K``.
"""
from __future__ import annotations

import functools
from typing import Sequence, Tuple, Union

from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from jaxflows.bijectors.linear import Conv1x1, Permute, Reverse
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    check_image_shape,
    identity_split,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.multiscale import multiscale

__all__ = ["glow", "glow_step", "check_glow_arguments", "COUPLINGS"]

COUPLINGS = ("affine", "additive")
_PERMUTATIONS = ("conv1x1", "shuffle", "reverse")


def glow_step(level: int, *, hidden_channels: int, coupling: str = "affine",
              permutation: str = "conv1x1", lu: bool = True, dropout: float = 0.0,
              scale_fn: str = "sigmoid", clamp=2.0) -> Bijector:
    """One step of flow: ``ActNorm -> permutation -> coupling`` (Glow, Sec. 3 and Table 1).

    ``permutation``: ``"conv1x1"`` (Glow's invertible 1x1 convolution, LU-parameterised
    if ``lu``), ``"shuffle"`` (a fixed random permutation) or ``"reverse"`` (Real NVP's
    channel reversal) -- the three compared in Glow Sec. 5.1. The coupling transforms
    the second half of the channels given the first (Glow's ``f(z1) -> z2``).
    """
    if permutation == "conv1x1":
        perm = Conv1x1(lu=lu)
    elif permutation == "shuffle":
        perm = Permute(seed=level)
    else:
        perm = Reverse()
    kw = dict(hidden_channels=hidden_channels, mask="channel", conditioner="glow",
              dropout=dropout)
    if coupling == "affine":
        coup = AffineCoupling(scale_fn=scale_fn, clamp=clamp, **kw)
    else:
        coup = AdditiveCoupling(**kw)
    return Chain([ActNorm(), perm, coup])


def check_glow_arguments(who: str, image_shape, levels, coupling, permutation, hidden_channels,
                         dropout) -> Tuple[int, int, int]:
    """Checks the arguments every Glow-style factory shares; returns the image shape.

    Used by :func:`glow` and :func:`~jaxflows.models.attnflow.attnflow` so that both
    refuse the same bad values with the same message (prefixed by ``who``).
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"{who}: levels must be an int >= 1, got {levels!r}.")
    shape = check_image_shape(image_shape, 2 ** levels, who)
    if coupling not in COUPLINGS:
        raise ValueError(f"{who}: coupling must be one of {COUPLINGS}, got {coupling!r}.")
    if permutation not in _PERMUTATIONS:
        raise ValueError(f"{who}: permutation must be one of {_PERMUTATIONS}, got "
                         f"{permutation!r}.")
    if not isinstance(hidden_channels, int) or hidden_channels < 1:
        raise ValueError(f"{who}: hidden_channels must be a positive int, got "
                         f"{hidden_channels!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{who}: dropout must be in [0, 1), got {dropout!r}.")
    return shape


@renamed_arguments(RENAMED)
def glow(image_shape: Sequence[int], *, levels: int = 3,
         steps_per_level: Union[int, Sequence[int]] = 32, hidden_channels: int = 512,
         coupling: str = "affine", num_bins: float = 256, dropout: float = 0.0,
         lu: bool = True, permutation: str = "conv1x1", scale_fn: str = "sigmoid",
         clamp=2.0, preprocessing: str = "shift", alpha: float = 0.05,
         learn_split_prior: bool = True, remat: bool = False,
         unroll: Union[int, bool] = 1) -> Flow:
    """A Glow :class:`~jaxflows.distributions.Flow` on images of shape ``image_shape``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** levels``.
      levels: ``L``, number of levels (squeezes).
      steps_per_level: ``K`` steps of flow per level (or one value per level).
      hidden_channels: width of the coupling conditioners (Glow: 512).
      coupling: ``"affine"`` (scale ``sigmoid(h + 2)``) or ``"additive"``.
      num_bins: number of pixel values (256 for 8-bit data); inputs are dequantised
        values in ``[0, num_bins)``.
      dropout: dropout rate in the conditioners (``train=True``, rng ``"dropout"``).
      lu: LU-parameterised 1x1 convolutions (Glow Sec. 3.2).
      permutation: ``"conv1x1"``, ``"shuffle"`` or ``"reverse"``.
      scale_fn: scale of the affine coupling: ``"sigmoid"`` (Glow's ``sigmoid(h + 2)``)
        or ``"exp"`` (Real NVP's ``exp(s)``, soft-clamped by ``clamp``).
      clamp: soft clamp ``c`` of the ``"exp"`` log-scale, ``s = c * tanh(h / c)``
        (``None``: no clamp); ignored with ``scale_fn="sigmoid"``.
      preprocessing: ``"shift"`` (Glow: ``x / num_bins - 0.5``) or ``"logit"``
        (``logit(alpha + (1 - 2 alpha) x / num_bins)``).
      alpha: the logit transform's margin (used with ``preprocessing="logit"``).
      learn_split_prior: Glow's learned conditional prior on the factored-out halves
        (``Split``); ``False`` gives them a fixed ``N(0, I)`` (Real NVP's factor-out).
      remat: rematerialise each step in the backward pass (saves memory).
      unroll: steps per compiled loop iteration of a level (``True``: the whole
        level unrolled). 1 (default) keeps compile time flat in ``K``; unrolling makes
        CPU training steps faster (see ``docs/performance.md``) and compiles longer.

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values.
    """
    shape = check_glow_arguments("glow", image_shape, levels, coupling, permutation,
                                 hidden_channels, dropout)
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, "glow")
    make_step = functools.partial(
        glow_step, hidden_channels=hidden_channels, coupling=coupling, permutation=permutation,
        lu=lu, dropout=dropout, scale_fn=scale_fn, clamp=clamp)
    make_split = None if learn_split_prior else identity_split
    body = multiscale(levels, steps_per_level, make_step, remat=remat, unroll=unroll,
                      make_split=make_split)
    return Flow(bijector=Chain(pre + [body]), event_shape=shape)

