"""Coupling bijectors: affine (RealNVP / Glow) and additive (NICE).

The input is split by a mask into a conditioning part ``x_a`` (passed through
unchanged) and a transformed part ``x_b``; a conditioner network ``NN`` reads
``x_a`` (and the optional ``context``) and outputs the parameters of an
elementwise bijection of ``x_b``:

* affine, ``scale_fn="exp"`` (RealNVP, Dinh et al. 2017, Eq. 7-8):
  ``(t, h) = NN(x_a)``, ``s = c * tanh(h / c)`` (soft clamp to ``(-c, c)``),
  ``y_b = x_b * exp(s) + t``, ``log|det J| = sum s``;
* affine, ``scale_fn="sigmoid"`` (Glow, Kingma & Dhariwal 2018, Table 1 and the
  reference code): ``(t, h) = NN(x_a)``, ``y_b = (x_b + t) * sigma``,
  ``sigma = sigmoid(h + 2) / sigmoid(2)``, ``log|det J| = sum log sigma``.
  Glow's scale is ``sigmoid(h + 2)``; the constant division by ``sigmoid(2)``
  (a constant log-det offset that the next ActNorm absorbs) makes the coupling
  exactly the identity when ``NN`` outputs zeros;
* additive (NICE, Dinh et al. 2015, Eq. 5): ``y_b = x_b + t``, log-det 0.

The last layer of every conditioner is zero-initialised, so a coupling starts
as the identity map. The conditioner's output channels are interleaved as in
Glow's code: ``t = out[..., 0::2]``, ``h = out[..., 1::2]``.

Masks (``mask``):

* ``"channel"``: split the last axis in two equal halves (even channel count
  required); ``parity=0`` transforms the second half given the first (Glow),
  ``parity=1`` the first half given the second.
* ``"checkerboard"`` (NHWC only, even H and W): the spatial checkerboard of
  RealNVP (Sec. 3.4). ``parity=0`` keeps the positions with ``(i + j)`` even
  and transforms the others. The conditioner sees ``m * x`` and the
  scale/shift are multiplied by ``1 - m``.
* ``"alternating"``: alternate entries of the last axis (for vectors; any
  size >= 2); ``parity=0`` keeps the even entries.

Inputs: NHWC images (conditioner ``"glow"``, ``"resnet"``, or a callable) and
``[batch, D]`` vectors (always an MLP: ``"resnet"`` selects a residual MLP
with ``num_blocks`` layers, otherwise 2 hidden layers). ``context``, if given,
is concatenated to the conditioner input on the channel axis (an NHWC context
must share H and W; a ``[batch, K]`` context is broadcast over the positions).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Union

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, sum_except_batch
from jaxflows.nn.conditioners import GlowConditioner, MLPConditioner, ResNetConditioner

__all__ = ["AffineCoupling", "AdditiveCoupling"]

_MASKS = ("channel", "checkerboard", "alternating")
_CONDITIONERS = ("glow", "resnet", "mlp")
_SCALE_FNS = ("sigmoid", "exp")
_GLOW_SCALE_SHIFT = 2.0


class _Coupling(Bijector):
    """Shared machinery of :class:`AffineCoupling` and :class:`AdditiveCoupling`."""

    hidden_channels: int = 512
    mask: str = "channel"
    conditioner: Union[str, Callable[[int], nn.Module]] = "glow"
    num_blocks: int = 2
    dropout: float = 0.0
    kernel_size: int = 3
    parity: int = 0

    # Number of conditioner outputs per transformed entry (2 = shift and scale).
    _outputs_per_entry = 1

    def _validate(self, x: jax.Array, context: Optional[jax.Array]) -> None:
        name = type(self).__name__
        if self.mask not in _MASKS:
            raise ValueError(f"{name}: `mask` must be one of {_MASKS}, got {self.mask!r}.")
        if self.parity not in (0, 1):
            raise ValueError(f"{name}: `parity` must be 0 or 1, got {self.parity!r}.")
        if not callable(self.conditioner) and self.conditioner not in _CONDITIONERS:
            raise ValueError(f"{name}: `conditioner` must be one of {_CONDITIONERS} or a "
                             f"callable, got {self.conditioner!r}.")
        if x.ndim not in (2, 4):
            raise ValueError(f"{name}: input `x` must be an NHWC image batch (rank 4) or a "
                             f"[batch, D] vector batch (rank 2); got shape {tuple(x.shape)}.")
        c = x.shape[-1]
        if self.mask == "channel" and c % 2:
            raise ValueError(f"{name}: mask='channel' needs an even number of channels in `x`; "
                             f"got shape {tuple(x.shape)} ({c} channels). Use mask='alternating' "
                             f"or 'checkerboard', or permute/squeeze first.")
        if self.mask == "checkerboard":
            if x.ndim != 4:
                raise ValueError(f"{name}: mask='checkerboard' needs an NHWC image `x`; got "
                                 f"shape {tuple(x.shape)}.")
            if x.shape[1] % 2 or x.shape[2] % 2:
                raise ValueError(f"{name}: mask='checkerboard' needs even height and width of "
                                 f"`x`; got shape {tuple(x.shape)}.")
        if self.mask == "alternating" and c < 2:
            raise ValueError(f"{name}: mask='alternating' needs at least 2 entries on the last "
                             f"axis of `x`; got shape {tuple(x.shape)}.")
        if context is not None:
            ok = (context.shape[0] == x.shape[0]
                  and (context.ndim == 2 or (x.ndim == 4 and context.ndim == 4
                                             and context.shape[1:3] == x.shape[1:3])))
            if not ok:
                raise ValueError(
                    f"{name}: `context` must be [batch, K] or (for images) [batch, H, W, K] "
                    f"with the batch (and H, W) of `x` {tuple(x.shape)}; got shape "
                    f"{tuple(context.shape)}.")

    def _make_conditioner(self, out_channels: int, image: bool) -> nn.Module:
        if callable(self.conditioner):
            return self.conditioner(out_channels)
        if not image:
            residual = self.conditioner == "resnet"
            return MLPConditioner(self.hidden_channels, out_channels,
                                  num_layers=self.num_blocks if residual else 2,
                                  residual=residual, dropout=self.dropout, name="conditioner")
        if self.conditioner == "resnet":
            return ResNetConditioner(self.hidden_channels, out_channels, self.num_blocks,
                                     self.dropout, self.kernel_size, name="conditioner")
        if self.conditioner == "mlp":
            raise ValueError(f"{type(self).__name__}: conditioner='mlp' needs [batch, D] vector "
                             f"inputs; use 'glow' or 'resnet' for images.")
        return GlowConditioner(self.hidden_channels, out_channels, self.dropout,
                               self.kernel_size, name="conditioner")

    def _kind(self) -> tuple:
        """Static description of the elementwise map (see :func:`_elementwise`)."""
        raise NotImplementedError

    def _run_conditioner(self, inp, context, out_channels, train, x_shape):
        net = self._make_conditioner(out_channels, image=inp.ndim == 4)
        try:
            out = net(inp, train=train)
        except flax.errors.ScopeParamShapeError as e:
            raise ValueError(
                f"{type(self).__name__}: input `x` has {x_shape[-1]} channels (shape "
                f"{tuple(x_shape)})"
                + ("" if context is None else f" and `context` shape {tuple(context.shape)}")
                + ", which differs from the channel count the module was initialised with "
                f"({e})") from e
        expected = inp.shape[:-1] + (out_channels,)
        if out.shape != expected:
            raise ValueError(f"{type(self).__name__}: the conditioner returned shape "
                             f"{tuple(out.shape)}, expected {expected}.")
        return out.astype(inp.dtype)

    @nn.compact
    def transform(self, x, inverse, context, train):
        self._validate(x, context)
        kind = self._kind()
        inp = _conditioner_input(x, context, self.mask, self.parity)
        c = x.shape[-1]
        out_channels = self._outputs_per_entry * (c // 2 if self.mask == "channel" else c)
        out = self._run_conditioner(inp, context, out_channels, train, x.shape)
        return _couple(x, out, self.mask, self.parity, kind, inverse)


def _mask(x: jax.Array, mask: str, parity: int) -> jax.Array:
    """1 on the kept (conditioning) entries, 0 on the transformed ones."""
    if mask == "checkerboard":
        i = jnp.arange(x.shape[1])[:, None]
        j = jnp.arange(x.shape[2])[None, :]
        return ((i + j) % 2 == parity).astype(x.dtype)[None, :, :, None]
    return (jnp.arange(x.shape[-1]) % 2 == parity).astype(x.dtype)


def _halves(x: jax.Array, parity: int):
    """``(x_a, x_b)``: conditioning and transformed halves of the last axis."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return (first, second) if parity == 0 else (second, first)


@functools.partial(jax.jit, static_argnames=("mask", "parity"))
def _conditioner_input(x, context, mask, parity):
    """The conditioner's input: ``x_a`` (or ``m * x``), with the context appended."""
    inp = _halves(x, parity)[0] if mask == "channel" else x * _mask(x, mask, parity)
    if context is None:
        return inp
    ctx = context.astype(x.dtype)
    if x.ndim == 4 and ctx.ndim == 2:
        ctx = jnp.broadcast_to(ctx[:, None, None, :], x.shape[:3] + ctx.shape[-1:])
    return jnp.concatenate([inp, ctx], axis=-1)


def _elementwise(x_b, out, kind, inverse, weight=None):
    """Elementwise map of ``x_b`` given the conditioner output ``out``, and its
    elementwise forward log-derivative. ``kind = ("additive",)`` or
    ``("affine", scale_fn, clamp)``; ``weight`` (1 - mask) multiplies the
    shift and log-scale, making the map exactly the identity where it is 0."""
    if kind[0] == "additive":
        shift = out if weight is None else out * weight
        return (x_b - shift if inverse else x_b + shift), None
    _, scale_fn, clamp = kind
    shift, h = out[..., 0::2], out[..., 1::2]
    if scale_fn == "sigmoid":
        log_scale = (jax.nn.log_sigmoid(h + _GLOW_SCALE_SHIFT)
                     - jax.nn.log_sigmoid(jnp.asarray(_GLOW_SCALE_SHIFT, h.dtype)))
    else:
        log_scale = h if clamp is None else clamp * jnp.tanh(h / clamp)
    if weight is not None:
        shift, log_scale = shift * weight, log_scale * weight
    if scale_fn == "sigmoid":            # y = (x + t) * sigma
        if inverse:
            return x_b * jnp.exp(-log_scale) - shift, -log_scale
        return (x_b + shift) * jnp.exp(log_scale), log_scale
    if inverse:                          # y = x * exp(s) + t
        return (x_b - shift) * jnp.exp(-log_scale), -log_scale
    return x_b * jnp.exp(log_scale) + shift, log_scale


@functools.partial(jax.jit, static_argnames=("mask", "parity", "kind", "inverse"))
def _couple(x, out, mask, parity, kind, inverse):
    """Applies the coupling to ``x`` given the conditioner output; ``(y, log_det)``."""
    if mask == "channel":
        x_a, x_b = _halves(x, parity)
        y_b, ld = _elementwise(x_b, out, kind, inverse)
        y = jnp.concatenate([x_a, y_b] if parity == 0 else [y_b, x_a], axis=-1)
    else:
        y, ld = _elementwise(x, out, kind, inverse, weight=1 - _mask(x, mask, parity))
    log_det = jnp.zeros(x.shape[:1], x.dtype) if ld is None else sum_except_batch(ld)
    return y, log_det


class AffineCoupling(_Coupling):
    """Affine coupling layer (RealNVP / Glow); see the module docstring for the maths.

    Args:
      hidden_channels: width of the conditioner (channels, or features for vectors).
      mask: ``"channel"``, ``"checkerboard"`` (images) or ``"alternating"``.
      scale_fn: ``"sigmoid"`` (Glow's ``sigmoid(h + 2)``, normalised to 1 at
        ``h = 0``) or ``"exp"`` (soft-clamped by ``clamp``).
      clamp: soft clamp ``c`` of the log-scale for ``"exp"``:
        ``s = c * tanh(h / c)``; ``None`` for no clamp.
      conditioner: ``"glow"`` (:class:`~jaxflows.nn.GlowConditioner`),
        ``"resnet"`` (:class:`~jaxflows.nn.ResNetConditioner`), ``"mlp"``
        (vectors), or a callable ``out_channels -> nn.Module`` whose module is
        called as ``net(inputs, train=train)`` (its last layer should be
        zero-initialised).
      num_blocks: residual blocks of the ResNet conditioner (layers for vectors).
      dropout: dropout rate inside the conditioner (``train=True``, rng ``"dropout"``).
      kernel_size: conditioner convolution size.
      parity: which part is transformed (0 or 1), see the module docstring.
    """

    scale_fn: str = "sigmoid"
    clamp: Optional[float] = 2.0

    _outputs_per_entry = 2

    def _validate(self, x, context):
        if self.scale_fn not in _SCALE_FNS:
            raise ValueError(f"AffineCoupling: `scale_fn` must be one of {_SCALE_FNS}, got "
                             f"{self.scale_fn!r}.")
        if self.clamp is not None and not self.clamp > 0:
            raise ValueError(f"AffineCoupling: `clamp` must be positive or None, got {self.clamp!r}.")
        super()._validate(x, context)

    def _kind(self):
        return ("affine", self.scale_fn, None if self.clamp is None else float(self.clamp))


class AdditiveCoupling(_Coupling):
    """Additive coupling (NICE): ``y_b = x_b + t(x_a)``, log-det 0.

    Same arguments as :class:`AffineCoupling` minus ``scale_fn`` and ``clamp``.
    """

    _outputs_per_entry = 1

    def _kind(self):
        return ("additive",)
