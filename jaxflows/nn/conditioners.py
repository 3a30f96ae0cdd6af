"""Conditioner networks for coupling layers (their output layer is zero-initialised,
so the coupling built on them starts as the identity map).

* :class:`GlowConditioner`: Glow's ``NN()`` -- 3x3 conv -> ActNorm -> ReLU ->
  1x1 conv -> ActNorm -> ReLU -> zero-initialised 3x3 conv whose output is
  scaled by ``exp(3 * logs)`` (Kingma & Dhariwal 2018, Sec. 3.3 and Sec. 4 /
  the reference code's ``conv2d_zeros``).
* :class:`ResNetConditioner`: RealNVP's residual network of 3x3 convolutions
  (Dinh et al. 2017, Sec. 4.1), with ActNorm (data-dependent init, no running
  state) in place of batch normalisation, so a coupling stays an exact
  bijection whatever the batch.
* :class:`MLPConditioner`: a multilayer perceptron for ``[batch, D]`` vectors.

Convolutions use :class:`Conv2D`, which has the parameter layout of
``flax.linen.Conv`` (``kernel`` HWIO, ``bias``) and computes with
:func:`jaxflows.nn.conv.conv2d_same` (matrix products on CPU, where XLA's native
convolutions are single-threaded; native convolutions on GPU/TPU).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxflows.nn.conv import conv2d_same
from jaxflows.nn.utils import channel_moments, check_channels, param_dtype

__all__ = ["Conv2D", "ZeroConv2D", "ActNormParams", "actnorm_relu", "ACT_NAME",
           "GlowConditioner", "ResNetConditioner", "MLPConditioner"]

Initializer = Callable[..., Any]

def _check_image(name: str, x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: input `x` must be an NHWC image batch (rank 4); "
                         f"got shape {tuple(x.shape)}.")


class Conv2D(nn.Module):
    """'SAME' stride-1 convolution with ``flax.linen.Conv``'s parameter layout.

    Computes in the dtype of the input (parameters are cast to it).

    Attributes:
      features: output channels.
      kernel_size: odd spatial size ``k`` of a ``k x k`` kernel.
      use_bias: add a per-channel bias ``"bias"``.
      kernel_init: initialiser of ``"kernel"`` ``[k, k, C_in, features]``.
    """

    features: int
    kernel_size: int = 3
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_image(type(self).__name__, x)
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        y = conv2d_same(x, kernel.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        return y


class ZeroConv2D(nn.Module):
    """Zero-initialised convolution, Glow's ``conv2d_zeros``:
    ``y = (conv(x, W) + b) * exp(log_scale_factor * logs)``, with ``W``, ``b``,
    ``logs`` all zero at init (so ``y = 0``). ``log_scale_factor=None`` drops
    the ``logs`` scaling (a plain zero-initialised convolution).
    """

    features: int
    kernel_size: int = 3
    log_scale_factor: float | None = 3.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = Conv2D(self.features, self.kernel_size, use_bias=True,
                   kernel_init=nn.initializers.zeros, name="conv")(x)
        if self.log_scale_factor is not None:
            logs = self.param("logs", nn.initializers.zeros, (self.features,)).astype(x.dtype)
            # The gradient of ``logs`` needs ``y``: kept (it has few channels) rather than
            # recomputed by a second product under the conditioners' checkpoint policy.
            y = checkpoint_name(y, ACT_NAME) * jnp.exp(self.log_scale_factor * logs)
        return y


# Name of the ReLU(ActNorm) outputs that the conditioners keep for their backward pass.
ACT_NAME = "jaxflows_conditioner_act"
_SAVE_ACTS = jax.checkpoint_policies.save_only_these_names(ACT_NAME)


@jax.custom_jvp
def actnorm_relu(x: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
    r"""``z = max((x + b) e^s, 0)`` over the last (channel) axis: ReLU after ActNorm.

    Its derivative is written in terms of the output ``z`` alone (``custom_jvp``, so
    forward- and reverse-mode both work): with ``m = [z > 0]``,

    .. math::  \dot z = m \big((\dot x + \dot b)\, e^{s} + z\, \dot s\big),

    because ``(x + b) e^s = z`` wherever ``m = 1`` (``relu'(0) = 0``, as
    ``jax.nn.relu``). Reverse mode then needs ``z`` and the mask, not the ActNorm output
    ``x`` (or its input): together with the conditioners' checkpoint policy, which keeps
    only these outputs (named :data:`ACT_NAME` under differentiation), a conditioner
    saves one activation per hidden layer for its backward pass. Inside a scanned flow
    every saved activation is a stacked buffer written and re-read once per step, which
    on CPU costs more than the arithmetic (``docs/performance.md``).
    """
    return jnp.maximum((x + loc.astype(x.dtype)) * jnp.exp(log_scale.astype(x.dtype)), 0)


@actnorm_relu.defjvp
def _actnorm_relu_jvp(primals, tangents):
    x, loc, log_scale = primals
    dx, dloc, dlog_scale = tangents
    # Named here, on the value the tangent uses, so the checkpoint policy keeps exactly it.
    z = checkpoint_name(actnorm_relu(x, loc, log_scale), ACT_NAME)
    scale = jnp.exp(log_scale.astype(x.dtype))
    dz = (dx + dloc.astype(x.dtype)) * scale + z * dlog_scale.astype(x.dtype)
    return z, jnp.where(z > 0, dz, jnp.zeros((), dz.dtype))


class ActNormParams(nn.Module):
    """The parameters ``(loc, log_scale)`` of an ActNorm over the last axis of ``x``, with
    ActNorm's data-dependent initialisation (``loc = -mean``, ``log_scale = -log(std +
    eps)`` over every axis but the last, from the init batch); same names and values as
    :class:`jaxflows.bijectors.ActNorm`. Conditioners apply them together with the ReLU
    (:func:`actnorm_relu`); their log-det is not needed.
    """

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.ndim < 2:
            raise ValueError(f"ActNormParams: input `x` must be batched, [batch, ..., channels]; "
                             f"got shape {tuple(x.shape)}.")
        check_channels(self, "params", "loc", x)
        pdtype = jnp.dtype(param_dtype(x.dtype))
        loc = self.param("loc", lambda _: -channel_moments(x, pdtype, float(self.eps))[0])
        log_scale = self.param("log_scale",
                               lambda _: -jnp.log(channel_moments(x, pdtype, float(self.eps))[1]))
        return loc, log_scale


def _norm_relu(h: jax.Array, norm_name: str, dropout: float, train: bool) -> jax.Array:
    """``Dropout(ReLU(ActNorm(h)))`` inside a conditioner's compact ``__call__`` (the
    submodules belong to the caller).
    """
    loc, log_scale = ActNormParams(name=norm_name)(h)
    return nn.Dropout(dropout, deterministic=not train)(actnorm_relu(h, loc, log_scale))


class GlowConditioner(nn.Module):
    """Glow's coupling network ``NN()`` (Kingma & Dhariwal 2018, Sec. 3.3/4):

    ``k x k conv(hidden) -> ActNorm -> ReLU -> 1x1 conv(hidden) -> ActNorm ->
    ReLU -> ZeroConv2D(out, k x k)`` (convolutions without bias before an
    ActNorm; kernels initialised N(0, 0.05^2) as in the reference code).
    ``dropout`` is applied after each ReLU when ``train=True`` (rng ``"dropout"``).

    Call: ``net(x, train=False) -> [B, H, W, out_channels]``; zero at init.

    Memory: ``__call__`` is checkpointed (``nn.remat``) with a policy that keeps only the
    ReLU outputs (:data:`ACT_NAME`); with :func:`actnorm_relu`'s derivative written in
    terms of its output, the backward pass recomputes nothing but reshapes, masks and
    the first layer's im2col patches (no matrix product is recomputed).
    """

    hidden_channels: int
    out_channels: int
    dropout: float = 0.0
    kernel_size: int = 3

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self._net(x, bool(train))   # `train` positional: static under remat

    @functools.partial(nn.remat, policy=_SAVE_ACTS, static_argnums=(2,))
    @nn.compact
    def _net(self, x: jax.Array, train: bool) -> jax.Array:
        _check_image("GlowConditioner", x)
        init = nn.initializers.normal(0.05)
        h = Conv2D(self.hidden_channels, self.kernel_size, use_bias=False, kernel_init=init,
                   name="conv_in")(x)
        h = _norm_relu(h, "actnorm_in", self.dropout, train)
        h = Conv2D(self.hidden_channels, 1, use_bias=False, kernel_init=init,
                   name="conv_hidden")(h)
        h = _norm_relu(h, "actnorm_hidden", self.dropout, train)
        return ZeroConv2D(self.out_channels, self.kernel_size, name="conv_out")(h)


class ResNetConditioner(nn.Module):
    """RealNVP's residual conditioner (Dinh et al. 2017, Sec. 4.1):

    ``k x k conv(hidden)``, then ``num_blocks`` residual blocks
    ``h + conv(ReLU(ActNorm(conv(ReLU(ActNorm(h))))))``, then
    ``ReLU(ActNorm(.)) -> zero-initialised k x k conv(out)``. ActNorm replaces
    RealNVP's batch normalisation (no batch-dependent state, so the coupling is
    an exact bijection in both modes). ``dropout`` (rng ``"dropout"``,
    ``train=True``) is applied inside each block.
    """

    hidden_channels: int
    out_channels: int
    num_blocks: int = 2
    dropout: float = 0.0
    kernel_size: int = 3

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self._net(x, bool(train))   # `train` positional: static under remat

    @functools.partial(nn.remat, policy=_SAVE_ACTS, static_argnums=(2,))
    @nn.compact
    def _net(self, x: jax.Array, train: bool) -> jax.Array:
        _check_image("ResNetConditioner", x)
        if self.num_blocks < 0:
            raise ValueError(
                f"ResNetConditioner: `num_blocks` must be >= 0, got {self.num_blocks}.")
        k = self.kernel_size
        h = Conv2D(self.hidden_channels, k, name="conv_in")(x)
        for i in range(self.num_blocks):
            r = _norm_relu(h, f"block{i}_actnorm0", 0.0, train)
            r = Conv2D(self.hidden_channels, k, use_bias=False,
                       name=f"block{i}_conv0")(r)
            r = _norm_relu(r, f"block{i}_actnorm1", self.dropout, train)
            h = h + Conv2D(self.hidden_channels, k, name=f"block{i}_conv1")(r)
        h = _norm_relu(h, "actnorm_out", 0.0, train)
        return ZeroConv2D(self.out_channels, k, log_scale_factor=None, name="conv_out")(h)


class MLPConditioner(nn.Module):
    """Multilayer perceptron for ``[batch, D]`` inputs:
    ``num_layers`` hidden ``Dense(hidden) -> ReLU`` layers (residual,
    ``h + Dense(ReLU(h))``, after the first when ``residual=True``), dropout
    after each (``train=True``, rng ``"dropout"``), then a zero-initialised
    ``Dense(out_features)``. Computes in the dtype of the input.
    """

    hidden_features: int
    out_features: int
    num_layers: int = 2
    residual: bool = False
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 2:
            raise ValueError(f"MLPConditioner: input `x` must be [batch, features]; "
                             f"got shape {tuple(x.shape)}.")
        if self.num_layers < 1:
            raise ValueError(f"MLPConditioner: `num_layers` must be >= 1, got {self.num_layers}.")
        h = x
        for i in range(self.num_layers):
            dense = nn.Dense(self.hidden_features, dtype=x.dtype, name=f"dense{i}")
            if self.residual and i > 0:
                h = h + dense(nn.relu(h))
            else:
                h = nn.relu(dense(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        if self.residual:
            h = nn.relu(h)
        return nn.Dense(self.out_features, dtype=x.dtype, kernel_init=nn.initializers.zeros,
                        bias_init=nn.initializers.zeros, name="dense_out")(h)
