"""mAR-SCF: a multi-scale flow with multi-scale autoregressive channel priors.

Bhattacharyya, Mahajan, Fritz, Schiele & Roth, "Normalizing Flows with Multi-Scale
Autoregressive Priors" (CVPR 2020; supplement Sec. A-B). From data to latent, level
``i = 0 .. L-1``:

    squeeze -> K steps of flow (ActNorm -> LU 1x1 conv -> coupling)
            -> (every level but the last) split: half of the channels, ``l_i``, is
               factored out and gets the mAR prior ``p(l_i | r_i)`` given the kept
               half ``r_i`` (:class:`~jaxflows.bijectors.mar.MARSplit`)
    top: the last level's output ``h_L`` gets the unconditional mAR prior
         (:class:`~jaxflows.bijectors.mar.MARTop`).

The splits carry **no** Gaussian prior of their own (the reference's ``Split2dMsC``): the
prior of a factored-out half is the mAR LSTM alone. The priors standardise their
tensors, so the flow's base is ``N(0, I)`` and ``Flow.sample`` is MARPS (mAR-SCF
Algorithm 1): the top prior generates its channels one at a time, the last level is
inverted, then every split's prior generates the factored-out channels given the kept
half, level by level. ``temperature`` scales the noise of every step.

Couplings (supplement Sec. B): ``"affine"`` is Glow's (scale ``sigmoid(h + 2)``,
conditioner ``3x3 conv -> ActNorm -> ReLU -> 1x1 conv -> ActNorm -> ReLU -> zero 3x3
conv``), K = 32 per level; ``"mixlogcdf"`` is Flow++'s mixture-of-logistics coupling
(:class:`~jaxflows.bijectors.MixLogCDFCoupling`, 32 components) with the Flow++
conditioner (:class:`~jaxflows.nn.FlowppConditioner`: gated convolutions and gated
self-attention, 10 blocks, 4 heads), K = 4 per level, the paper's best model. Both
transform the second half of the channels given the first; the reference's MixLogCDF
step transforms the first half and then swaps the halves, which the learned 1x1
convolution of the next step makes equivalent.

Data: dequantised pixel values in ``[0, num_bins)`` as for :func:`~jaxflows.models.glow`;
bits/dim use the image's own ``D = H W C``. The reference code pads MNIST to 32x32 and
replicates it to 3 channels, which changes ``D``; here MNIST is 28x28x1 (or padded to
32x32x1 with ``config.dataset.pad``).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple, Union

from jaxflows.bijectors.base import Bijector, Chain, Repeat, check_unroll
from jaxflows.bijectors.linear import Conv1x1
from jaxflows.bijectors.mar import MARSplit, MARTop
from jaxflows.bijectors.mixlogcdf import MixLogCDFCoupling
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    check_image_shape,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.glow import glow_step
from jaxflows.models.multiscale import MultiScale
from jaxflows.nn.flowpp import FlowppConditioner
from jaxflows.nn.utils import check_int_args

__all__ = ["mar_scf", "mixlogcdf_step", "sampling_steps", "MAR_COUPLINGS"]

MAR_COUPLINGS = ("affine", "mixlogcdf")
DEFAULT_STEPS = {"affine": 32, "mixlogcdf": 4}


def sampling_steps(image_shape: Sequence[int], levels: int) -> int:
    """Sequential steps of MARPS for an image ``(H, W, C)`` (mAR-SCF Lemma A.1).

    Level ``i < L-1`` factors out ``2^(i+1) C`` channels (half of the ``4 * 2^i C``
    after its squeeze), and the top level models ``2^(L+1) C`` channels, so the count is
    ``sum_{i=1}^{L-1} 2^i C + 2^(L+1) C`` (the paper numbers levels from 1: ``C_i = 2^i C``
    at split levels, ``C_L = 2^(L+1) C`` at the top). CIFAR-10 at ``L = 3``:
    ``6 + 12 + 48 = 66``. The count does not depend on ``H`` and ``W``.
    """
    c = int(image_shape[-1])
    return sum(2 ** i * c for i in range(1, levels)) + 2 ** (levels + 1) * c


def _level(level: int, *, levels, steps, make_step, prior_kw, remat, unroll) -> Bijector:
    body = Repeat(make_step=functools.partial(make_step, level), num_steps=steps[level],
                  remat=remat, unroll=unroll)
    if level < levels - 1:
        return body
    return Chain([body, MARTop(**prior_kw[level])])


def mixlogcdf_step(level: int, *, hidden_channels: int, components: int, num_blocks: int,
                   heads: int, dropout: float) -> Bijector:
    """ActNorm -> LU 1x1 conv -> MixLogCDF coupling with the Flow++ conditioner."""
    del level
    cond = functools.partial(FlowppConditioner, filters=hidden_channels, num_blocks=num_blocks,
                             heads=heads, dropout=dropout)
    coupling = MixLogCDFCoupling(components=components, mask="channel", conditioner=cond)
    return Chain([ActNorm(), Conv1x1(lu=True), coupling])


def _split(level: int, *, prior_kw) -> Bijector:
    return MARSplit(**prior_kw[level])


def _per_level(value, levels: int, name: str) -> Tuple[int, ...]:
    """One positive int per level, from an int or a list at least ``levels`` long."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * levels
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"mar_scf: {name} must be an int or a list of ints, got "
                         f"{value!r}.") from None
    if len(out) < levels:
        raise ValueError(f"mar_scf: {name} has {len(out)} entries but the flow has {levels} "
                         f"levels (one prior per level); give at least {levels}, got {value!r}.")
    out = out[:levels]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in out):
        raise ValueError(f"mar_scf: {name} must hold positive ints, got {value!r}.")
    return out


@renamed_arguments(RENAMED)
def mar_scf(image_shape: Sequence[int], *, levels: int = 3,
            steps_per_level: Union[int, Sequence[int], None] = None,
            coupling: str = "affine", hidden_channels: int = 512, num_bins: float = 256,
            dropout: float = 0.0, components: int = 32, num_blocks: int = 10, heads: int = 4,
            lstm_features: int = 32, lstm_layers: int = 3,
            kernel_sizes: Union[int, Sequence[int]] = (5, 5, 3),
            dilations: Union[int, Sequence[int]] = (2, 1, 1),
            embed_channels: int = 4, preprocessing: str = "shift", alpha: float = 0.05,
            remat: bool = False, unroll: Union[int, bool] = 1,
            wrap_step: Optional[Callable[[int, Callable[[int], Bijector]], Bijector]] = None
            ) -> Flow:
    """An mAR-SCF :class:`~jaxflows.distributions.Flow` on images (module docstring).

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** levels``.
      levels: ``L`` (the paper: 3 for MNIST and CIFAR-10).
      steps_per_level: ``K`` per level (or one per level); default 32 for the affine
        coupling and 4 for MixLogCDF (the paper's settings).
      coupling: ``"affine"`` (Glow's coupling with the ``sigmoid(h + 2)`` scale) or
        ``"mixlogcdf"`` (Flow++'s coupling and conditioner).
      hidden_channels: width of the coupling conditioners (reference default 512; its
        released MixLogCDF CIFAR-10 model uses 256).
      num_bins: number of pixel values; inputs are dequantised values in
        ``[0, num_bins)``.
      dropout: dropout rate in the coupling conditioners (``train=True``; the
        reference's MixLogCDF conditioners use 0.2).
      components: logistic components of the MixLogCDF coupling (paper: 32).
      num_blocks: gated conv + attention blocks of the Flow++ conditioner (paper: 10).
      heads: attention heads of the Flow++ conditioner (must divide
        ``hidden_channels``; Flow++: 4).
      lstm_features: width of each level's ConvLSTM (paper: 32).
      lstm_layers: stacked ConvLSTM layers (paper: 3).
      kernel_sizes: the priors' kernel size per level, finest first (reference: 5, 5, 3);
        an int applies to every level.
      dilations: the priors' LSTM dilation per level (reference: 2, 1, 1).
      embed_channels: channels of the kept half's embedding fed to each step
        (reference: 4).
      preprocessing: ``"shift"`` (``x / num_bins - 0.5``, as the reference) or
        ``"logit"``.
      alpha: margin of the logit preprocessing.
      remat: rematerialise every flow step in the backward pass.
      unroll: steps per compiled loop iteration of each level (see ``Repeat``).
      wrap_step: optional hook ``wrap_step(level, make_base_step=f) -> Bijector`` that
        builds each step of flow around the backbone's own (``f(level)``: ActNorm ->
        LU 1x1 conv -> coupling); AttnFlow inserts its attention this way
        (:func:`jaxflows.models.attnflow`). Default: the backbone's step.

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values and whose
      ``sample`` is MARPS.
    """
    check_int_args("mar_scf", {"levels": levels})
    shape = check_image_shape(image_shape, 2 ** levels, "mar_scf")
    if coupling not in MAR_COUPLINGS:
        raise ValueError(f"mar_scf: coupling must be one of {MAR_COUPLINGS}, got {coupling!r}.")
    if steps_per_level is None:
        steps_per_level = DEFAULT_STEPS[coupling]
    steps = _per_level(steps_per_level, levels, "steps_per_level")
    kernels = _per_level(kernel_sizes, levels, "kernel_sizes")
    dils = _per_level(dilations, levels, "dilations")
    check_int_args("mar_scf", {"hidden_channels": hidden_channels,
                               "lstm_features": lstm_features, "lstm_layers": lstm_layers,
                               "embed_channels": embed_channels})
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"mar_scf: dropout must be in [0, 1), got {dropout!r}.")
    check_unroll(unroll, "mar_scf")
    prior_kw = tuple(dict(features=lstm_features, num_layers=lstm_layers, kernel_size=k,
                          dilation=d, embed_channels=embed_channels)
                     for k, d in zip(kernels, dils))
    if coupling == "affine":
        make_step = functools.partial(glow_step, hidden_channels=hidden_channels,
                                      coupling="affine", dropout=dropout)
    else:
        check_int_args("mar_scf", {"components": components, "num_blocks": num_blocks,
                                   "heads": heads})
        if hidden_channels % heads:
            raise ValueError(f"mar_scf: heads={heads} must divide hidden_channels="
                             f"{hidden_channels} (the Flow++ conditioner's width).")
        make_step = functools.partial(mixlogcdf_step, hidden_channels=hidden_channels,
                                      components=components, num_blocks=num_blocks,
                                      heads=heads, dropout=dropout)
    if wrap_step is not None:
        make_step = functools.partial(wrap_step, make_base_step=make_step)
        make_step(0)      # a step's lazy checks (e.g. the hook's attention) fail here
    make_level = functools.partial(_level, levels=levels, steps=steps, make_step=make_step,
                                   prior_kw=prior_kw, remat=remat, unroll=unroll)
    body = MultiScale(levels=levels, make_level=make_level,
                      make_split=functools.partial(_split, prior_kw=prior_kw))
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, "mar_scf")
    return Flow(bijector=Chain(pre + [body]), event_shape=shape)
