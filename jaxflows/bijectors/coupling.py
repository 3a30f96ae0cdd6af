"""Coupling bijectors: one :class:`Coupling` for every elementwise transformer.

The input is split by a mask into a conditioning part ``x_a`` (passed through
unchanged) and a transformed part ``x_b``; a conditioner network ``NN`` reads
``x_a`` (and the optional ``context``) and outputs the parameters ``theta`` of an
elementwise, strictly increasing transformer ``tau`` (see
:mod:`jaxflows.bijectors.transformers`):

    y_a = x_a,    y_b = tau(x_b; theta),    theta = NN(x_a),
    log|det J| = sum_i log tau'(x_b,i; theta_i)

(Dinh et al. 2015, Sec. 3.2; Dinh et al. 2017, Sec. 3.3). The inverse needs only
``tau``'s inverse, since ``x_a = y_a`` gives the same ``theta``. The transformer is a
separate object, as in flowjax's ``Coupling(transformer=...)`` and distrax's
``MaskedCoupling(bijector=...)``:

* :class:`~jaxflows.bijectors.Affine` (``scale_fn="sigmoid"``: Glow's
  ``y = (x + t) * sigmoid(h + 2) / sigmoid(2)``; ``"exp"``: Real NVP's
  ``y = x * exp(c tanh(h / c)) + t``), also available as :class:`AffineCoupling`;
* :class:`~jaxflows.bijectors.Additive` (NICE, ``y = x + t``), also available as
  :class:`AdditiveCoupling`;
* any object following the transformer protocol, e.g. your own
  :class:`~jaxflows.bijectors.Transformer` subclass.

Conditioner output layout: ``NN`` outputs ``num_params`` channels per transformed
entry, and its last axis is **reshaped** to ``[..., entry, param]``: output channel
``k * num_params + j`` is parameter ``j`` of transformed entry ``k``. For
:class:`~jaxflows.bijectors.Affine` (``num_params = 2``) channel ``2k`` is the shift
``t`` and channel ``2k + 1`` the scale parameter ``h`` of entry ``k``: the same
channels as the interleaved ``t = out[..., 0::2]``, ``h = out[..., 1::2]`` of Glow's
code and of earlier jaxflows versions, so their parameters load unchanged. The last
layer of every built-in conditioner (Glow's ``conv_out``) is zero-initialised, so a
coupling whose transformer is the identity at zero parameters (affine, additive)
starts as the identity map.

Masks (``mask``):

* ``"channel"``: split the last axis in two equal halves (even channel count
  required); ``parity=0`` transforms the second half given the first (Glow),
  ``parity=1`` the first half given the second. The conditioner outputs parameters
  for the transformed half only.
* ``"checkerboard"`` (NHWC only, even H and W): the spatial checkerboard of
  RealNVP (Sec. 3.4). ``parity=0`` keeps the positions with ``(i + j)`` even
  and transforms the others.
* ``"alternating"``: alternate entries of the last axis (for vectors; any
  size >= 2); ``parity=0`` keeps the even entries and transforms the odd ones.

With the alternating mask the conditioner sees ``m * x`` (``m`` is 1 on kept entries)
and outputs parameters for the transformed entries only (``ceil`` or ``floor`` of
``D / 2``): the transformer runs on those entries alone, and the output interleaves
them with the kept ones. (Before 2026-12-03 it gave parameters for every entry and ran
the transformer on all of them, as the checkerboard below: twice the work of a spline
coupling, and the conditioner's last layer was twice as wide, so vector coupling
checkpoints of earlier versions do not load.)

With the checkerboard mask the conditioner sees ``m * x`` and outputs parameters for
every position; the transformer runs on every entry with the parameters of kept entries
set to zero, the log-det is zeroed there, and the output takes ``x`` there: ``y =
where(m, x, tau(x; (1 - m) theta))``, as in distrax's ``MaskedCoupling``. So the map is
exactly the identity on kept entries whatever the transformer, and zeroing their
parameters keeps the discarded branch finite (no NaN gradient through the ``where``).
For a transformer that declares ``identity_at_zero`` (exactly ``tau(x; 0) = x``: affine,
additive) the ``where`` on ``y`` is skipped, since zero parameters already give ``x``
bit for bit; values and gradients are then the same, bit for bit, as with the former
multiplication of the shift and log-scale by ``1 - m``. (Keeping that ``where`` gave the
same values but, in one Real NVP configuration on XLA:CPU, float32 gradients up to 2%
off the float64 ones in a few conditioner weights.)

Inputs: NHWC images (conditioner ``"glow"``, ``"resnet"``, or a callable) and
``[batch, D]`` vectors (always an MLP: ``"resnet"`` selects a residual MLP
with ``num_blocks`` layers, otherwise 2 hidden layers). ``context``, if given,
is concatenated to the conditioner input on the channel axis (an NHWC context
must share H and W; a ``[batch, K]`` context is broadcast over the positions).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, sum_except_batch
from jaxflows.bijectors.reshape import concat_context
from jaxflows.bijectors.transformers import Additive, Affine, check_affine_options
from jaxflows.nn.conditioners import GlowConditioner, MLPConditioner, ResNetConditioner
from jaxflows.ops.monotone import inverse_summary

__all__ = ["Coupling", "AffineCoupling", "AdditiveCoupling"]

_MASKS = ("channel", "checkerboard", "alternating")
_CONDITIONERS = ("glow", "resnet", "mlp")
_PROTOCOL = ("an int `num_params` >= 1 and methods forward(x, params) and inverse(y, params) "
             "returning (output, elementwise log-det), and be hashable (e.g. a frozen "
             "dataclass; see jaxflows.bijectors.Transformer)")


def _check_transformer(transformer: Any, who: str) -> None:
    """Raises a ``ValueError`` unless ``transformer`` follows the transformer protocol."""
    if transformer is None:
        raise ValueError(f"{who}: `transformer` is required, e.g. "
                         f"Coupling(transformer=jaxflows.bijectors.Affine(), ...).")
    problem = None
    num_params = getattr(transformer, "num_params", None)
    if isinstance(num_params, bool) or not isinstance(num_params, int) or num_params < 1:
        problem = f"its `num_params` is {num_params!r}"
    elif not (callable(getattr(transformer, "forward", None))
              and callable(getattr(transformer, "inverse", None))):
        problem = "it lacks a forward or an inverse method"
    else:
        try:
            hash(transformer)
        except TypeError:
            problem = "it is not hashable"
    if problem is not None:
        raise ValueError(f"{who}: `transformer` must have {_PROTOCOL}; got {transformer!r}, "
                         f"and {problem}.")


class Coupling(Bijector):
    """Coupling layer with any elementwise transformer; see the module docstring.

    Example::

        from jaxflows.bijectors import Affine, Coupling
        glow_coupling = Coupling(transformer=Affine("sigmoid"), hidden_channels=512)
        realnvp_coupling = Coupling(transformer=Affine("exp", clamp=2.0),
                                    mask="checkerboard", conditioner="resnet")

    Args:
      transformer: the elementwise transformer (:class:`~jaxflows.bijectors.Affine`,
        :class:`~jaxflows.bijectors.Additive`, or any object following the protocol
        of :mod:`jaxflows.bijectors.transformers`). Required, except in subclasses
        that build it from their own fields (:class:`AffineCoupling`,
        :class:`AdditiveCoupling`).
      hidden_channels: width of the conditioner (channels, or features for vectors).
      mask: ``"channel"``, ``"checkerboard"`` (images) or ``"alternating"``.
      conditioner: ``"glow"`` (:class:`~jaxflows.nn.GlowConditioner`),
        ``"resnet"`` (:class:`~jaxflows.nn.ResNetConditioner`), ``"mlp"``
        (vectors), or a callable ``out_channels -> nn.Module`` whose module is
        called as ``net(inputs, train=train)`` and returns ``out_channels`` channels
        (``num_params`` per transformed entry, layout ``[..., entry, param]``); its
        last layer should be zero-initialised.
      num_blocks: residual blocks of the ResNet conditioner (layers for vectors).
      dropout: dropout rate inside the conditioner (``train=True``, rng ``"dropout"``).
      kernel_size: conditioner convolution size.
      parity: which part is transformed (0 or 1), see the module docstring.
    """

    input_ranks = (2, 4)   # [batch, D] vectors or NHWC images, checked by Bijector

    # Field order kept from the former AffineCoupling/AdditiveCoupling (positional use).
    hidden_channels: int = 512
    mask: str = "channel"
    conditioner: Union[str, Callable[[int], nn.Module]] = "glow"
    num_blocks: int = 2
    dropout: float = 0.0
    kernel_size: int = 3
    parity: int = 0
    transformer: Optional[Any] = None

    def get_transformer(self):
        """The transformer in use (subclasses derive it from their own fields)."""
        return self.transformer

    def _validate(self, x: jax.Array, context: Optional[jax.Array]) -> None:
        name = type(self).__name__
        if self.mask not in _MASKS:
            raise ValueError(f"{name}: `mask` must be one of {_MASKS}, got {self.mask!r}.")
        if self.parity not in (0, 1):
            raise ValueError(f"{name}: `parity` must be 0 or 1, got {self.parity!r}.")
        if not callable(self.conditioner) and self.conditioner not in _CONDITIONERS:
            raise ValueError(f"{name}: `conditioner` must be one of {_CONDITIONERS} or a "
                             f"callable, got {self.conditioner!r}.")
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
        # `context` shapes are checked by concat_context (the same rule as Split).

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

    def _run_conditioner(self, inp, context, n_entries, num_params, train, x_shape):
        out_channels = n_entries * num_params
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
                             f"{tuple(out.shape)}, expected {expected}: {num_params} "
                             f"parameter(s) of the transformer for each of the {n_entries} "
                             f"transformed entries.")
        return out.astype(inp.dtype)

    @nn.compact
    def transform(self, x, inverse, context, train):
        name = type(self).__name__
        transformer = self.get_transformer()
        _check_transformer(transformer, name)
        self._validate(x, context)
        inp = _conditioner_input(x, context, self.mask, self.parity, name)
        n_entries = _num_transformed(x, self.mask, self.parity)
        out = self._run_conditioner(inp, context, n_entries, transformer.num_params, train,
                                    x.shape)
        y, ld, summary = _couple(x, out, self.mask, self.parity, transformer, inverse, name)
        if summary is not None:
            # a numerical inverse's diagnostics (kept when "intermediates" is mutable; read
            # with jaxflows.bijectors.monotone_inverse_report)
            self.sow("intermediates", "monotone_inverse", summary)
        return y, ld


def _mask(x: jax.Array, mask: str, parity: int) -> jax.Array:
    """1 on the kept (conditioning) entries, 0 on the transformed ones."""
    if mask == "checkerboard":
        i = jnp.arange(x.shape[1])[:, None]
        j = jnp.arange(x.shape[2])[None, :]
        return ((i + j) % 2 == parity).astype(x.dtype)[None, :, :, None]
    return (jnp.arange(x.shape[-1]) % 2 == parity).astype(x.dtype)


def _num_transformed(x: jax.Array, mask: str, parity: int) -> int:
    """Entries per position the conditioner gives parameters for (module docstring)."""
    n = x.shape[-1]
    if mask == "channel":
        return n // 2
    if mask == "alternating":
        return len(range(1 - parity, n, 2))
    return n


def _interleave(a: jax.Array, b: jax.Array, n: int) -> jax.Array:
    """``y`` with ``y[..., 0::2] = a`` and ``y[..., 1::2] = b`` (last axis of size ``n``),
    by stacking and reshaping (no scatter: dense copies with dense gradients).
    """
    if b.shape[-1] < a.shape[-1]:
        b = jnp.concatenate([b, jnp.zeros_like(a[..., :1])], axis=-1)
    return jnp.stack([a, b], axis=-1).reshape(a.shape[:-1] + (2 * a.shape[-1],))[..., :n]


def _halves(x: jax.Array, parity: int):
    """``(x_a, x_b)``: conditioning and transformed halves of the last axis."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return (first, second) if parity == 0 else (second, first)


@functools.partial(jax.jit, static_argnames=("mask", "parity", "who"))
def _conditioner_input(x, context, mask, parity, who):
    """The conditioner's input: ``x_a`` (or ``m * x``), with the context appended."""
    inp = _halves(x, parity)[0] if mask == "channel" else x * _mask(x, mask, parity)
    return concat_context(inp, context, who)


def _elementwise(transformer, x, params, inverse, who):
    """The transformer's ``(output, elementwise log-det, info or None)``, with the protocol's
    shapes checked. In the inverse direction a transformer with a numerical inverse that
    provides ``inverse_and_info`` (MixLogCDF, DSF, DDSF) also gives its solver's
    per-element :class:`~jaxflows.ops.MonotoneInverseInfo`; every other case gives ``None``.
    """
    with_info = getattr(transformer, "inverse_and_info", None) if inverse else None
    method = "inverse_and_info" if callable(with_info) else (
        "inverse" if inverse else "forward")
    result = getattr(transformer, method)(x, params)
    n = 3 if callable(with_info) else 2
    ok = isinstance(result, (tuple, list)) and len(result) == n
    if ok:
        ok = jnp.shape(result[0]) == x.shape and jnp.shape(result[1]) == x.shape
    if not ok:
        got = (tuple(jnp.shape(r) for r in result) if isinstance(result, (tuple, list))
               else type(result).__name__)
        what = "(output, elementwise log-det, info)" if n == 3 else (
            "(output, elementwise log-det)")
        raise ValueError(f"{who}: {type(transformer).__name__}.{method}(x, params) must return "
                         f"{what}, the first two of the shape of x "
                         f"{tuple(x.shape)} (params {tuple(params.shape)}); got {got}.")
    return result[0], result[1], (result[2] if n == 3 else None)


@functools.partial(jax.jit, static_argnames=("mask", "parity", "transformer", "inverse", "who"))
def _couple(x, out, mask, parity, transformer, inverse, who):
    """Applies the coupling to ``x`` given the conditioner output; ``(y, log_det, summary)``
    (``summary``: the numerical inverse's, see :func:`_elementwise`, else ``None``).
    """
    num_params = transformer.num_params
    if mask == "channel":
        x_a, x_b = _halves(x, parity)
        params = out.reshape(x_b.shape + (num_params,))      # [..., entry, param]
        y_b, ld, info = _elementwise(transformer, x_b, params, inverse, who)
        y = jnp.concatenate([x_a, y_b] if parity == 0 else [y_b, x_a], axis=-1)
    elif mask == "alternating":
        x_a, x_b = x[..., parity::2], x[..., 1 - parity::2]
        params = out.reshape(x_b.shape + (num_params,))      # [..., entry, param]
        y_b, ld, info = _elementwise(transformer, x_b, params, inverse, who)
        n = x.shape[-1]
        y = _interleave(x_a, y_b, n) if parity == 0 else _interleave(y_b, x_a, n)
    else:
        keep = _mask(x, mask, parity)
        params = out.reshape(x.shape + (num_params,)) * (1 - keep)[..., None]
        y, ld, info = _elementwise(transformer, x, params, inverse, who)
        kept = keep.astype(bool)
        if not getattr(transformer, "identity_at_zero", False):
            y = jnp.where(kept, x, y)   # else tau(x; 0) == x already, bit for bit
        ld = jnp.where(kept, jnp.zeros((), ld.dtype), ld)
        if info is not None:
            # the kept entries were solved at zero parameters: their figures do not count
            kept_b = jnp.broadcast_to(kept, x.shape)
            info = info._replace(converged=info.converged | kept_b,
                                 residual=jnp.where(kept_b, 0, info.residual))
    return y, sum_except_batch(ld), None if info is None else inverse_summary(info)


class AffineCoupling(Coupling):
    """Affine coupling layer (RealNVP / Glow): ``Coupling`` with an
    :class:`~jaxflows.bijectors.Affine` transformer built from ``scale_fn`` and ``clamp``.

    ``AffineCoupling(scale_fn=s, clamp=c, **kw)`` computes the same function of the
    same variables as ``Coupling(transformer=Affine(s, c), **kw)``.

    Args:
      scale_fn: ``"sigmoid"`` (Glow's ``sigmoid(h + 2)``, normalised to 1 at
        ``h = 0``) or ``"exp"`` (soft-clamped by ``clamp``).
      clamp: soft clamp ``c`` of the log-scale for ``"exp"``:
        ``s = c * tanh(h / c)``; ``None`` for no clamp.
      hidden_channels, mask, conditioner, num_blocks, dropout, kernel_size, parity:
        as for :class:`Coupling`.
    """

    scale_fn: str = "sigmoid"
    clamp: Optional[float] = 2.0

    def get_transformer(self):
        _no_transformer_field(self)
        check_affine_options(self.scale_fn, self.clamp, type(self).__name__)
        return Affine(self.scale_fn, self.clamp)


class AdditiveCoupling(Coupling):
    """Additive coupling (NICE): ``y_b = x_b + t(x_a)``, log-det 0; ``Coupling`` with an
    :class:`~jaxflows.bijectors.Additive` transformer.

    Same arguments as :class:`AffineCoupling` minus ``scale_fn`` and ``clamp``.
    """

    def get_transformer(self):
        _no_transformer_field(self)
        return Additive()


def _no_transformer_field(module: Coupling) -> None:
    if module.transformer is not None:
        raise ValueError(f"{type(module).__name__} builds its own transformer; got "
                         f"`transformer`={module.transformer!r}. Use "
                         f"Coupling(transformer=...) instead.")
