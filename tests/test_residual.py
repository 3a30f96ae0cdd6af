"""Residual blocks: empirical Lipschitz constant of every branch, inversion after training,
diagnostics, estimator modes and bad arguments."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock, fixed_point_report
from jaxflows.nn.lipschitz import update_lipschitz_state
from jaxflows.testing import perturb_params

COEFF = 0.9


def _init(module, shape, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed), shape)
    variables = jax.jit(module.init)({"params": jax.random.PRNGKey(seed + 1)}, x)
    return x, variables


def _empirical_lipschitz(module, variables, shape, num_points=48, iterations=60):
    """max over many points of ||J_g(x)||_2, g(x) = f(x) - x, by power iteration on J^T J.

    ``g`` acts per example, so the batched Jacobian is block diagonal and one batched
    power iteration (normalised per example) runs on every point at once. The points
    have several scales (LipSwish's derivative peaks at |beta x| ~ 2.4).
    """
    scales = jnp.array([0.1, 1.0, 3.0, 10.0])
    kx, kv = jax.random.split(jax.random.PRNGKey(42))
    x = jax.random.normal(kx, (num_points,) + shape[1:])
    x = x * jnp.repeat(scales, num_points // 4).reshape((-1,) + (1,) * (len(shape) - 1))
    axes = tuple(range(1, len(shape)))

    @jax.jit
    def run(variables, x, v):
        g = lambda z: module.apply(variables, z)[0] - z
        _, vjp = jax.vjp(g, x)

        def body(_, v):
            v = v / jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))
            jv = jax.jvp(g, (x,), (v,))[1]
            return vjp(jv)[0]

        v = jax.lax.fori_loop(0, iterations, body, v)
        v = v / jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))
        jv = jax.jvp(g, (x,), (v,))[1]
        return jnp.max(jnp.sqrt(jnp.sum(jv * jv, axis=axes)))

    return float(run(variables, x, jax.random.normal(kv, x.shape)))


# A one-term series keeps the (unused) log-det cheap: these tests only need g.
CHEAP = dict(coeff=COEFF, estimator="series", n_terms=1, eval_estimator="series")
BRANCHES = {
    "conv": (lambda: ResidualBlock(hidden_channels=8, **CHEAP), (2, 4, 4, 2)),
    "mlp": (lambda: ResidualBlock(hidden_channels=8, **CHEAP), (2, 6)),
    "fully_connected": (lambda: ResidualBlock(hidden_channels=8, fully_connected=True, **CHEAP),
                        (2, 2, 2, 2)),
    "dense_conv": (lambda: DenseResidualBlock(depth=2, growth=4, **CHEAP), (2, 4, 4, 2)),
    "dense_mlp": (lambda: DenseResidualBlock(depth=2, growth=4, first_features=8, **CHEAP), (2, 6)),
}
RNGS = {"logdet": jax.random.PRNGKey(3)}


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_branch_lipschitz_below_coefficient(name):
    make, shape = BRANCHES[name]
    module = make()
    x, variables = _init(module, shape)
    # Large random weights (far from the init), then refresh the power iterations.
    variables = perturb_params(variables, jax.random.PRNGKey(5), scale=0.5)
    variables = update_lipschitz_state(module, variables, x, num_rounds=40, rngs=RNGS)
    lip = _empirical_lipschitz(module, variables, shape)
    print(f"{name}: empirical Lip(g) = {lip:.4f} (coefficient {COEFF})")
    assert 0.0 < lip < COEFF, f"{name}: measured Lip(g) = {lip}"


def test_single_layer_branch_attains_coefficient():
    """g = one 3x3 convolution: Lip(g) is the normalised operator norm, = coeff."""
    module = ResidualBlock(kernels=(3,), preact=False, **CHEAP)
    shape = (2, 4, 4, 3)
    x, variables = _init(module, shape)
    variables = perturb_params(variables, jax.random.PRNGKey(5), scale=0.5)
    variables = update_lipschitz_state(module, variables, x, num_rounds=100, rngs=RNGS)
    lip = _empirical_lipschitz(module, variables, shape, num_points=4, iterations=300)
    np.testing.assert_allclose(lip, COEFF, rtol=2e-3)
    assert lip <= COEFF * (1 + 2e-3)


@pytest.fixture(scope="module")
def trained():
    """A conv residual block trained for a few steps with the Russian-roulette / Neumann
    estimator and a large learning rate, so its weights are far from the init."""
    module = ResidualBlock(hidden_channels=16, coeff=0.98)
    shape = (8, 4, 4, 2)
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), shape) + 1.0
    variables = jax.jit(module.init)({"params": jax.random.PRNGKey(1)}, x)
    opt = optax.adam(0.05)

    @jax.jit
    def step(params, lip, opt_state, key):
        def loss(params):
            (y, ld), state = module.apply({"params": params, "lipschitz": lip}, x, train=True,
                                          rngs={"logdet": key}, mutable=["lipschitz"])
            return jnp.mean(0.5 * jnp.sum(y.reshape(8, -1) ** 2, -1) - ld), state
        (val, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), state["lipschitz"], opt_state, val

    params, lip = variables["params"], variables["lipschitz"]
    opt_state = opt.init(params)
    for i in range(6):
        params, lip, opt_state, val = step(params, lip, opt_state, jax.random.PRNGKey(10 + i))
        assert np.isfinite(float(val))
    return module, x, variables, {"params": params, "lipschitz": lip}


def test_training_updates_params_and_lipschitz_state(trained):
    _, _, initial, final = trained
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                   initial["params"], final["params"])
    assert min(jax.tree_util.tree_leaves(moved)) > 1e-3
    u_moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                     initial["lipschitz"], final["lipschitz"])
    assert max(jax.tree_util.tree_leaves(u_moved)) > 1e-4


def test_inverse_reconstructs_to_float32_precision_after_training(trained):
    module, x, _, variables = trained

    @jax.jit
    def roundtrip(variables, x):
        y, ld = module.apply(variables, x)
        (xr, ild), diag = module.apply(variables, y, method=module.inverse_and_log_det,
                                       mutable=["intermediates"])
        return y, ld, xr, ild, diag

    y, ld, xr, ild, diag = roundtrip(variables, x)
    assert float(jnp.max(jnp.abs(y - x))) > 0.05  # not the identity
    err = float(jnp.max(jnp.abs(xr - x)))
    assert err < 1e-5 * float(jnp.max(jnp.abs(x))), err
    report = fixed_point_report(diag)
    assert report["num_not_converged"] == 0 and report["num_solves"] == 1
    assert report["max_iterations"] > 2
    # Deterministic evaluation estimator: same value twice, and -ld at the inverse.
    np.testing.assert_allclose(ild, -ld, rtol=1e-4, atol=1e-4)
    _, ld2 = module.apply(variables, x)
    np.testing.assert_array_equal(ld, ld2)


def test_non_convergence_is_reported(trained):
    _, x, _, variables = trained
    capped = ResidualBlock(hidden_channels=16, coeff=0.98, max_iter=1)
    (_, _), diag = jax.jit(lambda v, y: capped.apply(v, y, method=capped.inverse_and_log_det,
                                                     mutable=["intermediates"]))(variables, x)
    report = fixed_point_report(diag)
    assert report["num_not_converged"] == x.shape[0]
    assert report["max_iterations"] == 1 and report["max_residual"] > 1e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator="bogus"), "estimator"),
    (dict(eval_estimator="bogus"), "eval_estimator"),
    (dict(distribution="geometric", p=1.0), "p"),
    (dict(distribution="geometric", p=0.0), "p"),
    (dict(distribution="poisson", lam=0.0), "lam"),
    (dict(rtol=0.0), "rtol"),
    (dict(activation="relu"), "activation"),
    (dict(kernels=(3, 2)), "kernels"),
    (dict(hidden_channels=0), "hidden_channels"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResidualBlock(**kwargs).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 2)))


def test_bad_input_rank():
    with pytest.raises(ValueError, match="x must be"):
        ResidualBlock(hidden_channels=4).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 2)))
    with pytest.raises(ValueError, match="growth"):
        DenseResidualBlock(growth=0).init(jax.random.PRNGKey(0), jnp.ones((1, 4)))


@pytest.mark.parametrize("name, kwargs, latent", [
    ("resflow", dict(levels=2, blocks_per_level=2, hidden_channels=4, fc_blocks=1, fc_hidden=4),
     (4, 4, 4)),
    ("resflow", dict(levels=2, blocks_per_level=1, hidden_channels=4, fc_blocks=0,
                     factor_out=True), (8, 8, 1)),
    ("iresnet", dict(levels=2, blocks_per_level=1, hidden_channels=4), (8, 8, 1)),
    ("idensenet", dict(levels=2, blocks_per_level=1, growth=4, depth=1, fc_blocks=1,
                       fc_growth=4, fc_first_features=4), (4, 4, 4)),
])
def test_model_factories_build(name, kwargs, latent):
    """Shapes only (``jax.eval_shape``: traced, not compiled); training runs are in docs."""
    from jaxflows.models import MODELS
    flow = MODELS[name]((8, 8, 1), num_bins=17, **kwargs)
    x = jnp.ones((2, 8, 8, 1))
    variables = jax.eval_shape(lambda k: flow.init({"params": k}, x), jax.random.PRNGKey(0))
    assert set(variables) == {"params", "lipschitz"}
    z = jax.eval_shape(lambda v: flow.apply(v, x, method=flow.forward), variables)
    assert z.shape == (2,) + latent
    assert flow.base.event_shape == latent


def test_model_factory_bad_arguments():
    from jaxflows.models import idensenet, iresnet, resflow
    with pytest.raises(ValueError, match="divisible"):
        resflow((8, 8, 1), levels=5)
    with pytest.raises(ValueError, match="blocks_per_level"):
        iresnet((8, 8, 1), levels=2, blocks_per_level=(1, 2, 3))
    with pytest.raises(ValueError, match="alpha"):
        idensenet((8, 8, 1), levels=2, alpha=0.7)
