"""The plain-function and distrax adapters, used from code that never imports flax.

This module deliberately imports only jax, numpy, distrax and jaxflows (checked by
``test_this_module_does_not_import_flax``): everything a user needs to evaluate, invert,
sample and differentiate a trained flow is reachable without touching flax.

distrax is imported inside the test that uses it, as ``as_distrax`` does: importing it
imports TensorFlow (through TensorFlow Probability's JAX substrate), about 8 s of CPU that
every test worker would otherwise pay while collecting this module.
"""
import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflows
from jaxflows.interop import as_distrax, as_functions

SHAPE = (2, 2, 2)


@pytest.fixture(scope="module")
def model():
    flow = jaxflows.models.glow(SHAPE, levels=1, steps_per_level=1, hidden_channels=2)
    k_x, k_init, k_pert = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.uniform(k_x, (3,) + SHAPE, maxval=256.0)
    variables = jax.jit(flow.init)(k_init, x)
    variables = jaxflows.testing.perturb_params(variables, k_pert, 0.05)
    reference = jax.jit(lambda v, x: flow.apply(v, x))(variables, x)  # Flow.log_prob
    return flow, variables, x, reference


def test_this_module_does_not_import_flax():
    tree = ast.parse(pathlib.Path(__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "flax" not in imported, imported
    assert {"jax", "jaxflows", "distrax"} <= imported


def test_plain_functions_round_trip_and_match_log_prob(model):
    flow, variables, x, reference = model
    fwd, inv = as_functions(flow, variables)
    z, ld = jax.jit(fwd)(x)
    xr, ild = jax.jit(inv)(z)
    assert z.shape == x.shape and ld.shape == (3,)
    np.testing.assert_allclose(xr, x, atol=256 * 1e-5)
    np.testing.assert_allclose(ild, -ld, rtol=1e-5)
    d = np.prod(SHAPE)
    log_base = -0.5 * jnp.sum(z.reshape(3, -1) ** 2, -1) - 0.5 * d * jnp.log(2 * jnp.pi)
    np.testing.assert_allclose(log_base + ld, reference, rtol=1e-5, atol=1e-3)
    # Differentiable with respect to the input, like any jax function.
    g = jax.grad(lambda x: jnp.sum(fwd(x)[1]))(x)
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


def test_plain_functions_reject_non_bijectors():
    with pytest.raises(ValueError, match="forward_and_log_det"):
        as_functions(object(), {})


def test_distrax_adapter_log_prob_and_sampling(model):
    import distrax
    flow, variables, x, reference = model
    dist = as_distrax(flow, variables)
    assert isinstance(dist, distrax.Distribution)
    assert dist.event_shape == SHAPE and dist.batch_shape == ()
    # The distribution is a pytree: it can be an argument of a jitted function.
    log_prob = jax.jit(lambda d, v: d.log_prob(v))
    np.testing.assert_allclose(log_prob(dist, x), reference, rtol=1e-5, atol=1e-3)
    # Any leading sample shape.
    lp2 = log_prob(dist, x.reshape((3, 1) + SHAPE))
    np.testing.assert_allclose(lp2[:, 0], reference, rtol=1e-5, atol=1e-3)
    sample = jax.jit(lambda d, k: d.sample(seed=k, sample_shape=(2, 2)))
    s = sample(dist, jax.random.PRNGKey(1))
    assert s.shape == (2, 2) + SHAPE and bool(jnp.all(jnp.isfinite(s)))
    s2, lp = jax.jit(lambda d, k: d.sample_and_log_prob(seed=k, sample_shape=(4,)))(
        dist, jax.random.PRNGKey(1))
    np.testing.assert_allclose(s2, s.reshape((4,) + SHAPE), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lp, log_prob(dist, s2), rtol=1e-5, atol=1e-3)
    # The seed matters; as the temperature goes to 0 every sample tends to the pre-image
    # of the zero latent (temperature 0 itself is refused: issue 13).
    other = sample(dist, jax.random.PRNGKey(2))
    assert float(jnp.max(jnp.abs(other - s))) > 1e-2
    cold = sample(as_distrax(flow, variables, temperature=1e-6), jax.random.PRNGKey(1))
    np.testing.assert_allclose(cold[0, 0], cold[1, 1], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        as_distrax(flow, variables, temperature=0.0)
    with pytest.raises(ValueError, match="value must have shape"):
        dist.log_prob(x[..., :1, :])


def test_distrax_adapter_rejects_non_flows(model):
    with pytest.raises(ValueError, match="must be a jaxflows Flow"):
        as_distrax(object(), {})
