r"""Flow++'s conditioner: gated residual convolutions and gated multi-head self-attention.

Flow++ (Ho et al. 2019, Sec. 3.3; reference code ``flows/flows.py``,
``MixLogisticAttnCoupling`` and ``flows/layers.py`` ``gated_conv`` / ``gated_attn``)
computes a coupling's parameters with

    input 3x3 conv -> F filters; a learned position embedding ``[H, W, F]`` shared by
    the blocks; ``num_blocks`` x [gated conv, LayerNorm, gated attention, LayerNorm];
    output 3x3 conv (small initial scale) -> the transformer's parameters,

with

* **gated conv**: ``c = conv3x3(concat_elu(h))`` (``+ nin(concat_elu(a))`` for a context
  ``a``), ``c = nin(dropout(concat_elu(c)))`` to ``2F`` channels ``(A, B)``, and
  ``h <- h + A * sigmoid(B)`` (``concat_elu(v) = elu([v, -v])``, ``nin`` a 1x1 conv);
* **gated attention**: ``q, k, v = nin(h + pos)`` (``3F``), ``heads``-head
  ``softmax(q k^T / sqrt(d)) v`` over all ``H * W`` positions, dropout, ``nin`` to
  ``2F``, gate and residual as above.

``attention=False`` is the ablation of Flow++ Table 2 ("no self-attention"): the
reference's ``abl_noattn`` replaces the attention by a pointwise gated layer
(``gated_nin``: the maximum over three 1x1 projections to ``F``, then ``nin`` to ``2F``
and the gate), which has the same parameter count (``3F^2 + 2F^2``); so does this module.

Departures from the reference code (documented here because they change numbers, not
the architecture): the reference initialises every conv and dense layer data-dependently
(weight-norm style, outputs of unit variance times ``init_scale``); here weights use
LeCun-normal initialisation, the output projections of the gates use ``init_scale`` (0.1)
times it, and the output conv ``init_scale`` times it too, so a coupling starts close to
(not exactly at) the identity. Dropout is applied where the reference applies it (after
the gated conv's second ``concat_elu`` and on the attention output).

Context. A coupling concatenates its ``context`` to the conditioner input on the
channel axis; set ``context_channels`` to the context's channel count and the last
``context_channels`` input channels are routed, as in the reference's ``a`` shortcut,
into every gated conv (``+ nin(concat_elu(a))``) instead of the input conv. The
variational dequantiser (:mod:`jaxflows.bijectors.dequantization`) uses this.

Parameters. The ``num_blocks`` blocks are one ``nn.scan`` (``blocks``): a single block
is traced and compiled, and its parameters are stacked on a leading axis of length
``num_blocks`` (``params["blocks"]["conv"]["conv"]["kernel"]`` is
``[num_blocks, 3, 3, F, F]``). Until 2026-12-03 the blocks were unrolled (``conv_0``,
``ln_conv_0``, ``attn_0``, ``ln_attn_0``, ...); the function is the same (outputs agree to
float32 rounding once those parameters are stacked), the checkpoint layout is not.

Memory. Full attention stores ``heads * (H W)^2`` weights per example (chrischute's port
ran out of memory at 64x64); a shape whose attention would exceed
``attention_memory_limit`` bytes per example is refused with a message saying what to
lower.
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.nn.conditioners import Conv2D
from jaxflows.nn.utils import check_int_args

__all__ = ["FlowppConditioner", "GatedConv", "GatedAttention", "concat_elu"]


def concat_elu(x: jax.Array) -> jax.Array:
    """``elu([x, -x])`` on the channel axis (doubles the channels; PixelCNN++, Flow++)."""
    return jax.nn.elu(jnp.concatenate([x, -x], axis=-1))


def _scaled_lecun(scale: float):
    return nn.initializers.variance_scaling(scale * scale, "fan_in", "truncated_normal")


def _gate(h: jax.Array, c: jax.Array) -> jax.Array:
    a, b = jnp.split(c, 2, axis=-1)
    return h + a * jax.nn.sigmoid(b)


class GatedConv(nn.Module):
    """Flow++'s ``gated_conv``: ``h + A sigmoid(B)``, ``(A, B) = nin(drop(celu(conv(celu(h))
    [+ nin(celu(a))])))``.

    Attributes:
      dropout: dropout rate (``train=True``, rng ``"dropout"``).
      init_scale: scale of the last projection's initialisation.
    """

    dropout: float = 0.0
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, h, context=None, *, train=False):
        f = h.shape[-1]
        c = Conv2D(f, 3, name="conv")(concat_elu(h))
        if context is not None:
            c = c + nn.Dense(f, name="context_nin")(concat_elu(context))
        c = nn.Dropout(self.dropout, deterministic=not train)(concat_elu(c))
        c = nn.Dense(2 * f, kernel_init=_scaled_lecun(self.init_scale), name="gate_nin")(c)
        return _gate(h, c)


class GatedAttention(nn.Module):
    """Flow++'s ``gated_attn`` (or, with ``attention=False``, the ablation's ``gated_nin``).

    Attributes:
      heads: attention heads (must divide the channels).
      dropout: dropout rate on the attention output.
      attention: multi-head self-attention over all positions (True) or the pointwise
        maximum of three 1x1 projections (False, same parameter count).
      init_scale: scale of the last projection's initialisation.
    """

    heads: int = 4
    dropout: float = 0.0
    attention: bool = True
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, h, pos=None, *, train=False):
        b, hh, ww, f = h.shape
        inp = h if pos is None else h + pos.astype(h.dtype)
        qkv = nn.Dense(3 * f, name="qkv")(inp)
        if self.attention:
            d = f // self.heads
            qkv = qkv.reshape(b, hh * ww, 3, self.heads, d)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
            w = jax.nn.softmax(logits, axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hh, ww, f)
        else:
            out = jnp.max(qkv.reshape(b, hh, ww, 3, f), axis=-2)
        out = nn.Dropout(self.dropout, deterministic=not train)(out)
        c = nn.Dense(2 * f, kernel_init=_scaled_lecun(self.init_scale), name="gate_nin")(out)
        return _gate(h, c)


class _GatedBlock(nn.Module):
    """One block of :class:`FlowppConditioner`: gated conv, LayerNorm, gated attention,
    LayerNorm (the body of its ``nn.scan``; ``carry`` is the hidden state).
    """

    heads: int
    dropout: float
    attention: bool
    init_scale: float
    train: bool

    @nn.compact
    def __call__(self, h, context, pos):
        h = GatedConv(self.dropout, self.init_scale, name="conv")(h, context, train=self.train)
        h = nn.LayerNorm(name="ln_conv")(h)
        h = GatedAttention(self.heads, self.dropout, self.attention, self.init_scale,
                           name="attn")(h, pos, train=self.train)
        return nn.LayerNorm(name="ln_attn")(h), None


class FlowppConditioner(nn.Module):
    """The Flow++ conditioner network; see the module docstring.

    Use it in a coupling through a callable ``out_channels -> module``::

        import functools
        from jaxflows.bijectors import MixLogCDFCoupling
        from jaxflows.nn import FlowppConditioner
        cond = functools.partial(FlowppConditioner, filters=96, num_blocks=10, heads=4,
                                 dropout=0.2)
        MixLogCDFCoupling(components=32, mask="checkerboard", conditioner=cond)

    Attributes:
      out_channels: output channels (the coupling passes ``num_params`` per entry).
      filters: ``F``, the width (Flow++ CIFAR-10: 96).
      num_blocks: gated conv + attention blocks (Flow++: 10).
      heads: attention heads; must divide ``filters`` (Flow++: 4).
      dropout: dropout rate (Flow++: 0.2), active with ``train=True`` (rng ``"dropout"``).
      attention: self-attention (True) or the pointwise gated ablation (False).
      context_channels: trailing input channels that are a context, routed into every
        gated conv (0: no context).
      init_scale: initial scale of the gates' and of the output conv's weights.
      attention_memory_limit: bytes of attention weights per example above which the
        input shape is refused (default 1 GiB).
    """

    out_channels: int
    filters: int = 96
    num_blocks: int = 10
    heads: int = 4
    dropout: float = 0.0
    attention: bool = True
    context_channels: int = 0
    init_scale: float = 0.1
    attention_memory_limit: float = float(1 << 30)

    def _validate(self, x: jax.Array) -> None:
        name = type(self).__name__
        if x.ndim != 4:
            raise ValueError(f"{name}: input `x` must be an NHWC image batch (rank 4); got "
                             f"shape {tuple(x.shape)}.")
        check_int_args(name, {a: getattr(self, a) for a in ("out_channels", "filters",
                                                            "num_blocks", "heads")},
                       {"out_channels": 1, "filters": 1, "num_blocks": 0, "heads": 1})
        if self.filters % self.heads:
            raise ValueError(f"{name}: `heads`={self.heads} must divide `filters`="
                             f"{self.filters}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name}: `dropout` must be in [0, 1), got {self.dropout!r}.")
        if not 0 <= self.context_channels < x.shape[-1]:
            raise ValueError(f"{name}: `context_channels`={self.context_channels} must be "
                             f">= 0 and less than the input's {x.shape[-1]} channels.")
        if self.attention and self.num_blocks:
            n = x.shape[1] * x.shape[2]
            need = self.heads * n * n * jnp.dtype(x.dtype).itemsize
            if need > self.attention_memory_limit:
                raise ValueError(
                    f"{name}: self-attention over {x.shape[1]}x{x.shape[2]} = {n} positions "
                    f"with {self.heads} heads needs {need / 2**20:.0f} MiB of attention "
                    f"weights per example, above `attention_memory_limit`="
                    f"{self.attention_memory_limit / 2**20:.0f} MiB. Lower the image size "
                    f"(squeeze before the attention couplings), lower `heads`, set "
                    f"attention=False, or raise attention_memory_limit.")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        self._validate(x)
        if self.context_channels:
            x, context = x[..., :-self.context_channels], x[..., -self.context_channels:]
        else:
            context = None
        f = self.filters
        h = Conv2D(f, 3, name="proj_in")(x)
        pos: Optional[jax.Array] = None
        if self.attention and self.num_blocks:
            pos = self.param("pos_emb", nn.initializers.normal(0.01), (x.shape[1], x.shape[2], f))
        if self.num_blocks:
            # One block traced and compiled once, its parameters stacked on a leading axis
            # of length num_blocks (``blocks/conv/...``): a scan instead of num_blocks
            # unrolled copies, so the program is about num_blocks times smaller.
            blocks = nn.scan(_GatedBlock, variable_axes={"params": 0},
                             split_rngs={"params": True, "dropout": True},
                             in_axes=(nn.broadcast, nn.broadcast), length=self.num_blocks)
            h, _ = blocks(self.heads, self.dropout, self.attention, self.init_scale, train,
                          name="blocks")(h, context, pos)
        return Conv2D(self.out_channels, 3, kernel_init=_scaled_lecun(self.init_scale),
                      name="proj_out")(h)
