"""Spectral normalisation by the operator norm, its persistent state, and the activations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
from jaxflows.nn.lipschitz import (
    CLIPSWISH_LIPSCHITZ,
    CLipSwish,
    LipSwish,
    SpectralConv,
    SpectralDense,
    update_lipschitz_state,
)

SHAPE = (1, 5, 5, 3)  # tiny image: the explicit convolution matrix is 100 x 75


def _matrix(fn, in_shape):
    """Explicit matrix of the linear map ``fn`` on inputs of ``in_shape``."""
    d = int(np.prod(in_shape))
    return np.asarray(jax.jacfwd(lambda z: fn(z.reshape(in_shape)).reshape(-1))(jnp.zeros(d)))


def _top_singular_value(m):
    return float(np.linalg.svd(m, compute_uv=False)[0])


@pytest.fixture(scope="module")
def conv():
    layer = SpectralConv(4, (3, 3), coeff=0.9, use_bias=False)
    x = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
    variables = jax.jit(layer.init)(jax.random.PRNGKey(1), x)
    return layer, variables, x


def test_conv_spectral_norm_is_the_operator_norm(conv):
    layer, variables, _ = conv
    kernel = variables["params"]["kernel"]
    raw = lambda z: jax.lax.conv_general_dilated(z, kernel, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    true_sigma = _top_singular_value(_matrix(raw, SHAPE))
    u = variables["lipschitz"]["u"]
    estimate = float(jnp.linalg.norm(raw(u)))
    # Power iteration converges from below, at a rate set by the gap between the top
    # two singular values of the operator (200 iterations at init).
    assert estimate <= true_sigma * (1 + 1e-6)
    np.testing.assert_allclose(estimate, true_sigma, rtol=1e-3)
    # The norm of the reshaped kernel is a different (here smaller) number: using it
    # would not make the convolution a contraction.
    reshaped = _top_singular_value(np.asarray(kernel).reshape(-1, kernel.shape[-1]))
    assert reshaped < 0.95 * true_sigma
    # The normalised layer's explicit matrix has top singular value coeff (sigma > coeff here).
    assert true_sigma > 0.9
    normalised = _top_singular_value(_matrix(lambda z: layer.apply(variables, z), SHAPE))
    np.testing.assert_allclose(normalised, 0.9 * true_sigma / estimate, rtol=1e-5)
    np.testing.assert_allclose(normalised, 0.9, rtol=1e-3)


def test_dense_spectral_norm():
    layer = SpectralDense(7, coeff=0.5, use_bias=False)
    x = jnp.ones((2, 6))
    variables = jax.jit(layer.init)(jax.random.PRNGKey(3), x)
    w = np.asarray(variables["params"]["kernel"])
    u = variables["lipschitz"]["u"]
    np.testing.assert_allclose(float(jnp.linalg.norm(u @ w)), _top_singular_value(w), rtol=1e-5)
    normalised = _matrix(lambda z: layer.apply(variables, z), (1, 6))
    np.testing.assert_allclose(_top_singular_value(normalised), 0.5, rtol=1e-5)


def test_state_updates_only_in_training_mode(conv):
    layer, variables, x = conv
    # New weights make the stored vector stale.
    kernel = variables["params"]["kernel"]
    new_kernel = kernel + 0.5 * jax.random.normal(jax.random.PRNGKey(7), kernel.shape)
    stale = {"params": {"kernel": new_kernel}, "lipschitz": variables["lipschitz"]}
    u_old = stale["lipschitz"]["u"]

    run = jax.jit(lambda v, train: layer.apply(v, x, train=train, mutable=["lipschitz"]),
                  static_argnums=1)
    _, state = run(stale, False)
    np.testing.assert_array_equal(state["lipschitz"]["u"], u_old)
    # train=True with an immutable collection: runs, stores nothing.
    y = layer.apply(stale, x, train=True)
    assert y.shape == x.shape[:-1] + (4,)
    _, state = run(stale, True)
    assert float(jnp.max(jnp.abs(state["lipschitz"]["u"] - u_old))) > 1e-3

    # Repeated training-mode updates converge to the new operator norm (from below; the
    # rate depends on the gap between the top two singular values of the operator).
    refreshed = update_lipschitz_state(layer, stale, x, num_rounds=150)
    raw = lambda z: jax.lax.conv_general_dilated(z, new_kernel, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    true_sigma = _top_singular_value(_matrix(raw, SHAPE))
    estimate = float(jnp.linalg.norm(raw(refreshed["lipschitz"]["u"])))
    stale_estimate = float(jnp.linalg.norm(raw(u_old)))
    assert estimate <= true_sigma * (1 + 1e-6)
    assert true_sigma - estimate < 1e-3 * true_sigma
    assert true_sigma - estimate < 0.01 * (true_sigma - stale_estimate)


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.5, -0.2])
def test_bad_coefficient(coeff):
    x = jnp.ones((1, 4, 4, 2))
    with pytest.raises(ValueError, match="coeff"):
        SpectralConv(3, coeff=coeff).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="coeff"):
        ResidualBlock(hidden_channels=4,
                      spectral_norm=dict(coeff=coeff)).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="coeff"):
        DenseResidualBlock(growth=4,
                           spectral_norm=dict(coeff=coeff)).init(jax.random.PRNGKey(0), x)


def test_input_shape_is_tied_to_the_state(conv):
    layer, variables, _ = conv
    with pytest.raises(ValueError, match="shape"):
        layer.apply(variables, jnp.ones((1, 6, 6, 3)))


def test_activations_are_1_lipschitz():
    for b in (-3.0, 0.5, 3.0):
        # A grid in units of 1/beta covers where the derivatives peak (|beta t| ~ 2.4).
        t = jnp.linspace(-30.0, 30.0, 30_001) / jax.nn.softplus(b)
        # LipSwish: |f'| <= 1 on a dense grid, and close to 1 somewhere (not over-damped).
        d = jax.vmap(jax.grad(lambda s, b=b: LipSwish(beta_init=b).apply(
            {"params": {"beta": jnp.float32(b)}}, s)))(t)
        assert float(jnp.max(jnp.abs(d))) <= 1.0
        assert float(jnp.max(jnp.abs(d))) > 0.99
        # CLipSwish: per coordinate the Jacobian column (f1'(t), f2'(t)) has norm <= 1.
        jac = jax.vmap(jax.jacfwd(lambda s, b=b: CLipSwish().apply(
            {"params": {"beta": jnp.float32(b)}}, s[None])))(t)
        col = jnp.sqrt(jnp.sum(jnp.square(jac), axis=-1))
        assert float(jnp.max(col)) <= 1.0
        assert float(jnp.max(col)) > 0.9999
    assert 1.0035 < CLIPSWISH_LIPSCHITZ < 1.0045  # the paper's 1.004
    # Pairs of random vectors: ||f(x) - f(y)|| <= ||x - y||.
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x = 3 * jax.random.normal(kx, (4096, 8))
    y = x + 0.3 * jax.random.normal(ky, x.shape)
    v = {"params": {"beta": jnp.float32(0.5)}}
    for f in (lambda z: LipSwish().apply(v, z), lambda z: CLipSwish().apply(v, z)):
        ratio = jnp.linalg.norm(f(x) - f(y), axis=-1) / jnp.linalg.norm(x - y, axis=-1)
        assert float(jnp.max(ratio)) <= 1.0
