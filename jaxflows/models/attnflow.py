"""AttnFlow: Glow with invertible attention (Sukthanker et al., CVPR 2022).

R. S. Sukthanker, Z. Huang, S. Kumar, R. Timofte, L. Van Gool, "Generative Flows with
Invertible Attentions", CVPR 2022 (arXiv:2106.03959), Sec. 3.4 and Fig. 2(b): every
step of a Glow flow (ActNorm -> invertible 1x1 convolution -> affine coupling; see
:mod:`jaxflows.models.glow`) gets one invertible attention, at one of four positions:

* ``position=1`` (pos-1): before ActNorm,
* ``position=2`` (pos-2): after ActNorm,
* ``position=3`` (pos-3): after the permutation (1x1 convolution),
* ``position=4`` (pos-4): after the coupling.

The attention is :class:`~jaxflows.bijectors.IMap` (map-based) or
:class:`~jaxflows.bijectors.ITrans` (transformer-based, ``heads`` summed heads over
``patch_size x patch_size`` patch tokens). The paper's MNIST model is L=3, K=2 and its
CIFAR-10 model L=3, K=4, trained with Adam at learning rate 8e-4 (Sec. 4.1).

The multi-scale structure, the preprocessing and the Glow step are the ones of
:func:`jaxflows.models.glow` (built with :func:`~jaxflows.models.multiscale.multiscale`
and :func:`~jaxflows.models.glow.glow_step`); only the step gains the attention.
Steps of a level run under ``nn.scan`` and so share one static structure: the
checkerboard parity of the attention alternates between levels (the 1x1 convolutions
between steps mix masked and unmasked channels).
"""
from __future__ import annotations

import functools
from typing import Sequence, Union

from jaxflows.bijectors.attention import IMap, ITrans
from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    identity_split,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.glow import check_glow_arguments, glow_step
from jaxflows.models.multiscale import multiscale

__all__ = ["attnflow", "attnflow_step", "ATTENTIONS", "POSITIONS"]

ATTENTIONS = ("imap", "itrans")
POSITIONS = (1, 2, 3, 4)


def _attention(kind: str, level: int, heads: int, patch_size: int, kernel_size: int) -> Bijector:
    parity = level % 2
    if kind == "imap":
        return IMap(parity=parity)
    return ITrans(heads=heads, patch_size=patch_size, kernel_size=kernel_size, parity=parity)


def attnflow_step(level: int, *, attention: str = "imap", position: int = 1, heads: int = 1,
                  patch_size: int = 2, attention_kernel_size: int = 1,
                  **glow_step_kwargs) -> Bijector:
    """One AttnFlow step: Glow's ``ActNorm -> 1x1 conv -> coupling`` with the attention
    inserted at ``position`` (1: before ActNorm ... 4: after the coupling).
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attnflow: attention must be one of {ATTENTIONS}, got {attention!r}.")
    if position not in POSITIONS:
        raise ValueError(f"attnflow: position must be one of {POSITIONS} (pos-1 before ActNorm, "
                         f"pos-2 after ActNorm, pos-3 after the 1x1 conv, pos-4 after the "
                         f"coupling), got {position!r}.")
    parts = list(glow_step(level, **glow_step_kwargs).bijectors)
    parts.insert(position - 1,
                 _attention(attention, level, heads, patch_size, attention_kernel_size))
    return Chain(parts)


@renamed_arguments(RENAMED)
def attnflow(image_shape: Sequence[int], *, attention: str = "imap", position: int = 1,
             heads: int = 1, patch_size: int = 2, attention_kernel_size: int = 1,
             levels: int = 3, steps_per_level: Union[int, Sequence[int]] = 2,
             hidden_channels: int = 512, coupling: str = "affine", num_bins: float = 256,
             dropout: float = 0.0, lu: bool = True, permutation: str = "conv1x1",
             scale_fn: str = "sigmoid", clamp=2.0, preprocessing: str = "shift",
             alpha: float = 0.05, learn_split_prior: bool = True, remat: bool = False) -> Flow:
    """An AttnFlow :class:`~jaxflows.distributions.Flow` on images of shape ``image_shape``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** levels`` (and, for
        ``"itrans"``, the size at every level divisible by ``patch_size``).
      attention: ``"imap"`` or ``"itrans"``.
      position: 1..4, where the attention sits in each step (see the module docstring).
      heads: attention heads of iTrans (summed); must divide the channels at every level
        (``4 C`` at the first level). Ignored by iMap (a single attention map).
      patch_size: iTrans token size (even).
      attention_kernel_size: iTrans query/key convolution size (the paper: 1).
      levels: ``L``, number of levels (squeezes).
      steps_per_level: ``K`` steps of flow per level (or one value per level).
      hidden_channels: width of the coupling conditioners.
      coupling: ``"affine"`` or ``"additive"`` coupling in every Glow step.
      num_bins: number of pixel values (256 for 8-bit data); inputs are dequantised
        values in ``[0, num_bins)``.
      dropout: dropout rate in the conditioners (``train=True``, rng ``"dropout"``).
      lu: LU-parameterised 1x1 convolutions (used with ``permutation="conv1x1"``).
      permutation: ``"conv1x1"``, ``"shuffle"`` or ``"reverse"`` (see
        :func:`~jaxflows.models.glow.glow_step`).
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

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values.
    """
    shape = check_glow_arguments("attnflow", image_shape, levels, coupling, permutation,
                                 hidden_channels, dropout)
    if attention == "itrans":
        for l in range(levels):
            channels = shape[2] * 4 * 2 ** l
            if channels % heads:
                raise ValueError(f"attnflow: heads={heads} must divide the channels at every "
                                 f"level ({channels} at level {l}).")
    make_step = functools.partial(
        _level_step, attention=attention, position=position, heads=heads,
        patch_size=patch_size, attention_kernel_size=attention_kernel_size, shape=shape,
        glow_kwargs=dict(hidden_channels=hidden_channels, coupling=coupling,
                         permutation=permutation, lu=lu, dropout=dropout, scale_fn=scale_fn,
                         clamp=clamp))
    # Validate everything the steps check lazily (bad attention/position) right away.
    make_step(0)
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, "attnflow")
    make_split = None if learn_split_prior else identity_split
    body = multiscale(levels, steps_per_level, make_step, remat=remat, make_split=make_split)
    return Flow(bijector=Chain(pre + [body]), event_shape=shape)


def _level_step(level, *, attention, position, heads, patch_size, attention_kernel_size, shape,
                glow_kwargs):
    # iTrans tokens: the level's resolution is (H, W) / 2^(level+1); at coarse levels
    # smaller than the patch, use the largest even patch that divides it (2 at least).
    side = min(shape[0], shape[1]) >> (level + 1)
    p = patch_size
    while p > 2 and (side % p):
        p -= 2
    return attnflow_step(level, attention=attention, position=position, heads=heads,
                         patch_size=p, attention_kernel_size=attention_kernel_size, **glow_kwargs)
