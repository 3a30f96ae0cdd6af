"""Tests of jaxflows.ops.fixed_point: accuracy, diagnostics, implicit gradients, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.ops import FixedPointInfo, default_tolerance, fixed_point_inverse
from jaxflows.testing import enable_x64

D, H, B = 5, 8, 6


def _normalise(w, coeff):
    return coeff * w / jnp.linalg.norm(w, 2)


def g_mlp(params, x):
    """Contractive MLP: spectrally normalised weights (exact 2-norm), tanh; Lip <= coeff."""
    w1 = _normalise(params["w1"], 1.0)
    w2 = _normalise(params["w2"], params["coeff"])
    return jnp.tanh(x @ w1 + params["b1"]) @ w2 + params["b2"]


def make_params(seed, coeff, dtype):
    """Random parameters drawn with numpy (no JAX compilation for test data)."""
    rng = np.random.default_rng(seed)
    p = {"w1": rng.normal(size=(D, H)), "w2": rng.normal(size=(H, D)),
         "b1": 0.3 * rng.normal(size=(H,)), "b2": 0.3 * rng.normal(size=(D,)), "coeff": coeff}
    return {k: jnp.asarray(v, dtype) for k, v in p.items()}


@pytest.fixture(scope="module")
def x64():
    with enable_x64():
        yield


@pytest.fixture(scope="module")
def problem(x64):
    params = make_params(0, 0.9, jnp.float64)
    x = jnp.asarray(2.0 * np.random.default_rng(1).normal(size=(B, D)), jnp.float64)
    y = jax.jit(lambda p, x: x + g_mlp(p, x))(params, x)
    return params, x, y


def test_inverse_reaches_1e_10_and_reports_diagnostics(problem):
    params, x, y = problem
    solve = jax.jit(lambda p, y: fixed_point_inverse(g_mlp, p, y))
    xr, info = solve(params, y)
    assert isinstance(info, FixedPointInfo)
    assert info.iterations.shape == info.residual.shape == info.converged.shape == (B,)
    assert float(jnp.max(jnp.abs(xr - x))) < 1e-10
    assert bool(jnp.all(info.converged))
    assert int(jnp.max(info.iterations)) < 1000
    assert float(jnp.max(info.residual)) < 1e-12
    # Examples converge at different speeds, so per-example counts differ.
    assert len(set(np.asarray(info.iterations).tolist())) > 1
    # vmap over examples gives the same per-example solutions and iteration counts.
    xv, infov = jax.jit(jax.vmap(lambda yi: fixed_point_inverse(
        lambda p, v: g_mlp(p, v[None])[0], params, yi, batch_axes=0)))(y)
    np.testing.assert_allclose(xv, xr, atol=1e-13)
    np.testing.assert_array_equal(infov.iterations, info.iterations)


def test_non_convergence_is_reported(problem):
    params, x, y = problem
    (xr, info), two_steps = jax.jit(lambda p, y: (
        fixed_point_inverse(g_mlp, p, y, max_iter=2), y - g_mlp(p, y - g_mlp(p, y))))(params, y)
    assert not bool(jnp.any(info.converged))
    np.testing.assert_array_equal(info.iterations, 2)
    assert float(jnp.min(info.residual)) > 1e-6
    # x2 = y - g(y - g(y)): exactly two iterations from x0 = y.
    np.testing.assert_allclose(xr, two_steps, atol=1e-14)


def test_implicit_gradient_equals_unrolled(problem):
    params, x, y = problem
    w = jnp.asarray(np.random.default_rng(2).normal(size=y.shape), y.dtype)
    n_unrolled = 150  # contraction rate here ~0.4: 150 plain iterations reach float64 round-off

    def unrolled(gfun, y):
        return jax.lax.fori_loop(0, n_unrolled, lambda _, xk: y - gfun(xk), y)

    def loss_implicit(p, y):
        return jnp.sum(w * jnp.sin(fixed_point_inverse(g_mlp, p, y)[0]))

    def loss_unrolled(p, y):
        return jnp.sum(w * jnp.sin(unrolled(lambda v: g_mlp(p, v), y)))

    # A value g closes over (here a traced scale s) also gets its implicit gradient.
    def closed(s):
        return jnp.sum(w * fixed_point_inverse(lambda p, v: s * g_mlp(p, v), params, y)[0])

    def closed_unrolled(s):
        return jnp.sum(w * unrolled(lambda v: s * g_mlp(params, v), y))

    @jax.jit
    def all_grads(p, y):
        return (jax.grad(loss_implicit, argnums=(0, 1))(p, y),
                jax.grad(loss_unrolled, argnums=(0, 1))(p, y),
                jax.grad(closed)(0.8), jax.grad(closed_unrolled)(0.8))

    gi, gu, gc, gcu = all_grads(params, y)
    for a, b in zip(jax.tree_util.tree_leaves(gi), jax.tree_util.tree_leaves(gu)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    assert float(jnp.max(jnp.abs(gi[0]["w1"]))) > 1e-3  # a real, non-trivial gradient
    np.testing.assert_allclose(gc, gcu, rtol=1e-9)


def test_float32_near_lipschitz_one_reaches_float32_precision():
    """Worst case for the 1/(1 - Lip) error amplification: g = -0.98 tanh(S x), S symmetric
    orthogonal (Jacobian eigenvalues -0.98 and +0.98 at the origin).
    """
    d = 16
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(d, d)))
    s = jnp.asarray(q @ np.diag(np.where(np.arange(d) % 2 == 0, 1.0, -1.0)) @ q.T, jnp.float32)

    def g(p, x):
        return -0.98 * jnp.tanh(x @ p)

    x = jnp.asarray(np.random.default_rng(4).normal(size=(32, d)), jnp.float32)
    y, (xr, info) = jax.jit(
        lambda p, x: (x + g(p, x), fixed_point_inverse(g, p, x + g(p, x))))(s, x)
    assert xr.dtype == jnp.float32
    assert bool(jnp.all(info.converged))
    assert default_tolerance(jnp.float32) < 1e-6
    # The float32 rounding of y alone is amplified by up to 1/(1 - 0.98) = 50.
    assert float(jnp.max(jnp.abs(xr - x))) < 50 * 4 * float(jnp.finfo(jnp.float32).eps) * 3


def test_bad_arguments(problem):
    params, x, y = problem
    for kw, word in [({"rtol": 0.0}, "rtol"), ({"atol": -1e-3}, "atol"),
                     ({"max_iter": 0}, "max_iter"), ({"batch_axes": 5}, "batch_axes"),
                     ({"stall_patience": 0}, "stall_patience")]:
        with pytest.raises(ValueError, match=word):
            fixed_point_inverse(g_mlp, params, y, **kw)
    with pytest.raises(ValueError, match="shape and dtype"):
        fixed_point_inverse(lambda p, v: v[:, :2], params, y)
    with pytest.raises(ValueError, match="floating"):
        fixed_point_inverse(lambda p, v: v, params, jnp.ones((2, 3), jnp.int32))
