r"""Transformer flows: TarFlow autoregressive blocks and Jet couplings.

Both read an NHWC image ``[B, H, W, C]`` cut into ``p x p`` patches, i.e. ``T = HW/p^2``
tokens of ``D = p^2 C`` features (:func:`jaxflows.nn.vit.patchify`, a permutation of
log-det 0), or tokens ``[B, T, D]`` directly; the output has the input's shape.

TarFlow block (:class:`TransformerAutoregressive`; Zhai et al. 2024, Sec. 3)
------------------------------------------------------------------------------
Tokens are taken in an order ``pi`` (identity, or reversed with ``flip=True``; TarFlow
alternates the two between blocks), a causal :class:`~jaxflows.nn.ViT` reads them and
its outputs are **shifted by one token**, so the parameters of token ``t`` depend on
tokens ``< t`` only and token 0 is left alone. Forward (data -> latent), with
``(a_t, b_t) = NN(x_{<t}, c)`` (``a_0 = b_0 = 0``):

.. math::

    z_t = (x_t - b_t) \odot e^{-a_t}, \qquad \log|\det J| = -\sum_{t, d} a_{t, d},

one parallel transformer pass. The inverse ``x_t = z_t e^{a_t} + b_t`` needs ``x_{<t}``:

* ``inverse_method="scan"`` (exact): a ``lax.scan`` over tokens with a key/value cache
  (:meth:`jaxflows.nn.ViT.decode`): one transformer step per token, one compiled step
  whatever ``T`` is.
* ``inverse_method="jacobi"``: the parallel fixed-point iteration
  ``x <- z e^{a(x)} + b(x)`` by :func:`jaxflows.ops.fixed_point_inverse` (as
  :class:`~jaxflows.bijectors.MaskedAutoregressive` with ``"jacobi"``; Song et al. 2021).
  It is nilpotent: after ``k`` iterations the first ``k`` tokens are exact, so it ends
  within ``T + 1`` full passes and usually far fewer. ``chunk_size=c`` gives the
  **Gauss-Seidel-Jacobi** variant (Liu & Qin 2025): tokens are solved in chunks of ``c``
  in order, each chunk by Jacobi iterations with earlier chunks fixed (at most ``c + 1``
  passes per chunk). Tolerance ``tol`` (default 4 eps of the dtype) and cap ``max_iter``
  (default ``c + 2`` per chunk, ``c = T`` without chunks) are the solver's.
  Gradients use the implicit function theorem (the solver's ``custom_vjp``).

Jacobi diagnostics are sown into ``"intermediates"`` under ``"fixed_point"`` (per
example: ``iterations`` summed over chunks, max ``residual``, ``not_converged``), as for
residual blocks and MAF; read them with ``apply(..., mutable=["intermediates"])`` and
:func:`jaxflows.bijectors.fixed_point_report`. ``on_nonconvergence="raise"`` makes a
non-converged inverse an error: a ``RuntimeError`` when the values are concrete (eager
calls), a ``checkify.check`` under ``jit`` (wrap the call in
``jax.experimental.checkify.checkify``; without it JAX refuses to trace the check).

Classifier-free guidance (``guidance = w``, inverse only; TarFlow Sec. 3.4): the
parameters of every token are ``p_c + w (p_c - p_u)``, with ``p_c`` the conditional
output and ``p_u`` the output for the mean class embedding (uniform class weights, as
TarFlow's ``class_embed.mean(0)``). The guided sampler is still autoregressive, so both
inverse methods solve it; it is no longer the inverse of the (unguided) forward.
TarFlow's attention-temperature guidance of unconditional models is not implemented.

Jet coupling (:class:`TransformerCoupling`; Kolesnikov et al. 2024)
--------------------------------------------------------------------
The ``T x D`` token grid is split by a fixed permutation into two halves ``x_1, x_2`` of
shape ``[T, D/2]`` each:

* ``"channel"``: a fixed random permutation of the ``D`` features of every token, first
  half kept (Jet's ``"random"`` channel projection);
* spatial kinds over the ``h x w`` token grid: ``"checkerboard"`` (``(i + j)`` even kept),
  ``"vstripes"`` (``j`` even), ``"hstripes"`` (``i`` even), and their ``"-inv"`` variants
  (the halves swapped). As in big_vision, a half of ``T/2`` tokens of ``D`` features is
  reshaped to ``[T, D/2]`` (token ``n``'s features ``[sD/2, (s+1)D/2)`` become row
  ``2n + s``), so every kind has the same shapes and one scanned layer serves all.

A bidirectional ViT reads ``x_1`` (and the context) and gives ``(b, s)``; then

.. math::

    y_2 = (x_2 + b) \odot \sigma(s) \cdot \lambda, \qquad
    \log|\det J| = \sum (\log\sigma(s) + \log\lambda),

with ``lambda = scale_factor = 2`` (Jet), which is the identity at zero output. The split
is stored as an integer index buffer ``[T, D]`` (collection ``"buffers"``, never
trained), a gather instead of big_vision's ``T x T`` / ``D x D`` 0/1 projection
matrices: the same permutation at ``O(TD)`` cost. :class:`JetStack` runs ``L``
couplings under ``nn.scan`` (+ ``nn.remat``), their split buffers stacked ``[L, T, D]``
and scanned in, so compile time does not grow with ``L``.

References:
  Zhai, Zhang, Nakkiran, Berthelot, Gu, Zheng, Chen, Bautista, Jaitly, Susskind.
  Normalizing Flows are Capable Generative Models. arXiv:2412.06329 (2024).
  Kolesnikov, Susano Pinto, Tschannen. Jet: A Modern Transformer-Based Normalizing
  Flow. arXiv:2412.15129 (2024).
  Liu, Qin. Accelerate TarFlow Sampling with GS-Jacobi Iteration. arXiv:2505.12849 (2025).
  Song, Meng, Liao, Ermon. Accelerating Feedforward Computation via Parallel Nonlinear
  Equation Solving. ICML 2021.
"""
from __future__ import annotations

import itertools
import numbers
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from jaxflows.bijectors.base import Bijector
from jaxflows.nn.encoders import check_labels
from jaxflows.nn.vit import ViT, check_patch_size, patchify, unpatchify
from jaxflows.ops.fixed_point import default_tolerance, fixed_point_inverse

__all__ = ["TransformerAutoregressive", "TransformerCoupling", "TarFlowStack", "JetStack",
           "coupling_split", "SPATIAL_KINDS", "jacobi_solve"]

Array = jax.Array
SPATIAL_KINDS = tuple(k + s for k in ("checkerboard", "vstripes", "hstripes")
                      for s in ("", "-inv"))
_COUPLING_KINDS = ("channel",) + SPATIAL_KINDS
_INVERSE_METHODS = ("scan", "jacobi")
_ON_NONCONVERGENCE = ("report", "raise")


def _is_int(v, low=1) -> bool:
    return not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= low


def _to_tokens(x: Array, patch_size: int, who: str):
    """``(tokens [B, T, D], grid (h, w), back)``; ``back`` restores the input layout."""
    if x.ndim == 3:
        return x, (1, x.shape[1]), lambda t: t
    check_patch_size(x.shape, patch_size, who)
    shape = tuple(x.shape[1:])
    grid = (shape[0] // patch_size, shape[1] // patch_size)
    return patchify(x, patch_size), grid, lambda t: unpatchify(t, patch_size, shape)


def _check_vit_args(who, width, depth, heads):
    for name, val in (("width", width), ("depth", depth), ("heads", heads)):
        if not _is_int(val):
            raise ValueError(f"{who}: {name} must be an int >= 1, got {val!r}.")
    if width % heads:
        raise ValueError(f"{who}: heads={heads} must divide width={width}.")


# ------------------------------------------------------------------------------------
# Jacobi / Gauss-Seidel-Jacobi solve of an autoregressive inverse
# ------------------------------------------------------------------------------------

def jacobi_solve(update, z: Array, *, chunk_size: Optional[int] = None, axis: int = 1,
                 tol: Optional[float] = None, max_iter: Optional[int] = None,
                 rank: Optional[Array] = None):
    """Solves ``x = update(x)`` for an autoregressive ``update`` along ``axis``.

    ``update(x)`` must make entry ``t`` (along ``axis``) of its output depend on entries
    ``< t`` of ``x`` only (a strictly lower-triangular dependence, as ``z e^{a(x)} + b(x)``
    of an autoregressive flow). Chunks of ``chunk_size`` entries are solved in order, each
    by the fixed-point iteration on its entries with the earlier ones fixed
    (Gauss-Seidel-Jacobi; ``None``: one chunk, plain Jacobi), by
    :func:`jaxflows.ops.fixed_point_inverse` (per-example stopping rule, implicit
    gradients). Entries outside the chunk being solved are held at constants, so each
    solve's Jacobian is nilpotent and its adjoint converges too.

    ``rank`` (int ``[n]``, optional) is each entry's position in the autoregressive order
    when it is not the index along ``axis`` (e.g. a MAF with a random order: the argsort
    of its order); chunks are taken in that order.

    Returns ``(x, FixedPointInfo)`` with per-example ``iterations`` summed over chunks,
    the largest ``residual`` and ``converged`` of every chunk.
    """
    axis = axis % z.ndim
    n = z.shape[axis]
    c = n if chunk_size is None else int(chunk_size)
    num_chunks = -(-n // c)
    tol = default_tolerance(z.dtype) if tol is None else float(tol)
    cap = c + 2 if max_iter is None else int(max_iter)
    pos = jnp.arange(n) if rank is None else jnp.asarray(rank)
    pos = pos.reshape((1,) * axis + (n,) + (1,) * (z.ndim - axis - 1))

    def solve_chunk(x_fixed, k):
        # A float 0/1 mask: closure_convert hoists floating closed-over tracers only (a
        # boolean one would leak out of the custom_vjp), and m u + (1 - m) x is exact.
        inside = ((pos >= k * c) & (pos < (k + 1) * c)).astype(z.dtype)

        def g(_, xx):
            # x <- y - g(x) = inside * update(x) + (1 - inside) * x_fixed, y = x_fixed.
            return (x_fixed - inside * update(xx)) - (1 - inside) * x_fixed

        x, info = fixed_point_inverse(g, (), x_fixed, rtol=tol, atol=tol, max_iter=cap,
                                      stall_patience=cap)
        return x, info

    if num_chunks == 1:
        return solve_chunk(z, 0)

    def body(x, k):
        x, info = solve_chunk(x, k)
        return x, info

    x, infos = lax.scan(body, z, jnp.arange(num_chunks))
    info = type(infos)(jnp.sum(infos.iterations, 0), jnp.max(infos.residual, 0),
                       jnp.all(infos.converged, 0))
    return x, info


def _report(module: nn.Module, info, on_nonconvergence: str, who: str) -> None:
    module.sow("intermediates", "fixed_point",
               {"iterations": info.iterations, "residual": info.residual,
                "not_converged": jnp.logical_not(info.converged)})
    if on_nonconvergence != "raise":
        return
    conv = info.converged
    if isinstance(conv, jax.core.Tracer):
        checkify.check(jnp.all(conv), f"{who}: the Jacobi inverse did not reach its tolerance "
                       "for {n} example(s) (raise max_iter or tol)",
                       n=jnp.sum(jnp.logical_not(conv)))
        return
    bad = np.nonzero(~np.asarray(conv))[0]
    if bad.size:
        raise RuntimeError(f"{who}: the Jacobi inverse did not reach its tolerance for "
                           f"{bad.size} example(s) (rows {bad[:8].tolist()}; max residual "
                           f"{float(np.max(np.asarray(info.residual))):.3g}, iterations "
                           f"{np.asarray(info.iterations)[bad[:8]].tolist()}); raise "
                           f"max_iter or tol, or use inverse_method='scan'.")


# ------------------------------------------------------------------------------------
# TarFlow block
# ------------------------------------------------------------------------------------

def _uniform_weights(context, num_classes, dtype):
    b = jax.tree_util.tree_leaves(context)[0].shape[0]
    return jnp.full((b, num_classes), 1.0 / num_classes, dtype)


class TransformerAutoregressive(Bijector):
    """TarFlow block (see the module docstring).

    Example::

        block = TransformerAutoregressive(patch_size=4, width=128, depth=4, heads=2,
                                          flip=True, inverse_method="jacobi", chunk_size=8)

    Attributes:
      patch_size: patch side for image inputs (must divide H and W).
      width, depth, heads, mlp_ratio: the causal ViT's width (TarFlow's ``channels``),
        number of layers (``layers_per_block``), heads (must divide ``width``), MLP ratio.
      flip: process tokens in reversed order (TarFlow's ``PermutationFlip``).
      num_classes: class-conditional ViT (labels ``[B]`` or class weights ``[B, K]``).
      cross_attention: the ViT cross-attends to an image context.
      inverse_method: ``"scan"`` (exact, sequential with a KV cache) or ``"jacobi"``.
      chunk_size: Gauss-Seidel-Jacobi chunk (``None``: plain Jacobi over all tokens).
      max_iter: Jacobi cap per chunk (default chunk + 2).
      tol: Jacobi tolerance (default 4 eps of the dtype).
      on_nonconvergence: ``"report"`` (sow diagnostics) or ``"raise"``.
      guidance: classifier-free guidance weight ``w`` of the inverse (0: none).
    """

    input_ranks = (3, 4)

    patch_size: int = 1
    width: int = 128
    depth: int = 2
    heads: int = 2
    mlp_ratio: float = 4.0
    flip: bool = False
    num_classes: Optional[int] = None
    cross_attention: bool = False
    inverse_method: str = "scan"
    chunk_size: Optional[int] = None
    max_iter: Optional[int] = None
    tol: Optional[float] = None
    on_nonconvergence: str = "report"
    guidance: float = 0.0

    def _validate(self, tokens):
        who = type(self).__name__
        _check_vit_args(who, self.width, self.depth, self.heads)
        if tokens.shape[1] < 2:
            raise ValueError(f"{who}: an autoregressive block needs >= 2 tokens; got "
                             f"{tokens.shape[1]} (tokens shape {tuple(tokens.shape)}); use a "
                             f"smaller patch_size.")
        if self.inverse_method not in _INVERSE_METHODS:
            raise ValueError(f"{who}: inverse_method must be one of {_INVERSE_METHODS}, got "
                             f"{self.inverse_method!r}.")
        if self.chunk_size is not None and not _is_int(self.chunk_size):
            raise ValueError(f"{who}: chunk_size must be an int >= 1 or None, got "
                             f"{self.chunk_size!r}.")
        if self.max_iter is not None and not _is_int(self.max_iter):
            raise ValueError(f"{who}: max_iter must be an int >= 1 or None, got "
                             f"{self.max_iter!r}.")
        if self.tol is not None and not (isinstance(self.tol, numbers.Real) and self.tol > 0):
            raise ValueError(f"{who}: tol must be a positive number or None, got {self.tol!r}.")
        if self.on_nonconvergence not in _ON_NONCONVERGENCE:
            raise ValueError(f"{who}: on_nonconvergence must be one of {_ON_NONCONVERGENCE}, "
                             f"got {self.on_nonconvergence!r}.")
        if self.guidance != 0 and self.num_classes is None:
            raise ValueError(f"{who}: guidance={self.guidance!r} needs a class-conditional "
                             f"block (num_classes); classifier-free guidance mixes the "
                             f"conditional and the mean-class outputs.")

    @nn.compact
    def transform(self, x, inverse, context, train):
        who = type(self).__name__
        tokens, _, back = _to_tokens(x, self.patch_size, who)
        self._validate(tokens)
        b, t, d = tokens.shape
        vit = ViT(out_features=2 * d, width=self.width, depth=self.depth, heads=self.heads,
                  mlp_ratio=self.mlp_ratio, causal=True, num_classes=self.num_classes,
                  cross_attention=self.cross_attention, name="vit")
        if self.flip:
            tokens = tokens[:, ::-1]
        if self.is_initializing():
            vit(tokens, context)
        module, variables = vit.unbind()
        guided = inverse and self.guidance != 0
        w = jnp.asarray(self.guidance, tokens.dtype)
        uncond = (_uniform_weights(context, self.num_classes, tokens.dtype)
                  if guided else None)

        def params(xx):
            out = module.apply(variables, xx, context)
            if guided:
                out_u = module.apply(variables, xx, uncond)
                out = out + w * (out - out_u)
            out = jnp.concatenate([jnp.zeros_like(out[:, :1]), out[:, :-1]], axis=1)
            a, bias = jnp.split(out.astype(xx.dtype), 2, axis=-1)
            return a, bias

        if not inverse:
            a, bias = params(tokens)
            z = (tokens - bias) * jnp.exp(-a)
            ld = -jnp.sum(a, axis=(1, 2))
        elif self.inverse_method == "scan":
            z, ld = self._scan_inverse(module, variables, tokens, context, uncond, w)
        else:
            y = tokens

            def update(xx):
                a, bias = params(xx)
                return y * jnp.exp(a) + bias

            z, info = jacobi_solve(update, y, chunk_size=self.chunk_size, tol=self.tol,
                                   max_iter=self.max_iter)
            _report(self, info, self.on_nonconvergence, who)
            a, _ = params(z)
            ld = jnp.sum(a, axis=(1, 2))
        if self.flip:
            z = z[:, ::-1]
        return back(z), ld

    def _scan_inverse(self, module, variables, y, context, uncond, w):
        """Exact inverse: token by token with key/value caches (two with guidance)."""
        b, t, d = y.shape
        guided = uncond is not None
        cache = module.init_cache(b, t, y.dtype)
        caches = (cache, cache) if guided else (cache,)

        def decode(tok, i, c, ctx):
            return module.apply(variables, tok, i, c, ctx, method=ViT.decode)

        def body(carry, i):
            x, caches, total = carry
            tok = lax.dynamic_slice_in_dim(x, i, 1, axis=1)
            out, c0 = decode(tok, i, caches[0], context)
            new = (c0,)
            if guided:
                out_u, c1 = decode(tok, i, caches[1], uncond)
                out = out + w * (out - out_u)
                new = (c0, c1)
            a, bias = jnp.split(out.astype(y.dtype), 2, axis=-1)
            y_next = lax.dynamic_slice_in_dim(y, i + 1, 1, axis=1)
            x = lax.dynamic_update_slice_in_dim(x, y_next * jnp.exp(a) + bias, i + 1, axis=1)
            return (x, new, total + jnp.sum(a, axis=(1, 2))), None

        init = (y, caches, jnp.zeros((b,), y.dtype))
        (x, _, total), _ = lax.scan(body, init, jnp.arange(t - 1))
        return x, total


# ------------------------------------------------------------------------------------
# Jet coupling
# ------------------------------------------------------------------------------------

def coupling_split(kind: str, grid: Tuple[int, int], token_dim: int, seed: int = 0
                   ) -> np.ndarray:
    """Index buffer ``[T, D]`` of a Jet coupling split (see the module docstring).

    Row ``r`` / column ``j`` holds the flat index (into the ``T * D`` token grid) of the
    entry that becomes entry ``(r, j)`` of ``concat(x_1, x_2)``: columns ``< D/2`` are
    ``x_1`` (kept), the others ``x_2`` (transformed). A permutation of ``T * D``.
    """
    who = "coupling_split"
    if kind not in _COUPLING_KINDS:
        raise ValueError(f"{who}: kind must be one of {_COUPLING_KINDS}, got {kind!r}.")
    h, w = grid
    t, d = h * w, token_dim
    if d % 2:
        raise ValueError(f"{who}: a Jet coupling needs an even number of features per token "
                         f"(patch_size^2 * channels), got {d}.")
    if kind == "channel":
        perm = np.random.default_rng(seed).permutation(d)
        return (np.arange(t)[:, None] * d + perm[None, :]).astype(np.int32)
    i, j = np.divmod(np.arange(t), w)
    base = kind.replace("-inv", "")
    parity = {"checkerboard": (i + j) % 2, "vstripes": j % 2, "hstripes": i % 2}[base]
    first, second = np.nonzero(parity == 0)[0], np.nonzero(parity == 1)[0]
    if first.size != second.size:
        what = {"vstripes": "columns", "hstripes": "rows"}.get(base, "tokens")
        raise ValueError(f"{who}: the {base!r} split of a {h}x{w} token grid is uneven "
                         f"({first.size} / {second.size} tokens); use a grid with an even "
                         f"number of {what}, or another kind.")
    if kind.endswith("-inv"):
        first, second = second, first
    half = d // 2
    out = np.empty((t, d), np.int64)
    for s in range(2):
        cols = s * half + np.arange(half)
        out[s::2, :half] = first[:, None] * d + cols[None, :]
        out[s::2, half:] = second[:, None] * d + cols[None, :]
    return out.astype(np.int32)


def _gather(tokens, split):
    b, t, d = tokens.shape
    return tokens.reshape(b, t * d)[:, split.reshape(-1)].reshape(b, t, d)


def _scatter(perm_tokens, split):
    b, t, d = perm_tokens.shape
    flat = split.reshape(-1)
    inv = jnp.zeros_like(flat).at[flat].set(jnp.arange(t * d, dtype=flat.dtype))
    return perm_tokens.reshape(b, t * d)[:, inv].reshape(b, t, d)


class TransformerCoupling(Bijector):
    """Jet coupling (see the module docstring).

    Example::

        layer = TransformerCoupling(kind="checkerboard", patch_size=4, width=256,
                                    depth=2, heads=4)

    Attributes:
      kind: ``"channel"`` or a spatial kind of :data:`SPATIAL_KINDS`.
      seed: seed of the channel permutation (numpy; fixed, not a parameter).
      patch_size: patch side for image inputs (token grid ``H/p x W/p``; a rank-3 token
        input is a ``1 x T`` grid).
      width, depth, heads, mlp_ratio: the bidirectional ViT (Jet's ``emb_dim``,
        ``block_depth``, ``num_heads``).
      scale_factor: ``lambda`` of the scale ``sigma(s) * lambda`` (Jet: 2).
      num_classes: class-conditional ViT; cross_attention: image context.

    The split is the buffer ``variables["buffers"]["split"]`` (int32 ``[T, D]``).
    """

    input_ranks = (3, 4)

    kind: str = "channel"
    seed: int = 0
    patch_size: int = 1
    width: int = 128
    depth: int = 1
    heads: int = 2
    mlp_ratio: float = 4.0
    scale_factor: float = 2.0
    num_classes: Optional[int] = None
    cross_attention: bool = False

    def forward_and_log_det(self, x, *, context=None, train=False):
        return self.couple(x, False, context, train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        return self.couple(y, True, context, train)

    @nn.compact
    def couple(self, x, inverse, context, train, split=None):
        """The coupling on ``x``; ``split`` (``[T, D]`` indices) overrides the buffer."""
        who = type(self).__name__
        if x.ndim not in self.input_ranks:
            raise ValueError(f"{who}: input must be tokens [B, T, D] or an image "
                             f"[B, H, W, C], got shape {tuple(x.shape)}.")
        tokens, grid, back = _to_tokens(x, self.patch_size, who)
        _check_vit_args(who, self.width, self.depth, self.heads)
        if not self.scale_factor > 0:
            raise ValueError(f"{who}: scale_factor must be > 0, got {self.scale_factor!r}.")
        b, t, d = tokens.shape
        if split is None:
            split = self.variable("buffers", "split", lambda: jnp.asarray(
                coupling_split(self.kind, grid, d, self.seed))).value
        if tuple(split.shape) != (t, d):
            raise ValueError(f"{who}: the split buffer has shape {tuple(split.shape)}, but the "
                             f"input has {t} tokens of {d} features.")
        perm = _gather(tokens, split)
        x1, x2 = perm[..., : d // 2], perm[..., d // 2:]
        out = ViT(out_features=d, width=self.width, depth=self.depth, heads=self.heads,
                  mlp_ratio=self.mlp_ratio, causal=False, num_classes=self.num_classes,
                  cross_attention=self.cross_attention, name="vit")(x1, context)
        bias, raw = jnp.split(out.astype(tokens.dtype), 2, axis=-1)
        lam = jnp.asarray(self.scale_factor, tokens.dtype)
        scale = jax.nn.sigmoid(raw) * lam
        ld = jnp.sum(jax.nn.log_sigmoid(raw) + jnp.log(lam), axis=(1, 2))
        if inverse:
            x2, ld = x2 / scale - bias, -ld
        else:
            x2 = (x2 + bias) * scale
        y = _scatter(jnp.concatenate([x1, x2], axis=-1), split)
        return back(y), ld


# ------------------------------------------------------------------------------------
# Stacks (nn.scan over blocks / couplings)
# ------------------------------------------------------------------------------------

def _freeze(kw: dict) -> Tuple[Tuple[str, Any], ...]:
    return tuple(sorted(kw.items()))


class _TarFlowPair(nn.Module):
    """Scan body: a block in the identity order, then one in the flipped order."""

    block_kwargs: Tuple[Tuple[str, Any], ...]
    inverse: bool
    train: bool

    @nn.compact
    def __call__(self, carry, context):
        x, total = carry
        kw = dict(self.block_kwargs)
        blocks = [TransformerAutoregressive(flip=False, name="block0", **kw),
                  TransformerAutoregressive(flip=True, name="block1", **kw)]
        for blk in (reversed(blocks) if self.inverse else blocks):
            fn = blk.inverse_and_log_det if self.inverse else blk.forward_and_log_det
            x, ld = fn(x, context=context, train=self.train)
            total = total + ld
        return (x, total), None


class TarFlowStack(Bijector):
    """``blocks`` TarFlow blocks on tokens, orders alternating (identity, flip, ...).

    The image is patchified once; pairs of blocks (identity, flip) run under ``nn.scan``
    (``remat`` optional), so compile time does not grow with depth; an odd last block
    runs after the scan. ``label_drop`` (``train=True``, rng ``"dropout"``) replaces the
    class labels of that fraction of the examples by uniform class weights, the null
    condition of classifier-free guidance (TarFlow's ``drop_label``).

    Attributes: ``blocks``, ``patch_size``, ``label_drop``, ``remat`` and the
    :class:`TransformerAutoregressive` fields passed to every block (``width``,
    ``depth``, ``heads``, ``mlp_ratio``, ``num_classes``, ``inverse_method``,
    ``chunk_size``, ``max_iter``, ``tol``, ``on_nonconvergence``, ``guidance``).
    """

    input_ranks = (4,)

    blocks: int = 4
    patch_size: int = 4
    width: int = 128
    depth: int = 4
    heads: int = 2
    mlp_ratio: float = 4.0
    num_classes: Optional[int] = None
    inverse_method: str = "scan"
    chunk_size: Optional[int] = None
    max_iter: Optional[int] = None
    tol: Optional[float] = None
    on_nonconvergence: str = "report"
    guidance: float = 0.0
    label_drop: float = 0.0
    remat: bool = False

    def _context(self, context, train, dtype):
        if self.num_classes is None or not train or self.label_drop == 0 or context is None:
            return context
        k = self.num_classes
        if jnp.issubdtype(context.dtype, jnp.integer) and context.ndim == 1:
            ok = check_labels(context, k, "TarFlowStack")
            weights = jax.nn.one_hot(jnp.clip(context, 0, k - 1), k, dtype=dtype)
            weights = jnp.where(ok[:, None], weights, jnp.nan)
        else:
            weights = context.astype(dtype)
        drop = jax.random.bernoulli(self.make_rng("dropout"), self.label_drop,
                                    (weights.shape[0], 1))
        return jnp.where(drop, jnp.full_like(weights, 1.0 / k), weights)

    @nn.compact
    def transform(self, x, inverse, context, train):
        who = "TarFlowStack"
        if not _is_int(self.blocks):
            raise ValueError(f"{who}: blocks must be an int >= 1, got {self.blocks!r}.")
        if not 0.0 <= self.label_drop < 1.0:
            raise ValueError(f"{who}: label_drop must be in [0, 1), got {self.label_drop!r}.")
        tokens, _, back = _to_tokens(x, self.patch_size, who)
        context = self._context(context, train, tokens.dtype)
        kw = dict(width=self.width, depth=self.depth, heads=self.heads,
                  mlp_ratio=self.mlp_ratio, num_classes=self.num_classes,
                  inverse_method=self.inverse_method, chunk_size=self.chunk_size,
                  max_iter=self.max_iter, tol=self.tol,
                  on_nonconvergence=self.on_nonconvergence, guidance=self.guidance)
        pairs, odd = divmod(self.blocks, 2)
        total = jnp.zeros(x.shape[:1], x.dtype)
        last = TransformerAutoregressive(flip=False, name="last", **kw) if odd else None
        if inverse and last is not None:
            tokens, ld = last.inverse_and_log_det(tokens, context=context, train=train)
            total = total + ld
        if pairs:
            body = _TarFlowPair
            if self.remat:
                body = nn.remat(body, static_argnums=())
            scanned = nn.scan(body, variable_axes={"params": 0, "intermediates": 0},
                              split_rngs={"params": True, "dropout": True},
                              in_axes=nn.broadcast, length=pairs, reverse=inverse)
            (tokens, ld), _ = scanned(_freeze(kw), inverse, train, name="pairs")(
                (tokens, jnp.zeros(x.shape[:1], x.dtype)), context)
            total = total + ld
        if not inverse and last is not None:
            tokens, ld = last.forward_and_log_det(tokens, context=context, train=train)
            total = total + ld
        return back(tokens), total


class _JetBody(nn.Module):
    coupling_kwargs: Tuple[Tuple[str, Any], ...]
    inverse: bool
    train: bool

    @nn.compact
    def __call__(self, carry, split, context):
        x, total = carry
        layer = TransformerCoupling(name="coupling", **dict(self.coupling_kwargs))
        y, ld = layer.couple(x, self.inverse, context, self.train, split)
        return (y, total + ld), None


def jet_kinds(num_layers: int, kinds: Sequence[str], spatial_kinds: Sequence[str]
              ) -> Tuple[str, ...]:
    """The split kind of each of ``num_layers`` couplings: ``kinds`` cycled (entries
    ``"channel"`` or ``"spatial"``), each ``"spatial"`` taking the next of
    ``spatial_kinds`` (cycled), as big_vision's ``_interleave_couplings``.
    """
    out, sc = [], itertools.cycle(spatial_kinds)
    for k in itertools.islice(itertools.cycle(kinds), num_layers):
        if k == "channel":
            out.append("channel")
        elif k == "spatial":
            out.append(next(sc))
        else:
            raise ValueError(f"jet_kinds: kinds entries must be 'channel' or 'spatial', got "
                             f"{k!r}.")
    return tuple(out)


class JetStack(Bijector):
    """``num_layers`` Jet couplings under ``nn.scan`` (``nn.remat`` if ``remat``).

    The split of layer ``l`` is ``coupling_split(kinds_l, grid, D, seed + l)``, with
    ``kinds_l`` from :func:`jet_kinds`; the ``[L, T, D]`` stack is the buffer
    ``variables["buffers"]["splits"]`` and is scanned in with the stacked parameters.

    Attributes: ``num_layers``, ``patch_size``, ``kinds`` (Jet ImageNet-64: four
    ``"channel"`` then one ``"spatial"``), ``spatial_kinds``, ``seed``, ``remat``, and
    the coupling's ``width``, ``depth``, ``heads``, ``mlp_ratio``, ``scale_factor``,
    ``num_classes``, ``cross_attention``.
    """

    input_ranks = (4,)

    num_layers: int = 4
    patch_size: int = 4
    kinds: Sequence[str] = ("channel", "channel", "spatial")
    spatial_kinds: Sequence[str] = ("checkerboard", "checkerboard-inv")
    seed: int = 0
    width: int = 128
    depth: int = 1
    heads: int = 2
    mlp_ratio: float = 4.0
    scale_factor: float = 2.0
    num_classes: Optional[int] = None
    cross_attention: bool = False
    remat: bool = False

    @nn.compact
    def transform(self, x, inverse, context, train):
        who = "JetStack"
        if not _is_int(self.num_layers):
            raise ValueError(f"{who}: num_layers must be an int >= 1, got "
                             f"{self.num_layers!r}.")
        for k in self.spatial_kinds:
            if k not in SPATIAL_KINDS:
                raise ValueError(f"{who}: spatial_kinds entries must be in {SPATIAL_KINDS}, "
                                 f"got {k!r}.")
        tokens, grid, back = _to_tokens(x, self.patch_size, who)
        d = tokens.shape[-1]
        kinds = jet_kinds(self.num_layers, self.kinds, self.spatial_kinds)
        splits = self.variable("buffers", "splits", lambda: jnp.asarray(np.stack(
            [coupling_split(k, grid, d, self.seed + i) for i, k in enumerate(kinds)]))).value
        kw = dict(width=self.width, depth=self.depth, heads=self.heads,
                  mlp_ratio=self.mlp_ratio, scale_factor=self.scale_factor,
                  num_classes=self.num_classes, cross_attention=self.cross_attention)
        body = _JetBody
        if self.remat:
            body = nn.remat(body, prevent_cse=False, static_argnums=())
        scanned = nn.scan(body, variable_axes={"params": 0, "intermediates": 0},
                          split_rngs={"params": True, "dropout": True},
                          in_axes=(0, nn.broadcast), length=self.num_layers, reverse=inverse)
        (tokens, total), _ = scanned(_freeze(kw), inverse, train, name="couplings")(
            (tokens, jnp.zeros(x.shape[:1], x.dtype)), splits, context)
        return back(tokens), total
