"""Flow: log_prob = base + log-det, sampling (shapes, temperature, context), consistency."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Flow, bits_per_dim
from jaxflows.bijectors.base import Bijector
from jaxflows.bijectors.preprocessing import ScaleToUnit
from jaxflows.bijectors.reshape import Squeeze, squeeze2d
from jaxflows.models.multiscale import MultiScale
from jaxflows.testing import cast_floats, enable_x64, exact_log_det, perturb_params


class _ElementwiseAffine(Bijector):
    """y = x * exp(s) + b with per-coordinate parameters (a cheap multiscale step)."""

    @nn.compact
    def transform(self, x, inverse, context, train):
        s = self.param("log_scale", nn.initializers.zeros, x.shape[1:]).astype(x.dtype)
        b = self.param("shift", nn.initializers.zeros, x.shape[1:]).astype(x.dtype)
        ld = jnp.broadcast_to(jnp.sum(s), x.shape[:1])
        if inverse:
            return (x - b) * jnp.exp(-s), -ld
        return x * jnp.exp(s) + b, ld


SHAPE = (4, 4, 2)
CTX_DIM = 3


def _make_flow():
    # 2 levels of squeeze -> affine step -> (learned-prior) split; the split's prior
    # reads the vector context, so the flow is conditional.
    body = MultiScale(levels=2, make_level=lambda level: _ElementwiseAffine())
    return Flow(bijector=body, event_shape=SHAPE)


class _Jitted:
    """The flow's methods, each jitted once for the whole module."""

    def __init__(self, flow):
        self.log_prob = jax.jit(lambda v, x, c: flow.apply(v, x, context=c))
        self.forward = jax.jit(lambda v, x, c: flow.apply(
            v, x, context=c, method=flow.forward_and_log_det))
        self.sample = jax.jit(lambda v, n, t, c, k: flow.apply(
            v, n, temperature=t, context=c, method=flow.sample, rngs={"sample": k}),
            static_argnums=1)
        self.sample_and_log_prob = jax.jit(lambda v, n, c, k: flow.apply(
            v, n, context=c, method=flow.sample_and_log_prob, rngs={"sample": k}),
            static_argnums=1)


@pytest.fixture(scope="module")
def setup():
    flow = _make_flow()
    kx, kc, ki, kp = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(kx, (3,) + SHAPE)
    ctx = jax.random.normal(kc, (3, CTX_DIM))
    variables = jax.jit(flow.init)(ki, x, context=ctx)
    variables = perturb_params(variables, kp, 0.3)
    return flow, variables, x, ctx, _Jitted(flow)


def test_log_prob_is_base_plus_log_det(setup):
    flow, variables, x, ctx, fn = setup
    lp = fn.log_prob(variables, x, ctx)
    z, ld = fn.forward(variables, x, ctx)
    assert lp.shape == (3,) and z.shape == x.shape
    d = math.prod(SHAPE)
    base = -0.5 * jnp.sum(z.reshape(3, -1) ** 2, -1) - 0.5 * d * math.log(2 * math.pi)
    np.testing.assert_allclose(lp, base + ld, rtol=1e-5, atol=1e-4)
    # and the log-det itself is the exact Jacobian's (float64).
    with enable_x64():
        v64 = cast_floats(variables, jnp.float64)
        x64, c64 = x.astype(jnp.float64), ctx.astype(jnp.float64)

        @jax.jit
        def both(v, x, c):
            exact = jax.vmap(lambda xi, ci: exact_log_det(
                lambda u: flow.apply(v, u[None], context=ci[None],
                                     method=flow.forward_and_log_det)[0][0], xi[None])[0])(x, c)
            return flow.apply(v, x, context=c, method=flow.forward_and_log_det)[1], exact
        ld64, exact = both(v64, x64, c64)
        np.testing.assert_allclose(ld64, exact, rtol=1e-9, atol=1e-9)


def test_context_changes_the_density(setup):
    flow, variables, x, ctx, fn = setup
    lp1 = fn.log_prob(variables, x, ctx)
    lp2 = fn.log_prob(variables, x, ctx + 1.0)
    assert float(jnp.max(jnp.abs(lp1 - lp2))) > 1e-3


def test_sample_shapes_temperature_and_consistency(setup):
    flow, variables, x, ctx, fn = setup
    key = jax.random.PRNGKey(1)
    c1 = ctx[:1]  # batch-1 context broadcasts to every sample

    s1, s_half = (fn.sample(variables, 5, t, c1, key) for t in (1.0, 0.5))
    assert s1.shape == (5,) + SHAPE and s1.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(s1)))
    cb = jnp.broadcast_to(c1, (5, CTX_DIM))
    z1 = fn.forward(variables, s1, cb)[0]
    z_half = fn.forward(variables, s_half, cb)[0]
    # Same rng: the latent at temperature T is T times the latent at temperature 1,
    # and that latent is a standard normal draw (every level's prior is scaled).
    np.testing.assert_allclose(z_half, 0.5 * z1, rtol=1e-4, atol=1e-4)
    # The latent is the N(0, I) draw from the "sample" stream.
    assert abs(float(jnp.std(z1)) - 1.0) < 0.3
    # sample_and_log_prob returns log_prob of the samples.
    xs, lps = fn.sample_and_log_prob(variables, 5, c1, key)
    np.testing.assert_allclose(xs, s1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lps, fn.log_prob(variables, xs, cb), rtol=1e-4, atol=1e-3)


def test_different_sample_keys_give_different_samples(setup):
    flow, variables, x, ctx, fn = setup
    a, b = (fn.sample(variables, 5, 1.0, ctx[:1], jax.random.PRNGKey(k)) for k in (0, 1))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_bad_inputs(setup):
    flow, variables, x, ctx, fn = setup
    with pytest.raises(ValueError, match="x must have shape"):
        flow.apply(variables, x[:, :2], context=ctx)
    with pytest.raises(ValueError, match="context must have batch size 1 or num_samples"):
        flow.apply(variables, 5, context=ctx, method=flow.sample,
                   rngs={"sample": jax.random.PRNGKey(0)})
    with pytest.raises(ValueError, match="num_samples"):
        flow.apply(variables, 0, context=ctx[:1], method=flow.sample,
                   rngs={"sample": jax.random.PRNGKey(0)})


def test_multiscale_bad_shapes_and_latent_layout():
    ms = MultiScale(levels=2, make_level=lambda level: None)
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*2"):
        ms.init(jax.random.PRNGKey(0), x[:, :, :2])
    with pytest.raises(ValueError, match="rank 4"):
        ms.init(jax.random.PRNGKey(0), x[..., 0])
    # With identity steps and the split at init (mu = 0, sigma = 1), the latent layout of
    # the module docstring puts every value back where it came from: y == x exactly.
    v = ms.init(jax.random.PRNGKey(0), x)
    y, ld = ms.apply(v, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ld, 0.0)
    # The documented coordinates: level 0's factored-out part is channels [2C, 4C) of
    # squeeze(z). Perturbing only level 0's split prior changes exactly those.
    v2 = perturb_params(v, jax.random.PRNGKey(1), 0.5)
    y2, ld2 = ms.apply(v2, x)
    sq_x, sq_y2 = squeeze2d(x), squeeze2d(y2)
    np.testing.assert_array_equal(sq_y2[..., :2], sq_x[..., :2])
    moved = np.abs(np.asarray(sq_y2[..., 2:] - sq_x[..., 2:])) > 1e-3
    assert moved.mean() > 0.9, moved.mean()
    assert np.all(np.abs(np.asarray(ld2)) > 1e-3)


def test_squeeze_odd_size_names_the_argument():
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze().init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 4, 1)))


def test_scale_to_unit_log_det_and_bits_per_dim():
    x = jnp.full((2, 4, 4, 3), 100.0)
    y, ld = ScaleToUnit(256).apply({}, x)
    np.testing.assert_allclose(y, x / 256)
    np.testing.assert_allclose(ld, -48 * math.log(256), rtol=1e-6)
    # A uniform density on [0, 256)^D is exactly 8 bits/dim; on [0, 1)^D it is 0
    # nats, i.e. 8 bits/dim with unit_scale.
    lp_uniform = jnp.full((2,), -48 * math.log(256))
    np.testing.assert_allclose(bits_per_dim(lp_uniform, 48), 8.0, rtol=1e-6)
    np.testing.assert_allclose(bits_per_dim(lp_uniform, (4, 4, 3)), 8.0, rtol=1e-6)
    np.testing.assert_allclose(bits_per_dim(jnp.zeros(2), 48, num_bits=5, unit_scale=True), 5.0)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(lp_uniform, 0)
