r"""Estimators of ``log det(I + J_g(x))`` for residual maps ``f(x) = x + g(x)``, ``Lip(g) < 1``.

Every estimator takes a **batched** residual function ``g(params, x)``, ``[B, *event] ->
[B, *event]`` that acts on each example independently (so its Jacobian is block
diagonal), the parameters ``params`` as an explicit argument, and a batch ``x``; it
returns ``(g(params, x), logdet)`` with ``logdet`` of shape ``[B]``, so a residual block
gets ``y = x + g(x)`` without evaluating ``g`` twice. The Hutchinson-based estimators
work with vector-Jacobian products of the batched ``g`` (one ``jax.vjp`` linearisation,
then one transposed product per term), which is much cheaper than per-example
Jacobians; :func:`logdet_exact` builds per-example Jacobians by calling ``g`` on
``[1, *event]`` slices under ``vmap``.

Maths (Behrmann et al. 2019, i-ResNet, Thm 1 / eq. 6; Chen et al. 2019, Residual
Flows, eq. 6-8). For ``rho(J) < 1``,

.. math::

    \log\det(I + J) = \operatorname{tr}\log(I + J)
                    = \sum_{k \ge 1} \frac{(-1)^{k+1}}{k} \operatorname{tr}(J^k),
    \qquad \operatorname{tr}(A) = \mathbb{E}_v[v^\top A v]

for probes with ``E[v v^T] = I`` (Hutchinson: standard Gaussian or Rademacher;
``probe="exact"`` uses the ``D`` basis vectors and gives the exact trace of each
power). ``v^T J^k v`` is computed as ``<u_k, v>`` with ``u_k = J^T u_{k-1}``,
``u_0 = v`` (vjp).

* :func:`logdet_exact`: ``slogdet`` of the per-example ``jacfwd`` Jacobian, O(D^3)
  (tests, 2-D densities). Differentiable.
* :func:`logdet_series`: the first ``n_terms`` terms (i-ResNet). **Biased**: the
  truncation drops ``sum_{k>n} (-1)^{k+1}/k tr(J^k)``, whose size is at most
  :func:`series_tail_bound` ``= D Lip^{n+1} / ((n+1)(1-Lip))``. Gradients by backprop
  through the ``n`` vjps (memory grows linearly with ``n``).
* :func:`logdet_roulette`: Russian roulette (Chen et al. eq. 7): ``n_exact_terms``
  terms always, then ``N`` further terms with ``N ~ Geometric(p)`` (``P(N >= j) =
  (1-p)^j``, ``N >= 0``, mean ``(1-p)/p``) or ``Poisson(lam)`` (``P(N >= j) =
  gammainc(j, lam)``), term ``n_exact_terms + j`` multiplied by ``1 / P(N >= j)``. Since
  ``E[1{N >= j}] = P(N >= j)``, the estimator is unbiased. One ``N`` per call (shared by the
  batch, as in the reference implementation), drawn on device. This variant is
  differentiated by backprop through the terms, so XLA needs a static bound: a
  ``lax.scan`` over ``max_terms`` steps whose steps beyond ``n_exact_terms + N`` are
  skipped by ``lax.cond``. The cap makes the estimator's mean the ``max_terms``-term
  truncated series, i.e. its bias is the series tail beyond ``max_terms``, bounded by
  :func:`series_tail_bound`: with ``max_terms = 64`` about ``1e-21 D`` at ``Lip = 0.5``,
  ``4e-12 D`` at ``Lip = 0.7`` (the tests' case) and ``1.6e-4 D`` at ``Lip = 0.9``. The bound
  is a worst case (``|tr(J^k)| <= D Lip^k``; the spectral radius of ``J`` is usually well
  below ``Lip``), but for ``Lip`` near 1 pass a larger ``max_terms`` or use
  :func:`logdet_neumann`, whose value loop has no cap and no bias.
* :func:`logdet_neumann`: the Residual Flows estimator. The **value** is the Russian-roulette
  estimate computed in an uncapped ``lax.while_loop`` (exactly ``n_exact_terms + N``
  vjps, no cap, no bias) under ``stop_gradient``; the **gradient** is the Neumann-series
  estimator (Chen et al. 2019, Thm 2):

  .. math::

      \partial_\theta \log\det(I + J) = \mathbb{E}_{N, v}\Big[\Big(\sum_{k=1}^{n+N}
          \frac{(-1)^{k+1}}{P(N \ge k - n)} v^\top J^{k-1}\Big)\, \partial_\theta J\, v\Big]

  (weight 1 for ``k <= n = n_exact_terms``), implemented with the surrogate
  ``stop_gradient(w)^T J v`` whose ``w`` is accumulated in the same loop, so that the
  returned quantity is ``stop_gradient(value) + s - stop_gradient(s)``: its value is the
  log-det estimate and its gradient w.r.t. ``x`` and ``params`` is the unbiased Neumann
  estimate, from ONE differentiable vjp per probe. Memory does not grow with the
  number of terms. ``distribution=None`` uses exactly ``n_exact_terms`` terms (the
  truncated series, whose gradient this then estimates without bias).
* :func:`logdet_neumann_naive`: the same value/gradient estimator, differentiated by
  plain backprop through the series (memory grows with the number of terms); for the
  memory benchmark.
* ``estimator="eval"`` of :func:`log_det`: deterministic high-accuracy evaluation: the
  20-term series with a fixed probe set (``key`` defaults to ``PRNGKey(0)``, 8 Gaussian
  probes), or ``probe="exact"`` for the exact trace of each power when ``D`` is small.

Example::

    gx, ld = log_det(g, params, x, key=key, estimator="neumann", n_exact_terms=2, p=0.5)
    y = x + gx
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammainc

__all__ = [
    "ESTIMATORS",
    "log_det",
    "logdet_exact",
    "logdet_series",
    "logdet_roulette",
    "logdet_neumann",
    "logdet_neumann_naive",
    "sample_num_terms",
    "tail_probability",
    "series_tail_bound",
]

PyTree = Any
GFn = Callable[[PyTree, jax.Array], jax.Array]

ESTIMATORS = ("exact", "series", "roulette", "neumann", "neumann_naive", "eval")
_PROBES = ("gaussian", "rademacher", "exact")
_DISTRIBUTIONS = ("geometric", "poisson", None)


# ----------------------------------------------------------------------------- checks
def _check_x(fn, x):
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{fn}: x must be batched [B, *event] with at least 2 dims, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: x must be a floating-point array, got dtype {x.dtype}")
    return x


def _check_g(fn, g, params, x):
    out = jax.eval_shape(g, params, x)
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"{fn}: g(params, x) must return the shape and dtype of x "
                         f"{x.shape} {x.dtype}, got {out.shape} {out.dtype}")


def _check_int(fn, name, val, lo):
    if not (isinstance(val, int) and not isinstance(val, bool) and val >= lo):
        raise ValueError(f"{fn}: {name} must be an integer >= {lo}, got {val!r}")


def _check_probe(fn, probe):
    if probe not in _PROBES:
        raise ValueError(f"{fn}: probe must be one of {_PROBES}, got {probe!r}")


def _check_distribution(fn, distribution, p, lam, allow_none):
    allowed = _DISTRIBUTIONS if allow_none else _DISTRIBUTIONS[:2]
    if distribution not in allowed:
        raise ValueError(f"{fn}: distribution must be one of {allowed}, got {distribution!r}")
    if distribution == "geometric" and not (isinstance(p, (int, float)) and 0.0 < p < 1.0):
        raise ValueError(
            f"{fn}: p (geometric success probability) must lie strictly in (0, 1), got {p!r}")
    if distribution == "poisson" and not (
            isinstance(lam, (int, float)) and lam > 0.0 and math.isfinite(lam)):
        raise ValueError(
            f"{fn}: lam (Poisson rate) must be a positive finite number, got {lam!r}")


def _check_key(fn, key):
    if key is None:
        raise ValueError(
            f"{fn}: a PRNG key is required (key=jax.random.PRNGKey(...)) for Hutchinson probes")


# ------------------------------------------------------------------ roulette helpers
def tail_probability(j: jax.Array, distribution: str, *, p: float = 0.5, lam: float = 2.0,
                     dtype=jnp.float32) -> jax.Array:
    """``P(N >= j)`` for ``N ~ Geometric(p)`` on {0, 1, ...} or ``N ~ Poisson(lam)``.

    Geometric: ``(1 - p)^j``. Poisson: ``1 - CDF(j - 1) = gammainc(j, lam)`` (regularised
    lower incomplete gamma) for ``j >= 1``, and 1 for ``j <= 0``.
    """
    j = jnp.asarray(j)
    jf = j.astype(dtype)
    if distribution == "geometric":
        return jnp.exp(jnp.maximum(jf, 0) * jnp.log1p(-jnp.asarray(p, dtype)))
    if distribution == "poisson":
        return jnp.where(j <= 0, jnp.ones_like(jf),
                         gammainc(jnp.maximum(jf, 1), jnp.asarray(lam, dtype)))
    raise ValueError(f"tail_probability: distribution must be 'geometric' or 'poisson', "
                     f"got {distribution!r}")


def sample_num_terms(key: jax.Array, distribution: str, *, p: float = 0.5,
                     lam: float = 2.0) -> jax.Array:
    """Draws the number ``N >= 0`` of extra roulette terms on device (int32 scalar).

    Geometric: ``N = floor(log(U) / log(1 - p))`` with ``U ~ Uniform(0, 1]``, so
    ``P(N >= j) = (1 - p)^j``. Poisson: ``jax.random.poisson(key, lam)``.
    """
    _check_distribution("sample_num_terms", distribution, p, lam, allow_none=False)
    if distribution == "geometric":
        u = jax.random.uniform(key, (), jnp.float32, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
        n = jnp.floor(jnp.log(u) / jnp.log1p(-jnp.float32(p)))
        return jnp.clip(n, 0, 2 ** 30).astype(jnp.int32)
    return jax.random.poisson(key, lam, (), dtype=jnp.int32)


def series_tail_bound(dim: int, lip: float, n_terms: int) -> float:
    """Bound on ``|sum_{k > n} (-1)^{k+1}/k tr(J^k)|`` for ``J`` of size ``dim`` with
    ``||J||_2 <= lip < 1``: ``|tr(J^k)| <= dim * lip^k``, so the tail is at most
    ``dim * lip^(n+1) / ((n+1) (1 - lip))``. The bias of the truncated series with ``n``
    terms, and of the capped roulette with ``max_terms = n``.
    """
    if not 0.0 <= lip < 1.0:
        raise ValueError(f"series_tail_bound: lip must lie in [0, 1), got {lip!r}")
    return float(dim * lip ** (n_terms + 1) / ((n_terms + 1) * (1.0 - lip)))


def _term_weights(k, n_exact, n_extra, distribution, p, lam, dtype):
    """(active, c_k) for term index k >= 1: active iff k <= n_exact + n_extra,
    c_k = 1 for k <= n_exact else 1 / P(N >= k - n_exact) (0 where inactive).
    """
    j = k - n_exact
    if distribution is None:
        active = k <= n_exact
        return active, active.astype(dtype)
    active = j <= n_extra
    tail = tail_probability(j, distribution, p=p, lam=lam, dtype=dtype)
    c = jnp.where(j <= 0, jnp.ones_like(tail), 1.0 / jnp.where(active, tail, jnp.ones_like(tail)))
    return active, jnp.where(active, c, jnp.zeros_like(c))


# -------------------------------------------------------------------------- probes
def _draw_probes(key, x, n_samples, probe):
    """Returns (probes [S, B, *event], scale) with tr(A) ~= scale * sum_s v_s^T A v_s."""
    if probe == "exact":
        d = math.prod(x.shape[1:])
        eye = jnp.eye(d, dtype=x.dtype).reshape((d, 1) + x.shape[1:])
        return jnp.broadcast_to(eye, (d,) + x.shape), 1.0
    shape = (n_samples,) + x.shape
    if probe == "gaussian":
        v = jax.random.normal(key, shape, x.dtype)
    else:
        v = jax.random.rademacher(key, shape, x.dtype)
    return v, 1.0 / n_samples


def _dot(a, b):
    """Per-probe, per-example inner product over the event axes: [S, B, ...] -> [S, B]."""
    return jnp.sum((a * b).reshape(a.shape[:2] + (-1,)), axis=-1)


def _per_probe(vjp_fn):
    """``u [S, B, ...] -> [vjp_fn(u_s)[0] for s]``. One probe (the common case) is a plain
    call: ``vmap`` over a size-1 axis adds a batch dimension to every matrix product of
    the vjp, and XLA's CPU backend then transposes their operands (measured: about a
    third of a residual-flow training step).
    """
    def many(u):
        if u.shape[0] == 1:
            return vjp_fn(u[0])[0][None]
        return jax.vmap(lambda ui: vjp_fn(ui)[0])(u)
    return many


def _linearise(g, params, x):
    gx, vjp_fn = jax.vjp(lambda xx: g(params, xx), x)
    return gx, vjp_fn, _per_probe(vjp_fn)


def _sign(k, dtype):
    return jnp.where(k % 2 == 1, 1.0, -1.0).astype(dtype)


# ----------------------------------------------------------------------- estimators
def logdet_exact(g: GFn, params: PyTree, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Exact ``log|det(I + J_g(x))|`` per example by ``jacfwd`` + ``slogdet`` (O(D^3)).

    ``g`` is called on ``[1, *event]`` slices under ``vmap``. Returns ``(g(x), logdet)``.
    """
    x = _check_x("logdet_exact", x)
    _check_g("logdet_exact", g, params, x)
    event = x.shape[1:]

    def one(xi):
        def f(flat):
            out = g(params, flat.reshape((1,) + event))[0]
            return flat + out.reshape(-1), out
        jac, gxi = jax.jacfwd(f, has_aux=True)(xi.reshape(-1))
        return gxi, jnp.linalg.slogdet(jac)[1]

    return jax.vmap(one)(x)


def logdet_series(g: GFn, params: PyTree, x: jax.Array, key: Optional[jax.Array] = None, *,
                  n_terms: int = 5, n_samples: int = 1,
                  probe: str = "gaussian") -> Tuple[jax.Array, jax.Array]:
    """Truncated power series with ``n_terms`` terms (i-ResNet, Behrmann et al. 2019, eq. 6).

    Biased by the dropped tail (see :func:`series_tail_bound`). Gradients by backprop
    through a ``lax.scan`` of ``n_terms`` vjps (memory linear in ``n_terms``).
    Returns ``(g(x), logdet [B])``.
    """
    fn = "logdet_series"
    x = _check_x(fn, x)
    _check_int(fn, "n_terms", n_terms, 1)
    _check_int(fn, "n_samples", n_samples, 1)
    _check_probe(fn, probe)
    if probe != "exact":
        _check_key(fn, key)
    _check_g(fn, g, params, x)
    gx, _, vjp_many = _linearise(g, params, x)
    v, scale = _draw_probes(key, x, n_samples, probe)

    def body(carry, k):
        u, total = carry
        u = vjp_many(u)
        total = total + (_sign(k, x.dtype) / k.astype(x.dtype)) * _dot(u, v)
        return (u, total), None

    ks = jnp.arange(1, n_terms + 1, dtype=jnp.int32)
    (_, total), _ = lax.scan(body, (v, jnp.zeros(v.shape[:2], x.dtype)), ks)
    return gx, scale * jnp.sum(total, axis=0)


def logdet_roulette(g: GFn, params: PyTree, x: jax.Array, key: jax.Array, *,
                    n_exact_terms: int = 2, distribution: str = "geometric", p: float = 0.5,
                    lam: float = 2.0, n_samples: int = 1, probe: str = "gaussian",
                    max_terms: int = 64) -> Tuple[jax.Array, jax.Array]:
    """Unbiased Russian-roulette estimate (Chen et al. 2019, eq. 7), differentiable by backprop.

    ``n_exact_terms`` terms plus ``N`` random ones (see module docstring), capped at the
    static ``max_terms`` (XLA needs a static loop length to backprop): a ``lax.scan`` over
    ``max_terms`` steps whose inactive steps are skipped by ``lax.cond``. The cap's bias is
    the series tail beyond ``max_terms`` (:func:`series_tail_bound`). Memory grows with
    ``max_terms``; for training prefer :func:`logdet_neumann`.
    Returns ``(g(x), logdet [B])``.
    """
    fn = "logdet_roulette"
    x = _check_x(fn, x)
    _check_int(fn, "n_exact_terms", n_exact_terms, 0)
    _check_int(fn, "n_samples", n_samples, 1)
    _check_int(fn, "max_terms", max_terms, max(n_exact_terms, 1))
    _check_probe(fn, probe)
    _check_distribution(fn, distribution, p, lam, allow_none=False)
    _check_key(fn, key)
    _check_g(fn, g, params, x)
    k_probe, k_n = jax.random.split(key)
    n_extra = sample_num_terms(k_n, distribution, p=p, lam=lam)
    gx, _, vjp_many = _linearise(g, params, x)
    v, scale = _draw_probes(k_probe, x, n_samples, probe)
    dt = x.dtype

    def body(carry, k):
        active, c = _term_weights(k, n_exact_terms, n_extra, distribution, p, lam, dt)

        def term(carry):
            u, total = carry
            u = vjp_many(u)
            return u, total + (_sign(k, dt) * c / k.astype(dt)) * _dot(u, v)

        return lax.cond(active, term, lambda c_: c_, carry), None

    ks = jnp.arange(1, max_terms + 1, dtype=jnp.int32)
    (_, total), _ = lax.scan(body, (v, jnp.zeros(v.shape[:2], dt)), ks)
    return gx, scale * jnp.sum(total, axis=0)


def _series_and_neumann_vector(vjp_many, v, n_exact, n_extra, distribution, p, lam):
    """While-loop over k = 1..n_exact + n_extra (n_extra = 0 if distribution is None).

    Returns (value [S, B], w [S, B, ...]) with
    value = sum_k (-1)^{k+1} c_k / k <u_k, v> and w = sum_k (-1)^{k+1} c_k u_{k-1}.
    """
    dt = v.dtype
    num = jnp.asarray(n_exact, jnp.int32) if distribution is None else n_exact + n_extra

    def cond(state):
        return state[0] <= num

    def body(state):
        k, u, value, w = state
        _, c = _term_weights(k, n_exact, n_extra, distribution, p, lam, dt)
        sc = _sign(k, dt) * c
        w = w + sc * u
        u = vjp_many(u)
        value = value + (sc / k.astype(dt)) * _dot(u, v)
        return k + 1, u, value, w

    init = (jnp.asarray(1, jnp.int32), v, jnp.zeros(v.shape[:2], dt), jnp.zeros_like(v))
    _, _, value, w = lax.while_loop(cond, body, init)
    return value, w


def _neumann_args(fn, x, key, n_exact_terms, distribution, p, lam, n_samples, probe):
    x = _check_x(fn, x)
    _check_int(fn, "n_exact_terms", n_exact_terms, 0 if distribution is not None else 1)
    _check_int(fn, "n_samples", n_samples, 1)
    _check_probe(fn, probe)
    _check_distribution(fn, distribution, p, lam, allow_none=True)
    if probe != "exact" or distribution is not None:
        _check_key(fn, key)
    return x


def logdet_neumann(g: GFn, params: PyTree, x: jax.Array, key: Optional[jax.Array] = None, *,
                   n_exact_terms: int = 2, distribution: Optional[str] = "geometric",
                   p: float = 0.5, lam: float = 2.0, n_samples: int = 1,
                   probe: str = "gaussian") -> Tuple[jax.Array, jax.Array]:
    """Russian-roulette log-det with the Neumann-series gradient (Chen et al. 2019, Thm 2).

    The value is the roulette estimate (uncapped ``lax.while_loop`` under stop_gradient);
    the gradient w.r.t. ``x`` and ``params`` is the unbiased Neumann estimator, obtained
    from one differentiable vjp per probe, so memory is independent of the number of
    terms. ``distribution=None``: exactly ``n_exact_terms`` terms (truncated series).
    Returns ``(g(x), logdet [B])``.
    """
    fn = "logdet_neumann"
    x = _neumann_args(fn, x, key, n_exact_terms, distribution, p, lam, n_samples, probe)
    _check_g(fn, g, params, x)
    if distribution is None:
        # Same probes as logdet_series(key): the two then estimate the same value.
        k_probe, n_extra = key, jnp.asarray(0, jnp.int32)
    else:
        # Same probes and N as logdet_roulette(key).
        k_probe, k_n = jax.random.split(key)
        n_extra = sample_num_terms(k_n, distribution, p=p, lam=lam)
    gx, vjp_fn, _ = _linearise(g, params, x)
    v, scale = _draw_probes(k_probe, x, n_samples, probe)
    # The series runs on a stop-gradient copy of the linearisation: nothing is saved
    # for the backward pass, whatever the number of terms.
    vjp_sg = jax.tree_util.tree_map(lax.stop_gradient, vjp_fn)
    vjp_many_sg = _per_probe(vjp_sg)
    value, w = _series_and_neumann_vector(vjp_many_sg, v, n_exact_terms, n_extra,
                                          distribution, p, lam)
    value = lax.stop_gradient(scale * jnp.sum(value, axis=0))
    w = lax.stop_gradient(w)
    # Surrogate sum_s w_s^T J v_s: its gradient is the Neumann estimate.
    wj = _per_probe(vjp_fn)(w)
    surrogate = scale * jnp.sum(_dot(wj, v), axis=0)
    return gx, value + surrogate - lax.stop_gradient(surrogate)


def logdet_neumann_naive(g: GFn, params: PyTree, x: jax.Array, key: Optional[jax.Array] = None, *,
                         n_exact_terms: int = 2, distribution: Optional[str] = "geometric",
                         p: float = 0.5, lam: float = 2.0, n_samples: int = 1,
                         probe: str = "gaussian",
                         max_terms: int = 64) -> Tuple[jax.Array, jax.Array]:
    """The estimator of :func:`logdet_neumann` differentiated by plain backprop.

    With ``distribution=None`` this is :func:`logdet_series` with ``n_terms =
    n_exact_terms``; otherwise :func:`logdet_roulette` (capped at ``max_terms``). Memory
    grows with the number of terms: the baseline of ``experiments/benchmarks/memory.py``.
    """
    fn = "logdet_neumann_naive"
    x = _neumann_args(fn, x, key, n_exact_terms, distribution, p, lam, n_samples, probe)
    if distribution is None:
        return logdet_series(g, params, x, key, n_terms=n_exact_terms, n_samples=n_samples,
                             probe=probe)
    return logdet_roulette(g, params, x, key, n_exact_terms=n_exact_terms,
                           distribution=distribution, p=p, lam=lam, n_samples=n_samples,
                           probe=probe, max_terms=max_terms)


def log_det(g: GFn, params: PyTree, x: jax.Array, *, key: Optional[jax.Array] = None,
            estimator: str = "exact", n_terms: Optional[int] = None, n_exact_terms: int = 2,
            distribution: Optional[str] = "geometric", p: float = 0.5, lam: float = 2.0,
            n_samples: Optional[int] = None, probe: str = "gaussian",
            max_terms: int = 64) -> Tuple[jax.Array, jax.Array]:
    """One entry point: ``(g(params, x), log det(I + J_g(x)) [B])`` by ``estimator``.

    Args:
      g: batched, per-example residual function ``g(params, x)``, ``[B, *event] -> [B, *event]``.
      params: pytree of ``g``'s parameters (differentiable).
      x: ``[B, *event]`` input.
      key: PRNG key for probes and the roulette (required except for "exact" and
        ``probe="exact"`` deterministic modes; "eval" defaults to ``PRNGKey(0)``).
      estimator: one of :data:`ESTIMATORS`:
        "exact" (:func:`logdet_exact`), "series" (:func:`logdet_series`, ``n_terms``
        default 5), "roulette" (:func:`logdet_roulette`), "neumann"
        (:func:`logdet_neumann`, Residual Flows training), "neumann_naive"
        (:func:`logdet_neumann_naive`), "eval" (deterministic: ``n_terms`` default 20,
        fixed probes, ``n_samples`` default 8; use ``probe="exact"`` for exact traces).
      n_terms: number of series terms for "series"/"eval".
      n_exact_terms: number of series terms always computed, before the random ones
        (roulette settings of "roulette", "neumann" and "neumann_naive"; see module docs).
      distribution: law of the number ``N >= 0`` of extra roulette terms:
        ``"geometric"`` or ``"poisson"``; ``None`` ("neumann" and "neumann_naive" only)
        uses exactly ``n_exact_terms`` terms (the truncated series).
      p: success probability of the geometric ``N``, ``P(N >= j) = (1 - p)^j``; must lie
        in ``(0, 1)``.
      lam: rate of the Poisson ``N``, ``P(N >= j) = gammainc(j, lam)``; must be > 0.
      max_terms: static cap on the total number of terms of "roulette" and
        "neumann_naive" (backprop needs a static loop length; the cap's bias is bounded
        by :func:`series_tail_bound`). "neumann" is uncapped.
      n_samples: Hutchinson probes per example (default 1; 8 for "eval").
      probe: "gaussian", "rademacher" or "exact" (basis vectors; D vjps per term).
    """
    ns = 1 if n_samples is None else n_samples
    if estimator == "exact":
        return logdet_exact(g, params, x)
    if estimator == "series":
        return logdet_series(g, params, x, key, n_terms=5 if n_terms is None else n_terms,
                             n_samples=ns, probe=probe)
    if estimator == "eval":
        key = jax.random.PRNGKey(0) if key is None else key
        return logdet_series(g, params, x, key, n_terms=20 if n_terms is None else n_terms,
                             n_samples=8 if n_samples is None else n_samples, probe=probe)
    if estimator == "roulette":
        return logdet_roulette(g, params, x, key, n_exact_terms=n_exact_terms,
                               distribution=distribution, p=p, lam=lam,
                               n_samples=ns, probe=probe, max_terms=max_terms)
    if estimator == "neumann":
        return logdet_neumann(g, params, x, key, n_exact_terms=n_exact_terms,
                              distribution=distribution, p=p, lam=lam,
                              n_samples=ns, probe=probe)
    if estimator == "neumann_naive":
        return logdet_neumann_naive(g, params, x, key, n_exact_terms=n_exact_terms,
                                    distribution=distribution, p=p, lam=lam,
                                    n_samples=ns, probe=probe, max_terms=max_terms)
    raise ValueError(f"log_det: estimator must be one of {ESTIMATORS}, got {estimator!r}")
