"""Invertible attentions for Glow-style flows: AttnFlow's iMap and iTrans.

Reference: R. S. Sukthanker, Z. Huang, S. Kumar, R. Timofte, L. Van Gool,
"Generative Flows with Invertible Attentions", CVPR 2022 (arXiv:2106.03959),
Sec. 3.2 (map-based attention, iMap) and Sec. 3.3 (transformer-based attention,
iTrans), Fig. 2 (c) and (d).

Both attentions split the input ``x`` of shape ``[B, H, W, C]`` with a **3-D
checkerboard** mask over (height, width, channel),

    M[i, j, c] = 1  if (i + j + c + parity) is even   (the "masked" half),

compute attention weights from the masked half ``M * x`` only, and apply them to
the unmasked half ``(1 - M) * x``. The Jacobian is then block triangular (the
masked half does not depend on the unmasked half), so the log-det is that of
the two diagonal blocks, and the inverse recovers the masked half first, then
recomputes the attention from it (the paper's "masked scheme", Eqs. 4-9).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.bijectors.base import Bijector

__all__ = ["IMap", "ITrans", "checkerboard_mask", "attention_weight_mask", "ITRANS_MATRICES",
           "ITRANS_ATTENTION_MASKS"]


def checkerboard_mask(height: int, width: int, channels: int, parity: int = 0) -> np.ndarray:
    """The 3-D checkerboard ``M[i, j, c] = ((i + j + c + parity) % 2 == 0)`` as float
    ``[H, W, C]``.
    """
    i = np.arange(height)[:, None, None]
    j = np.arange(width)[None, :, None]
    c = np.arange(channels)[None, None, :]
    return ((i + j + c + parity) % 2 == 0).astype(np.float32)


class IMap(Bijector):
    """Map-based invertible attention (iMap; Sukthanker et al. 2022, Sec. 3.2, Fig. 2c).

    With the 3-D checkerboard ``M`` (see the module docstring) and ``x_m = M * x``:

        z      = x_m W + b                       (1x1 convolution over channels, W: C x C)
        a(h,w) = eps + (1 - eps) sigmoid(mean_c z(h,w,c) + offset)   (one value per position)
        y      = M * x * sigma + (1 - M) * x * a,     sigma_c = eps + (1 - eps) sigmoid(s_c)

    ``a`` depends only on the masked half, so ``dy/dx`` is block triangular with
    diagonal blocks ``diag(sigma)`` (masked entries) and ``diag(a)`` (unmasked
    entries)::

        log|det dy/dx| = sum_{masked (h,w,c)} log sigma_c + sum_{(h,w)} n_u(h,w) log a(h,w),

    where ``n_u(h, w)`` is the number of unmasked channels at position (h, w).
    Inverse (closed form): ``x_m = M * y / sigma``, recompute ``a`` from ``x_m``,
    then ``x_u = (1 - M) * y / a``.

    Invertibility holds for every parameter value: ``a, sigma`` lie in
    ``[eps, 1)``, so every division is by at least ``eps``.

    Attributes:
      offset_init: initial ``offset`` (learnable). The paper's code starts at 8
        (attention ~ 1); 2.0 (as Glow's ``sigmoid(h + 2)``) keeps the gradients
        of the sigmoid useful at the start of training.
      scale_init: initial value of the learnable ``s`` of the masked half's scale.
      eps: floor of the attention values and scales (the paper's code adds 1e-5).
      parity: which half of the checkerboard is masked (0 or 1); alternate it
        between steps so that both halves get attended.
    """

    input_ranks = (4,)

    offset_init: float = 2.0
    scale_init: float = 2.0
    eps: float = 1e-5
    parity: int = 0

    @nn.compact
    def transform(self, x, inverse, context, train):
        if self.parity not in (0, 1):
            raise ValueError(f"IMap: parity must be 0 or 1, got {self.parity}.")
        _, h, w, c = x.shape
        dtype = x.dtype
        mask = jnp.asarray(checkerboard_mask(h, w, c, self.parity), dtype)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (c, c)).astype(dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,)).astype(dtype)
        offset = self.param("offset", nn.initializers.constant(self.offset_init), ()).astype(dtype)
        s = self.param("s", nn.initializers.constant(self.scale_init), (c,)).astype(dtype)
        eps = jnp.asarray(self.eps, dtype)

        def attention(x_masked):
            z = jnp.einsum("bhwc,cd->bhwd", x_masked, kernel) + bias
            pooled = jnp.mean(z, axis=-1)                          # [B, H, W]
            return eps + (1 - eps) * jax.nn.sigmoid(pooled + offset)

        sigma = eps + (1 - eps) * jax.nn.sigmoid(s)                # [C]
        if inverse:
            x_m = mask * x / sigma
            a = attention(x_m)
            out = x_m + (1 - mask) * x / a[..., None]
        else:
            x_m = mask * x
            a = attention(x_m)
            out = x_m * sigma + (1 - mask) * x * a[..., None]
        n_unmasked = jnp.sum(1 - mask, axis=-1)                    # [H, W]
        log_det = (jnp.sum(jnp.log(a) * n_unmasked, axis=(1, 2))
                   + jnp.sum(mask * jnp.log(sigma)))
        return out, (-log_det if inverse else log_det)


ITRANS_MATRICES = ("dominant", "offset")
ITRANS_ATTENTION_MASKS = ("none", "checkerboard")


def attention_weight_mask(n: int) -> np.ndarray:
    """The checkerboard ``M[i, j] = ((i + j) % 2 == 0)`` on the ``N x N`` attention weights
    (AttnFlow supplement Fig. 1a, ``attn_mask = checkerboard`` in its pseudo-code); the
    diagonal is kept.
    """
    i = np.arange(n)
    return ((i[:, None] + i[None, :]) % 2 == 0).astype(np.float32)


class ITrans(Bijector):
    """Transformer-based invertible attention (iTrans; Sukthanker et al. 2022, Sec. 3.3, Fig. 2d).

    Tokens are non-overlapping ``p_h x p_w`` patches: ``patch_size=p`` (an even int:
    ``p x p`` patches, ``N = HW / p^2``) or ``patch_size="half"`` (the supplement's
    pseudo-code, ``p = W // 2``: patches of half the side, a 2 x 2 grid of ``N = 4``
    tokens of ``(H/2)(W/2) C`` features at every level). With ``x_m = M * x`` (3-D
    checkerboard), queries and keys are convolutions of the masked input only::

        Q = conv_q(x_m),  K = conv_k(x_m)       (kernel_size x kernel_size)

    with ``heads`` heads, each its own ``d`` query/key channels (``head_channels``;
    default ``ceil(qk_channels / heads)``, ``qk_channels`` defaulting to the input
    channels: when ``heads`` divides ``qk_channels`` this is one ``qk_channels``-wide
    convolution split among the heads). Head ``h`` gives the row-stochastic
    ``A_h = softmax(Q_h K_h^T / sqrt(p_h p_w d))`` (N x N), and the heads are **summed**
    as in the paper (supplement Sec. 8), ``A = sum_h A_h``. Optionally
    (``attention_mask="checkerboard"``, the supplement's Fig. 1a) ``A`` is multiplied
    elementwise by the checkerboard ``M_A[i, j] = ((i + j) % 2 == 0)`` over token
    indices (diagonal kept). The unmasked half of every token (its value,
    ``V = (1 - M) * x`` as an ``N x p_h p_w C`` matrix) is multiplied by ``T``, while the
    masked half passes unchanged::

        y = M * x + (1 - M) * (T V),

    with ``T`` one of (``matrix_form``):

    * ``"dominant"`` (default): ``T = (offset I + A) / (offset + heads)`` with
      ``offset = heads * (1 + margin)``, ``margin = min_margin + softplus(raw) >
      min_margin``. The rows of ``A`` sum to at most ``heads`` (exactly, without the
      weight mask), so the off-diagonal row sums of ``offset I + A`` are
      ``<= heads < offset <= offset + A_ii``: ``T`` is strictly (row) diagonally dominant
      with positive diagonal, hence nonsingular with ``det T > 0`` (Levy-Desplanques /
      Gershgorin), and with the dominance margin ``delta = min_i (T_ii - sum_{j!=i}
      |T_ij|) >= margin / (2 + margin)`` one has ``||T^{-1}||_inf <= 1 / delta`` (Varah
      1975): the inverse and the log-det stay numerically stable whatever the queries
      and keys. This is a departure from the paper (its ``T`` is the next form) kept as
      the default **for stability**: the supplement (Sec. 8) reports that its
      attentions' inverses and log-dets "are often numerically unstable" in deeper
      flows, and with the free offset nothing prevents ``T`` from becoming singular.
    * ``"offset"``: the paper's ``T = A + offset I`` with a free learnable scalar
      ``offset`` (init ``offset_init``). Invertible only while ``T`` is (the log-det is
      ``log|det T|``); no guarantee.

    Because ``p_h`` and ``p_w`` are even, every token has the same mask pattern, so each
    feature column of a token is wholly masked or wholly unmasked and ``T`` mixes only
    unmasked columns. ``T`` depends on the masked half only, hence::

        log|det dy/dx| = n_cols * log|det T|,       n_cols = number of unmasked columns
                                                    (= p_h p_w C / 2),

    and the inverse solves ``T V = y_u`` for the unmasked half.

    Attributes:
      heads: number of attention heads (any integer >= 1; the paper's ablation: 1, 3,
        5, 7).
      patch_size: even token side ``p`` dividing H and W, or ``"half"`` (``p = side/2``,
        which must then be even).
      kernel_size: spatial size of the query/key convolutions (the paper uses 1).
      qk_channels: channels of queries and keys (default: the input channels).
      head_channels: query/key channels of each head (default
        ``ceil(qk_channels / heads)``).
      matrix_form: ``"dominant"`` (default) or ``"offset"`` (see above).
      attention_mask: ``"none"`` (default) or ``"checkerboard"`` (Fig. 1a).
      min_margin: lower bound of ``margin`` (``"dominant"``).
      margin_init: initial ``margin``; ``T`` starts as ``2/3 I + 1/3 A/heads`` at 1.0.
      offset_init: initial ``offset`` of ``matrix_form="offset"``.
      parity: which half of the checkerboard is masked (0 or 1).
    """

    input_ranks = (4,)

    heads: int = 1
    patch_size: Union[int, str] = 2
    kernel_size: int = 1
    qk_channels: Optional[int] = None
    head_channels: Optional[int] = None
    matrix_form: str = "dominant"
    attention_mask: str = "none"
    min_margin: float = 0.05
    margin_init: float = 1.0
    offset_init: float = 1.0
    parity: int = 0

    def _patch(self, h: int, w: int) -> Tuple[int, int]:
        """``(p_h, p_w)`` for an image of ``h x w``, validated."""
        if self.patch_size == "half":
            ph, pw = h // 2, w // 2
            if h % 2 or w % 2 or ph % 2 or pw % 2:
                raise ValueError(f"ITrans: patch_size='half' needs sides divisible by 4 (even "
                                 f"tokens of half the side, so that every token has the same "
                                 f"mask pattern), got an image of {h}x{w}.")
            return ph, pw
        p = self.patch_size
        if isinstance(p, bool) or not isinstance(p, int) or p < 2 or p % 2:
            raise ValueError(f"ITrans: patch_size must be an even integer >= 2 (the 3-D "
                             f"checkerboard must give every token the same mask) or 'half', "
                             f"got {p!r}.")
        if h % 2 or w % 2:
            raise ValueError(f"ITrans: the checkerboard over patches needs an even spatial size, "
                             f"got an image of {h}x{w}.")
        if h % p or w % p:
            raise ValueError(f"ITrans: patch_size={p} must divide the image size {h}x{w}.")
        return p, p

    def _head_channels(self, c: int) -> Tuple[int, int]:
        """``(heads * d, d)``: total query/key channels and channels per head."""
        qk = self.qk_channels or c
        d = self.head_channels or -(-qk // self.heads)
        return self.heads * d, d

    def _validate(self, x):
        _, h, w, c = x.shape
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
            raise ValueError(f"ITrans: heads must be an integer >= 1, got heads={self.heads!r}.")
        for name in ("qk_channels", "head_channels"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"ITrans: {name} must be an integer >= 1 or None, got {v!r}.")
        self._patch(h, w)
        if self.parity not in (0, 1):
            raise ValueError(f"ITrans: parity must be 0 or 1, got {self.parity}.")
        if self.matrix_form not in ITRANS_MATRICES:
            raise ValueError(f"ITrans: matrix_form must be one of {ITRANS_MATRICES} "
                             f"(dominant: invertible by construction; offset: the paper's "
                             f"A + offset I), got {self.matrix_form!r}.")
        if self.attention_mask not in ITRANS_ATTENTION_MASKS:
            raise ValueError(f"ITrans: attention_mask must be one of {ITRANS_ATTENTION_MASKS}, "
                             f"got {self.attention_mask!r}.")
        if self.min_margin <= 0 or self.margin_init <= self.min_margin:
            raise ValueError(f"ITrans: need 0 < min_margin < margin_init, got "
                             f"min_margin={self.min_margin}, margin_init={self.margin_init}.")

    def _tokens(self, x):
        b, h, w, c = x.shape
        ph, pw = self._patch(h, w)
        t = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
        return t.reshape(b, (h // ph) * (w // pw), ph, pw, c)

    def _untokens(self, t, shape):
        b, h, w, c = shape
        ph, pw = self._patch(h, w)
        t = t.reshape(b, h // ph, w // pw, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
        return t.reshape(b, h, w, c)

    @nn.compact
    def matrix(self, x_masked):
        """``T`` of shape ``[B, N, N]`` computed from the masked input ``M * x``."""
        _, _, _, c = x_masked.shape
        dtype = x_masked.dtype
        qk, dh = self._head_channels(c)
        conv = lambda name: nn.Conv(qk, (self.kernel_size, self.kernel_size), padding="SAME",
                                    use_bias=False, dtype=dtype, name=name)
        q = self._tokens(conv("query")(x_masked))                  # [B, N, ph, pw, qk]
        k = self._tokens(conv("key")(x_masked))
        b, n = q.shape[:2]
        q = q.reshape(b, n, -1, self.heads, dh)                    # [B, N, ph*pw, heads, dh]
        k = k.reshape(b, n, -1, self.heads, dh)
        scale = 1.0 / np.sqrt(q.shape[2] * dh)
        scores = jnp.einsum("bifhd,bjfhd->bhij", q, k) * scale
        attn = jnp.sum(jax.nn.softmax(scores, axis=-1), axis=1)    # [B, N, N], row sums = heads
        if self.attention_mask == "checkerboard":
            attn = attn * jnp.asarray(attention_weight_mask(n), dtype)
        eye = jnp.eye(n, dtype=dtype)
        if self.matrix_form == "offset":
            offset = self.param("offset", nn.initializers.constant(self.offset_init),
                                ()).astype(dtype)
            return attn + offset * eye
        raw_init = float(np.log(np.expm1(self.margin_init - self.min_margin)))
        raw = self.param("raw_margin", nn.initializers.constant(raw_init), ()).astype(dtype)
        margin = self.min_margin + jax.nn.softplus(raw)
        offset = self.heads * (1 + margin)
        return (offset * eye + attn) / (offset + self.heads)

    def transform(self, x, inverse, context, train):
        self._validate(x)
        _, h, w, c = x.shape
        dtype = x.dtype
        ph, pw = self._patch(h, w)
        mask = jnp.asarray(checkerboard_mask(h, w, c, self.parity), dtype)
        x_m = mask * x
        t_mat = self.matrix(x_m)                                # [B, N, N]
        v = self._tokens(x)
        b, n = v.shape[:2]
        v = v.reshape(b, n, -1)                                    # [B, N, ph*pw*C]
        if inverse:
            mixed = jnp.linalg.solve(t_mat, v)
        else:
            mixed = jnp.einsum("bij,bjf->bif", t_mat, v)
        mixed = self._untokens(mixed.reshape(b, n, ph, pw, c), x.shape)
        out = x_m + (1 - mask) * mixed
        patch_mask = checkerboard_mask(ph, pw, c, self.parity)
        n_cols = int(np.sum(1 - patch_mask))
        log_det = n_cols * jnp.linalg.slogdet(t_mat)[1]
        return out, (-log_det if inverse else log_det)
