r"""A ViT conditioner for transformer flows (TarFlow blocks, Jet couplings).

:class:`ViT` maps a sequence of tokens ``[B, T, D_in]`` (or an NHWC image, cut into
``patch_size x patch_size`` patches by :func:`patchify`) to ``[B, T, out_features]``:

.. math::

    h_0 = W_{in} x + E_{pos} (+ e(c)), \qquad
    h_{l+1} = h'_l + \mathrm{MLP}(\mathrm{LN}(h'_l)), \quad
    h'_l = h_l + \mathrm{MHA}(\mathrm{LN}(h_l)) (+ \mathrm{XA}(\mathrm{LN}(h'_l), c)),

    \mathrm{out} = W_{out} \mathrm{LN}(h_L), \qquad W_{out} = 0 \text{ at init},

pre-LN transformer layers (Xiong et al. 2020) with learned position embeddings
``E_pos`` (Dosovitskiy et al. 2021), GELU MLPs of width ``mlp_ratio * width``, causal
(``causal=True``: token ``t`` attends to tokens ``<= t``, TarFlow) or bidirectional
attention (Jet). The output projection is zero-initialised, so a flow whose transformer
is the identity at zero parameters starts as the identity map (Jet; big_vision's
``final_proj``; TarFlow's ``proj_out``).

Context (``context``), one row per example:

* ``num_classes=K``: class labels, integers ``[B]`` in ``[0, K)`` (a learned embedding
  ``e(c)`` added to every token, TarFlow's ``class_embed``), or class *weights*
  ``[B, K]`` (floats): the embedding is ``weights @ table``. Uniform weights ``1/K`` give
  the mean embedding, TarFlow's "unconditional" input of classifier-free guidance. Labels
  out of range raise a ``ValueError`` when concrete (NaN rows under ``jit``); a
  class-conditional ViT without a context is an error.
* a vector ``[B, K]`` (``num_classes=None``): ``Dense(width)`` of it, added to every token.
* an image ``[B, h, w, c]``: its pixels become tokens (``Dense(width)`` + their own
  position embedding), which every layer reads by pre-LN **cross-attention** whose
  output projection is zero-initialised (Jet's DNN reads such a context by one
  cross-attention before its encoder; here every layer has one).
* integer labels given to a ViT without ``num_classes`` are refused (``ValueError``).

Sequential decoding (:meth:`ViT.decode`): a causal ViT also runs one token at a time with
a key/value cache (:meth:`ViT.init_cache`), computing exactly the outputs of the full
causal pass; this is the exact inverse of a TarFlow block at one transformer step per
token.

References:
  Vaswani et al. Attention is all you need. NeurIPS 2017.
  Dosovitskiy et al. An image is worth 16x16 words. ICLR 2021.
  Zhai et al. Normalizing Flows are Capable Generative Models (TarFlow). arXiv:2412.06329.
  Kolesnikov et al. Jet: A Modern Transformer-Based Normalizing Flow. arXiv:2412.15129.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.nn.encoders import check_labels

__all__ = ["ViT", "patchify", "unpatchify", "check_patch_size"]

Array = jax.Array


def check_patch_size(shape, patch_size: int, who: str) -> None:
    """``ValueError`` naming ``who`` unless ``patch_size`` divides the image height and width."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) \
            or patch_size < 1:
        raise ValueError(f"{who}: patch_size must be an int >= 1, got {patch_size!r}.")
    h, w = int(shape[-3]), int(shape[-2])
    if h % patch_size or w % patch_size:
        raise ValueError(f"{who}: the image height and width ({h}, {w}) must be divisible by "
                         f"patch_size={patch_size}; got image shape {tuple(shape)}.")


def patchify(x: Array, patch_size: int) -> Array:
    """``[B, H, W, C] -> [B, (H/p)(W/p), p*p*C]``: row-major patches, each flattened as
    ``(row in patch, column in patch, channel)``. A permutation (log-det 0).
    """
    check_patch_size(x.shape, patch_size, "patchify")
    b, h, w, c = x.shape
    p = patch_size
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Array, patch_size: int, image_shape: Tuple[int, int, int]) -> Array:
    """Inverse of :func:`patchify`: ``[B, T, p*p*C] -> [B, H, W, C]``."""
    h, w, c = image_shape
    p = patch_size
    b = tokens.shape[0]
    x = tokens.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _dense(features, name, zero=False):
    init = nn.initializers.zeros if zero else nn.initializers.xavier_uniform()
    return nn.Dense(features, kernel_init=init, name=name)


def _heads(x: Array, heads: int) -> Array:
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)     # [B, H, T, hd]


def _merge(x: Array) -> Array:
    b, h, t, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * hd)


def _attend(q, k, v, mask=None):
    """Softmax attention ``[B, H, Tq, hd] x [B, H, Tk, hd]``; ``mask`` broadcasts to
    ``[Tq, Tk]`` (True = attend).
    """
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    if mask is not None:
        s = jnp.where(mask, s, jnp.asarray(-1e30 if s.dtype == jnp.float64 else -1e9, s.dtype))
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)


class _Layer(nn.Module):
    """One pre-LN transformer layer (self-attention, optional cross-attention, MLP)."""

    width: int
    heads: int
    mlp_ratio: float
    cross: bool

    def setup(self):
        self.ln1 = nn.LayerNorm(name="ln_attn")
        self.qkv = _dense(3 * self.width, "qkv")
        self.proj = _dense(self.width, "attn_out")
        if self.cross:
            self.ln_x = nn.LayerNorm(name="ln_cross")
            self.q_x = _dense(self.width, "cross_q")
            self.kv_x = _dense(2 * self.width, "cross_kv")
            self.proj_x = _dense(self.width, "cross_out", zero=True)
        self.ln2 = nn.LayerNorm(name="ln_mlp")
        self.fc1 = _dense(int(self.mlp_ratio * self.width), "mlp_in")
        self.fc2 = _dense(self.width, "mlp_out")

    def _cross_mlp(self, h, ctx_tokens):
        if self.cross:
            q = _heads(self.q_x(self.ln_x(h)), self.heads)
            k, v = jnp.split(self.kv_x(ctx_tokens), 2, axis=-1)
            h = h + self.proj_x(_merge(_attend(q, _heads(k, self.heads), _heads(v, self.heads))))
        return h + self.fc2(nn.gelu(self.fc1(self.ln2(h))))

    def __call__(self, h, causal: bool, ctx_tokens=None):
        q, k, v = (_heads(a, self.heads) for a in jnp.split(self.qkv(self.ln1(h)), 3, axis=-1))
        t = h.shape[1]
        mask = jnp.tril(jnp.ones((t, t), bool)) if causal else None
        h = h + self.proj(_merge(_attend(q, k, v, mask)))
        return self._cross_mlp(h, ctx_tokens)

    def decode(self, h, pos, k_cache, v_cache, ctx_tokens=None):
        """One token ``h: [B, 1, width]`` at position ``pos``; caches ``[B, H, T, hd]``."""
        q, k, v = (_heads(a, self.heads) for a in jnp.split(self.qkv(self.ln1(h)), 3, axis=-1))
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k, pos, axis=2)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v, pos, axis=2)
        mask = (jnp.arange(k_cache.shape[2]) <= pos)[None, :]
        h = h + self.proj(_merge(_attend(q, k_cache, v_cache, mask)))
        return self._cross_mlp(h, ctx_tokens), k_cache, v_cache


class _PosEmbedding(nn.Module):
    """Learned position embedding ``[T, width]`` (normal, std ``1/sqrt(width)`` as Jet)."""

    width: int

    @nn.compact
    def __call__(self, num_tokens: int, dtype):
        pe = self.param("embedding", nn.initializers.normal(1.0 / np.sqrt(self.width)),
                        (num_tokens, self.width))
        return pe.astype(dtype)


class ViT(nn.Module):
    """Transformer conditioner over tokens; see the module docstring.

    Attributes:
      out_features: output features per token (zero-initialised projection).
      width: transformer width (model channels).
      depth: number of transformer layers (>= 1).
      heads: attention heads; must divide ``width``.
      mlp_ratio: MLP hidden width over ``width``.
      causal: causal self-attention (token ``t`` sees tokens ``<= t``).
      num_classes: ``K`` for a class-label context (``None``: no class embedding).
      patch_size: if set, a rank-4 input ``[B, H, W, C]`` is cut into patches first.
      output_init_scale: std of the output projection's init (0: zero init).
      cross_attention: every layer cross-attends to an image context ``[B, h, w, c]``
        (required for, and only used with, such a context).

    Call: ``vit(x, context=None) -> [B, T, out_features]``.
    """

    out_features: int
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    causal: bool = False
    num_classes: Optional[int] = None
    patch_size: Optional[int] = None
    output_init_scale: float = 0.0
    cross_attention: bool = False

    def _check(self):
        who = "ViT"
        for name in ("out_features", "width", "depth", "heads"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"{who}: {name} must be an int >= 1, got {val!r}.")
        if self.width % self.heads:
            raise ValueError(f"{who}: heads={self.heads} must divide width={self.width} "
                             f"(each head gets width / heads features).")
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not
                                             isinstance(self.num_classes, (int, np.integer))
                                             or self.num_classes < 2):
            raise ValueError(f"{who}: num_classes must be an int >= 2 or None, got "
                             f"{self.num_classes!r}.")
        if not self.mlp_ratio > 0:
            raise ValueError(f"{who}: mlp_ratio must be > 0, got {self.mlp_ratio!r}.")

    def setup(self):
        self._check()
        self.proj_in = _dense(self.width, "proj_in")
        self.pos = _PosEmbedding(self.width, name="pos_embedding")
        if self.num_classes is not None:
            self.class_table = self.param("class_embedding", nn.initializers.normal(0.02),
                                          (self.num_classes, self.width))
        self.ctx_vec = _dense(self.width, "context_proj")
        self.ctx_tok = _dense(self.width, "context_tokens")
        self.ctx_pos = _PosEmbedding(self.width, name="context_pos_embedding")
        self.layers = [_Layer(self.width, self.heads, self.mlp_ratio, self.cross_attention,
                              name=f"layer{i}") for i in range(self.depth)]
        self.ln_out = nn.LayerNorm(name="ln_out")
        init = (nn.initializers.zeros if self.output_init_scale == 0
                else nn.initializers.normal(self.output_init_scale))
        self.proj_out = nn.Dense(self.out_features, kernel_init=init, name="proj_out")

    def _tokens(self, x):
        if x.ndim == 4:
            if self.patch_size is None:
                raise ValueError("ViT: an image input [B, H, W, C] needs patch_size; got "
                                 f"shape {tuple(x.shape)} and patch_size=None.")
            return patchify(x, self.patch_size)
        if x.ndim != 3:
            raise ValueError(f"ViT: input must be tokens [B, T, D] or an image [B, H, W, C], "
                             f"got shape {tuple(x.shape)}.")
        return x

    def _context(self, context, dtype):
        """``(additive embedding [B, 1, width] or None, context tokens or None)``."""
        who = "ViT"
        if self.num_classes is not None:
            if context is None:
                raise ValueError(f"{who}: this ViT is class-conditional "
                                 f"(num_classes={self.num_classes}); `context` must be labels "
                                 f"[batch] or class weights [batch, {self.num_classes}].")
            table = self.class_table.astype(dtype)
            if jnp.issubdtype(context.dtype, jnp.integer) and context.ndim == 1:
                ok = check_labels(context, self.num_classes, who)
                emb = table[jnp.clip(context, 0, self.num_classes - 1)]
                emb = jnp.where(ok[:, None], emb, jnp.asarray(jnp.nan, dtype))
            elif context.ndim == 2 and context.shape[-1] == self.num_classes:
                emb = context.astype(dtype) @ table
            else:
                raise ValueError(f"{who}: a class-conditional context must be integer labels "
                                 f"[batch] or class weights [batch, {self.num_classes}], got "
                                 f"shape {tuple(context.shape)} dtype {context.dtype}.")
            return emb[:, None, :], None
        if context is None:
            if self.cross_attention:
                raise ValueError(f"{who}: cross_attention=True needs an image context "
                                 f"[batch, h, w, c]; got none.")
            return None, None
        if jnp.issubdtype(context.dtype, jnp.integer):
            raise ValueError(f"{who}: got integer class labels (shape {tuple(context.shape)}) "
                             f"but this ViT is not class-conditional (num_classes=None); "
                             f"build it with num_classes, or pass no context.")
        if self.cross_attention and context.ndim != 4:
            raise ValueError(f"{who}: cross_attention=True needs an image context "
                             f"[batch, h, w, c], got shape {tuple(context.shape)}.")
        if context.ndim == 2:
            return self.ctx_vec(context.astype(dtype))[:, None, :], None
        if context.ndim == 4:
            if not self.cross_attention:
                raise ValueError(f"{who}: an image context [batch, h, w, c] (got shape "
                                 f"{tuple(context.shape)}) is read by cross-attention; build "
                                 f"the ViT with cross_attention=True.")
            b, h, w, c = context.shape
            tok = context.astype(dtype).reshape(b, h * w, c)
            return None, self.ctx_tok(tok) + self.ctx_pos(h * w, dtype)[None]
        raise ValueError(f"{who}: `context` must be a vector [batch, K] or an image "
                         f"[batch, h, w, c] (or labels with num_classes), got shape "
                         f"{tuple(context.shape)}.")

    def embed(self, x, context=None):
        """Tokens ``[B, T, D]`` (or an image) to ``h_0 [B, T, width]`` and context tokens."""
        x = self._tokens(x)
        h = self.proj_in(x) + self.pos(x.shape[1], x.dtype)[None]
        add, ctx_tokens = self._context(context, x.dtype)
        if add is not None:
            h = h + add
        return h, ctx_tokens

    def __call__(self, x: Array, context: Optional[Any] = None) -> Array:
        h, ctx_tokens = self.embed(x, context)
        for layer in self.layers:
            h = layer(h, self.causal, ctx_tokens)
        return self.proj_out(self.ln_out(h))

    def init_cache(self, batch: int, num_tokens: int, dtype) -> Tuple[Array, Array]:
        """Empty key/value caches ``[depth, B, heads, T, width / heads]`` for :meth:`decode`."""
        shape = (self.depth, batch, self.heads, num_tokens, self.width // self.heads)
        return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)

    def decode(self, token: Array, pos, cache, context: Optional[Any] = None):
        """Causal one-token step: ``token [B, 1, D]`` at position ``pos`` (traced int).

        Returns ``(out [B, 1, out_features], cache)``; the output equals row ``pos`` of
        the full causal pass once tokens ``0 .. pos`` have been fed in order.
        """
        if not self.causal:
            raise ValueError("ViT.decode: sequential decoding needs causal=True.")
        k_cache, v_cache = cache
        num_tokens = k_cache.shape[3]
        pe = jax.lax.dynamic_slice_in_dim(self.pos(num_tokens, token.dtype), pos, 1, axis=0)
        h = self.proj_in(token) + pe[None]
        add, ctx_tokens = self._context(context, token.dtype)
        if add is not None:
            h = h + add
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            h, k_i, v_i = layer.decode(h, pos, k_cache[i], v_cache[i], ctx_tokens)
            ks.append(k_i)
            vs.append(v_i)
        return self.proj_out(self.ln_out(h)), (jnp.stack(ks), jnp.stack(vs))
