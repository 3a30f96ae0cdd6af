r"""Lipschitz-constrained self-attention for contractive residual branches (ACF).

Two attentions whose Lipschitz constant (Euclidean norm of the whole ``N x D``
token matrix, i.e. the Frobenius norm) has a closed-form upper bound ``L(W)`` in
terms of their weights; each module divides its attention output by that bound,
so the normalised attention ``F / L`` is 1-Lipschitz, and then mixes it with the
identity through a learnable ``gamma`` (initialised at 0, as in SAGAN-style
attention blocks)::

    out(X) = (X + gamma * F(X) / L) / (1 + |gamma|)   (output="normalised", default)
    out(X) = X + gamma * F(X) / L                     (output="eq13": ACF's Eq. 13)
    out(X) = F(X) / L                                 (residual=False)

The normalised form and ``F / L`` are 1-Lipschitz for every parameter value
(``(1 + |gamma|) / (1 + |gamma|)``), so composing them with a contractive branch
keeps it contractive: ``Lip(g2 o out o g1) <= Lip(g2) Lip(g1) < 1``. **ACF's Eq. 13
does not**: its Lipschitz constant is up to ``1 + |gamma|``, so a branch
``g2 o out o g1`` with ``Lip(g1) Lip(g2) <= c`` is only ``c (1 + |gamma|)``-Lipschitz
and stops being a contraction once ``|gamma| >= 1/c - 1`` (0.02 at ``c = 0.98``): the
fixed-point inverse and the log-det series then lose their guarantee (the inverse
reports non-convergence). It is offered for fidelity with the paper; the normalised
form is the default because it keeps every block invertible by construction.
This is how Attentive Contractive Flows insert self-attention into i-ResNet /
Residual Flow / i-DenseNet branches.

Heads are free of the feature count ``D``: each head ``h`` has its own projections of
width ``d`` (``head_features``; default ``ceil(D / H)``, which is Kim et al.'s ``D / H``
when ``H`` divides ``D``), and the output projection maps the ``H d`` concatenated
features back to ``D``; the bounds below hold with this ``d``.

Inputs are ``[batch, *positions, D]`` (e.g. NHWC images, ``N = H W`` tokens of
``D = C`` features); the number of tokens ``N`` is static, so the bounds are
constants of the shapes and the weights.

References:
  H. Kim, G. Papamakarios, A. Mnih. The Lipschitz Constant of Self-Attention. ICML 2021
    (L2 self-attention, Eq. (4)-(5); Lipschitz bound, Theorem 3.2).
  G. Dasoulas, K. Scaman, A. Virmaux. Lipschitz Normalization for Self-Attention Layers
    with Application to Graph Neural Networks. ICML 2021 (LipschitzNorm, Sec. 4).
  A. Mukherjee, B. N. Patro, V. P. Namboodiri. Attentive Contractive Flow with
    Lipschitz Constrained Self-Attention. arXiv:2109.12135 (ACF).
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["L2MultiHeadAttention", "LipNormAttention", "lambert_w0", "lipnorm_paper_constant",
           "LIPNORM_BOUNDS", "OUTPUTS"]


def lambert_w0(z: float, iterations: int = 50) -> float:
    """Principal branch ``W_0(z)`` of the Lambert W function (``W e^W = z``) for ``z >= 0``.

    Halley's iteration from ``w = log(1 + z)`` (cubic convergence; a handful of
    steps reach machine precision for the static values used here). Plain Python:
    it is evaluated on static sequence lengths only.
    """
    if z < 0:
        raise ValueError(f"lambert_w0: z must be >= 0 (principal branch used here), got {z}.")
    w = math.log1p(z)
    for _ in range(iterations):
        ew = math.exp(w)
        f = w * ew - z
        if f == 0.0:
            break
        step = f / (ew * (w + 1) - (w + 2) * f / (2 * w + 2))
        w -= step
        if abs(step) <= 1e-15 * (1 + abs(w)):
            break
    return w


def _tokens(x):
    if x.ndim < 3:
        raise ValueError(f"attention: expected [batch, *positions, features] with at least one "
                         f"position axis, got shape {x.shape}.")
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _spectral_norm(w):
    """Largest singular value of each matrix ``w[..., m, n]`` (exact, by SVD)."""
    return jnp.linalg.svd(w, compute_uv=False)[..., 0]


def _head_dim(heads: int, features: int, head_features: Optional[int], owner: str) -> int:
    """Width ``d`` of each head: ``head_features``, or ``ceil(features / heads)``."""
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"{owner}: heads must be an integer >= 1, got heads={heads!r}.")
    if head_features is None:
        return -(-features // heads)
    if isinstance(head_features, bool) or not isinstance(head_features, int) or head_features < 1:
        raise ValueError(f"{owner}: head_features (width of each head) must be an integer "
                         f">= 1 or None (ceil(features / heads)), got {head_features!r}.")
    return head_features


OUTPUTS = ("normalised", "eq13")


class _NormalisedAttention(nn.Module):
    """Shared wrapper: ``raw(X) -> (F(X), L)``, then normalisation and gamma mixing."""

    heads: int = 1
    residual: bool = True
    gamma_init: float = 0.0
    output: str = "normalised"
    head_features: Optional[int] = None

    def raw(self, t, dtype):  # pragma: no cover - abstract
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, *, return_raw: bool = False):
        """Normalised attention of ``x`` ``[B, *positions, D]`` (same shape out).

        With ``return_raw=True`` returns ``(F(x), L)``: the unnormalised attention
        and its Lipschitz upper bound (a scalar), for inspection and tests.
        """
        if self.output not in OUTPUTS:
            raise ValueError(f"{type(self).__name__}: output must be one of {OUTPUTS} "
                             f"(normalised: (X + gamma F/L) / (1 + |gamma|), 1-Lipschitz; eq13: "
                             f"ACF's X + gamma F/L), got {self.output!r}.")
        t = _tokens(x)
        f, bound = self.raw(t, x.dtype)
        f = f.reshape(x.shape)
        if return_raw:
            return f, bound
        f = f / bound
        if not self.residual:
            return f
        gamma = self.param("gamma", nn.initializers.constant(self.gamma_init), ()).astype(x.dtype)
        if self.output == "eq13":
            return x + gamma * f
        return (x + gamma * f) / (1 + jnp.abs(gamma))

    def lipschitz_bound(self, x):
        """The bound ``L`` of the unnormalised attention for inputs shaped like ``x``."""
        return self(x, return_raw=True)[1]


class L2MultiHeadAttention(_NormalisedAttention):
    r"""Multi-head L2 self-attention with tied queries and keys (Kim et al. 2021, Eq. (5)).

    For tokens ``X`` (``N x D``), ``H`` heads of width ``d`` (``head_features``, default
    ``ceil(D / H)``: Kim et al.'s ``D / H`` when ``H`` divides ``D``) and
    ``W^{Q,h} = W^{K,h}`` (``D x d``, tied: required for Lipschitz continuity)::

        P^h_{ij} = softmax_j( -||x_i W^{Q,h} - x_j W^{Q,h}||^2 / sqrt(d) )
        f^h(X)   = P^h X A_h,            A_h = W^{Q,h} W^{Q,h}^T / sqrt(d)
        F(X)     = [f^1(X) W^{V,1}, ..., f^H(X) W^{V,H}] W^O      (W^O: H d x D).

    Theorem 3.2 (2-norm): with ``phi^{-1}(N - 1) = W_0((N - 1) / e)`` (Lambert W),

        Lip_2(F) <= sqrt(N / d) (4 W_0((N - 1)/e) + 1)
                    sqrt(sum_h ||W^{Q,h}||_2^2 ||W^{V,h}||_2^2) ||W^O||_2  =:  L,

    computed with exact spectral norms (SVD of the small weight matrices), so ``F / L``
    is 1-Lipschitz: the Contractive-L2-MHA of Kim et al. (Sec. 5), here mixed with the
    identity by a learnable ``gamma`` (see the module docstring). Departures from ACF's
    Eq. (12): ACF writes ``W_0(N / e)`` for ``phi^{-1}(N - 1)`` (a typo; the bound here is
    smaller by 2.3% at N = 16 and < 0.1% at N >= 256) and the single-head ``sqrt(N / D)``;
    the multi-head factor ``sqrt(N / d)`` with the sum over heads is Kim et al.'s.

    Attributes:
      heads: number of heads (any integer >= 1).
      head_features: width ``d`` of each head (default ``ceil(D / H)``).
      residual: mix with the identity through ``gamma`` (default) or return ``F / L``.
      output: ``"normalised"`` (1-Lipschitz) or ``"eq13"`` (ACF's ``X + gamma F / L``).
      gamma_init: initial ``gamma`` (0: the block starts as the identity).
    """

    def raw(self, t, dtype):
        _, n, dim = t.shape
        d = _head_dim(self.heads, dim, self.head_features, "L2MultiHeadAttention")
        h = self.heads
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        wq = self.param("query", init, (h, dim, d)).astype(dtype)
        wv = self.param("value", init, (h, dim, d)).astype(dtype)
        wo = self.param("out", nn.initializers.lecun_normal(), (h * d, dim)).astype(dtype)
        q = jnp.einsum("bnd,hde->bhne", t, wq)                         # [B, H, N, d]
        sq = jnp.sum(q * q, axis=-1)                                   # [B, H, N]
        dist2 = sq[..., :, None] + sq[..., None, :] - 2 * jnp.einsum("bhie,bhje->bhij", q, q)
        p = jax.nn.softmax(-dist2 / math.sqrt(d), axis=-1)             # [B, H, N, N]
        a = jnp.einsum("hde,hfe->hdf", wq, wq) / math.sqrt(d)          # [H, D, D]
        f = jnp.einsum("bhij,bjd,hdf,hfe->bhie", p, t, a, wv)          # [B, H, N, d]
        f = jnp.transpose(f, (0, 2, 1, 3)).reshape(t.shape[0], n, h * d) @ wo
        lam = lambert_w0((n - 1) / math.e)
        norms = jnp.sqrt(jnp.sum(_spectral_norm(wq) ** 2 * _spectral_norm(wv) ** 2))
        bound = math.sqrt(n / d) * (4 * lam + 1) * norms * _spectral_norm(wo)
        return f, bound


LIPNORM_BOUNDS = ("derived", "paper")


def lipnorm_paper_constant(m: int, n: int) -> float:
    """ACF's Eq. (15) LipNorm constant ``e^sqrt(3) sqrt(m / n) + 2 sqrt(6)`` (10.55 for
    self-attention, ``m = n``).
    """
    return math.exp(math.sqrt(3.0)) * math.sqrt(m / n) + 2 * math.sqrt(6.0)


class LipNormAttention(_NormalisedAttention):
    r"""Dot-product self-attention with LipschitzNorm (Dasoulas et al. 2021, Sec. 4).

    Per head ``h`` (width ``d``, ``head_features``, default ``ceil(D / H)``):
    ``Q = X W^Q``, ``K = X W^K``, ``V = X W^V`` (``D x d`` each) and the scores are
    divided by LipschitzNorm's data-dependent scale (ACF Eq. (14))::

        S = Q K^T / c(X),     c(X) = max(u v, u w, v w) + eps,
        u = ||Q||_F,  v = max_j ||k_j||,  w = max_j ||v_j||,
        f^h(X) = softmax(S) V,       F(X) = [f^1(X), ..., f^H(X)] W^O   (W^O: H d x D).

    The scores are bounded (``|S_ij| <= 1``) and invariant to rescaling ``X``, so
    ``F`` is positively homogeneous and Lipschitz. Two normalisers ``L``
    (``bound``):

    * ``"derived"`` (default; a true upper bound, derived for this implementation,
      Frobenius norm over the ``N`` tokens): writing ``dF = dP V + P dV``, each row of
      ``dP V`` is ``sum_j p_ij dS_ij (v_j - vbar_i)``, of norm ``<= 2 w max_j |dS_ij|``;
      splitting ``dS_ij`` into ``(dq_i . k_j + q_i . dk_j)/c - S_ij dc/c`` and using
      ``c >= uv, uw, vw`` in whichever term is active gives
      ``||dP V||_F <= 2 (||dQ||_F + sqrt(N) (||dQ||_F + 2 ||dK||_F + ||dV||_F))``, and
      ``||P dV||_F <= ||P||_2 ||dV||_F <= sqrt(N) ||dV||_F`` (``P`` row-stochastic).
      Hence, per head,

          L_h = 2 (1 + sqrt(N)) ||W^Q||_2 + 4 sqrt(N) ||W^K||_2 + 3 sqrt(N) ||W^V||_2,
          Lip_2(F) <= sqrt(sum_h L_h^2) ||W^O||_2  =:  L,

      and ``F / L`` is 1-Lipschitz (checked by SVD of the exact Jacobian in
      tests/test_attention_paper.py).
    * ``"paper"``: ACF's Eq. (15) constant ``e^sqrt(3) sqrt(m/n) + 2 sqrt(6)`` with
      ``m = n = N`` (10.55), which ACF divides by. **It is not a bound on this ``F``**:
      it ignores the weights (``F`` is linear in ``W^V`` and ``W^O``, so ``Lip(F)`` grows
      without limit with them) and bounds Dasoulas et al.'s normalised *score* function
      under their assumptions, not the attention output. Measured maxima of the exact
      Jacobian's spectral norm of ``F / 10.55`` exceed 1 (docs/attention.md), so with this
      option the block is not guaranteed to be a contraction. Offered for fidelity.

    Attributes:
      heads: number of heads (any integer >= 1).
      head_features: width ``d`` of each head (default ``ceil(D / H)``).
      residual: mix with the identity through ``gamma`` (default) or return ``F / L``.
      output: ``"normalised"`` (1-Lipschitz with ``bound="derived"``) or ``"eq13"``.
      bound: ``"derived"`` (default) or ``"paper"`` (see above).
      gamma_init: initial ``gamma`` (0: the block starts as the identity).
      eps: added to ``c(X)`` (only makes the scores smaller; the bound still holds).
    """

    eps: float = 1e-6
    bound: str = "derived"

    def raw(self, t, dtype):
        _, n, dim = t.shape
        if self.bound not in LIPNORM_BOUNDS:
            raise ValueError(f"LipNormAttention: bound must be one of {LIPNORM_BOUNDS} "
                             f"(derived: an upper bound of Lip(F); paper: ACF Eq. 15's "
                             f"constant), got {self.bound!r}.")
        d = _head_dim(self.heads, dim, self.head_features, "LipNormAttention")
        h = self.heads
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        wq = self.param("query", init, (h, dim, d)).astype(dtype)
        wk = self.param("key", init, (h, dim, d)).astype(dtype)
        wv = self.param("value", init, (h, dim, d)).astype(dtype)
        wo = self.param("out", nn.initializers.lecun_normal(), (h * d, dim)).astype(dtype)
        q = jnp.einsum("bnd,hde->bhne", t, wq)                         # [B, H, N, d]
        k = jnp.einsum("bnd,hde->bhne", t, wk)
        v = jnp.einsum("bnd,hde->bhne", t, wv)
        u = jnp.sqrt(jnp.sum(q * q, axis=(-2, -1)))                    # [B, H]
        kmax = jnp.sqrt(jnp.max(jnp.sum(k * k, axis=-1), axis=-1))
        vmax = jnp.sqrt(jnp.max(jnp.sum(v * v, axis=-1), axis=-1))
        c = jnp.maximum(jnp.maximum(u * kmax, u * vmax), kmax * vmax) + self.eps
        s = jnp.einsum("bhie,bhje->bhij", q, k) / c[..., None, None]
        f = jnp.einsum("bhij,bhje->bhie", jax.nn.softmax(s, axis=-1), v)
        f = jnp.transpose(f, (0, 2, 1, 3)).reshape(t.shape[0], n, h * d) @ wo
        if self.bound == "paper":
            return f, jnp.asarray(lipnorm_paper_constant(n, n), dtype)
        rn = math.sqrt(n)
        per_head = (2 * (1 + rn) * _spectral_norm(wq) + 4 * rn * _spectral_norm(wk)
                    + 3 * rn * _spectral_norm(wv))
        bound = jnp.sqrt(jnp.sum(per_head ** 2)) * _spectral_norm(wo)
        return f, bound
