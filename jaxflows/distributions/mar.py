r"""mAR: the multi-scale autoregressive channel prior of mAR-SCF.

Bhattacharyya, Mahajan, Fritz, Schiele & Roth, "Normalizing Flows with Multi-Scale
Autoregressive Priors" (CVPR 2020; supplement Sec. B, Fig. 6). At every level ``i`` of a
multi-scale flow the factored-out half ``l_i`` (``[B, H, W, C]``) gets a prior that is
autoregressive **over channels** given the kept half ``r_i``:

.. math::

    p(l_i \mid r_i) = \prod_{j=1}^{C} \mathcal N\big(l_i^j;\ \mu_i^j, (\sigma_i^j)^2\big),
    \qquad (\mu_i^j, \log\sigma_i^j) = \mathrm{out}\big(\mathrm{LSTM}(
        [l_i^{j-1}, e(r_i)])\big),

where ``l_i^0 = 0``, the ConvLSTM (:mod:`jaxflows.nn.convlstm`; 3 layers of 32 channels)
carries its state from channel to channel, ``e(r_i)`` is a convolutional embedding of
the kept half (``5x5 conv(32) -> ReLU -> 5x5 conv(4)``, the same at every step) and
``out`` is a ``3x3`` convolution to 2 channels. Each step's input is first embedded by a
``k x k`` convolution to the LSTM width (``conv_embed`` of the reference code). The top
level has no kept half: its prior is unconditional (input: the previous channel only).

As a change of variables. The prior is a Gaussian autoregressive map: with
``eps^j = (l^j - mu^j) / sigma^j``, ``p(l | r) = N(eps; 0, I) prod_j 1/sigma^j``, so
:meth:`MARPrior.standardize` (``l -> eps``, log-det ``-sum log sigma``) is a bijector with a
triangular Jacobian and :meth:`MARPrior.generate` (``eps -> l``) its inverse. Both are one
``nn.scan`` over channels carrying the LSTM state: teacher forcing for the density (the
true ``l^{j-1}`` is the input of step ``j``), and MARPS sampling (mAR-SCF Algorithm 1) for
``generate`` (the generated ``l^{j-1}`` is the input). Temperature therefore scales the
noise ``eps`` of every step. :class:`~jaxflows.bijectors.mar.MARSplit` puts this prior
into a multi-scale flow.

Departures from the reference code (``visinf/mar-scf``, ``mar_prior/``): nothing is tied to a
batch or image size (the reference hard-codes both); the output convolution starts at
zero, so the prior starts as ``N(0, I)`` (the flow starts as a plain factor-out), and the
LSTM's forget-gate bias starts at 1; an optional ``context`` (e.g. a class embedding or a
conditioning image) is concatenated to the kept half before the embedding.
"""
from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import sum_except_batch
from jaxflows.nn.convlstm import ConvLSTM, zero_state
from jaxflows.nn.utils import param_dtype

__all__ = ["MARPrior"]

Array = jax.Array


class _MARStep(nn.Module):
    """One time step: ``(previous channel, embedding of r, state) -> (mu, log sigma, state)``."""

    features: int
    num_layers: int
    kernel_size: int
    dilation: int
    out_kernel: int

    @nn.compact
    def __call__(self, prev: Array, cond: Array, state):
        x = jnp.concatenate([prev, cond], axis=-1)
        pd = param_dtype(x.dtype)
        k = self.kernel_size
        x = nn.Conv(self.features, (k, k), padding="SAME", dtype=x.dtype, param_dtype=pd,
                    name="embed")(x)
        h, state = ConvLSTM(self.features, self.num_layers, self.kernel_size, self.dilation,
                            name="lstm")(x, state)
        o = self.out_kernel
        out = nn.Conv(2, (o, o), padding="SAME", kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.zeros, dtype=x.dtype, param_dtype=pd,
                      name="out")(h)
        return out[..., :1], out[..., 1:], state


class MARPrior(nn.Module):
    """The mAR channel prior ``p(l | r)`` of one level (see the module docstring).

    Methods (all take ``l`` or ``eps`` of shape ``[B, H, W, C]`` and, when
    ``conditional``, the kept half ``r`` ``[B, H, W, C_r]``):

    * ``standardize(l, r) -> (eps, log_det)``: ``eps^j = (l^j - mu^j) / sigma^j`` by
      teacher forcing, ``log_det = -sum log sigma`` (``[B]``);
    * ``generate(eps, r) -> (l, log_det)``: MARPS, one channel per step;
      ``log_det = +sum log sigma`` is that of ``eps -> l``;
    * ``log_prob(l, r) -> [B]``: ``log N(eps; 0, I) + log_det``;
    * ``sample(shape, r, temperature) -> l``: ``generate`` of ``eps ~ N(0, T^2 I)``
      (rng stream ``"sample"``); ``shape`` is ``(B, H, W, C)``.

    ``standardize`` and ``generate`` sow the mean ``log sigma`` of every channel
    (collection ``"intermediates"``, name ``"channel_log_sigma"``, shape ``[C]``): one
    entry per sequential step of MARPS.

    Attributes:
      conditional: whether the prior reads a kept half ``r`` (every level but the top).
      features: width of the ConvLSTM (mAR-SCF: 32).
      num_layers: stacked ConvLSTM layers (mAR-SCF: 3).
      kernel_size: kernel of the step's input embedding and of the LSTM gates.
      dilation: dilation of the LSTM gate convolutions.
      embed_features: hidden width of the embedding of ``r`` (reference: 32).
      embed_channels: output channels of the embedding of ``r`` (reference: 4).
      embed_kernel: kernel of the two embedding convolutions (reference: 5).
      out_kernel: kernel of the output convolution (reference: 3).
    """

    conditional: bool = True
    features: int = 32
    num_layers: int = 3
    kernel_size: int = 3
    dilation: int = 1
    embed_features: int = 32
    embed_channels: int = 4
    embed_kernel: int = 5
    out_kernel: int = 3

    def setup(self):
        for name in ("features", "num_layers", "kernel_size", "dilation", "embed_features",
                     "embed_channels", "embed_kernel", "out_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MARPrior: `{name}` must be a positive int, got {value!r}.")
        self.step = _MARStep(self.features, self.num_layers, self.kernel_size, self.dilation,
                             self.out_kernel)
        if self.conditional:
            k = self.embed_kernel
            self.embed_in = nn.Conv(self.embed_features, (k, k), padding="SAME", name="embed_in")
            self.embed_out = nn.Conv(self.embed_channels, (k, k), padding="SAME",
                                     name="embed_out")

    def _condition(self, x: Array, r: Optional[Array], arg: str) -> Array:
        """The embedding ``e(r)`` (``[B, H, W, embed_channels]``), or an empty map."""
        if x.ndim != 4:
            raise ValueError(f"MARPrior: `{arg}` must be an NHWC batch of rank 4, got shape "
                             f"{tuple(x.shape)}.")
        if not self.conditional:
            if r is not None:
                raise ValueError("MARPrior: this prior is unconditional (the top level); got "
                                 "a kept half `r`.")
            return jnp.zeros(x.shape[:3] + (0,), x.dtype)
        if r is None:
            raise ValueError("MARPrior: a conditional prior needs the kept half `r`.")
        if r.ndim != 4 or r.shape[:3] != x.shape[:3]:
            raise ValueError(f"MARPrior: `r` must be [B, H, W, C_r] with the batch and spatial "
                             f"size of `{arg}` {tuple(x.shape)}; got shape {tuple(r.shape)}.")
        r = r.astype(x.dtype)
        h = nn.relu(self.embed_in(r))
        return self.embed_out(h).astype(x.dtype)

    def _scan(self, x: Array, cond: Array, generate: bool) -> Tuple[Array, Array]:
        """One pass over the channels of ``x`` (``l``, or ``eps`` if ``generate``).

        Returns the other one (``eps``, or ``l``) and ``log sigma`` of every channel.
        """
        state0 = zero_state(x, self.features, self.num_layers)
        prev0 = jnp.zeros(x.shape[:3] + (1,), x.dtype)
        xs = jnp.moveaxis(x, -1, 0)[..., None]            # [C, B, H, W, 1]

        def body(step, carry, x_j, cond):
            state, prev = carry
            mu, log_sigma, state = step(prev, cond, state)
            if generate:
                l_j = mu + jnp.exp(log_sigma) * x_j
                out = l_j
            else:
                l_j = x_j
                out = (x_j - mu) * jnp.exp(-log_sigma)
            return (state, l_j), (out, log_sigma)

        scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast), out_axes=0)
        _, (out, log_sigma) = scan(self.step, (state0, prev0), xs, cond)
        return jnp.moveaxis(out[..., 0], 0, -1), jnp.moveaxis(log_sigma[..., 0], 0, -1)

    def _sow(self, log_sigma: Array) -> None:
        """Sows the mean ``log sigma`` of every channel (``"intermediates"``,
        ``"channel_log_sigma"``, shape ``[C]``): one entry per sequential step.
        """
        self.sow("intermediates", "channel_log_sigma", jnp.mean(log_sigma, axis=(0, 1, 2)))

    def standardize(self, l: Array, r: Optional[Array] = None) -> Tuple[Array, Array]:
        """``l -> eps`` by teacher forcing; returns ``(eps, -sum log sigma)``."""
        cond = self._condition(l, r, "l")
        eps, log_sigma = self._scan(l, cond, generate=False)
        self._sow(log_sigma)
        return eps, -sum_except_batch(log_sigma)

    def generate(self, eps: Array, r: Optional[Array] = None) -> Tuple[Array, Array]:
        """``eps -> l`` channel by channel (MARPS); returns ``(l, +sum log sigma)``."""
        cond = self._condition(eps, r, "eps")
        l, log_sigma = self._scan(eps, cond, generate=True)
        self._sow(log_sigma)
        return l, sum_except_batch(log_sigma)

    def log_prob(self, l: Array, r: Optional[Array] = None) -> Array:
        """``log p(l | r)`` in nats, ``[B]``."""
        eps, log_det = self.standardize(l, r)
        log_normal = -0.5 * (eps ** 2 + jnp.log(2 * jnp.pi))
        return sum_except_batch(log_normal) + log_det

    def sample(self, shape, r: Optional[Array] = None, temperature: float = 1.0) -> Array:
        """``l ~ p(l | r)`` with the noise of every step scaled by ``temperature``."""
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4:
            raise ValueError(f"MARPrior.sample: `shape` must be (B, H, W, C), got {shape}.")
        t = float(temperature)
        if not (t > 0 and t < float("inf")):
            raise ValueError(f"MARPrior.sample: `temperature` must be finite and > 0, got "
                             f"{temperature!r}.")
        eps = t * jax.random.normal(self.make_rng("sample"), shape)
        return self.generate(eps, r)[0]
