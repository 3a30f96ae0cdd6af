"""Conditional flows: conditional Glow, class-conditional Glow, and cAttnFlow (SRFlow + attention).

Every factory returns a :class:`~jaxflows.distributions.Flow` modelling ``p(x | c)``
(``Flow.context_shape`` is declared, so a missing context, or one of the wrong shape,
is a ``ValueError``; batch convention: one context row per example, batch 1 broadcast,
see :mod:`jaxflows.distributions.flow`). Data and preprocessing are Glow's
(:mod:`jaxflows.models.glow`): dequantised pixel values in ``[0, num_bins)``, so
``Flow.log_prob`` is the conditional density of the pixel values and
:func:`jaxflows.bits_per_dim` of it is the conditional bits/dim.

Architecture (Lugmayr et al., "SRFlow", ECCV 2020, Sec. 3 and Fig. 3; Sukthanker et al.,
"Generative Flows with Invertible Attentions", CVPR 2022, Sec. 3.4 and supplement
Sec. 3-4): Glow's multi-scale flow (:func:`~jaxflows.models.multiscale.multiscale`) whose
step is

    ActNorm -> 1x1 conv -> affine injector(u_l) -> conditional affine coupling([z1, u_l])
    [-> invertible attention (cAttnFlow), at ``position`` as in AttnFlow]

and whose factor-outs have the conditional split prior ``p(z2 | z1, u_l)``
(see :mod:`jaxflows.bijectors.conditional`). ``u_l`` is the context feature at level
``l``'s resolution: an encoder (:mod:`jaxflows.nn.encoders`) inside the flow turns the
raw context (a low-resolution image, a segmentation map, class labels) into one map per
level, or a vector used at every level. The step is
:func:`~jaxflows.models.glow.glow_step` (or AttnFlow's step) with the injector inserted
before its coupling, which reads the context; nothing of Glow is re-implemented.

Departures from SRFlow (written down once, here):

* SRFlow's two ``additionalFlowNoAffine`` steps after each squeeze (ActNorm and 1x1
  convolution without coupling) are not added; use more steps per level instead.
* Coupling scales are Glow's ``sigmoid(h + 2) / sigmoid(2)`` (SRFlow: ``sigmoid(h + 2) +
  1e-4``), the same maps up to a constant (absorbed by ActNorm); the injector uses
  SRFlow's exact ``sigmoid(h + 2) + 1e-4``.
* The RRDB encoder is trained jointly from scratch and its stacked features are resized
  bilinearly to each level (SRFlow: L1-pretrained, frozen for half of training, and
  ``fea_up*`` convolutional upsampling); see :class:`~jaxflows.nn.encoders.RRDBEncoder`.
* Pixels are 8-bit with Glow's ``x / 256 - 0.5`` (SRFlow dequantises at 1/32, so its
  NLL is not 8-bit bits/dim).
* SRFlow's ``correct_splits=False`` (a split at levels ``< L - 1`` only) is what
  :class:`~jaxflows.models.multiscale.MultiScale` does too.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple, Union

from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.conditional import AffineInjector, Conditioned, SelectContext
from jaxflows.bijectors.coupling import Coupling
from jaxflows.bijectors.reshape import Split
from jaxflows.distributions.flow import Flow
from jaxflows.models.attnflow import ATTENTIONS, attnflow_step, level_patch_sizes
from jaxflows.models.common import (
    RENAMED,
    identity_split,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.glow import check_glow_arguments, glow_step
from jaxflows.models.multiscale import multiscale
from jaxflows.nn.encoders import ClassEmbedding, RRDBEncoder, SegmentationEncoder

__all__ = ["conditional_glow", "class_conditional_glow", "cattnflow", "conditional_step",
           "CONTEXT_KINDS"]

CONTEXT_KINDS = ("lowres", "segmentation", "image", "vector", "label")


def conditional_step(level: int, *, injector: bool = True, injector_hidden: int = 64,
                     attention: Optional[str] = None, position: int = 4, heads: int = 1,
                     patch_size: Union[int, str] = 2, attention_kernel_size: int = 1,
                     shape: Tuple[int, int, int] = (0, 0, 0), **glow_kwargs) -> Bijector:
    """One conditional step: :func:`~jaxflows.models.glow.glow_step` (or AttnFlow's step
    with ``attention``) with SRFlow's :class:`AffineInjector` inserted before the coupling,
    wrapped in :class:`SelectContext` (the step reads its level's context map).

    ``shape`` is the flow's image shape (iTrans' ``patch_size``, an even int or
    ``"half"``, is checked against the level's resolution by
    :func:`~jaxflows.models.attnflow.level_patch_sizes`).
    """
    if attention is None:
        chain = glow_step(level, **glow_kwargs)
    else:
        p = patch_size
        if attention == "itrans" and patch_size != "half":
            p = level_patch_sizes(shape, level + 1, patch_size)[level][0]
        chain = attnflow_step(level, attention=attention, position=position, heads=heads,
                              patch_size=p, attention_kernel_size=attention_kernel_size,
                              make_base_step=functools.partial(glow_step, **glow_kwargs))
    parts = list(chain.bijectors)
    if injector:
        at = next(i for i, b in enumerate(parts) if isinstance(b, Coupling))
        parts.insert(at, AffineInjector(hidden_channels=injector_hidden,
                                        dropout=glow_kwargs.get("dropout", 0.0)))
    return SelectContext(Chain(parts))


def _conditional_split(level: int) -> Bijector:
    del level
    return SelectContext(Split())


def _level_sizes(shape, levels) -> Tuple[Tuple[int, int], ...]:
    return tuple((shape[0] >> (l + 1), shape[1] >> (l + 1)) for l in range(levels))


def _positive_int(value, name, who):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}.")


def _build(who, shape, context_shape, encoder, *, levels, steps_per_level, hidden_channels,
           coupling, num_bins, dropout, lu, permutation, preprocessing, alpha,
           learn_split_prior, remat, unroll, injector, injector_hidden, attention=None,
           position=4, heads=1, patch_size=2, attention_kernel_size=1) -> Flow:
    """The conditional multi-scale flow shared by every factory here."""
    _positive_int(injector_hidden, "injector_hidden", who)
    glow_kwargs = dict(hidden_channels=hidden_channels, coupling=coupling,
                       permutation=permutation, lu=lu, dropout=dropout)
    make_step = functools.partial(
        conditional_step, injector=injector, injector_hidden=injector_hidden,
        attention=attention, position=position, heads=heads, patch_size=patch_size,
        attention_kernel_size=attention_kernel_size, shape=shape, **glow_kwargs)
    make_step(0)   # bad attention / position now, not at init
    make_split = _conditional_split if learn_split_prior else identity_split
    body = multiscale(levels, steps_per_level, make_step, remat=remat, unroll=unroll,
                      make_split=make_split)
    if encoder is not None:
        body = Conditioned(body, encoder)
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, who)
    return Flow(bijector=Chain(pre + [body]), event_shape=shape,
                context_shape=tuple(context_shape))


def _shape(value, name, who) -> Tuple[int, ...]:
    try:
        return tuple(int(d) for d in value)
    except TypeError:
        raise ValueError(f"{who}: {name} must be a tuple of ints, got {value!r}.") from None


@renamed_arguments(RENAMED)
def conditional_glow(image_shape: Sequence[int], context_shape: Sequence[int] = (), *,
                     num_classes: Optional[int] = None, levels: int = 3,
                     steps_per_level: Union[int, Sequence[int]] = 32,
                     hidden_channels: int = 512, injector: bool = True,
                     injector_hidden: Optional[int] = None, encoder_features: int = 32,
                     encoder_blocks: int = 1, coupling: str = "affine",
                     num_bins: float = 256, dropout: float = 0.0, lu: bool = True,
                     permutation: str = "conv1x1", preprocessing: str = "shift",
                     alpha: float = 0.05, learn_split_prior: bool = True, remat: bool = False,
                     unroll: Union[int, bool] = 1) -> Flow:
    """Glow conditioned on a context: ``p(x | c)`` (see the module docstring).

    The context ``c`` (per example) is one of:

    * a vector, ``context_shape=(K,)``: read as is by every injector, coupling and split
      prior (broadcast over the positions);
    * an image-shaped map, ``context_shape=(h, w, C)`` (any resolution): encoded by a
      small :class:`~jaxflows.nn.encoders.RRDBEncoder` (``encoder_blocks`` RRDBs of width
      ``encoder_features``) and resized to every level;
    * class labels, ``num_classes=N`` (``context_shape`` then ``()``): a learned
      :class:`~jaxflows.nn.encoders.ClassEmbedding` of ``encoder_features`` dimensions
      (:func:`class_conditional_glow`).

    Args:
      image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2 ** levels``.
      context_shape: per-example shape of the context, see above.
      num_classes: number of classes of a label context (labels in ``[0, N)``).
      levels: ``L``, number of levels (as for :func:`~jaxflows.models.glow.glow`).
      steps_per_level: ``K`` steps per level (or one value per level).
      hidden_channels: width of the coupling conditioners.
      injector: insert SRFlow's affine injector in every step.
      injector_hidden: width of the injector's network (default ``hidden_channels``).
      encoder_features: width of the context encoder (the class embedding's dimension).
      encoder_blocks: RRDBs of the encoder of an image-shaped context.
      coupling: ``"affine"`` or ``"additive"``.
      num_bins: number of pixel values; inputs are dequantised values in ``[0, num_bins)``.
      dropout: dropout in the conditioners (``train=True``, rng ``"dropout"``).
      lu: LU-parameterised 1x1 convolutions.
      permutation: ``"conv1x1"``, ``"shuffle"`` or ``"reverse"``.
      preprocessing: ``"shift"`` (``x / num_bins - 0.5``) or ``"logit"``.
      alpha: the logit transform's margin.
      remat: rematerialise each step in the backward pass.
      unroll: steps per compiled loop iteration of a level.
      learn_split_prior: conditional split prior ``p(z2 | z1, c)``; ``False``: a fixed
        ``N(0, I)`` on the factored-out halves.

    Returns:
      a conditional ``Flow`` (``Flow.context_shape`` declared).
    """
    who = "conditional_glow"
    shape = check_glow_arguments(who, image_shape, levels, coupling, permutation,
                                 hidden_channels, dropout)
    ctx = _shape(context_shape, "context_shape", who)
    _positive_int(encoder_features, "encoder_features", who)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{who}: num_classes must be an int >= 2, got {num_classes!r}.")
        if ctx != ():
            raise ValueError(f"{who}: with num_classes the context is a class label per "
                             f"example, so context_shape must be (), got {ctx}.")
        encoder = ClassEmbedding(num_classes, encoder_features)
    elif len(ctx) == 1 and ctx[0] >= 1:
        encoder = None
    elif len(ctx) == 3 and min(ctx) >= 1:
        _positive_int(encoder_blocks, "encoder_blocks", who)
        encoder = RRDBEncoder(level_sizes=_level_sizes(shape, levels),
                              features=encoder_features, growth=max(1, encoder_features // 2),
                              num_blocks=encoder_blocks, stacked_blocks=(), input_shape=ctx)
    else:
        raise ValueError(f"{who}: context_shape must be (K,) for a vector context or "
                         f"(height, width, channels) for an image-shaped map, or () with "
                         f"num_classes for class labels; got {ctx}.")
    return _build(who, shape, ctx, encoder, levels=levels, steps_per_level=steps_per_level,
                  hidden_channels=hidden_channels, coupling=coupling, num_bins=num_bins,
                  dropout=dropout, lu=lu, permutation=permutation,
                  preprocessing=preprocessing, alpha=alpha,
                  learn_split_prior=learn_split_prior, remat=remat, unroll=unroll,
                  injector=injector, injector_hidden=injector_hidden or hidden_channels)


@renamed_arguments(RENAMED)
def class_conditional_glow(image_shape: Sequence[int], num_classes: int = 10, *,
                           embedding_features: int = 32, **glow_kwargs) -> Flow:
    """Class-conditional Glow: :func:`conditional_glow` with a learned class embedding.

    ``Flow.log_prob(x, context=labels)`` with integer ``labels: [batch]`` in
    ``[0, num_classes)`` (out of range: ``ValueError`` when concrete, NaN log-density
    under ``jit``); ``Flow.sample(n, context=labels)`` draws one image per label (a
    single label, batch 1, is broadcast). Other arguments as for
    :func:`conditional_glow`.
    """
    if "context_shape" in glow_kwargs and tuple(glow_kwargs.pop("context_shape")) != ():
        raise ValueError("class_conditional_glow: the context is one class label per "
                         "example; context_shape must be () (or left out).")
    return conditional_glow(image_shape, (), num_classes=num_classes,
                            encoder_features=embedding_features, **glow_kwargs)


def _check_lowres(hr, lr, scale, who) -> int:
    if len(lr) != 3 or min(lr) < 1:
        raise ValueError(f"{who}: lr_shape must be (height, width, channels), got {lr}.")
    if lr[2] != hr[2]:
        raise ValueError(f"{who}: the low-resolution image must have the channels of the "
                         f"high-resolution one ({hr[2]}), got lr_shape {lr}.")
    fh, fw = hr[0] // lr[0], hr[1] // lr[1]
    if hr[0] % lr[0] or hr[1] % lr[1] or fh != fw:
        raise ValueError(f"{who}: hr_shape {hr} must be an integer multiple, the same in "
                         f"height and width, of lr_shape {lr}; the ratio is "
                         f"{hr[0] / lr[0]:g} x {hr[1] / lr[1]:g}.")
    if scale is not None and fh != scale:
        raise ValueError(f"{who}: the HR/LR size ratio is {fh} (hr_shape {hr}, lr_shape {lr}), "
                         f"not the configured scale={scale}.")
    return fh


@renamed_arguments(RENAMED)
def cattnflow(hr_shape: Sequence[int], lr_shape: Optional[Sequence[int]] = None, *,
              context_shape: Optional[Sequence[int]] = None, scale: Optional[int] = None,
              num_classes: Optional[int] = None, levels: int = 1,
              steps_per_level: Union[int, Sequence[int]] = 1,
              attention: Optional[str] = "imap", position: int = 4, heads: int = 3,
              patch_size: int = 2, attention_kernel_size: int = 1, hidden_channels: int = 64,
              injector: bool = True, rrdb_features: int = 64, rrdb_growth: int = 32,
              rrdb_blocks: int = 8, stacked_blocks: Sequence[int] = (1, 3, 5, 7),
              seg_features: int = 32, seg_layers: int = 2, coupling: str = "affine",
              num_bins: float = 256, dropout: float = 0.0, lu: bool = True,
              permutation: str = "conv1x1", preprocessing: str = "shift",
              alpha: float = 0.05, learn_split_prior: bool = True, remat: bool = False,
              unroll: Union[int, bool] = 1) -> Flow:
    """cAttnFlow: SRFlow's conditional flow with invertible attention in every step.

    Two tasks of the AttnFlow source (supplement Sec. 3-4):

    * **super-resolution** (``lr_shape`` or ``context_shape`` = ``(h, w, C)``): the
      context is the low-resolution image (pixel values in ``[0, num_bins)``), encoded by
      SRFlow's :class:`~jaxflows.nn.encoders.RRDBEncoder`. CelebA 8x: ``hr_shape=(160,
      160, 3)``, ``lr_shape=(20, 20, 3)``, ``levels=1, steps_per_level=1`` (the source's
      cAttnFlow-iMap); SRFlow's own CelebA model is ``levels=4, steps_per_level=16``.
    * **segmentation to image** (``num_classes`` given; ``context_shape`` ``(H, W)``
      integer labels or ``(H, W, num_classes)`` one-hot, at the image's resolution):
      encoded by :class:`~jaxflows.nn.encoders.SegmentationEncoder`. Cityscapes:
      256x256, ``levels=2, steps_per_level=8``.

    Args:
      hr_shape: ``(H, W, C)`` of the generated image; ``H, W`` divisible by
        ``2 ** levels``.
      lr_shape: ``(h, w, C)`` of the low-resolution context (``context_shape`` is an
        alias, as the trainer passes it); ``H / h == W / w`` must be an integer.
      context_shape: alias of ``lr_shape``, or the segmentation map's shape.
      scale: the expected SR factor ``H / h``; a different ratio is a ``ValueError``.
      num_classes: segmentation classes (selects the segmentation task).
      levels: ``L``, number of levels.
      steps_per_level: ``K`` steps per level (or one value per level).
      attention: ``"imap"``, ``"itrans"`` or ``None`` (also spelt ``"none"``: SRFlow's
        step, no attention, the baseline of the source's comparisons).
      position: 1..4, where the attention sits (AttnFlow's pos-1 .. pos-4; the source's
        ablation favours pos-4, after the coupling).
      heads: iTrans heads (summed; 3 best on CelebA in the source).
      patch_size: iTrans token side (even int, or ``"half"``).
      attention_kernel_size: iTrans query/key convolution size.
      hidden_channels: width of the couplings' and injectors' networks (SRFlow: 64).
      injector: SRFlow's affine injector in every step.
      rrdb_features: RRDB width ``nf`` (SRFlow: 64).
      rrdb_growth: dense-block growth ``gc`` (32).
      rrdb_blocks: number of RRDBs (SRFlow CelebA: 8).
      stacked_blocks: blocks whose outputs are stacked into the feature (1, 3, 5, 7).
      seg_features: channels of the segmentation encoder.
      seg_layers: convolutions of the segmentation encoder.
      coupling: ``"affine"`` or ``"additive"``.
      num_bins: number of pixel values; inputs are dequantised values in ``[0, num_bins)``.
      dropout: dropout in the conditioners (``train=True``, rng ``"dropout"``).
      lu: LU-parameterised 1x1 convolutions.
      permutation: ``"conv1x1"``, ``"shuffle"`` or ``"reverse"``.
      preprocessing: ``"shift"`` (``x / num_bins - 0.5``) or ``"logit"``.
      alpha: the logit transform's margin.
      learn_split_prior: conditional split priors ``p(z2 | z1, u)``; ``False``: fixed
        ``N(0, I)``.
      remat: rematerialise each step in the backward pass.
      unroll: steps per compiled loop iteration of a level.

    Returns:
      a conditional ``Flow``: ``log_prob(hr, context=lr)``, ``sample(n, context=lr,
      temperature=T)`` (SRFlow's "heat" is ``T``).
    """
    who = "cattnflow"
    shape = check_glow_arguments(who, hr_shape, levels, coupling, permutation,
                                 hidden_channels, dropout)
    if isinstance(attention, str) and attention.lower() == "none":
        attention = None    # the command line's spelling (--config.model.attention=none)
    if attention is not None and attention not in ATTENTIONS:
        raise ValueError(f"{who}: attention must be one of {ATTENTIONS} or None, got "
                         f"{attention!r}.")
    if lr_shape is not None and context_shape is not None and \
            _shape(lr_shape, "lr_shape", who) != _shape(context_shape, "context_shape", who):
        raise ValueError(f"{who}: give lr_shape or context_shape (an alias), not two "
                         f"different shapes: {lr_shape} and {context_shape}.")
    ctx = lr_shape if lr_shape is not None else context_shape
    if ctx is None:
        raise ValueError(f"{who}: the context's shape is required: lr_shape=(h, w, C) for "
                         f"super-resolution, or context_shape=(H, W) with num_classes for "
                         f"segmentation maps.")
    ctx = _shape(ctx, "lr_shape" if lr_shape is not None else "context_shape", who)
    sizes = _level_sizes(shape, levels)
    if attention == "itrans":
        for l in range(levels):
            channels = shape[2] * 4 * 2 ** l
            if channels % heads:
                raise ValueError(f"{who}: heads={heads} must divide the channels at every "
                                 f"level ({channels} at level {l}).")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"{who}: num_classes must be an int >= 2, got {num_classes!r}.")
        if ctx[:2] != shape[:2] or len(ctx) not in (2, 3) or (
                len(ctx) == 3 and ctx[2] != num_classes):
            raise ValueError(f"{who}: a segmentation context must be ({shape[0]}, {shape[1]}) "
                             f"labels or ({shape[0]}, {shape[1]}, {num_classes}) one-hot (the "
                             f"image's resolution, num_classes={num_classes}), got "
                             f"context_shape {ctx}.")
        encoder = SegmentationEncoder(num_classes, sizes, seg_features, seg_layers,
                                      input_size=shape[:2])
    else:
        _check_lowres(shape, ctx, scale, who)
        encoder = RRDBEncoder(level_sizes=sizes, features=rrdb_features, growth=rrdb_growth,
                              num_blocks=rrdb_blocks, stacked_blocks=tuple(stacked_blocks),
                              input_shape=ctx, input_scale=1.0 / float(num_bins),
                              input_shift=-0.5)
    return _build(who, shape, ctx, encoder, levels=levels, steps_per_level=steps_per_level,
                  hidden_channels=hidden_channels, coupling=coupling, num_bins=num_bins,
                  dropout=dropout, lu=lu, permutation=permutation,
                  preprocessing=preprocessing, alpha=alpha,
                  learn_split_prior=learn_split_prior, remat=remat, unroll=unroll,
                  injector=injector, injector_hidden=hidden_channels, attention=attention,
                  position=position, heads=heads, patch_size=patch_size,
                  attention_kernel_size=attention_kernel_size)
