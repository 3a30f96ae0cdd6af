"""Model factories: Glow on 32x32x3 round-trips, exact log-density, registry of models."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Flow, bits_per_dim
from jaxflows.models import MODELS, get_model, glow
from jaxflows.testing import cast_floats, enable_x64, exact_log_det, perturb_params


def _pixels(key, shape):
    return jax.random.uniform(key, shape, minval=0.0, maxval=256.0)


def _init_perturbed(flow, x, scale, seed=0):
    """Initialises (ActNorm from ``x``) and adds N(0, scale^2) noise to every parameter.

    Scales are kept small: the conditioners' ActNorm layers are initialised to amplify
    their small hidden activations many-fold, so large perturbations of the weights
    feeding them make couplings scale by e^{+-30} and float32 inverses meaningless.
    """
    k_init, k_pert = jax.random.split(jax.random.PRNGKey(seed))
    variables = jax.jit(flow.init)(k_init, x)
    return perturb_params(variables, k_pert, scale)


def test_glow_32x32x3_round_trip_with_random_parameters():
    shape = (32, 32, 3)
    flow = glow(shape, levels=2, steps_per_level=1, hidden_channels=4)
    x = _pixels(jax.random.PRNGKey(1), (2,) + shape)
    # Every parameter gets N(0, 0.05^2) noise (see _init_perturbed for why not more).
    variables = _init_perturbed(flow, x, scale=0.05)

    @jax.jit
    def round_trip(v, x):
        z, ld = flow.apply(v, x, method=flow.forward_and_log_det)
        xr, ild = flow.apply(v, z, method=flow.inverse_and_log_det)
        return z, ld, xr, ild

    z, ld, xr, ild = round_trip(variables, x)
    d = math.prod(shape)
    lp = -0.5 * jnp.sum(z.reshape(2, -1) ** 2, -1) - 0.5 * d * math.log(2 * math.pi) + ld
    assert z.shape == x.shape and z.dtype == jnp.float32
    assert lp.shape == (2,) and bool(jnp.all(jnp.isfinite(lp)))
    assert float(jnp.max(jnp.abs(z - (x / 256 - 0.5)))) > 1e-2, "flow is trivial"
    # float32 precision: pixel values up to 256 come back to 1e-5 relative.
    err = float(jnp.max(jnp.abs(xr - x)))
    assert err < 256 * 1e-5, f"round-trip error {err}"
    np.testing.assert_allclose(ild, -ld, rtol=1e-5)
    # The density is of pixel values: preprocessing's -D log 256 is included.
    bpd = bits_per_dim(lp, shape)
    assert bool(jnp.all(jnp.isfinite(bpd)))


def test_glow_log_density_equals_exact_jacobian_computation():
    shape = (4, 4, 3)
    flow = glow(shape, levels=2, steps_per_level=1, hidden_channels=4)
    x = _pixels(jax.random.PRNGKey(2), (2,) + shape)
    variables = _init_perturbed(flow, x, scale=0.05)
    with enable_x64():
        v64 = cast_floats(variables, jnp.float64)
        x64 = x.astype(jnp.float64)

        @jax.jit
        def both(v, x):
            f = lambda xi: flow.apply(v, xi[None], method=flow.forward)[0]  # noqa: E731
            z = jax.vmap(f)(x)
            d = math.prod(shape)
            log_base = (-0.5 * jnp.sum(z.reshape(x.shape[0], -1) ** 2, -1)
                        - 0.5 * d * jnp.log(2 * jnp.pi))
            return flow.apply(v, x), log_base + exact_log_det(f, x)

        lp, expected = both(v64, x64)
    assert lp.dtype == jnp.float64
    np.testing.assert_allclose(lp, expected, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("name,kwargs", [
    ("glow", dict(levels=2, steps_per_level=2, hidden_channels=4, coupling="additive",
                  preprocessing="logit", lu=False, num_bins=32)),
    ("realnvp", dict(levels=2, hidden_channels=4, num_blocks=1)),
], ids=["glow_additive_logit_plain1x1", "realnvp"])
def test_factories_build_compile_and_give_finite_log_probs(name, kwargs):
    shape = (4, 4, 2)
    flow = get_model(name, image_shape=shape, **kwargs)
    assert isinstance(flow, Flow)
    levels = kwargs.get("num_bins", 256)
    x = jax.random.uniform(jax.random.PRNGKey(3), (4,) + shape, maxval=levels)
    variables = _init_perturbed(flow, x, scale=0.03)

    @jax.jit
    def run(v, x):
        z, ld = flow.apply(v, x, method=flow.forward_and_log_det)
        return z, ld, flow.apply(v, z, method=flow.inverse)

    z, ld, xr = run(variables, x)
    assert z.shape == x.shape and ld.shape == (4,)
    assert bool(jnp.all(jnp.isfinite(z))) and bool(jnp.all(jnp.isfinite(ld)))
    np.testing.assert_allclose(xr, x, atol=levels * 1e-4)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model name 'nope'.*glow.*realnvp"):
        get_model("nope", image_shape=(8, 8, 1))
    assert MODELS["glow"] is glow


def test_factories_reject_bad_arguments():
    with pytest.raises(ValueError, match="image_shape height and width must be divisible by 8"):
        glow((28, 28, 1), levels=3)
    with pytest.raises(ValueError, match="image_shape must be"):
        glow((28, 28), levels=2)
    with pytest.raises(ValueError, match="coupling must be one of"):
        glow((8, 8, 1), levels=2, coupling="spline")
    with pytest.raises(ValueError, match="attnflow: coupling must be one of"):
        get_model("attnflow", image_shape=(8, 8, 1), levels=2, coupling="afine")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        get_model("realnvp", image_shape=(8, 8, 1), preprocessing="none")
