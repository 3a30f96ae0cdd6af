"""Tests of jaxflows.ops.monotone: accuracy, brackets, diagnostics, static count,
implicit gradients.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.ops import (
    MonotoneInverseInfo,
    default_max_bisections,
    monotone_inverse,
    num_bisections,
)
from jaxflows.testing import enable_x64

B, K = 12, 3


def affine(p, x):
    return p["a"] * x + p["b"]


def sigmoid(p, x):
    return jax.nn.sigmoid(x)


def logit_mixture(p, x):
    """Logit of a mixture-of-logistics CDF, in log space; p leaves are [*x.shape, K]."""
    z = (x[..., None] - p["mu"]) * jnp.exp(-p["log_s"])
    logw = jax.nn.log_softmax(p["logits"], axis=-1)
    log_cdf = jax.nn.logsumexp(logw + jax.nn.log_sigmoid(z), axis=-1)
    log_sf = jax.nn.logsumexp(logw + jax.nn.log_sigmoid(-z), axis=-1)
    return log_cdf - log_sf


def mixture_params(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    p = {"mu": 2.0 * rng.normal(size=shape + (K,)), "log_s": 0.5 * rng.normal(size=shape + (K,)),
         "logits": rng.normal(size=shape + (K,))}
    return {k: jnp.asarray(v, dtype) for k, v in p.items()}


solve_mixture = jax.jit(lambda p, y: monotone_inverse(logit_mixture, p, y))


@pytest.fixture(scope="module")
def x64():
    with enable_x64():
        yield


@pytest.fixture(scope="module")
def mixture(x64):
    """Per-element mixture parameters [B, K] and targets spanning [-30, 30]."""
    return mixture_params(0, (B,), jnp.float64), jnp.linspace(-30.0, 30.0, B, dtype=jnp.float64)


def test_affine_inverse_gradients_and_static_count(x64):
    rng = np.random.default_rng(1)
    p = {"a": jnp.asarray(rng.uniform(0.5, 2.0, B)), "b": jnp.asarray(rng.normal(size=B))}
    y = jnp.asarray(rng.uniform(-5, 5, B))
    w = jnp.asarray(rng.normal(size=B))
    tol = 1e-10

    def loss(p, y):
        x, info = monotone_inverse(affine, p, y, bracket=(-10.0, 10.0), tol=tol)
        return jnp.sum(w * x), (x, info)

    (_, (x, info)), (gp, gy) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(p, y)
    assert isinstance(info, MonotoneInverseInfo)
    x_true = (y - p["b"]) / p["a"]
    np.testing.assert_allclose(x, x_true, atol=1e-12)
    assert bool(jnp.all(info.converged)) and bool(jnp.all(info.bracketed))
    assert float(jnp.max(info.bracket_width)) <= tol
    assert float(jnp.max(info.residual)) < 1e-12
    # Static count: ceil(log2(width / tol)) = ceil(log2(20 / 1e-10)) = 38, spent on every element.
    n = math.ceil(math.log2(20.0 / tol))
    assert n == 38 == num_bisections(-10.0, 10.0, tol, jnp.float64) == int(info.num_bisections)
    np.testing.assert_array_equal(info.iterations, n)
    np.testing.assert_array_equal(info.expansions, 0)
    # Analytic implicit gradients: dx/dy = 1/a, dx/da = -(y - b)/a^2, dx/db = -1/a.
    np.testing.assert_allclose(gy, w / p["a"], rtol=1e-12)
    np.testing.assert_allclose(gp["a"], -w * (y - p["b"]) / p["a"] ** 2, rtol=1e-10)
    np.testing.assert_allclose(gp["b"], -w / p["a"], rtol=1e-12)


def test_sigmoid_on_given_bracket_flags_unreachable_targets(x64):
    y = jnp.asarray([1e-6, 0.2, 0.5, 0.9, 1 - 1e-6, 2.0, -0.5])
    x, info = jax.jit(lambda y: monotone_inverse(sigmoid, None, y, bracket=(-20.0, 20.0)))(y)
    ok = np.array([True] * 5 + [False] * 2)
    np.testing.assert_array_equal(info.bracketed, ok)
    np.testing.assert_array_equal(info.converged, ok)
    np.testing.assert_allclose(x[:5], jnp.log(y[:5]) - jnp.log1p(-y[:5]), rtol=1e-9, atol=1e-9)
    assert float(jnp.max(info.residual[:5])) < 1e-15
    assert float(jnp.min(info.residual[5:])) > 0.5
    # An unreachable target ends at the nearest end of the bracket, never inside.
    np.testing.assert_allclose(x[5:], [20.0, -20.0], atol=1e-9)


def test_mixture_by_expansion_round_trip_and_given_bracket(mixture):
    p, y = mixture
    x, info = solve_mixture(p, y)
    assert bool(jnp.all(info.converged))
    assert float(jnp.max(info.residual)) < 1e-12
    np.testing.assert_allclose(logit_mixture(p, x), y, atol=1e-12)
    assert int(jnp.max(info.expansions)) >= 4       # |y| = 30 lies far outside [-1, 1]
    assert int(info.num_bisections) == 54           # float64 default, whatever the targets
    # Round trip x -> f -> inverse -> x, including far-out x.
    x0 = jnp.asarray(np.random.default_rng(3).normal(size=B) * 20.0)
    x1, info1 = solve_mixture(p, logit_mixture(p, x0))
    assert bool(jnp.all(info1.converged))
    np.testing.assert_allclose(x1, x0, rtol=1e-13, atol=1e-13)
    # A given (traced, per-element) bracket finds the same solution.
    solve_bracketed = jax.jit(
        lambda p, y, lo, hi: monotone_inverse(logit_mixture, p, y, bracket=(lo, hi)))
    xb, infob = solve_bracketed(p, y, jnp.full(B, -200.0), jnp.full(B, 200.0))
    assert bool(jnp.all(infob.converged))
    assert int(infob.num_bisections) == default_max_bisections(jnp.float64) == 106
    np.testing.assert_allclose(xb, x, atol=1e-12)


def test_expansion_reaches_round_off_floor_far_out(x64):
    """Targets where the float spacing exceeds tol stop at adjacent floats, flagged converged."""
    y = jnp.asarray([-3e7, -1e6, -1e-9, 0.0, 1e-9, 0.25, 1e6, 3e7])
    p = {"a": jnp.asarray(1.0), "b": jnp.asarray(0.0)}
    x, info = jax.jit(lambda y: monotone_inverse(affine, p, y))(y)
    assert bool(jnp.all(info.converged))
    np.testing.assert_allclose(x, y, rtol=4e-16, atol=4e-15)
    # Width within tol = 4 eps up to two units of round-off of the endpoints (2 eps |x|).
    eps = np.finfo(np.float64).eps
    assert np.all(np.asarray(info.bracket_width) <= 4 * eps + 2 * eps * np.abs(np.asarray(y)))
    assert int(jnp.max(info.iterations)) <= int(info.num_bisections) == 54


def test_unreachable_target_under_expansion_is_reported_and_gradient_is_zero(x64):
    y = jnp.asarray([0.3, 2.0, -1.0, 0.7])

    def run(y):
        x, info = monotone_inverse(sigmoid, None, y, max_expansions=12)
        return x, info, jax.grad(lambda y: jnp.sum(monotone_inverse(sigmoid, None, y,
                                                                    max_expansions=12)[0]))(y)

    x, info, gy = jax.jit(run)(y)
    np.testing.assert_array_equal(info.converged, [True, False, False, True])
    np.testing.assert_array_equal(info.bracketed, [True, False, False, True])
    np.testing.assert_array_equal(info.expansions[1:3], 12)
    assert float(jnp.min(info.residual[1:3])) >= 1.0
    # sigmoid'(x) underflows to 0 at |x| ~ 2^13: the guarded gradient is 0, not inf/NaN.
    assert bool(jnp.all(jnp.isfinite(gy)))
    np.testing.assert_array_equal(gy[1:3], 0.0)
    ok = np.array([0, 3])
    np.testing.assert_allclose(gy[ok], 1 / (y[ok] * (1 - y[ok])), rtol=1e-10)


def test_gradients_match_central_finite_differences(mixture):
    p, y = mixture
    rng = np.random.default_rng(4)
    w = jnp.asarray(rng.normal(size=B))
    dp = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p)
    dy = jnp.asarray(rng.normal(size=B))

    def loss(p, y):
        x, _ = monotone_inverse(logit_mixture, p, y)
        return jnp.sum(w * x), x

    @jax.jit
    def value_grad_slope(p, y):
        (val, x), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(p, y)
        dfdx = jax.jvp(lambda xx: logit_mixture(p, xx), (x,), (jnp.ones_like(x),))[1]
        return val, grads, dfdx

    _, (gp, gy), dfdx = value_grad_slope(p, y)
    eps = 1e-6

    def central_difference(leaves, move_y):
        """(L(p + eps dp, y + eps dy) - L(p - eps dp, y - eps dy)) / (2 eps) on the given leaves."""
        def at(s):
            ps = {k: v + s * eps * dp[k] if k in leaves else v for k, v in p.items()}
            return float(value_grad_slope(ps, y + s * eps * dy if move_y else y)[0])
        return (at(1.0) - at(-1.0)) / (2 * eps)

    fd = central_difference(tuple(p), move_y=True)
    ad = sum(float(jnp.sum(gp[k] * dp[k])) for k in p) + float(jnp.sum(gy * dy))
    assert abs(fd - ad) <= 1e-7 * max(1.0, abs(ad))
    # Each parameter leaf separately (directional derivative along its own direction).
    for name in p:
        fd_k = central_difference((name,), move_y=False)
        assert abs(fd_k - float(jnp.sum(gp[name] * dp[name]))) <= 1e-7 * max(1.0, abs(fd_k))
    # dx/dy = 1 / f'(x) elementwise.
    np.testing.assert_allclose(gy, w / dfdx, rtol=1e-10)


def test_closed_over_tracer_gets_implicit_gradient(x64):
    y = jnp.asarray([-2.0, 0.5, 3.0])

    def loss(a, b):
        x, _ = monotone_inverse(lambda p, x: a * x + p, b, y, bracket=(-10.0, 10.0))
        return jnp.sum(x)

    ga, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(2.0, 0.25)
    np.testing.assert_allclose(ga, -jnp.sum(y - 0.25) / 4.0, rtol=1e-10)
    np.testing.assert_allclose(gb, -3 / 2.0, rtol=1e-12)


def test_static_count_formula_and_single_compilation(x64):
    f64, f32 = jnp.float64, jnp.float32
    assert num_bisections(-3.0, 5.0, 1e-3, f64) == math.ceil(math.log2(8 / 1e-3)) == 13
    assert num_bisections(0.0, 1.0, 1.0, f64) == 0
    # A bracket away from 0 stops at the round-off floor: p + 2 + ceil(log2(W / m)).
    assert num_bisections(100.0, 101.0, 1e-30, f32) == 23 + 2 + math.ceil(math.log2(1 / 100))
    assert num_bisections(100.0, 101.0, 1e-30, f64) == 52 + 2 + math.ceil(math.log2(1 / 100))
    # Per-element brackets: the maximum over the elements.
    assert num_bisections(np.array([0.0, -1.0]), np.array([1.0, 3.0]), 1e-3, f64) == 12
    assert default_max_bisections(f32) == 48 and default_max_bisections(f64) == 106

    traces = []

    def solve(y):
        traces.append(None)
        return monotone_inverse(sigmoid, None, y, bracket=(-3.0, 5.0), tol=1e-3, interpolate=False)

    solve = jax.jit(solve)
    for seed in range(3):
        y = jnp.asarray(np.random.default_rng(seed).uniform(0.1, 0.9, 5))
        x, info = solve(y)
        assert int(info.num_bisections) == 13
        np.testing.assert_array_equal(info.iterations, 13)
        assert bool(jnp.all(info.converged))
        # The midpoint is within tol / 2 of the solution.
        assert float(jnp.max(jnp.abs(x - jnp.log(y / (1 - y))))) <= 0.5e-3
    assert len(traces) == 1


def test_vmap_matches_batched(mixture):
    p, y = mixture
    x, info = solve_mixture(p, y)
    xv, infov = jax.jit(jax.vmap(lambda pi, yi: monotone_inverse(logit_mixture, pi, yi)))(p, y)
    np.testing.assert_array_equal(xv, x)
    np.testing.assert_array_equal(infov.expansions, info.expansions)
    np.testing.assert_array_equal(infov.converged, info.converged)
    # Implicit gradients under vmap match the batched ones (f is elementwise).
    grad_y = jax.grad(lambda p, y: jnp.sum(monotone_inverse(logit_mixture, p, y)[0]), argnums=1)
    gb, gv = jax.jit(lambda p, y: (grad_y(p, y), jax.vmap(grad_y)(p, y)))(p, y)
    np.testing.assert_allclose(gv, gb, rtol=1e-12)


def test_float32_mixture_by_expansion():
    p = mixture_params(5, (2, 4), jnp.float32)
    x0 = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4)) * 10.0, jnp.float32)
    y = logit_mixture(p, x0)
    x, info = solve_mixture(p, y)
    assert x.dtype == jnp.float32 and info.residual.dtype == jnp.float32
    assert int(info.num_bisections) == 25
    assert bool(jnp.all(info.converged))
    np.testing.assert_allclose(x, x0, rtol=2e-6, atol=2e-6)
    assert float(jnp.max(info.residual / jnp.maximum(1.0, jnp.abs(y)))) < 1e-6


def test_invalid_arguments_raise():
    y = jnp.zeros(3)
    with pytest.raises(ValueError, match="lo <= hi"):
        monotone_inverse(sigmoid, None, y, bracket=(1.0, -1.0))
    with pytest.raises(ValueError, match="tol"):
        monotone_inverse(sigmoid, None, y, tol=0.0)
    with pytest.raises(ValueError, match="expand_factor"):
        monotone_inverse(sigmoid, None, y, expand_factor=1.0)
    with pytest.raises(ValueError, match="floating"):
        monotone_inverse(sigmoid, None, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="shape and dtype"):
        monotone_inverse(lambda p, x: x[:2], None, y)
    with pytest.raises(ValueError, match="broadcast"):
        monotone_inverse(sigmoid, None, y, bracket=(np.zeros(2), 1.0))
