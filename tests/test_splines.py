"""The rational-quadratic spline transformer: exactness in float64, identity tails and
identity at zero parameters, finite gradients outside the bound, bad settings.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import RationalQuadraticSpline
from jaxflows.testing import enable_x64, perturb_params

SPLINE = RationalQuadraticSpline(bins=5, bound=2.0)
# Inputs on both tails, on the bound itself and inside.
XS = np.concatenate([np.linspace(-4.0, 4.0, 33), [-2.0, 2.0, 1e-9, -1e-9]])


def _params(key, shape, scale=1.0, dtype=jnp.float64):
    return scale * jax.random.normal(key, shape + (SPLINE.num_params,), dtype)


@jax.jit
def _all(x, p):
    y, ld = SPLINE.forward(x, p)
    xr, ild = SPLINE.inverse(y, p)
    dydx = jax.vmap(jax.grad(lambda a, b: SPLINE.forward(a, b)[0]))(x, p)
    return y, ld, xr, ild, dydx


def test_round_trip_and_log_det_in_float64():
    with enable_x64():
        x = jnp.asarray(XS, jnp.float64)
        p = _params(jax.random.PRNGKey(0), x.shape, 2.0)
        y, ld, xr, ild, dydx = _all(x, p)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(xr, x, atol=1e-12)
        np.testing.assert_allclose(ild, -ld, atol=1e-12)
        np.testing.assert_allclose(ld, jnp.log(dydx), atol=1e-11)
        shared = jnp.broadcast_to(p[0], p.shape)                  # one spline, all x
        assert bool(jnp.all(jnp.diff(_all(x, shared)[0][:33]) > 0)), "not increasing"
        tails = np.abs(XS) >= 2.0
        np.testing.assert_array_equal(np.asarray(y)[tails], XS[tails])   # identity tails
        np.testing.assert_array_equal(np.asarray(ld)[tails], 0.0)


def test_identity_at_zero_params_and_continuity_at_the_bound():
    with enable_x64():
        x = jnp.asarray(XS, jnp.float64)
        y, ld, *_ = _all(x, jnp.zeros(x.shape + (SPLINE.num_params,), jnp.float64))
        np.testing.assert_allclose(y, x, atol=1e-14)
        np.testing.assert_allclose(ld, 0.0, atol=1e-14)
        p = _params(jax.random.PRNGKey(1), (4,), 3.0)
        edge = jnp.asarray([-2.0 + 1e-12, 2.0 - 1e-12, -2.0 - 1e-12, 2.0 + 1e-12])
        y, ld, *_ = _all(edge, p)
        np.testing.assert_allclose(y, edge, atol=1e-10)          # continuous at +-B
        np.testing.assert_allclose(ld, 0.0, atol=1e-8)           # slope 1 at the knots
    assert not RationalQuadraticSpline.identity_at_zero          # only up to rounding


def test_gradients_are_finite_for_inputs_outside_the_bound():
    """Clip before compute: the discarded branch never makes NaN gradients."""
    x = jnp.asarray([-50.0, -2.0, 2.0, 1e4, -1e4, 0.3], jnp.float32)
    p = _params(jax.random.PRNGKey(2), x.shape, 3.0, jnp.float32)

    def loss(p, x):
        y, ld = SPLINE.forward(x, p)
        xr, ild = SPLINE.inverse(x, p)
        return jnp.sum(y + ld + xr + ild)
    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, x)
    assert bool(jnp.all(jnp.isfinite(gp))) and bool(jnp.all(jnp.isfinite(gx)))
    np.testing.assert_array_equal(np.asarray(gp)[[0, 3, 4]], 0.0)   # tails: no dependence
    np.testing.assert_allclose(np.asarray(gx)[[0, 3, 4]], 2.0)      # dy/dx + dx/dy = 1 + 1


def test_all_tail_batch_and_any_shape():
    x = jnp.full((2, 3, 3, 2), 7.0)
    p = jnp.ones(x.shape + (SPLINE.num_params,))
    y, ld = jax.jit(SPLINE.forward)(x, p)
    assert y.shape == x.shape and ld.shape == x.shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(bins=1), "bins"), (dict(bins=2.5), "bins"), (dict(bins=True), "bins"),
    (dict(bound=0.0), "bound"), (dict(bound=-1.0), "bound"), (dict(bound=float("inf")), "bound"),
    (dict(bins=4, min_bin_size=0.25), "min_bin_size"), (dict(min_derivative=1.0), "min_deriv"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RationalQuadraticSpline(**kwargs)


def test_num_params_and_wrong_params_width():
    assert RationalQuadraticSpline(bins=8).num_params == 23
    assert hash(RationalQuadraticSpline(bound=5)) == hash(RationalQuadraticSpline(bound=5.0))
    with pytest.raises(ValueError, match="3 \\* bins - 1"):
        SPLINE.forward(jnp.zeros((2,)), jnp.zeros((2, 5)))


def test_alternating_coupling_transforms_only_its_half():
    """The alternating mask gives the transformer the transformed entries only (odd size,
    both parities): kept entries pass through bit for bit, and the conditioner's last
    layer is as wide as the transformed half times the spline's parameter count.
    """
    from jaxflows.bijectors import Coupling, RationalQuadraticSpline
    spline = RationalQuadraticSpline(bins=4, bound=3.0)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5))
    for parity, kept, moved in ((0, [0, 2, 4], [1, 3]), (1, [1, 3], [0, 2, 4])):
        layer = Coupling(transformer=spline, hidden_channels=8, mask="alternating",
                         parity=parity)
        v = layer.init(jax.random.PRNGKey(1), x)
        v = perturb_params(v, jax.random.PRNGKey(2), 0.5)
        y, _ = layer.apply(v, x)
        np.testing.assert_array_equal(y[:, kept], x[:, kept])
        assert float(jnp.min(jnp.abs(y[:, moved] - x[:, moved]))) > 0
        widths = [leaf.shape[-1] for path, leaf in
                  jax.tree_util.tree_leaves_with_path(v["params"])
                  if jax.tree_util.keystr(path).endswith("['kernel']")]
        assert widths[-1] == len(moved) * spline.num_params, widths
