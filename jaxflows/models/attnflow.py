"""AttnFlow: multi-scale flows with invertible attention (Sukthanker et al., CVPR 2022).

R. S. Sukthanker, Z. Huang, S. Kumar, R. Timofte, L. Van Gool, "Generative Flows with
Invertible Attentions", CVPR 2022 (arXiv:2106.03959), Sec. 3.4 and Fig. 2(b): every
step of a multi-scale flow (ActNorm -> invertible 1x1 convolution -> coupling) gets one
invertible attention, at one of four positions (supplement Fig. 8):

* ``position=1`` (pos-1): before ActNorm,
* ``position=2`` (pos-2): after ActNorm,
* ``position=3`` (pos-3): after the permutation (1x1 convolution),
* ``position=4`` (pos-4): after the coupling (the supplement's best, and the layout of
  its Fig. 2b: attention stacked on the couplings).

The attention is :class:`~jaxflows.bijectors.IMap` (map-based) or
:class:`~jaxflows.bijectors.ITrans` (transformer-based: ``heads`` summed heads over
patch tokens; ``patch_size="half"`` gives the supplement's pseudo-code tokens of half
the level's side, a 2 x 2 grid, at every level).

Backbones (``backbone``):

* ``"mar_scf"``: the paper's MNIST and CIFAR-10 backbone, mARFlow (mAR-SCF, Bhattacharyya,
  Mahajan et al., CVPR 2020; :mod:`jaxflows.models.mar_scf`): at each level squeeze ->
  K steps -> split with the mAR ConvLSTM prior on the factored-out half, and the
  unconditional mAR prior on the top level; steps with the MixLogCDF coupling and the
  Flow++ conditioner by default (mAR-SCF's best model), or Glow's affine coupling. The
  supplement trains AttnFlow "with the same levels and steps" as its backbone: L=3, K=2
  on MNIST and L=3, K=4 on CIFAR-10 (supplement Sec. 4).
* ``"glow"`` (the factory's default, kept for the ablations of this library): Glow's
  steps (ActNorm -> 1x1 conv -> affine coupling; :mod:`jaxflows.models.glow`) with
  Glow's learned split prior. The paper's CelebA/Cityscapes models use SRFlow
  (conditional; not here).

Steps of a level run under ``nn.scan`` and so share one static structure: the
checkerboard parity of the attention alternates between levels (the 1x1 convolutions
between steps mix masked and unmasked channels); the paper's code flips the mask per
call.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

from jaxflows.bijectors.attention import (
    ITRANS_ATTENTION_MASKS,
    ITRANS_MATRICES,
    IMap,
    ITrans,
)
from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    identity_split,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.glow import check_glow_arguments, glow_step
from jaxflows.models.mar_scf import mar_scf
from jaxflows.models.multiscale import multiscale

__all__ = ["attnflow", "attnflow_step", "ATTENTIONS", "POSITIONS", "BACKBONES",
           "level_patch_sizes"]

ATTENTIONS = ("imap", "itrans")
POSITIONS = (1, 2, 3, 4)
BACKBONES = ("glow", "mar_scf")
# Attentions of this library that an AttnFlow backbone cannot host, and where they go.
_ELSEWHERE = {"l2": "jaxflows.models.acf (contractive residual flows)",
              "lipnorm": "jaxflows.models.acf (contractive residual flows)"}


def _attention(kind: str, level: int, heads: int, patch_size, kernel_size: int,
               itrans_kwargs) -> Bijector:
    parity = level % 2
    if kind == "imap":
        return IMap(parity=parity)
    return ITrans(heads=heads, patch_size=patch_size, kernel_size=kernel_size, parity=parity,
                  **dict(itrans_kwargs))


def _check_attention(attention, position, heads) -> None:
    if attention in _ELSEWHERE:
        raise ValueError(f"attnflow: attention={attention!r} is a Lipschitz attention for "
                         f"contractive flows; the AttnFlow backbones (invertible coupling "
                         f"flows) host only {ATTENTIONS}. Use {_ELSEWHERE[attention]}.")
    if attention not in ATTENTIONS:
        raise ValueError(f"attnflow: attention must be one of {ATTENTIONS}, got {attention!r}.")
    if position not in POSITIONS:
        raise ValueError(f"attnflow: position must be one of {POSITIONS} (pos-1 before ActNorm, "
                         f"pos-2 after ActNorm, pos-3 after the 1x1 conv, pos-4 after the "
                         f"coupling), got {position!r}.")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"attnflow: heads must be an integer >= 1, got heads={heads!r}.")


def attnflow_step(level: int, *, attention: str = "imap", position: int = 1, heads: int = 1,
                  patch_size: Union[int, str] = 2, attention_kernel_size: int = 1,
                  itrans_kwargs=(), make_base_step=glow_step, **step_kwargs) -> Bijector:
    """One AttnFlow step: the backbone's ``ActNorm -> 1x1 conv -> coupling``
    (``make_base_step(level, **step_kwargs)``, Glow's by default) with the attention
    inserted at ``position`` (1: before ActNorm ... 4: after the coupling).
    """
    _check_attention(attention, position, heads)
    parts = list(make_base_step(level, **step_kwargs).bijectors)
    parts.insert(position - 1, _attention(attention, level, heads, patch_size,
                                          attention_kernel_size, itrans_kwargs))
    return Chain(parts)


def level_patch_sizes(image_shape: Sequence[int], levels: int,
                      patch_size: Union[int, str]) -> tuple:
    """The iTrans token side at each level (``(H, W) / 2^(l+1)`` after the squeezes).

    ``patch_size="half"`` gives ``side / 2`` (a 2 x 2 grid of tokens, the supplement's
    pseudo-code), which must be even; an int must be even and divide the side of every
    level. Raises a ``ValueError`` naming the level otherwise.
    """
    out = []
    for level in range(levels):
        h, w = int(image_shape[0]) >> (level + 1), int(image_shape[1]) >> (level + 1)
        if patch_size == "half":
            if h % 4 or w % 4:
                raise ValueError(f"attnflow: patch_size='half' needs tokens of an even side "
                                 f"(half the level's side); level {level} is {h}x{w}, whose "
                                 f"half is odd. Use fewer levels, a larger image, or an int "
                                 f"patch_size.")
            out.append((h // 2, w // 2))
            continue
        p = patch_size
        if isinstance(p, bool) or not isinstance(p, int) or p < 2 or p % 2:
            raise ValueError(f"attnflow: patch_size must be an even integer >= 2 or 'half', "
                             f"got {p!r}.")
        if h % p or w % p:
            raise ValueError(f"attnflow: patch_size={p} must divide the side of every level; "
                             f"level {level} is {h}x{w}.")
        out.append((p, p))
    return tuple(out)


@renamed_arguments(RENAMED)
def attnflow(image_shape: Sequence[int], *, backbone: str = "glow", attention: str = "imap",
             position: int = 1, heads: int = 1, patch_size: Union[int, str] = 2,
             attention_kernel_size: int = 1, qk_channels: Optional[int] = None,
             head_channels: Optional[int] = None, matrix_form: str = "dominant",
             attention_mask: str = "none", levels: int = 3,
             steps_per_level: Union[int, Sequence[int]] = 2, hidden_channels: int = 512,
             coupling: Optional[str] = None, num_bins: float = 256, dropout: float = 0.0,
             lu: bool = True, permutation: str = "conv1x1", scale_fn: str = "sigmoid",
             clamp=2.0, preprocessing: str = "shift", alpha: float = 0.05,
             learn_split_prior: bool = True, components: int = 32, num_blocks: int = 10,
             conditioner_heads: int = 4, lstm_features: int = 32, lstm_layers: int = 3,
             kernel_sizes: Union[int, Sequence[int]] = (5, 5, 3),
             dilations: Union[int, Sequence[int]] = (2, 1, 1), embed_channels: int = 4,
             remat: bool = False, unroll: Union[int, bool] = 1) -> Flow:
    """An AttnFlow :class:`~jaxflows.distributions.Flow` on images of shape ``image_shape``.

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** levels`` (and, for
        ``"itrans"``, the side at every level divisible by the token size).
      backbone: ``"glow"`` or ``"mar_scf"`` (the paper's MNIST/CIFAR-10 backbone; see the
        module docstring).
      attention: ``"imap"`` or ``"itrans"``.
      position: 1..4, where the attention sits in each step (see the module docstring).
      heads: attention heads of iTrans (summed), any integer >= 1 (the supplement's
        ablation: 1, 3, 5, 7; best 5 on MNIST and CIFAR-10). Ignored by iMap.
      patch_size: iTrans token side (even int dividing every level's side) or ``"half"``.
      attention_kernel_size: iTrans query/key convolution size (the paper: 1).
      qk_channels: iTrans query/key channels (default: the level's channels).
      head_channels: iTrans query/key channels per head (default
        ``ceil(qk_channels / heads)``).
      matrix_form: iTrans ``"dominant"`` (invertible by construction, default) or
        ``"offset"`` (the paper's ``A + offset I``); see :class:`~jaxflows.bijectors.ITrans`.
      attention_mask: iTrans ``"none"`` or ``"checkerboard"`` (supplement Fig. 1a).
      levels: ``L``, number of levels (squeezes).
      steps_per_level: ``K`` steps of flow per level (or one value per level).
      hidden_channels: width of the coupling conditioners.
      coupling: Glow: ``"affine"`` (default) or ``"additive"``; mAR-SCF: ``"mixlogcdf"``
        (default) or ``"affine"``.
      num_bins: number of pixel values (256 for 8-bit data); inputs are dequantised
        values in ``[0, num_bins)``.
      dropout: dropout rate in the conditioners (``train=True``, rng ``"dropout"``).
      lu: Glow backbone: LU-parameterised 1x1 convolutions.
      permutation: Glow backbone: ``"conv1x1"``, ``"shuffle"`` or ``"reverse"`` (see
        :func:`~jaxflows.models.glow.glow_step`).
      scale_fn: Glow backbone: ``"sigmoid"`` (Glow's ``sigmoid(h + 2)``) or ``"exp"``.
      clamp: Glow backbone: soft clamp of the ``"exp"`` log-scale (``None``: none).
      preprocessing: ``"shift"`` (``x / num_bins - 0.5``) or ``"logit"``.
      alpha: the logit transform's margin (used with ``preprocessing="logit"``).
      learn_split_prior: Glow backbone: Glow's learned prior on the factored-out halves,
        or ``N(0, I)`` (``False``). The mAR-SCF backbone always uses its mAR priors.
      components: mAR-SCF MixLogCDF coupling: logistic components (paper: 32).
      num_blocks: mAR-SCF MixLogCDF coupling: Flow++ conditioner blocks (10).
      conditioner_heads: mAR-SCF MixLogCDF coupling: the Flow++ conditioner's attention
        heads (4; ``mar_scf``'s ``heads``).
      lstm_features: width of each mAR prior's ConvLSTM (32).
      lstm_layers: stacked ConvLSTM layers of each mAR prior (3).
      kernel_sizes: the mAR priors' kernel size per level (5, 5, 3).
      dilations: the mAR priors' dilation per level (2, 1, 1).
      embed_channels: channels of the kept half's embedding in the mAR priors (4).
      remat: rematerialise each step in the backward pass (saves memory).
      unroll: steps per compiled loop iteration (mAR-SCF backbone).

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values.

    Raises:
      ValueError: an unknown backbone, attention or position; an attention the
        backbones cannot host (``"l2"``/``"lipnorm"``: ACF); ``heads < 1``; a token size
        that does not divide a level's side; a bad iTrans option; or any error of the
        backbone's own checks.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"attnflow: backbone must be one of {BACKBONES} (the paper's MNIST/"
                         f"CIFAR-10 backbone is mAR-SCF), got {backbone!r}.")
    _check_attention(attention, position, heads)
    if matrix_form not in ITRANS_MATRICES:
        raise ValueError(f"attnflow: matrix_form must be one of {ITRANS_MATRICES}, got "
                         f"{matrix_form!r}.")
    if attention_mask not in ITRANS_ATTENTION_MASKS:
        raise ValueError(f"attnflow: attention_mask must be one of {ITRANS_ATTENTION_MASKS}, "
                         f"got {attention_mask!r}.")
    itrans_kwargs = (("qk_channels", qk_channels), ("head_channels", head_channels),
                     ("matrix_form", matrix_form), ("attention_mask", attention_mask))
    if backbone == "glow":
        coupling = coupling or "affine"
        shape = check_glow_arguments("attnflow", image_shape, levels, coupling, permutation,
                                     hidden_channels, dropout)
        base_kwargs = dict(hidden_channels=hidden_channels, coupling=coupling,
                           permutation=permutation, lu=lu, dropout=dropout,
                           scale_fn=scale_fn, clamp=clamp)
    else:
        coupling = coupling or "mixlogcdf"
        shape = tuple(int(s) for s in image_shape)   # checked by mar_scf below
    patches = (level_patch_sizes(shape, levels, patch_size) if attention == "itrans"
               else ((None, None),) * levels)

    def wrap_step(level, make_base_step):
        p = patches[level][0] if patch_size != "half" else "half"
        return attnflow_step(level, attention=attention, position=position, heads=heads,
                             patch_size=p, attention_kernel_size=attention_kernel_size,
                             itrans_kwargs=itrans_kwargs, make_base_step=make_base_step)

    if backbone == "mar_scf":
        # mar_scf checks its own arguments (levels, shape, coupling, priors) and builds
        # every step as wrap_step around its own (ActNorm -> LU 1x1 conv -> coupling).
        flow = mar_scf(image_shape, levels=levels, steps_per_level=steps_per_level,
                       coupling=coupling, hidden_channels=hidden_channels, num_bins=num_bins,
                       dropout=dropout, components=components, num_blocks=num_blocks,
                       heads=conditioner_heads, lstm_features=lstm_features,
                       lstm_layers=lstm_layers, kernel_sizes=kernel_sizes,
                       dilations=dilations, embed_channels=embed_channels,
                       preprocessing=preprocessing, alpha=alpha, remat=remat, unroll=unroll,
                       wrap_step=wrap_step)
        return flow
    make_step = functools.partial(
        wrap_step, make_base_step=functools.partial(glow_step, **base_kwargs))
    make_step(0)          # validate what the steps check lazily right away
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, "attnflow")
    make_split = None if learn_split_prior else identity_split
    body = multiscale(levels, steps_per_level, make_step, remat=remat, unroll=unroll,
                      make_split=make_split)
    return Flow(bijector=Chain(pre + [body]), event_shape=shape)
