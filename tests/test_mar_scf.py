"""mAR-SCF: the mAR channel prior, MARPS sampling and the model's bad-input errors.

The generic bijector checks of MARSplit/MARTop are in ``tests/registry/mar.py``; the
model's round trip and exact density are checked with every model in
``tests/test_models_complete.py`` / ``tests/test_model_density.py``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.distributions.mar import MARPrior
from jaxflows.models.mar_scf import mar_scf, sampling_steps
from jaxflows.testing import enable_x64, perturb_params

TINY = dict(levels=2, steps_per_level=1, hidden_channels=4, lstm_features=3, lstm_layers=1,
            kernel_sizes=3, dilations=1, embed_channels=2)
SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def tiny_flow():
    flow = mar_scf(SHAPE, num_bins=17, **TINY)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3,) + SHAPE, maxval=17.0)
    variables = jax.jit(flow.init)(jax.random.PRNGKey(1), x)
    variables = perturb_params(variables, jax.random.PRNGKey(2), 0.03)
    return flow, variables, x


@pytest.fixture(scope="module")
def tiny_sample(tiny_flow):
    """``(x, log p accumulated while sampling, sown intermediates, z)`` of 4 samples at
    temperatures 1 and 0.5 from the same key, and the latents ``f(x)``.
    """
    flow, variables, _ = tiny_flow

    @jax.jit
    def run(v, key, t):
        (x, logp), state = flow.apply(v, 4, temperature=t, method=flow.sample_and_log_prob,
                                      rngs={"sample": key}, mutable=["intermediates"])
        z, _ = flow.apply(v, x, method=flow.forward_and_log_det)
        return x, logp, state["intermediates"], z, flow.apply(v, x)

    key = jax.random.PRNGKey(3)
    return {t: run(variables, key, t) for t in (1.0, 0.5)}


def test_prior_density_integrates_to_one():
    """p(l | r) over a 2-channel 1x1 l, on a grid, with perturbed parameters.

    A missing or sign-flipped ``log sigma`` term, or a prior whose step j saw l^j
    itself, would not integrate to 1.
    """
    prior = MARPrior(conditional=True, features=3, num_layers=1, kernel_size=1,
                     embed_features=3, embed_channels=2, embed_kernel=1, out_kernel=1)
    with enable_x64():
        r = jnp.array([[[[0.3, -1.2]]]])
        l0 = jnp.zeros((1, 1, 1, 2))
        v = prior.init(jax.random.PRNGKey(0), l0, r, method=prior.log_prob)
        v = perturb_params(v, jax.random.PRNGKey(1), 0.5)
        v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), v)
        grid = jnp.linspace(-10.0, 10.0, 241)
        a, b = jnp.meshgrid(grid, grid, indexing="ij")
        ls = jnp.stack([a.ravel(), b.ravel()], -1).reshape(-1, 1, 1, 2)
        rs = jnp.broadcast_to(r, ls.shape[:3] + (2,))
        logp = jax.jit(lambda v, l, r: prior.apply(v, l, r, method=prior.log_prob))(v, ls, rs)
        mass = float(jnp.sum(jnp.exp(logp)) * (grid[1] - grid[0]) ** 2)
        # the conditional means and scales really depend on r and on l^1
        spread = float(jnp.std(logp))
    assert abs(mass - 1.0) < 1e-4, mass
    assert spread > 0


def test_marps_sample_log_prob_matches_density(tiny_sample):
    """log_prob(sample) equals the log-density accumulated while sampling (MARPS)."""
    x, logp_sampling, _, _, logp = tiny_sample[1.0]
    assert x.shape == (4,) + SHAPE and bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_allclose(logp, logp_sampling, rtol=1e-4, atol=1e-3)


def test_temperature_scales_the_noise_of_every_step(tiny_sample):
    """Sampling at T is the inverse flow of T * eps for the same eps."""
    z_1, z_t = tiny_sample[1.0][3], tiny_sample[0.5][3]
    np.testing.assert_allclose(z_t, 0.5 * z_1, rtol=1e-3, atol=1e-3)
    assert float(jnp.max(jnp.abs(tiny_sample[0.5][0] - tiny_sample[1.0][0]))) > 1e-2


def _sequential_steps(intermediates) -> int:
    """Sequential MARPS steps: one ``channel_log_sigma`` entry per generated channel."""
    flat = jax.tree_util.tree_flatten_with_path(intermediates)[0]
    return sum(int(leaf.shape[0]) for path, leaf in flat
               if "channel_log_sigma" in jax.tree_util.keystr(path))


def test_sequential_steps_follow_lemma_a1():
    """MARPS' sequential steps, counted from what the priors sow while sampling, equal
    Lemma A.1's count: 66 for CIFAR-10 at L = 3. Traced abstractly (no compilation).
    """
    assert sampling_steps((32, 32, 3), 3) == 6 + 12 + 48 == 66
    assert sampling_steps((64, 64, 3), 4) == 6 + 12 + 24 + 96
    flow = mar_scf((32, 32, 3), **dict(TINY, levels=3, kernel_sizes=(5, 5, 3),
                                       dilations=(2, 1, 1)))
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(flow.init, jax.random.PRNGKey(0), x)

    def sample(v):
        _, state = flow.apply(v, 1, method=flow.sample, rngs={"sample": jax.random.PRNGKey(0)},
                              mutable=["intermediates"])
        return state["intermediates"]

    assert _sequential_steps(jax.eval_shape(sample, variables)) == 66


def test_sown_step_counts_match_lemma(tiny_sample):
    assert _sequential_steps(tiny_sample[1.0][2]) == sampling_steps(SHAPE, 2) == 2 + 8


def test_top_prior_with_context_round_trips():
    from jaxflows.bijectors.mar import MARTop
    top = MARTop(features=3, num_layers=1, embed_features=3, embed_channels=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 2, 3))
    ctx = jax.random.normal(jax.random.PRNGKey(1), (2, 5))
    v = jax.jit(lambda k: top.init(k, x, context=ctx))(jax.random.PRNGKey(2))
    v = perturb_params(v, jax.random.PRNGKey(3), 0.3)

    @jax.jit
    def run(v, x, ctx):
        z, ld = top.apply(v, x, context=ctx)
        xr, ild = top.apply(v, z, context=ctx, method=top.inverse_and_log_det)
        return z, ld, xr, ild, top.apply(v, x, context=ctx + 1.0)[0]

    z, ld, xr, ild, z2 = run(v, x, ctx)
    np.testing.assert_allclose(xr, x, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(z2 - z))) > 1e-4       # the context is used


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_shape=(6, 6, 1), levels=2), r"divisible by 4"),
    (dict(kernel_sizes=(3,), levels=2), r"kernel_sizes has 1 entries but the flow has 2"),
    (dict(dilations=[1, 1], levels=3), r"dilations has 2 entries but the flow has 3"),
    (dict(coupling="spline"), r"coupling must be one of"),
    (dict(coupling="mixlogcdf", components=0), r"`components` must be a positive int"),
    (dict(levels=0), r"`levels` must be a positive int"),
    (dict(lstm_features=0), r"`lstm_features` must be a positive int"),
])
def test_bad_arguments(kwargs, match):
    kwargs = dict(dict(image_shape=(8, 8, 1), hidden_channels=4), **kwargs)
    shape = kwargs.pop("image_shape")
    with pytest.raises(ValueError, match=match):
        mar_scf(shape, **kwargs)


def test_bad_context_shape(tiny_flow):
    flow, variables, x = tiny_flow
    # (the message of MARSplit's own check, or of Flow's earlier batch check)
    with pytest.raises(ValueError, match=r"`context` must be batched like the input|"
                                         r"context must have batch size 1 or the batch of x"):
        flow.apply(variables, x, context=jnp.zeros((2, 4)))


def test_prior_rejects_bad_temperature_and_missing_kept_half():
    prior = MARPrior(conditional=True, features=2, num_layers=1)
    l = jnp.zeros((1, 2, 2, 2))
    r = jnp.zeros((1, 2, 2, 2))
    v = jax.eval_shape(lambda k: prior.init(k, l, r, method=prior.log_prob),
                       jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="temperature"):
        jax.eval_shape(lambda v: prior.apply(v, l.shape, r, 0.0, method=prior.sample,
                                             rngs={"sample": jax.random.PRNGKey(0)}), v)
    with pytest.raises(ValueError, match="needs the kept half"):
        jax.eval_shape(lambda v: prior.apply(v, l, method=prior.log_prob), v)


def test_linear_latent_interpolation_hits_both_ends_and_is_linear_in_z(tiny_flow):
    from jaxflows.interpolation import linear_latent_interpolation
    flow, variables, x = tiny_flow
    path = jax.jit(lambda v, a, b: linear_latent_interpolation(flow, v, a, b, 5))(
        variables, x[0], x[1])
    assert path.shape == (5,) + SHAPE
    np.testing.assert_allclose(path[0], x[0], atol=1e-3)
    np.testing.assert_allclose(path[-1], x[1], atol=1e-3)
    z = jax.jit(lambda v, p: flow.apply(v, p, method=flow.forward))(variables, path)
    np.testing.assert_allclose(z[2], 0.5 * (z[0] + z[-1]), atol=1e-3)
    with pytest.raises(ValueError, match="num_points must be an int >= 2"):
        linear_latent_interpolation(flow, variables, x[0], x[1], 1)
    with pytest.raises(ValueError, match="event shape"):
        linear_latent_interpolation(flow, variables, x[:1], x[1], 3)


def test_mixlogcdf_coupling_model_round_trips_and_samples():
    """The paper's best model's coupling: MixLogCDF with the Flow++ conditioner."""
    flow = mar_scf(SHAPE, num_bins=17, **dict(TINY, coupling="mixlogcdf", components=3,
                                              num_blocks=1, heads=2))
    x = jax.random.uniform(jax.random.PRNGKey(0), (2,) + SHAPE, maxval=17.0)
    v = perturb_params(jax.jit(flow.init)(jax.random.PRNGKey(1), x), jax.random.PRNGKey(2), 0.03)

    @jax.jit
    def run(v, x, key):
        z, ld = flow.apply(v, x, method=flow.forward_and_log_det)
        xs, logp_s = flow.apply(v, 2, method=flow.sample_and_log_prob, rngs={"sample": key})
        return ld, flow.apply(v, z, method=flow.inverse), xs, logp_s, flow.apply(v, xs)

    ld, xr, xs, logp_s, logp = run(v, x, jax.random.PRNGKey(3))
    np.testing.assert_allclose(xr, x, atol=1e-3)
    assert bool(jnp.all(jnp.isfinite(ld)))
    np.testing.assert_allclose(logp, logp_s, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="heads=3 must divide hidden_channels=4"):
        mar_scf(SHAPE, **dict(TINY, coupling="mixlogcdf", heads=3))


@pytest.mark.parametrize("conditional", [True, False])
def test_batched_teacher_forcing_equals_the_sequential_scan(conditional):
    """``standardize`` (embedding of r once, input gates and output convolution batched over
    channels, only hidden-to-hidden convolutions in the scan) equals the straightforward scan
    over the step module, values and parameter gradients, with dilation and 3 layers.
    """
    prior = MARPrior(conditional=conditional, features=4, num_layers=3, kernel_size=3,
                     dilation=2, embed_features=3, embed_channels=2)
    l = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 5))
    r = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 3)) if conditional else None
    v = jax.jit(lambda k: prior.init(k, l, r, method=prior.standardize))(jax.random.PRNGKey(2))
    v = perturb_params(v, jax.random.PRNGKey(3), 0.3)

    def loss(params, method):
        eps, ld = prior.apply({"params": params}, l, r, method=method)
        return jnp.sum(eps ** 2) - jnp.sum(ld), (eps, ld)

    @jax.jit
    def run(params):
        return (jax.value_and_grad(loss, has_aux=True)(params, prior.standardize),
                jax.value_and_grad(loss, has_aux=True)(params, prior.standardize_sequential))

    ((_, (eps, ld)), g), ((_, (eps_s, ld_s)), g_s) = run(v["params"])
    assert float(jnp.std(ld)) > 0 and float(jnp.max(jnp.abs(eps - l))) > 1e-2
    np.testing.assert_allclose(eps, eps_s, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld, ld_s, rtol=1e-5, atol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_s)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
