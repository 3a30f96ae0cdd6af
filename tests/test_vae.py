"""The VAE with an IAF posterior: log q by change of variables, bounds, training, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.models.vae import VAE, bounds, sigmoid_bce, vae


def _setup(posterior, latent=3, data=12):
    model = vae(data, posterior=posterior, latent_dim=latent, hidden=(16,), context_dim=5,
                flow_hidden=(8,), sigmoid_units=4)
    x = (jax.random.uniform(jax.random.PRNGKey(0), (4, data)) > 0.5).astype(jnp.float32)
    variables = jax.jit(model.init)({"params": jax.random.PRNGKey(1),
                                     "sample": jax.random.PRNGKey(2)}, x)
    # perturb every parameter so the IAF is far from its identity initialisation
    leaves, tree = jax.tree_util.tree_flatten(variables["params"])
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    variables = dict(variables, params=jax.tree_util.tree_unflatten(tree, leaves))
    return model, variables, x


@pytest.mark.parametrize("posterior", ["gaussian", "iaf_affine", "iaf_dsf"])
def test_log_q_is_the_change_of_variables_density(posterior):
    """The posterior's log q(z|x) = log N(eps) - log|det dz/deps| (Jacobian by jax)."""
    model, variables, x = _setup(posterior)
    eps = jax.random.normal(jax.random.PRNGKey(7), (x.shape[0], 3))
    z, log_q = jax.jit(lambda v, a, e: model.apply(v, a, e, method=VAE.posterior_from_noise))(
        variables, x, eps)
    mu, log_sigma, h = jax.jit(lambda v, a: model.apply(v, a, method=VAE.encode))(variables, x)
    # posterior_sample draws eps from the "sample" stream and applies the same map
    zs, lqs = jax.jit(lambda v, a, k: model.apply(v, a, rngs={"sample": k},
                                                  method=VAE.posterior_sample))(
        variables, x, jax.random.PRNGKey(8))
    assert zs.shape == z.shape and np.all(np.isfinite(lqs))

    def z_of_eps(e, m, ls, c):
        z0 = m + jnp.exp(ls) * e
        if posterior == "gaussian":
            return z0
        return model.apply(variables, z0[None], context=c[None],
                           method=lambda mod, a, context: mod.flow.inverse(a, context=context))[0]

    z_direct = jax.jit(jax.vmap(z_of_eps))(eps, mu, log_sigma, h)
    jac = jax.jit(jax.vmap(jax.jacfwd(z_of_eps)))(eps, mu, log_sigma, h)
    want = -0.5 * jnp.sum(eps ** 2 + jnp.log(2 * jnp.pi), -1) - jnp.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(z, z_direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_q, want, rtol=1e-4, atol=1e-4)
    if posterior != "gaussian":       # the flow is not the identity here
        assert not np.allclose(z, mu + jnp.exp(log_sigma) * eps, atol=1e-3)


def test_importance_weighted_bound_is_above_the_elbo():
    model, variables, x = _setup("iaf_dsf")
    mean, iw = bounds(model, variables, x, jax.random.PRNGKey(0), 40, chunk=10)
    assert mean.shape == iw.shape == (4,)
    assert np.all(np.asarray(iw) >= np.asarray(mean) - 1e-5)
    with pytest.raises(ValueError, match="chunk"):
        bounds(model, variables, x, jax.random.PRNGKey(0), 30, chunk=20)


def test_sigmoid_bce_matches_the_definition():
    logits = jnp.asarray([-30.0, -2.0, 0.0, 3.0, 40.0])
    for y in (0.0, 1.0):
        p = jax.nn.sigmoid(logits.astype(jnp.float64) if jax.config.jax_enable_x64
                           else logits)
        want = -(y * jnp.log(jnp.clip(p, 1e-30)) + (1 - y) * jnp.log(jnp.clip(1 - p, 1e-30)))
        got = sigmoid_bce(logits, y)
        np.testing.assert_allclose(got[1:4], want[1:4], rtol=1e-5)
        assert np.all(np.isfinite(got))


def test_training_improves_the_elbo_of_an_iaf_posterior():
    """A few Adam steps on a fixed batch raise its ELBO (the experiment's train step)."""
    import optax
    model, variables, x = _setup("iaf_affine")
    params = variables["params"]
    buffers = {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, k):
        loss, g = jax.value_and_grad(lambda p: -jnp.mean(model.apply(
            {"params": p, **buffers}, x, rngs={"sample": k})))(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    def elbo(p):
        return float(jnp.mean(bounds(model, {"params": p, **buffers}, x,
                                     jax.random.PRNGKey(9), 64, chunk=64)[0]))
    before = elbo(params)
    for s in range(60):
        params, opt, _ = step(params, opt, jax.random.PRNGKey(s))
    assert elbo(params) > before + 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(posterior="iaf"), "posterior"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(posterior="iaf_affine", latent_dim=1), "latent_dim"),
    (dict(num_flow_layers=0), "num_flow_layers"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vae(10, **kwargs)
