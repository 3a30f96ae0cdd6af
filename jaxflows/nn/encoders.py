"""Context encoders of conditional flows: RRDB (super-resolution), segmentation maps, labels.

Each encoder maps a raw context to what the conditional bijectors read (see
:mod:`jaxflows.bijectors.conditional`): a :class:`~jaxflows.bijectors.conditional.LevelContext`
with one feature map per level of a multi-scale flow (``level_sizes[l]`` is the height
and width of level ``l``'s steps), or a vector. They run inside the flow
(:class:`~jaxflows.bijectors.conditional.Conditioned`) and are trained with it.

* :class:`RRDBEncoder`: ESRGAN's residual-in-residual dense blocks (Wang et al.,
  "ESRGAN", ECCV-W 2018, Sec. 3.1 and Fig. 4), the conditioning network of SRFlow
  (Lugmayr et al. 2020, Sec. 3.3): ``conv_first -> nb RRDBs -> trunk_conv`` plus a
  long skip; the outputs of the blocks in ``stacked_blocks`` and the final feature are
  concatenated (SRFlow's stacked-block features, ``(len(stacked_blocks) + 1) *
  features`` channels) and resized to every level.
* :class:`SegmentationEncoder`: a small convolutional encoder of one-hot segmentation
  maps (cAttnFlow's Cityscapes seg-to-image), pooled to every level.
* :class:`ClassEmbedding`: a learned embedding of class labels (class-conditional Glow).

Bad input: contexts of the wrong rank or size, labels outside ``[0, num_classes)`` and
one-hot maps with more classes than configured raise ``ValueError`` (label values are
checked when concrete; under ``jit`` an out-of-range label makes that row's features
NaN, so its log-density is not finite -- ``Flow.log_prob`` reports it as ``-inf`` --
rather than a plausible number).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.bijectors.conditional import LevelContext
from jaxflows.nn.conditioners import Conv2D

__all__ = ["ResidualDenseBlock", "RRDB", "RRDBEncoder", "SegmentationEncoder",
           "ClassEmbedding", "check_labels"]

Array = jax.Array


def _lrelu(x: Array) -> Array:
    return nn.leaky_relu(x, 0.2)


def check_labels(labels: Array, num_classes: int, who: str, arg: str = "context") -> Array:
    """``[B, ...]`` bool: whether each row's labels are in ``[0, num_classes)``.

    Concrete labels outside the range raise a ``ValueError`` naming ``who``; traced ones
    return the mask (callers make the invalid rows NaN). Float labels must be integral.
    """
    if isinstance(labels, jax.core.Tracer):
        flat = labels.reshape(labels.shape[0], -1)
        return jnp.all((flat >= 0) & (flat < num_classes) & (flat == jnp.round(flat)), axis=1)
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes or np.any(lab != np.round(lab))):
        bad = lab[(lab < 0) | (lab >= num_classes) | (lab != np.round(lab))]
        raise ValueError(f"{who}: `{arg}` holds class labels, which must be integers in "
                         f"[0, {num_classes}) (num_classes={num_classes}); got "
                         f"{np.unique(bad)[:8].tolist()}.")
    return jnp.ones((labels.shape[0],), bool)


def _as_float(x: Array) -> Array:
    """Floating ``x`` unchanged; integers as the default float (float64 under x64)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.asarray(0.0).dtype)


def _nan_rows(h: Array, ok: Array) -> Array:
    shape = (h.shape[0],) + (1,) * (h.ndim - 1)
    return jnp.where(ok.reshape(shape), h, jnp.asarray(jnp.nan, h.dtype))


def _check_sizes(level_sizes, who) -> Tuple[Tuple[int, int], ...]:
    try:
        sizes = tuple((int(h), int(w)) for h, w in level_sizes)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: level_sizes must be a sequence of (height, width), got "
                         f"{level_sizes!r}.") from None
    if not sizes or len(set(sizes)) != len(sizes) or min(min(s) for s in sizes) < 1:
        raise ValueError(f"{who}: level_sizes must be distinct positive (height, width) pairs, "
                         f"one per level, got {level_sizes!r}.")
    return sizes


def _per_level(features: Array, sizes) -> LevelContext:
    """``features`` resized (bilinear; antialiased when shrinking) to every level size."""
    b, _, _, c = features.shape
    return LevelContext(tuple(
        features if tuple(features.shape[1:3]) == s
        else jax.image.resize(features, (b,) + s + (c,), "linear") for s in sizes))


class ResidualDenseBlock(nn.Module):
    """ESRGAN's dense block: 5 convolutions 3x3, each reading the concatenation of the
    block input and all earlier outputs (``growth`` channels each, LeakyReLU 0.2), the
    last back to ``features``; output ``x + scale * conv5`` (residual scaling 0.2).
    """

    features: int
    growth: int = 32
    scale: float = 0.2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        hs = [x]
        for i in range(4):
            hs.append(_lrelu(Conv2D(self.growth, 3, name=f"conv{i + 1}")(
                jnp.concatenate(hs, axis=-1))))
        out = Conv2D(self.features, 3, name="conv5")(jnp.concatenate(hs, axis=-1))
        return x + self.scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock` and an outer
    residual, ``x + scale * RDB3(RDB2(RDB1(x)))`` (ESRGAN, Fig. 4).
    """

    features: int
    growth: int = 32
    scale: float = 0.2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = x
        for i in range(3):
            h = ResidualDenseBlock(self.features, self.growth, self.scale, name=f"rdb{i + 1}")(h)
        return x + self.scale * h


class RRDBEncoder(nn.Module):
    """SRFlow's conditioning network on a low-resolution image; see the module docstring.

    Call: ``encoder(lr, train=False)``, ``lr: [B, h, w, C]`` pixel values, mapped by
    ``lr * input_scale + input_shift`` first (the flow's preprocessing, so LR and HR
    share a scale). Returns a ``LevelContext`` of ``[B, h_l, w_l, K]`` maps,
    ``K = (len(stacked_blocks) + 1) * features``.

    Attributes:
      level_sizes: ``(h_l, w_l)`` of every level of the flow.
      features: width ``nf`` (SRFlow/ESRGAN: 64).
      growth: dense-block growth ``gc`` (32).
      num_blocks: number of RRDBs ``nb`` (SRFlow CelebA: 8; DF2K: 23).
      stacked_blocks: 0-based indices of the blocks whose outputs are stacked into the
        feature (SRFlow CelebA: ``(1, 3, 5, 7)``); ``()`` keeps only the final feature.
      input_shape: ``(h, w, C)`` of the low-resolution image, checked at every call.
      input_scale, input_shift: the input's affine preprocessing.

    Departure from SRFlow: its ``fea_up*`` branches (nearest-neighbour upsampling and
    convolutions per scale) are replaced by bilinear resizing of the stacked feature to
    each level; the flow's injectors and couplings learn from it. SRFlow pretrains the
    encoder with an L1 loss and freezes it for half of training; here it is trained
    jointly from the start (no pretraining).
    """

    level_sizes: Sequence[Tuple[int, int]]
    features: int = 64
    growth: int = 32
    num_blocks: int = 8
    stacked_blocks: Sequence[int] = (1, 3, 5, 7)
    input_shape: Optional[Sequence[int]] = None
    input_scale: float = 1.0
    input_shift: float = 0.0

    @nn.compact
    def __call__(self, lr: Array, train: bool = False) -> LevelContext:
        who = "RRDBEncoder"
        sizes = _check_sizes(self.level_sizes, who)
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise ValueError(f"{who}: num_blocks must be an int >= 1, got {self.num_blocks!r}.")
        if any(not 0 <= i < self.num_blocks for i in self.stacked_blocks):
            raise ValueError(f"{who}: stacked_blocks must be indices in [0, num_blocks="
                             f"{self.num_blocks}), got {tuple(self.stacked_blocks)}.")
        if lr.ndim != 4:
            raise ValueError(f"{who}: the context must be a low-resolution image batch "
                             f"[batch, height, width, channels], got shape {tuple(lr.shape)}.")
        if self.input_shape is not None and tuple(lr.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"{who}: the context must have shape [batch, "
                             f"*{tuple(self.input_shape)}] (the configured low-resolution "
                             f"image), got {tuple(lr.shape)}.")
        x = _as_float(lr)
        x = x * self.input_scale + self.input_shift
        fea = Conv2D(self.features, 3, name="conv_first")(x)
        h, stacked = fea, []
        for i in range(self.num_blocks):
            h = RRDB(self.features, self.growth, name=f"rrdb{i}")(h)
            if i in tuple(self.stacked_blocks):
                stacked.append(h)
        fea = fea + Conv2D(self.features, 3, name="trunk_conv")(h)
        return _per_level(jnp.concatenate(stacked + [fea], axis=-1), sizes)


class SegmentationEncoder(nn.Module):
    """Encoder of segmentation maps: one-hot classes -> ``num_layers`` x (Conv3x3 ->
    LeakyReLU 0.2) at the map's resolution -> resized (area-antialiased) to every level.

    Call: ``encoder(seg, train=False)``, ``seg`` either integer labels ``[B, H, W]`` or a
    one-hot (or soft) map ``[B, H, W, num_classes]``. A one-hot map with another number
    of channels, a label outside ``[0, num_classes)`` (concrete), or a map of another
    size than ``input_size`` is a ``ValueError``.

    Attributes:
      num_classes: number of segmentation classes (Cityscapes: 30 in the AttnFlow source;
        34 label ids 0..33 in its label images, see ``docs/conditional.md``).
      level_sizes: ``(h_l, w_l)`` of every level of the flow.
      features: channels of the convolutions.
      num_layers: number of convolutions (>= 1).
      input_size: ``(H, W)`` of the map, checked at every call.
    """

    num_classes: int
    level_sizes: Sequence[Tuple[int, int]]
    features: int = 32
    num_layers: int = 2
    input_size: Optional[Tuple[int, int]] = None

    @nn.compact
    def __call__(self, seg: Array, train: bool = False) -> LevelContext:
        who = "SegmentationEncoder"
        sizes = _check_sizes(self.level_sizes, who)
        if self.num_layers < 1:
            raise ValueError(f"{who}: num_layers must be >= 1, got {self.num_layers!r}.")
        k = self.num_classes
        if seg.ndim == 3:
            ok = check_labels(seg, k, who)
            onehot = jax.nn.one_hot(jnp.clip(seg, 0, k - 1).astype(jnp.int32), k,
                                    dtype=_as_float(jnp.zeros(())).dtype)
        elif seg.ndim == 4:
            if seg.shape[-1] != k:
                raise ValueError(f"{who}: a one-hot `context` must have num_classes={k} "
                                 f"channels, got {seg.shape[-1]} (shape {tuple(seg.shape)}); "
                                 f"the map has more or fewer classes than configured.")
            onehot, ok = _as_float(seg), jnp.ones((seg.shape[0],), bool)
        else:
            raise ValueError(f"{who}: the context must be labels [batch, H, W] or a one-hot "
                             f"map [batch, H, W, {k}], got shape {tuple(seg.shape)}.")
        if self.input_size is not None and tuple(seg.shape[1:3]) != tuple(self.input_size):
            raise ValueError(f"{who}: the segmentation map must be {tuple(self.input_size)} "
                             f"(height, width), got shape {tuple(seg.shape)}.")
        h = onehot
        for i in range(self.num_layers):
            h = _lrelu(Conv2D(self.features, 3, name=f"conv{i}")(h))
        return _per_level(_nan_rows(h, ok), sizes)


class ClassEmbedding(nn.Module):
    """Learned class embedding ``[B]`` integer labels -> ``[B, features]`` vector context.

    Labels outside ``[0, num_classes)`` raise a ``ValueError`` when concrete and give a
    NaN row under ``jit``. A one-hot ``[B, num_classes]`` input is also accepted (its
    product with the embedding table).
    """

    num_classes: int
    features: int = 32

    @nn.compact
    def __call__(self, labels: Array, train: bool = False) -> Array:
        who = "ClassEmbedding"
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"{who}: num_classes must be an int >= 2, got "
                             f"{self.num_classes!r}.")
        table = self.param("embedding", nn.initializers.normal(1.0),
                           (self.num_classes, self.features))
        if labels.ndim == 2 and labels.shape[-1] == self.num_classes:
            return labels.astype(table.dtype) @ table
        if labels.ndim != 1:
            raise ValueError(f"{who}: the context must be class labels [batch] (or one-hot "
                             f"[batch, {self.num_classes}]), got shape {tuple(labels.shape)}.")
        ok = check_labels(labels, self.num_classes, who)
        idx = jnp.clip(labels, 0, self.num_classes - 1).astype(jnp.int32)
        return _nan_rows(table[idx], ok)
