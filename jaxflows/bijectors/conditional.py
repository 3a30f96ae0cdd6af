"""Conditional building blocks: SRFlow's affine injector, per-level contexts, encoders in a flow.

A conditional flow models ``p(x | u)``: every bijector receives the conditioning input
``u`` as its ``context`` (see the "Context" section of :mod:`jaxflows.distributions.flow`
for the batch convention). The blocks of SRFlow (Lugmayr et al., "SRFlow: Learning the
Super-Resolution Space with Normalizing Flow", ECCV 2020, Sec. 3.2 and Fig. 3) and of
cAttnFlow (Sukthanker et al., CVPR 2022, which inserts invertible attention into SRFlow's
steps) are:

* **Affine injector** (:class:`AffineInjector`), new here: the conditioning reaches
  *every* coordinate, not only the transformed half of a coupling,

      y = (x + t(u)) * s(u),    s = sigmoid(h(u) + 2) + eps,    log|det| = sum log s,

  with ``[t, h] = NN(u)`` (SRFlow's ``F``: Conv3x3 -> ActNorm -> ReLU -> Conv1x1 ->
  ActNorm -> ReLU -> zero-initialised Conv3x3, i.e.
  :class:`~jaxflows.nn.GlowConditioner`). Its inverse divides before subtracting.
* **Conditional affine coupling**: ``x_b <- (x_b + t([x_a, u])) * s([x_a, u])``.
  This is :class:`~jaxflows.bijectors.AffineCoupling` (or any
  :class:`~jaxflows.bijectors.Coupling`) called with a ``context``: its conditioner
  already reads ``concat(x_a, u)`` (:func:`~jaxflows.bijectors.reshape.concat_context`),
  so there is no separate class. Its scale is Glow's ``sigmoid(h + 2) / sigmoid(2)``,
  SRFlow's ``sigmoid(h + 2) + 1e-4`` divided by a constant (absorbed by the next
  ActNorm); the set of maps is the same up to the ``eps`` floor.
* **Conditional split prior**: ``p(z2 | z1, u) = N(mu([z1, u]), sigma([z1, u])^2)``.
  This is :class:`~jaxflows.bijectors.Split` called with a ``context`` (the prior's
  convolution reads ``concat(z1, u)``), again no separate class.

Per-level contexts
------------------
SRFlow's conditioning feature differs at every level of the multi-scale flow (the
encoder's features resized to that level's resolution). :class:`LevelContext` carries
one map per level, ``[B, h_l, w_l, K_l]``; :class:`SelectContext` wraps a bijector
(a step, a split) and hands it the map whose height and width equal its input's, so
unchanged couplings and splits receive a plain array. A plain array context (a vector,
or one map) passes through unchanged. :class:`Conditioned` runs an encoder
(:mod:`jaxflows.nn.encoders`) on the raw context (a low-resolution image, a segmentation
map, class labels) once per call and passes its output (e.g. a ``LevelContext``) to the
wrapped bijector; the encoder is trained with the flow.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, sum_except_batch
from jaxflows.nn.conditioners import GlowConditioner, MLPConditioner

__all__ = ["AffineInjector", "LevelContext", "SelectContext", "Conditioned", "FixedContext",
           "select_context"]

Array = jax.Array


@flax.struct.dataclass
class LevelContext:
    """One conditioning feature map per level of a multi-scale flow (a pytree).

    ``maps[l]`` is ``[B, h_l, w_l, K_l]``; the resolutions must be distinct.
    :func:`select_context` picks the map of an input's resolution. It is a context
    object, not an array: code that squeezes array contexts along with the data
    (:class:`~jaxflows.models.multiscale.MultiScale`) passes it through unchanged.
    """

    maps: Tuple[Array, ...]

    @property
    def resolutions(self) -> Tuple[Tuple[int, int], ...]:
        return tuple(tuple(int(d) for d in m.shape[1:3]) for m in self.maps)


def select_context(context, x: Array, who: str):
    """The context for input ``x``: the map of ``x``'s height and width from a
    :class:`LevelContext`, any other context unchanged.

    Raises a ``ValueError`` naming ``who`` when a ``LevelContext`` has no map at
    ``x``'s resolution (an encoder built for other level sizes).
    """
    if not isinstance(context, LevelContext):
        return context
    if x.ndim != 4:
        raise ValueError(f"{who}: a LevelContext (one feature map per level) needs NHWC image "
                         f"inputs, got `x` of shape {tuple(x.shape)}.")
    hw = tuple(int(d) for d in x.shape[1:3])
    for m in context.maps:
        if tuple(m.shape[1:3]) == hw:
            return m
    raise ValueError(f"{who}: the context has feature maps at resolutions "
                     f"{list(context.resolutions)}, none at the input's {hw} (input shape "
                     f"{tuple(x.shape)}); build the encoder for this flow's level sizes.")


class SelectContext(Bijector):
    """Runs ``bijector`` with the context of its input's resolution (:func:`select_context`).

    Wrap each step and each split of a multi-scale flow whose context is a
    :class:`LevelContext`; other contexts pass through unchanged.
    """

    bijector: Bijector

    def forward_and_log_det(self, x, *, context=None, train=False):
        ctx = select_context(context, x, type(self.bijector).__name__)
        return self.bijector.forward_and_log_det(x, context=ctx, train=train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        ctx = select_context(context, y, type(self.bijector).__name__)
        return self.bijector.inverse_and_log_det(y, context=ctx, train=train)


class Conditioned(Bijector):
    """``bijector`` conditioned on ``encoder(context)``: the encoder runs on the raw
    context (same parameters in both directions) and its output is the context of
    ``bijector``. A missing context is a ``ValueError``.

    Attributes:
      bijector: the conditional bijector (e.g. a multi-scale flow of conditional steps).
      encoder: a module called as ``encoder(context, train=train)`` (see
        :mod:`jaxflows.nn.encoders`); its output may be an array or a
        :class:`LevelContext`.
    """

    bijector: Bijector
    encoder: nn.Module

    def _encode(self, context, train):
        if context is None:
            raise ValueError(f"Conditioned({type(self.encoder).__name__}): this bijector is "
                             f"conditional; `context` is required.")
        return self.encoder(context, train=train)

    def forward_and_log_det(self, x, *, context=None, train=False):
        return self.bijector.forward_and_log_det(x, context=self._encode(context, train),
                                                 train=train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        return self.bijector.inverse_and_log_det(y, context=self._encode(context, train),
                                                 train=train)


class FixedContext(Bijector):
    """``bijector`` with its context bound: ``p(x | c0)`` as an unconditional bijector.

    ``context`` is one row, ``[1, *context_shape]`` (a NumPy or JAX array), broadcast to
    the batch of every input; a context passed at call time is an error (the flow is
    now unconditional). Use it to hand a conditional flow at a fixed condition to code
    that knows no contexts (``as_distrax``, generic model tests), e.g.
    ``Flow(bijector=FixedContext(flow.bijector, labels[:1]), event_shape=...)``.
    """

    bijector: Bijector
    context: Any

    def _bound(self, x, context):
        if context is not None:
            raise ValueError("FixedContext: the context is bound; got another `context` of "
                             f"shape {tuple(jnp.shape(context))}.")
        c = jnp.asarray(self.context)
        if c.ndim < 1 or c.shape[0] != 1:
            raise ValueError(f"FixedContext: `context` must be one row, [1, ...], got shape "
                             f"{tuple(c.shape)}.")
        if jnp.issubdtype(c.dtype, jnp.floating):
            c = c.astype(x.dtype)
        return jnp.broadcast_to(c, (x.shape[0],) + c.shape[1:])

    def forward_and_log_det(self, x, *, context=None, train=False):
        return self.bijector.forward_and_log_det(x, context=self._bound(x, context),
                                                 train=train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        return self.bijector.inverse_and_log_det(y, context=self._bound(y, context),
                                                 train=train)


class AffineInjector(Bijector):
    """SRFlow's affine injector: ``y = (x + t(u)) * s(u)``, ``s = sigmoid(h(u) + 2) + eps``.

    ``[t, h] = NN(u)`` reads only the context ``u`` (so the log-det
    ``sum log s(u)`` does not depend on ``x``): for an image map ``u`` at ``x``'s
    resolution ``NN`` is :class:`~jaxflows.nn.GlowConditioner` (SRFlow's ``F``); for a
    vector ``u: [B, K]`` (a class embedding; ``x`` an image or a vector) ``NN`` is an MLP
    (:class:`~jaxflows.nn.MLPConditioner`) whose ``(t, h)`` are the same at every position
    (no ActNorm on ``u``: its data-dependent initialisation would divide by the spread of
    a batch of contexts, which a batch of few distinct labels makes nearly zero). The last
    layer is zero-initialised, so at initialisation ``t = 0`` and ``s = sigmoid(2) + eps``
    everywhere (SRFlow's initialisation; the step's ActNorm absorbs the constant).
    Channel layout of ``NN``'s output: ``t = out[..., 0::2]``, ``h = out[..., 1::2]``
    (SRFlow's "cross" split).

    Reference: Lugmayr et al. 2020, Sec. 3.2 ("affine injector", Eq. 7),
    ``CondAffineSeparatedAndCond`` of the SRFlow code (``affine_eps = 1e-4``).

    Attributes:
      hidden_channels: width of ``NN`` (SRFlow: 64).
      kernel_size: size of ``NN``'s first and last convolutions (SRFlow: 3).
      eps: floor of the scale (SRFlow: 1e-4), so ``s`` never underflows to 0.
      dropout: dropout inside ``NN`` (``train=True``, rng ``"dropout"``).
    """

    input_ranks = (2, 4)

    hidden_channels: int = 64
    kernel_size: int = 3
    eps: float = 1e-4
    dropout: float = 0.0

    def _conditioner_input(self, x: Array, context: Optional[Array]) -> Array:
        who = "AffineInjector"
        if context is None:
            hw = ", ".join(map(str, x.shape[1:3]))
            raise ValueError(f"{who}: the injector is conditional; `context` is required "
                             f"([batch, K] or, for images, [batch, {hw}, K]).")
        if isinstance(context, LevelContext):
            context = select_context(context, x, who)
        u = jnp.asarray(context).astype(x.dtype)
        if u.ndim < 2 or u.shape[0] != x.shape[0]:
            raise ValueError(f"{who}: `context` must be batched like `x` (batch {x.shape[0]}), "
                             f"got shape {tuple(u.shape)}.")
        if u.ndim == 2:
            return u
        if x.ndim == 2:
            raise ValueError(f"{who}: for vector inputs `context` must be [batch, K], got "
                             f"shape {tuple(u.shape)}.")
        if u.ndim != 4 or u.shape[1:3] != x.shape[1:3]:
            raise ValueError(f"{who}: `context` must be [batch, K] or [batch, {x.shape[1]}, "
                             f"{x.shape[2]}, K] (the input's resolution), got shape "
                             f"{tuple(u.shape)}.")
        return u

    @nn.compact
    def transform(self, x, inverse, context, train):
        if not self.eps >= 0:
            raise ValueError(f"AffineInjector: eps must be >= 0, got {self.eps!r}.")
        u = self._conditioner_input(x, context)
        c = x.shape[-1]
        if u.ndim == 4:
            net = GlowConditioner(self.hidden_channels, 2 * c, self.dropout, self.kernel_size,
                                  name="conditioner")
        else:
            net = MLPConditioner(self.hidden_channels, 2 * c, dropout=self.dropout,
                                 name="conditioner")
        out = net(u, train=train).astype(x.dtype)
        if x.ndim == 4 and out.ndim == 2:   # one (t, h) per example, the same at every position
            out = jnp.broadcast_to(out[:, None, None, :], x.shape[:3] + out.shape[-1:])
        shift, raw = out[..., 0::2], out[..., 1::2]
        log_s = jnp.log(jax.nn.sigmoid(raw + 2.0) + jnp.asarray(self.eps, x.dtype))
        ld = sum_except_batch(log_s)
        if inverse:
            return x * jnp.exp(-log_s) - shift, -ld
        return (x + shift) * jnp.exp(log_s), ld
