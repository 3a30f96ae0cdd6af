"""The MixLogCDF transformer of Flow++ (jaxflows.bijectors.mixlogcdf).

Round trip in float32 for latents up to |y| = 30, log-space precision where the
references' ``logit(exp(log F))`` breaks, elementwise log-dets against autodiff in
float64, the inverse's diagnostics (a target out of reach is reported), and errors. The
coupling-level checks (float64 Jacobian, gradients, perturbed parameters) are registry
cases in ``tests/registry/flowpp.py``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import MixLogCDF, MixLogCDFCoupling, monotone_inverse_report
from jaxflows.testing import enable_x64

K = 4
T = MixLogCDF(K)


@jax.jit
def _inverse_then_forward(y, params):
    x, ild, info = T.inverse_and_info(y, params)
    y2, ld = T.forward(x, params)
    return x, y2, ild, ld, info


def test_num_params_and_identity_at_zero():
    assert T.num_params == 2 + 3 * K
    x = jnp.linspace(-40.0, 40.0, 81)
    y, ld = T.forward(x, jnp.zeros(x.shape + (T.num_params,)))
    # Log space: logit(F) = log F - log(1 - F) stays exact where F rounds to 1 in float32
    # (x >= 17); the references' logit(exp(log F)) gives inf there.
    np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)
    naive = jnp.log(jax.nn.sigmoid(x)) - jnp.log1p(-jax.nn.sigmoid(x))
    assert not bool(jnp.all(jnp.isfinite(naive)))   # what the log-space form avoids


def test_round_trip_float32_up_to_30():
    n = 601
    params = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (n, T.num_params))
    y = jnp.linspace(-30.0, 30.0, n)
    x, y2, ild, ld, info = _inverse_then_forward(y, params)
    assert bool(jnp.all(info.converged)), "some inverse did not converge"
    assert float(jnp.max(jnp.abs(y2 - y))) <= 1e-5
    np.testing.assert_allclose(ild, -ld, atol=1e-4)
    # and forward then inverse, at the solutions
    x3, *_ = _inverse_then_forward(y2, params)
    np.testing.assert_allclose(x3, x, rtol=1e-5, atol=1e-5)


def test_log_det_matches_autodiff_float64():
    with enable_x64():
        params = jax.random.normal(jax.random.PRNGKey(1), (64, T.num_params), jnp.float64)
        x = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (64,), jnp.float64)

        @jax.jit
        def run(x, params):
            y, ld = T.forward(x, params)
            d = jax.vmap(jax.grad(lambda xi, pi: T.forward(xi, pi)[0]))(x, params)
            xr, ild = T.inverse(y, params)
            return ld, jnp.log(d), xr, ild
        ld, log_d, xr, ild = run(x, params)
        np.testing.assert_allclose(ld, log_d, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(xr, x, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ild, -ld, rtol=1e-10, atol=1e-10)


def test_log_scales_clamped_below():
    params = jnp.zeros((1, T.num_params)).at[0, 2 + 2 * K:].set(-50.0)
    clamped = jnp.zeros((1, T.num_params)).at[0, 2 + 2 * K:].set(-7.0)
    x = jnp.asarray([1e-3])
    np.testing.assert_array_equal(T.forward(x, params)[0], T.forward(x, clamped)[0])


def test_unreachable_target_is_reported():
    """A target beyond the bracket expansion's reach is flagged, never silent."""
    layer = MixLogCDFCoupling(components=K, hidden_channels=4)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 4))
    variables = layer.init(jax.random.PRNGKey(4), x)
    inverse = jax.jit(lambda v, y: layer.apply(v, y, method=layer.inverse_and_log_det,
                                               mutable=["intermediates"])[1])
    report = monotone_inverse_report(inverse(variables, x.at[:, 2:].set(1e30)))
    assert report["num_solves"] == 1 and report["num_not_converged"] == 4
    assert monotone_inverse_report(inverse(variables, x))["num_not_converged"] == 0


@pytest.mark.parametrize("kw, match", [
    (dict(components=0), "components"), (dict(components=2.5), "components"),
    (dict(min_log_scale=float("nan")), "min_log_scale"), (dict(tol=0.0), "tol")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        MixLogCDF(**kw)


def test_bad_params_shape():
    with pytest.raises(ValueError, match=r"params.*\(14,\)"):
        T.forward(jnp.zeros(3), jnp.zeros((3, 5)))
