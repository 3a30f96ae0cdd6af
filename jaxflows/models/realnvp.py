"""Real NVP (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP").

Multi-scale architecture (Sec. 3.6, Fig. 4): every scale but the last applies

    3 affine couplings with alternating checkerboard masks   (at the scale's resolution)
    -> squeeze
    -> 3 affine couplings with alternating channel masks
    -> factor out half of the channels (fixed N(0, I) prior on them),

and the last scale applies 4 affine couplings with alternating checkerboard masks.
Couplings are ``y_b = x_b * exp(s(x_a)) + t(x_a)`` (Eq. 7-9) with residual-network
conditioners (Sec. 4.1) and a bounded log-scale (the paper's ``tanh`` with a scale;
here the soft clamp ``s = c tanh(h / c)`` of :class:`~jaxflows.bijectors.AffineCoupling`).

Departures from the paper, both to keep every layer an exact bijection independent of
the batch: the batch-normalisation bijector after couplings (Sec. 3.7) is replaced by
:class:`~jaxflows.bijectors.ActNorm` (``actnorm=True``), and the conditioners use
ActNorm instead of batch normalisation (see :class:`~jaxflows.nn.ResNetConditioner`).

The flow takes dequantised pixel values in ``[0, num_bins)`` and starts with the
paper's preprocessing (Sec. 4.1): ``x / num_bins`` then
``logit(alpha + (1 - 2 alpha) x)`` with ``alpha = 0.05``, both with their log-dets, so
``log_prob`` is the density of the pixel values.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.coupling import AffineCoupling
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    check_image_shape,
    identity_split,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.multiscale import MultiScale
from jaxflows.nn.utils import check_int_args

__all__ = ["realnvp"]


def _couplings(mask: str, count: int, *, hidden_channels: int, num_blocks: int,
               clamp: Optional[float], dropout: float, actnorm: bool) -> Bijector:
    layers = []
    for i in range(count):
        layers.append(AffineCoupling(
            hidden_channels=hidden_channels, mask=mask, parity=i % 2, conditioner="resnet",
            num_blocks=num_blocks, scale_fn="exp", clamp=clamp, dropout=dropout))
        if actnorm:
            layers.append(ActNorm())
    return Chain(layers)


def _pre(level: int, *, levels: int, final_couplings: int, couplings_per_stage: int, **kw):
    count = final_couplings if level == levels - 1 else couplings_per_stage
    return _couplings("checkerboard", count, **kw)


def _post(level: int, *, levels: int, couplings_per_stage: int, **kw):
    if level == levels - 1:
        return None
    return _couplings("channel", couplings_per_stage, **kw)


@renamed_arguments(RENAMED)
def realnvp(image_shape: Sequence[int], *, levels: int = 3, hidden_channels: int = 64,
            num_blocks: int = 8, num_bins: float = 256, alpha: float = 0.05,
            couplings_per_stage: int = 3, final_couplings: int = 4,
            clamp: Optional[float] = 2.0, actnorm: bool = True, dropout: float = 0.0,
            preprocessing: str = "logit", learn_split_prior: bool = False) -> Flow:
    """A Real NVP :class:`~jaxflows.distributions.Flow` on images of shape ``image_shape``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** levels`` (``levels
        - 1`` squeezes, and the last scale's checkerboard needs an even size).
      levels: number of scales.
      hidden_channels: feature maps of the ResNet conditioners (the paper's Sec. 4.1
        uses a few dozen; its exact per-dataset choice is left to configs).
      num_blocks: residual blocks per conditioner.
      num_bins: number of pixel values; inputs are dequantised values in
        ``[0, num_bins)``.
      alpha: logit-transform margin (paper: 0.05).
      couplings_per_stage: couplings per checkerboard / channel stage (paper: 3).
      final_couplings: checkerboard couplings at the last scale (paper: 4).
      clamp: soft clamp of the log-scale (``None``: unbounded ``exp``).
      actnorm: ActNorm after every coupling (in place of the paper's batch norm).
      dropout: dropout rate in the conditioners.
      preprocessing: ``"logit"`` (paper) or ``"shift"`` (``x / num_bins - 0.5``).
      learn_split_prior: use Glow's learned prior on factored-out halves instead of
        the paper's fixed ``N(0, I)``.
    """
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"realnvp: levels must be an int >= 1, got {levels!r}.")
    shape = check_image_shape(image_shape, 2 ** levels, "realnvp")
    check_int_args("realnvp", dict(hidden_channels=hidden_channels, num_blocks=num_blocks,
                                   couplings_per_stage=couplings_per_stage,
                                   final_couplings=final_couplings))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"realnvp: dropout must be in [0, 1), got {dropout!r}.")
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, "realnvp")
    kw = dict(hidden_channels=hidden_channels, num_blocks=num_blocks, clamp=clamp,
              dropout=dropout, actnorm=actnorm)
    body = MultiScale(
        levels=levels,
        make_pre=functools.partial(_pre, levels=levels, final_couplings=final_couplings,
                                   couplings_per_stage=couplings_per_stage, **kw),
        make_level=functools.partial(_post, levels=levels,
                                     couplings_per_stage=couplings_per_stage, **kw),
        make_split=None if learn_split_prior else identity_split,
        squeeze_last=False)
    return Flow(bijector=Chain(pre + [body]), event_shape=shape)
