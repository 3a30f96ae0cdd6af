r"""Lipschitz-constrained self-attention for contractive residual branches (ACF).

Two attentions whose Lipschitz constant (Euclidean norm of the whole ``N x D``
token matrix, i.e. the Frobenius norm) has a closed-form upper bound ``L(W)`` in
terms of their weights; each module divides its attention output by that bound,
so the normalised attention ``F / L`` is 1-Lipschitz, and then mixes it with the
identity through a learnable ``gamma`` (initialised at 0, as in SAGAN-style
attention blocks)::

    out(X) = (X + gamma * F(X) / L) / (1 + |gamma|)      (residual=True, default)
    out(X) = F(X) / L                                    (residual=False)

Both forms are 1-Lipschitz for every parameter value (``(1 + |gamma|) / (1 +
|gamma|)``), so composing them with a contractive branch keeps it contractive:
``Lip(g o out) <= Lip(g) < 1``. This is how Attentive Contractive Flows insert
self-attention into i-ResNet / Residual Flow / i-DenseNet branches.

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

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["L2MultiHeadAttention", "LipNormAttention", "lambert_w0"]


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


def _head_dim(heads: int, features: int, owner: str) -> int:
    if heads < 1 or features % heads:
        raise ValueError(f"{owner}: heads={heads} must be >= 1 and divide the number of "
                         f"features (last axis) {features}.")
    return features // heads


class _NormalisedAttention(nn.Module):
    """Shared wrapper: ``raw(X) -> (F(X), L)``, then normalisation and gamma mixing."""

    heads: int = 1
    residual: bool = True
    gamma_init: float = 0.0

    def raw(self, t, dtype):  # pragma: no cover - abstract
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, *, return_raw: bool = False):
        """Normalised attention of ``x`` ``[B, *positions, D]`` (same shape out).

        With ``return_raw=True`` returns ``(F(x), L)``: the unnormalised attention
        and its Lipschitz upper bound (a scalar), for inspection and tests.
        """
        t = _tokens(x)
        f, bound = self.raw(t, x.dtype)
        f = f.reshape(x.shape)
        if return_raw:
            return f, bound
        f = f / bound
        if not self.residual:
            return f
        gamma = self.param("gamma", nn.initializers.constant(self.gamma_init), ()).astype(x.dtype)
        return (x + gamma * f) / (1 + jnp.abs(gamma))

    def lipschitz_bound(self, x):
        """The bound ``L`` of the unnormalised attention for inputs shaped like ``x``."""
        return self(x, return_raw=True)[1]


class L2MultiHeadAttention(_NormalisedAttention):
    r"""Multi-head L2 self-attention with tied queries and keys (Kim et al. 2021, Eq. (5)).

    For tokens ``X`` (``N x D``), ``H`` heads of width ``d = D / H`` and ``W^{Q,h} = W^{K,h}``
    (``D x d``, tied: required for Lipschitz continuity)::

        P^h_{ij} = softmax_j( -||x_i W^{Q,h} - x_j W^{Q,h}||^2 / sqrt(d) )
        f^h(X)   = P^h X A_h,            A_h = W^{Q,h} W^{Q,h}^T / sqrt(d)
        F(X)     = [f^1(X) W^{V,1}, ..., f^H(X) W^{V,H}] W^O.

    Theorem 3.2 (2-norm): with ``phi^{-1}(N - 1) = W_0((N - 1) / e)`` (Lambert W),

        Lip_2(F) <= sqrt(N / d) (4 W_0((N - 1)/e) + 1)
                    sqrt(sum_h ||W^{Q,h}||_2^2 ||W^{V,h}||_2^2) ||W^O||_2  =:  L,

    computed with exact spectral norms (SVD of the small weight matrices), so ``F / L``
    is 1-Lipschitz: the Contractive-L2-MHA of Kim et al. (Sec. 5), here mixed with the
    identity by a learnable ``gamma`` (see the module docstring).

    Attributes:
      heads: number of heads (must divide the feature dimension).
      residual: mix with the identity through ``gamma`` (default) or return ``F / L``.
      gamma_init: initial ``gamma`` (0: the block starts as the identity).
    """

    def raw(self, t, dtype):
        _, n, dim = t.shape
        d = _head_dim(self.heads, dim, "L2MultiHeadAttention")
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        wq = self.param("query", init, (self.heads, dim, d)).astype(dtype)
        wv = self.param("value", init, (self.heads, dim, d)).astype(dtype)
        wo = self.param("out", nn.initializers.lecun_normal(), (dim, dim)).astype(dtype)
        q = jnp.einsum("bnd,hde->bhne", t, wq)                         # [B, H, N, d]
        sq = jnp.sum(q * q, axis=-1)                                   # [B, H, N]
        dist2 = sq[..., :, None] + sq[..., None, :] - 2 * jnp.einsum("bhie,bhje->bhij", q, q)
        p = jax.nn.softmax(-dist2 / math.sqrt(d), axis=-1)             # [B, H, N, N]
        a = jnp.einsum("hde,hfe->hdf", wq, wq) / math.sqrt(d)          # [H, D, D]
        f = jnp.einsum("bhij,bjd,hdf,hfe->bhie", p, t, a, wv)          # [B, H, N, d]
        f = jnp.transpose(f, (0, 2, 1, 3)).reshape(t.shape[0], n, dim) @ wo
        lam = lambert_w0((n - 1) / math.e)
        norms = jnp.sqrt(jnp.sum(_spectral_norm(wq) ** 2 * _spectral_norm(wv) ** 2))
        bound = math.sqrt(n / d) * (4 * lam + 1) * norms * _spectral_norm(wo)
        return f, bound


class LipNormAttention(_NormalisedAttention):
    r"""Dot-product self-attention with LipschitzNorm (Dasoulas et al. 2021, Sec. 4).

    Per head ``h`` (width ``d = D / H``): ``Q = X W^Q``, ``K = X W^K``, ``V = X W^V``
    (``D x d`` each) and the scores are divided by LipschitzNorm's data-dependent scale::

        S = Q K^T / c(X),     c(X) = max(u v, u w, v w) + eps,
        u = ||Q||_F,  v = max_j ||k_j||,  w = max_j ||v_j||,
        f^h(X) = softmax(S) V,       F(X) = [f^1(X), ..., f^H(X)] W^O.

    The scores are bounded (``|S_ij| <= 1``) and invariant to rescaling ``X``, so
    ``F`` is positively homogeneous and Lipschitz. **Bound used here** (derived for
    this implementation, Frobenius norm over the ``N`` tokens; not the paper's
    constant): writing ``dF = dP V + P dV``, each row of ``dP V`` is
    ``sum_j p_ij dS_ij (v_j - vbar_i)``, of norm ``<= 2 w max_j |dS_ij|``; splitting
    ``dS_ij`` into ``(dq_i . k_j + q_i . dk_j)/c - S_ij dc/c`` and using
    ``c >= uv, uw, vw`` in whichever term is active gives
    ``||dP V||_F <= 2 (||dQ||_F + sqrt(N) (||dQ||_F + 2 ||dK||_F + ||dV||_F))``, and
    ``||P dV||_F <= ||P||_2 ||dV||_F <= sqrt(N) ||dV||_F`` (``P`` row-stochastic).
    Hence, per head,

        L_h = 2 (1 + sqrt(N)) ||W^Q||_2 + 4 sqrt(N) ||W^K||_2 + 3 sqrt(N) ||W^V||_2,
        Lip_2(F) <= sqrt(sum_h L_h^2) ||W^O||_2  =:  L,

    and ``F / L`` is 1-Lipschitz (checked empirically in tests/test_attention.py).

    Attributes:
      heads: number of heads (must divide the feature dimension).
      residual: mix with the identity through ``gamma`` (default) or return ``F / L``.
      gamma_init: initial ``gamma`` (0: the block starts as the identity).
      eps: added to ``c(X)`` (only makes the scores smaller; the bound still holds).
    """

    eps: float = 1e-6

    def raw(self, t, dtype):
        _, n, dim = t.shape
        d = _head_dim(self.heads, dim, "LipNormAttention")
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        wq = self.param("query", init, (self.heads, dim, d)).astype(dtype)
        wk = self.param("key", init, (self.heads, dim, d)).astype(dtype)
        wv = self.param("value", init, (self.heads, dim, d)).astype(dtype)
        wo = self.param("out", nn.initializers.lecun_normal(), (dim, dim)).astype(dtype)
        q = jnp.einsum("bnd,hde->bhne", t, wq)                         # [B, H, N, d]
        k = jnp.einsum("bnd,hde->bhne", t, wk)
        v = jnp.einsum("bnd,hde->bhne", t, wv)
        u = jnp.sqrt(jnp.sum(q * q, axis=(-2, -1)))                    # [B, H]
        kmax = jnp.sqrt(jnp.max(jnp.sum(k * k, axis=-1), axis=-1))
        vmax = jnp.sqrt(jnp.max(jnp.sum(v * v, axis=-1), axis=-1))
        c = jnp.maximum(jnp.maximum(u * kmax, u * vmax), kmax * vmax) + self.eps
        s = jnp.einsum("bhie,bhje->bhij", q, k) / c[..., None, None]
        f = jnp.einsum("bhij,bhje->bhie", jax.nn.softmax(s, axis=-1), v)
        f = jnp.transpose(f, (0, 2, 1, 3)).reshape(t.shape[0], n, dim) @ wo
        rn = math.sqrt(n)
        per_head = (2 * (1 + rn) * _spectral_norm(wq) + 4 * rn * _spectral_norm(wk)
                    + 3 * rn * _spectral_norm(wv))
        bound = jnp.sqrt(jnp.sum(per_head ** 2)) * _spectral_norm(wo)
        return f, bound
