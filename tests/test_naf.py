"""NAF's DSF and DDSF transformers: closed-form special cases, log-dets against autodiff,
inverses by bisection in float64, extreme inputs, diagnostics and bad settings.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import DDSF, DSF
from jaxflows.testing import enable_x64

X = np.linspace(-30.0, 30.0, 41)


@functools.partial(jax.jit, static_argnums=0)
def _run(t, x, p, xe, pe):
    """Everything one transformer is checked on, in one compiled function."""
    y, ld = t.forward(x, p)
    dydx = jax.vmap(jax.grad(lambda a, b: t.forward(a, b)[0]))(x, p)
    xr, ild, info = t.inverse_and_info(y, p)
    shared = jnp.broadcast_to(p[0], p.shape)                      # one map for all x
    y_shared = t.forward(x, shared)[0]
    ye, lde = t.forward(xe, pe)
    g = jax.grad(lambda q: jnp.sum(t.forward(xe, q)[1] + t.forward(xe, q)[0]))(pe)
    return y, ld, dydx, xr, ild, info.converged, y_shared, ye, lde, g


@pytest.mark.parametrize("t", [DSF(hidden=3), DDSF(hidden=2, layers=2)], ids=["dsf", "ddsf"])
def test_log_det_and_inverse_in_float64(t):
    with enable_x64():
        x = jnp.asarray(X[10:31], jnp.float64)              # |x| <= 15: y in range
        p = jax.random.normal(jax.random.PRNGKey(0), x.shape + (t.num_params,), jnp.float64)
        xe = jnp.asarray(X * 10, jnp.float64)              # extreme inputs, |x| <= 300
        pe = jax.random.normal(jax.random.PRNGKey(1), xe.shape + (t.num_params,), jnp.float64)
        y, ld, dydx, xr, ild, converged, y_shared, ye, lde, g = _run(t, x, p, xe, pe)
        np.testing.assert_allclose(ld, jnp.log(dydx), atol=1e-10)
        assert bool(jnp.all(converged))
        np.testing.assert_allclose(xr, x, atol=1e-9)
        np.testing.assert_allclose(ild, -ld, atol=1e-9)
        assert bool(jnp.all(jnp.diff(y_shared) > 0))
        # Extreme inputs: finite values, log-dets and gradients (log-space numerics).
        assert bool(jnp.all(jnp.isfinite(ye)) & jnp.all(jnp.isfinite(lde)))
        assert bool(jnp.all(jnp.isfinite(g)))


def test_dsf_with_one_unit_and_no_delta_is_affine():
    """D = 1: logit(sigmoid(a x + b)) = a x + b exactly (a = softplus(p_a + c))."""
    with enable_x64():
        t = DSF(hidden=1, delta=0.0)
        x = jnp.asarray(X[5:36], jnp.float64)
        p = jnp.stack([jnp.full_like(x, 0.7), jnp.full_like(x, -1.3), jnp.full_like(x, 5.0)], -1)
        a = jax.nn.softplus(0.7 + np.log(np.expm1(1.0)))
        y, ld = jax.jit(t.forward)(x, p)
        np.testing.assert_allclose(y, a * x - 1.3, atol=1e-12)
        np.testing.assert_allclose(ld, np.log(a), atol=1e-12)


def test_ddsf_with_one_layer_is_dsf():
    """L = 1: the u of a single input is 1, so DDSF's layer is DSF's map."""
    with enable_x64():
        dsf, ddsf = DSF(hidden=3), DDSF(hidden=3, layers=1)
        assert ddsf.num_params == dsf.num_params + 3                # + p_u (3 x 1)
        x = jnp.asarray(X[10:31], jnp.float64)
        p = jax.random.normal(jax.random.PRNGKey(2), x.shape + (9,), jnp.float64)
        pu = jax.random.normal(jax.random.PRNGKey(3), x.shape + (3,), jnp.float64)
        full = jnp.concatenate([p[..., :6], pu, p[..., 6:]], -1)   # a, b, u, w
        for a, b in zip(jax.jit(dsf.forward)(x, p), jax.jit(ddsf.forward)(x, full)):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_zero_params_are_the_identity_up_to_delta():
    with enable_x64():
        x = jnp.linspace(0.0, 6.0, 9, dtype=jnp.float64)
        for t, tol in [(DSF(hidden=4, delta=0.0), 1e-13), (DDSF(hidden=3, layers=2, delta=0.0),
                                                           1e-12), (DSF(hidden=4), 2e-3)]:
            y, ld = jax.jit(t.forward)(x, jnp.zeros(x.shape + (t.num_params,), jnp.float64))
            np.testing.assert_allclose(y, x, atol=tol)


def test_target_outside_the_range_is_reported_not_converged():
    """With delta > 0, |y| < logit(1 - delta / 2) ~ 14.5: larger targets have no preimage."""
    t = DSF(hidden=2)
    y = jnp.asarray([0.5, 20.0, -20.0])
    _, _, info = jax.jit(t.inverse_and_info)(y, jnp.zeros((3, t.num_params)))
    np.testing.assert_array_equal(info.converged, [True, False, False])


@pytest.mark.parametrize("make, match", [
    (lambda: DSF(hidden=0), "hidden"), (lambda: DSF(delta=1.0), "delta"),
    (lambda: DSF(delta=-1e-3), "delta"), (lambda: DDSF(layers=0), "layers"),
    (lambda: DDSF(hidden=2.5), "hidden"),
])
def test_bad_settings_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_params_shape_in_inverse_raises():
    with pytest.raises(ValueError, match="params must have shape"):
        DSF(hidden=2).inverse(jnp.zeros((3,)), jnp.zeros((3, 5)))


def test_coupling_with_a_numerical_inverse_reports_it():
    """Every Coupling whose transformer has ``inverse_and_info`` (here DSF, checkerboard
    mask) sows its solver's summary; the kept half does not count; an affine one sows none.
    """
    from jaxflows.bijectors import AffineCoupling, Coupling, monotone_inverse_report
    layer = Coupling(transformer=DSF(hidden=2), mask="checkerboard", hidden_channels=4)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 1))
    variables = layer.init(jax.random.PRNGKey(4), x)
    inverse = jax.jit(lambda v, y: layer.apply(v, y, method=layer.inverse_and_log_det,
                                               mutable=["intermediates"])[1])
    report = monotone_inverse_report(inverse(variables, x))
    assert report["num_solves"] == 1 and report["num_not_converged"] == 0
    assert report["max_iterations"] > 0
    # the transformed (parity-1) squares beyond the logit's reach fail; the kept ones,
    # also set to 1e30, are not counted
    report = monotone_inverse_report(inverse(variables, jnp.full_like(x, 1e30)))
    assert report["num_not_converged"] == 2 * 8
    affine = AffineCoupling(mask="checkerboard", hidden_channels=4)
    av = affine.init(jax.random.PRNGKey(4), x)
    _, inter = affine.apply(av, x, method=affine.inverse_and_log_det, mutable=["intermediates"])
    assert monotone_inverse_report(inter)["num_solves"] == 0
