r"""Flow++ (Ho, Chen, Srinivas, Duan & Abbeel 2019, "Flow++: Improving Flow-Based Generative
Models with Variational Dequantization and Architecture Design").

Architecture (the reference code's CIFAR-10 model, ``flows/run_cifar.py``; 31.4M
parameters there):

    logit preprocessing ``logit(0.05 + 0.9 x / 256)``
    checkerboard x 4 -> squeeze (2x2 space-to-depth) -> channel x 2 -> checkerboard x 3

where each step is ``per-pixel ActNorm -> plain 1x1 convolution -> coupling`` and
successive couplings of a stage alternate which half they transform (the reference's
``TupleFlip``). There is **no factor-out**: one ``N(0, I)`` prior over all dimensions.
The couplings are :class:`~jaxflows.bijectors.MixLogCDFCoupling` (``K`` = 32 logistic
components) with the Flow++ conditioner (:class:`~jaxflows.nn.FlowppConditioner`:
filters 96, 10 blocks of gated convolution and 4-head self-attention, dropout 0.2), and
the pixels are dequantised by a learned :class:`~jaxflows.bijectors.VariationalDequantizer`.

The model is a :class:`FlowPP`, a :class:`~jaxflows.distributions.Flow` whose
``log_prob`` is the density of dequantised pixel values in ``[0, num_bins)`` (as for
:func:`~jaxflows.models.glow`), with the dequantiser attached:
:meth:`FlowPP.dequantized_log_prob` returns ``log p(k + u) - log q(u | k)`` for integer
pixels ``k`` (``u ~ q``, rng ``"dequantize"``), whose bits/dim is the variational bound the
trainer minimises (:mod:`jaxflows.train.step`), and
:func:`jaxflows.train.evaluation.importance_weighted_log_prob` its ``S``-sample
importance-weighted bound (Flow++ reports ``S`` = 4,096). Bits/dim are per pixel of the
8-bit data, ``D = H W C``.

Flow++ Table 2's ablation rows are arguments: ``dequantization="uniform"``,
``coupling="affine"`` (the reference's ``abl_nomixlog``, ``K = 0``: ``y = x e^{tanh(h)} +
t``) and ``attention=False`` (``abl_noattn``: a pointwise gated layer of equal parameter
count).

Departures from the reference code, and why:

* **Checkerboard.** The reference's ``CheckerboardSplit`` reshapes to ``[B, H, W/2, 2, C]``
  and so splits alternate *columns*; here ``mask="checkerboard"`` is the true
  checkerboard of Real NVP (which is what the paper describes). The couplings are masked
  (the conditioner sees the image with the transformed entries zeroed) rather than
  operating on a half-width tuple, so attention runs over all ``H W`` positions, not
  ``H W / 2``.
* **Norm and 1x1 convolution on the whole tensor.** On a tuple, the reference keeps
  separate per-pixel ActNorm and 1x1 convolution parameters for each half. Here the
  per-pixel ActNorm (``FlattenEvent(ActNorm())``: one scale and shift per ``(h, w, c)``)
  is the same map; the 1x1 convolution is one ``C x C`` matrix per step which, in the
  channel stage, also mixes the two halves (as Glow's does). Its initialisation is a
  random rotation (Glow), not the reference's identity plus ``0.001 N(0, 1)``.
* **Initialisation.** Flax's initialisers instead of the reference's data-dependent
  weight-norm initialisation of every layer (see :mod:`jaxflows.nn.flowpp`).
* ``layout`` generalises the stage list so that small images (8x8 digits, 28x28 MNIST)
  can squeeze before the attention couplings, whose memory grows as ``(H W)^2``.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.coupling import Coupling
from jaxflows.bijectors.dequantization import VariationalDequantizer, check_pixels
from jaxflows.bijectors.linear import Conv1x1
from jaxflows.bijectors.mixlogcdf import MixLogCDFCoupling
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.reshape import FlattenEvent, Squeeze, Unsqueeze
from jaxflows.bijectors.transformers import Affine
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    check_image_shape,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.nn.flowpp import FlowppConditioner

__all__ = ["flowpp", "FlowPP", "parse_layout", "CIFAR10_LAYOUT", "DEQUANTIZATIONS",
           "COUPLINGS"]

Array = jax.Array

#: The reference code's CIFAR-10 layout.
CIFAR10_LAYOUT = "checkerboard*4,squeeze,channel*2,checkerboard*3"
DEQUANTIZATIONS = ("variational", "uniform")
COUPLINGS = ("mixlogcdf", "affine")
_STAGES = ("checkerboard", "channel", "squeeze")


class FlowPP(Flow):
    """A :class:`~jaxflows.distributions.Flow` with Flow++'s dequantisation attached.

    Attributes:
      dequantizer: the :class:`~jaxflows.bijectors.VariationalDequantizer` ``q(u | k)``,
        or ``None`` for uniform dequantisation.
      num_bins: number of pixel values ``L`` (pixels ``k`` lie in ``{0, ..., L - 1}``).

    ``log_prob(x)`` is the flow's density of dequantised values ``x in [0, L)^D`` (as for
    every model of :mod:`jaxflows.models`); :meth:`dequantized_log_prob` is the bound on
    ``log P(k)`` for integer pixels. ``flow.init(rngs, k, method="dequantized_log_prob")``
    (rng streams ``"params"`` and ``"dequantize"``) initialises the flow *and* the
    dequantiser; ``flow.init(key, x)`` initialises the flow only.
    """

    dequantizer: Optional[Bijector] = None
    num_bins: float = 256

    def dequantized_log_prob(self, images: Array, *, context: Optional[Array] = None,
                             train: bool = False) -> Array:
        """``log p(k + u) - log q(u | k)`` per image, ``u ~ q(. | k)`` (one sample), in nats.

        With uniform dequantisation (``dequantizer=None``) ``q = 1`` and ``u ~ U[0, 1)^D``.
        Either way the mean over ``u`` is a lower bound on ``log P(k)``. ``images`` are the
        pixel values ``k`` (integers, or floats holding integers) in ``[0, num_bins)``;
        the noise comes from the rng stream ``"dequantize"``. NaN or out-of-range
        concrete pixel values are a ``ValueError``.
        """
        self._check_x(images, "images")
        check_pixels(images, self.num_bins, "FlowPP.dequantized_log_prob")
        dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
        k = images.astype(dtype)
        if self.dequantizer is None:
            u = jax.random.uniform(self.make_rng("dequantize"), k.shape, dtype)
            return self.log_prob(k + u, context=context, train=train)
        u, log_q = self.dequantizer.sample_and_log_prob(k, train=train, dtype=dtype)
        return self.log_prob(k + u, context=context, train=train) - log_q


def parse_layout(layout, who: str = "flowpp") -> List[Tuple[str, int]]:
    """``"checkerboard*4,squeeze,channel*2"`` -> ``[("checkerboard", 4), ("squeeze", 1),
    ("channel", 2)]``; also accepts such a list. Raises a ``ValueError`` naming ``who``.
    """
    if isinstance(layout, str):
        items = []
        for part in layout.split(","):
            name, _, count = part.strip().partition("*")
            try:
                items.append((name.strip(), int(count) if count else 1))
            except ValueError:
                raise ValueError(f"{who}: bad layout entry {part!r} in {layout!r}; use e.g. "
                                 f"'checkerboard*4,squeeze,channel*2'.") from None
    else:
        items = [tuple(i) for i in layout]
    for item in items:
        if (len(item) != 2 or item[0] not in _STAGES or not isinstance(item[1], int)
                or item[1] < 1):
            raise ValueError(f"{who}: layout entries must be (stage, count >= 1) with stage in "
                             f"{_STAGES}; got {item!r} in {layout!r}.")
    if not any(s != "squeeze" for s, _ in items):
        raise ValueError(f"{who}: the layout {layout!r} has no coupling stage.")
    return items


def _check_positive_int(who, name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{who}: {name} must be an int >= {minimum}, got {v!r}.")


@renamed_arguments(RENAMED)
def flowpp(image_shape: Sequence[int], *, components: int = 32, hidden_channels: int = 96,
           num_blocks: int = 10, heads: int = 4, dropout: float = 0.2,
           dequantization: str = "variational", coupling: str = "mixlogcdf",
           attention: bool = True, layout=CIFAR10_LAYOUT, num_bins: float = 256,
           preprocessing: str = "logit", alpha: float = 0.05,
           dequantizer_steps: int = 4, dequantizer_blocks: int = 2,
           dequantizer_channels: Optional[int] = None, context_channels: int = 32,
           context_blocks: int = 3, dequantizer_attention: Optional[bool] = None) -> FlowPP:
    """A Flow++ :class:`FlowPP` on images of shape ``image_shape``; see the module docstring.

    Args:
      image_shape: ``(H, W, C)``; every checkerboard stage and squeeze needs even height
        and width at its scale, every channel stage an even channel count.
      components: ``K``, logistic components per MixLogCDF entry (Flow++: 32).
      hidden_channels: conditioner filters (Flow++: 96).
      num_blocks: conditioner blocks (Flow++: 10).
      heads: attention heads, dividing ``hidden_channels`` (Flow++: 4).
      dropout: conditioner dropout (Flow++: 0.2), also in the dequantiser.
      dequantization: ``"variational"`` (Flow++) or ``"uniform"`` (the baseline).
      coupling: ``"mixlogcdf"`` (Flow++) or ``"affine"`` (ablation, ``y = x e^{tanh h} + t``).
      attention: self-attention in the conditioners (False: the pointwise ablation).
      layout: the stages, a string like :data:`CIFAR10_LAYOUT` or a list of
        ``(stage, count)`` with stage ``"checkerboard"``, ``"channel"`` or ``"squeeze"``.
      num_bins: pixel values ``L`` (256 for 8-bit data; 17 for ``digits``).
      preprocessing: ``"logit"`` (Flow++: ``logit(alpha + (1 - 2 alpha) x / L)``) or
        ``"shift"`` (``x / L - 0.5``).
      alpha: the logit margin (Flow++: 0.05).
      dequantizer_steps: couplings of the dequantiser (Flow++: 4).
      dequantizer_blocks: blocks of the dequantiser's conditioners (Flow++: 2).
      dequantizer_channels: filters of the dequantiser's conditioners (default
        ``hidden_channels``).
      context_channels: width of the dequantiser's context network (Flow++: 32).
      context_blocks: gated convolutions of the context network (Flow++: 3).
      dequantizer_attention: self-attention in the dequantiser's conditioners (default
        ``attention``). Its couplings run at full resolution, where attention costs
        ``(H W)^2``; ``False`` keeps 28x28 models cheap on a CPU.

    Returns:
      A :class:`FlowPP` (``dequantizer`` is ``None`` for uniform dequantisation).

    Raises:
      ValueError: ``components < 1``, ``heads`` not dividing ``hidden_channels``, an
        unknown ``dequantization``/``coupling``/stage, a shape the layout cannot take.
    """
    who = "flowpp"
    shape = check_image_shape(image_shape, 1, who)
    _check_positive_int(who, "components", components)
    _check_positive_int(who, "hidden_channels", hidden_channels)
    _check_positive_int(who, "num_blocks", num_blocks, 0)
    _check_positive_int(who, "heads", heads)
    if hidden_channels % heads:
        raise ValueError(f"{who}: heads={heads} must divide hidden_channels={hidden_channels}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{who}: dropout must be in [0, 1), got {dropout!r}.")
    if dequantization not in DEQUANTIZATIONS:
        raise ValueError(f"{who}: dequantization must be one of {DEQUANTIZATIONS}, got "
                         f"{dequantization!r}.")
    if coupling not in COUPLINGS:
        raise ValueError(f"{who}: coupling must be one of {COUPLINGS}, got {coupling!r}.")
    stages = parse_layout(layout, who)
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, who)

    cond = functools.partial(FlowppConditioner, filters=hidden_channels, num_blocks=num_blocks,
                             heads=heads, dropout=dropout, attention=attention)

    def make_coupling(mask, parity):
        if coupling == "mixlogcdf":
            return MixLogCDFCoupling(components=components, mask=mask, parity=parity,
                                     conditioner=cond)
        return Coupling(transformer=Affine("exp", clamp=1.0), mask=mask, parity=parity,
                        conditioner=cond)

    h, w, c = shape
    parts: List[Bijector] = list(pre)
    for stage, count in stages:
        if stage == "squeeze":
            for _ in range(count):
                if h % 2 or w % 2:
                    raise ValueError(f"{who}: the layout {layout!r} squeezes a {h}x{w} image; "
                                     f"height and width must be even there (image_shape "
                                     f"{shape}).")
                h, w, c = h // 2, w // 2, 4 * c
                parts.append(Squeeze())
            continue
        if stage == "checkerboard" and (h % 2 or w % 2):
            raise ValueError(f"{who}: a checkerboard stage needs even height and width; the "
                             f"layout {layout!r} reaches it at {h}x{w} (image_shape {shape}).")
        if stage == "channel" and c % 2:
            raise ValueError(f"{who}: a channel stage needs an even channel count; the layout "
                             f"{layout!r} reaches it with {c} channels (squeeze first).")
        for i in range(count):
            parts.append(Chain([FlattenEvent(ActNorm()), Conv1x1(lu=False),
                                make_coupling(stage, i % 2)]))
    # Undo the squeezes so that latents (and samples) have the image's shape.
    n_squeeze = sum(n for s, n in stages if s == "squeeze")
    parts.extend(Unsqueeze() for _ in range(n_squeeze))

    dequantizer = None
    if dequantization == "variational":
        if shape[0] % 2 or shape[1] % 2:
            raise ValueError(f"{who}: variational dequantisation uses checkerboard couplings "
                             f"and needs even height and width, got image_shape {shape}.")
        dequantizer = VariationalDequantizer(
            num_bins=num_bins, num_steps=dequantizer_steps, components=components,
            filters=dequantizer_channels or hidden_channels, num_blocks=dequantizer_blocks,
            heads=heads, dropout=dropout,
            attention=attention if dequantizer_attention is None else dequantizer_attention,
            context_channels=context_channels, context_blocks=context_blocks)
    return FlowPP(bijector=Chain(parts), event_shape=shape, dequantizer=dequantizer,
                  num_bins=num_bins)
