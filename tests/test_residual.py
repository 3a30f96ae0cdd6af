"""Residual blocks: empirical Lipschitz constant of every branch, inversion after training,
diagnostics, estimator modes, settings objects and bad arguments.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from jaxflows.bijectors import residual as residual_module
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock, fixed_point_report
from jaxflows.bijectors.residual_settings import (
    EvalEstimator,
    FixedPointSolver,
    LogDetEstimator,
    SpectralNorm,
    as_settings,
)
from jaxflows.nn.lipschitz import SpectralConv, SpectralDense, update_lipschitz_state
from jaxflows.ops import series_tail_bound
from jaxflows.testing import perturb_params

COEFF = 0.9


def _init(module, shape, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed), shape)
    variables = jax.jit(module.init)({"params": jax.random.PRNGKey(seed + 1)}, x)
    return x, variables


def _empirical_lipschitz(module, variables, shape, num_points=48, iterations=60):
    """Max over many points of ||J_g(x)||_2, g(x) = f(x) - x, by power iteration on J^T J.

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
CHEAP = dict(spectral_norm=dict(coeff=COEFF), estimator=dict(kind="series", n_terms=1),
             eval_estimator=dict(kind="series"))
BRANCHES = {
    "conv": (lambda: ResidualBlock(hidden_channels=8, **CHEAP), (2, 4, 4, 2)),
    "mlp": (lambda: ResidualBlock(hidden_channels=8, **CHEAP), (2, 6)),
    "fully_connected": (lambda: ResidualBlock(hidden_channels=8, fully_connected=True, **CHEAP),
                        (2, 2, 2, 2)),
    "dense_conv": (lambda: DenseResidualBlock(depth=2, growth=4, **CHEAP), (2, 4, 4, 2)),
    "dense_mlp": (lambda: DenseResidualBlock(depth=2, growth=4, first_features=8, **CHEAP), (2, 6)),
}
RNGS = {"logdet": jax.random.PRNGKey(3)}


def _layer_matrices(module, variables, x):
    """Explicit matrices of every spectrally normalised layer of ``module``'s branch ``g``,
    on the input shapes they see (evaluation mode), by ``jacfwd`` of the affine layer
    minus its bias: a list of ``[D_out, D_in]`` arrays. The layers are found by a Flax
    method interceptor; their variables are read from ``variables`` by path.
    """
    found = []

    def record(next_fun, args, kwargs, context):
        if (isinstance(context.module, (SpectralConv, SpectralDense))
                and context.method_name == "__call__"):
            layer, _ = context.module.unbind()
            found.append((layer, context.module.path, (1,) + tuple(args[0].shape[1:])))
        return next_fun(*args, **kwargs)
    # The branch runs inside a jitted function cached per (module, settings): clear it
    # so that the branch is traced again, under the interceptor.
    residual_module._forward.clear_cache()
    with nn.intercept_methods(record):
        module.apply(variables, x, method=module.forward_and_log_det)
    residual_module._forward.clear_cache()
    mats = []
    # g is traced more than once (shape check, then the computation): one per path.
    for layer, path, shape in {path: (layer, path, shape) for layer, path, shape in found}.values():
        layer_vars = {}
        for col in ("params", "lipschitz"):
            tree = variables[col]["g"]
            for name in path:
                tree = tree[name]
            layer_vars[col] = tree

        def lin(f, layer=layer, layer_vars=layer_vars, shape=shape):
            z = f.reshape(shape)
            return (layer.apply(layer_vars, z) - layer.apply(layer_vars, 0 * z)).reshape(-1)
        mats.append(np.asarray(jax.jit(jax.jacfwd(lin))(jnp.zeros(math.prod(shape)))))
    return mats


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_every_normalised_layer_by_svd_and_the_branch_bound(name):
    """Each layer's operator norm (SVD of its explicit matrix, after a large perturbation
    and a refresh of the power iterations) is at most ``coeff`` (to the power iteration's
    accuracy, 2e-3), and the branch's measured Lipschitz constant is at most the product
    of its layers' norms, i.e. ``<= coeff^layers`` (activations are 1-Lipschitz; an
    i-DenseNet layer ``[eta1 h, eta2 phi(W h)]`` is ``coeff``-Lipschitz with
    ``Lip(W) <= coeff``).
    """
    make, shape = BRANCHES[name]
    module = make()
    x, variables = _init(module, shape)
    variables = perturb_params(variables, jax.random.PRNGKey(5), scale=0.5)
    variables = update_lipschitz_state(module, variables, x, num_rounds=40, rngs=RNGS)
    norms = [float(np.linalg.svd(m, compute_uv=False)[0])
             for m in _layer_matrices(module, variables, x)]
    expected_layers = {"conv": 3, "mlp": 3, "fully_connected": 3, "dense_conv": 3,
                       "dense_mlp": 4}[name]
    assert len(norms) == expected_layers, norms
    assert max(norms) <= COEFF * (1 + 2e-3), f"{name}: layer norms {norms}"
    assert min(norms) >= 0.99 * COEFF, f"{name}: normalisation not active: {norms}"
    bound = COEFF ** len(norms)
    lip = _empirical_lipschitz(module, variables, shape)
    print(f"{name}: layer norms {np.round(norms, 5)}, measured Lip(g) {lip:.4f}, "
          f"bound coeff^{len(norms)} = {bound:.4f}")
    assert 0.0 < lip <= float(np.prod(norms)) * (1 + 1e-6)
    assert lip <= bound * (1 + 2e-3) ** len(norms)


def test_single_layer_branch_attains_coefficient():
    """G = one 3x3 convolution: Lip(g) is the normalised operator norm, = coeff."""
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
    estimator and a large learning rate, so its weights are far from the init.
    """
    module = ResidualBlock(hidden_channels=16)   # coefficient 0.98, roulette + Neumann
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
    # Deterministic evaluation estimator: the same value twice.
    _, ld2 = module.apply(variables, x)
    np.testing.assert_array_equal(ld, ld2)
    # ... and within its error bound of the exact log-det, from the block's own Jacobian
    # (not from the estimator): 20 series terms leave a tail of at most
    # series_tail_bound(D, 0.98, 20); 8 Gaussian probes of tr A, A = log(I + J), have
    # standard deviation sqrt(2 ||sym A||_F^2 / 8). The inverse's estimate (at the solved
    # point) obeys the same bound against -exact.
    d = int(np.prod(x.shape[1:]))
    jac = jax.jit(jax.vmap(jax.jacfwd(
        lambda xi: module.apply(variables, xi[None])[0][0].reshape(-1))))(x)
    jac = np.asarray(jac, np.float64).reshape(x.shape[0], d, d)
    exact = np.linalg.slogdet(np.eye(d)[None] + jac)[1]
    sds = []
    for j in jac:
        a = np.real(scipy.linalg.logm(np.eye(d) + j))
        sds.append(math.sqrt(2.0 * np.sum(((a + a.T) / 2) ** 2) / 8))
    bound = 5 * np.asarray(sds) + series_tail_bound(d, 0.98, 20) + 1e-3
    assert np.all(np.abs(np.asarray(ld) - exact) <= bound), (ld, exact, bound)
    assert np.all(np.abs(np.asarray(ild) + exact) <= bound), (ild, exact, bound)
    assert np.max(np.abs(exact)) > 0.1      # a log-det far from 0


def test_non_convergence_is_reported(trained):
    _, x, _, variables = trained
    capped = ResidualBlock(hidden_channels=16, solver=FixedPointSolver(max_iter=1))
    (_, _), diag = jax.jit(lambda v, y: capped.apply(v, y, method=capped.inverse_and_log_det,
                                                     mutable=["intermediates"]))(variables, x)
    report = fixed_point_report(diag)
    assert report["num_not_converged"] == x.shape[0]
    assert report["max_iterations"] == 1 and report["max_residual"] > 1e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator=dict(kind="bogus")), "estimator: LogDetEstimator: kind"),
    (dict(eval_estimator=dict(kind="bogus")), "eval_estimator: EvalEstimator: kind"),
    (dict(estimator=dict(distribution="geometric", p=1.0)), "p "),
    (dict(estimator=dict(distribution="geometric", p=0.0)), "p "),
    (dict(estimator=dict(distribution="poisson", lam=0.0)), "lam"),
    (dict(estimator=dict(lamda=3.0)), "unknown key 'lamda' in estimator"),
    (dict(estimator="roulette"), "estimator must be a LogDetEstimator"),
    (dict(solver=dict(rtol=0.0)), "rtol"),
    (dict(solver=dict(max_iter=0)), "max_iter"),
    (dict(spectral_norm=dict(coeff=1.0)), "coeff"),
    (dict(spectral_norm=dict(n_iterations=0)), "n_iterations"),
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
    from jaxflows.models import acf, idensenet, iresnet, resflow
    with pytest.raises(ValueError, match="divisible"):
        resflow((8, 8, 1), levels=5)
    with pytest.raises(ValueError, match="blocks_per_level"):
        iresnet((8, 8, 1), levels=2, blocks_per_level=(1, 2, 3))
    with pytest.raises(ValueError, match="alpha"):
        idensenet((8, 8, 1), levels=2, alpha=0.7)
    with pytest.raises(ValueError, match="resflow: unknown key 'n_iter' in solver"):
        resflow((8, 8, 1), solver=dict(n_iter=5))
    with pytest.raises(ValueError, match="iresnet: estimator: LogDetEstimator: n_terms"):
        iresnet((8, 8, 1), estimator=dict(n_terms=0))
    # The loose keywords of before say where they went.
    for factory, kwargs, match in [
            (resflow, dict(coeff=0.9), r"spectral_norm=dict\(coeff=0.9\)"),
            (iresnet, dict(max_iter=5), r"solver=dict\(max_iter=5\)"),
            (idensenet, dict(eval_terms=10), r"eval_estimator=dict\(n_terms=10\)"),
            (acf, dict(n_power_iterations=5), r"spectral_norm=dict\(n_iterations=5\)"),
            (resflow, dict(estimator="series"), r"estimator=dict\(kind='series'\)")]:
        with pytest.raises(TypeError, match=match):
            factory((8, 8, 1), **kwargs)


def _block_settings(flow, shape):
    """The settings of every residual block of ``flow`` (traced init, nothing computed)."""
    from flax import linen as nn

    from jaxflows.bijectors.residual import _ResidualBase
    found = []

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, _ResidualBase) and context.method_name == "transform":
            found.append((m.fully_connected, m.estimator, m.eval_estimator, m.solver,
                          m.spectral_norm))
        return next_fun(*args, **kwargs)

    def init(key):
        with nn.intercept_methods(record):
            return flow.init({"params": key}, jnp.ones(shape))

    jax.eval_shape(init, jax.random.PRNGKey(0))
    return found


SETTINGS = dict(estimator=dict(kind="roulette", distribution="geometric", p=0.4),
                eval_estimator=dict(n_terms=7, n_samples=3),
                solver=dict(atol=1e-5, rtol=1e-5, max_iter=77),
                spectral_norm=dict(n_iterations=3, init_iterations=11))


@pytest.mark.parametrize("name, kwargs, defaults", [
    ("resflow", dict(hidden_channels=4, fc_hidden=4), dict(coeff=0.98, kind="roulette")),
    ("iresnet", dict(hidden_channels=4, fc_blocks=1), dict(coeff=0.9, kind="series")),
    ("idensenet", dict(growth=4, depth=1, fc_growth=4, fc_first_features=4),
     dict(coeff=0.98, kind="roulette")),
    ("acf", dict(hidden_channels=4, squeeze_first=True, factor_out=True, fc_blocks=0),
     dict(coeff=0.98, kind="roulette")),
])
def test_factories_hand_the_settings_to_every_block(name, kwargs, defaults):
    """Every block (convolutional and fully connected) gets the factory's settings: the
    defaults (the paper's), and dicts merged into them, the solver's included.
    """
    from jaxflows.models import MODELS
    kwargs = dict(kwargs, levels=2, blocks_per_level=1, num_bins=17)
    shape = (1, 8, 8, 1)
    found = _block_settings(MODELS[name](shape[1:], **kwargs), shape)
    assert len(found) >= 2
    expect_fc = kwargs.get("fc_blocks", 4 if name != "iresnet" else 0) > 0
    assert any(f[0] for f in found) == expect_fc
    for _, est, ev, solver, sn in found:
        assert (est.kind, sn.coeff, ev, solver) == (
            defaults["kind"], defaults["coeff"], EvalEstimator(), FixedPointSolver())
    found = _block_settings(MODELS[name](shape[1:], **kwargs, **SETTINGS), shape)
    for _, est, ev, solver, sn in found:
        assert est == LogDetEstimator(distribution="geometric", p=0.4)
        assert ev == EvalEstimator(n_terms=7, n_samples=3)
        assert solver == FixedPointSolver(atol=1e-5, rtol=1e-5, max_iter=77)
        assert sn == SpectralNorm(coeff=defaults["coeff"], n_iterations=3, init_iterations=11)


def test_factory_solver_reaches_the_inverse():
    """``solver=dict(max_iter=1)`` caps every block's fixed-point inverse of a model."""
    from jaxflows.models import resflow
    flow = resflow((4, 4, 1), num_bins=17, levels=1, blocks_per_level=2, hidden_channels=4,
                   fc_blocks=0, solver=dict(max_iter=1))
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 1)) * 17
    variables = flow.init({"params": jax.random.PRNGKey(1)}, x)
    variables = perturb_params(variables, jax.random.PRNGKey(2), scale=0.5)
    z = flow.apply(variables, x, method=flow.forward)
    _, diag = flow.apply(variables, z, method=flow.inverse, mutable=["intermediates"])
    report = fixed_point_report(diag)
    assert report["max_iterations"] == 1 and report["num_not_converged"] > 0


# --------------------------------------------------------------------------------------
# Settings objects (jaxflows.bijectors.residual_settings)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, match", [
    (LogDetEstimator, dict(kind="neumann"), "kind must be one of"),
    (LogDetEstimator, dict(n_terms=0), "n_terms"),
    (LogDetEstimator, dict(n_terms=2.0), "n_terms"),
    (LogDetEstimator, dict(n_exact_terms=-1), "n_exact_terms"),
    (LogDetEstimator, dict(distribution="uniform"), "distribution"),
    (LogDetEstimator, dict(lam=-1.0), "lam"),
    (LogDetEstimator, dict(lam=float("inf")), "lam"),
    (LogDetEstimator, dict(p=1.5), "p "),
    (LogDetEstimator, dict(n_samples=0), "n_samples"),
    (LogDetEstimator, dict(probe="exact"), "probe"),
    (LogDetEstimator, dict(neumann_grad=1), "neumann_grad"),
    (EvalEstimator, dict(kind="neumann"), "kind"),
    (EvalEstimator, dict(n_terms=0), "n_terms"),
    (EvalEstimator, dict(n_samples=True), "n_samples"),
    (EvalEstimator, dict(probe="sobol"), "probe"),
    (FixedPointSolver, dict(atol=-1e-6), "atol"),
    (FixedPointSolver, dict(rtol=0), "rtol"),
    (FixedPointSolver, dict(max_iter=0), "max_iter"),
    (FixedPointSolver, dict(stall_patience=0), "stall_patience"),
    (SpectralNorm, dict(coeff=0.0), "the Lipschitz coefficient `coeff`"),
    (SpectralNorm, dict(coeff=1.0), "the Lipschitz coefficient `coeff`"),
    (SpectralNorm, dict(n_iterations=0), "n_iterations"),
    (SpectralNorm, dict(init_iterations=0), "init_iterations"),
])
def test_settings_validate_every_field(cls, kwargs, match):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {match}"):
        cls(**kwargs)


def test_settings_are_hashable_and_dicts_override_the_default():
    est = LogDetEstimator(distribution="geometric", p=0.5)
    assert hash(est) == hash(LogDetEstimator(distribution="geometric", p=0.5))
    block = ResidualBlock(hidden_channels=4, estimator=dict(distribution="geometric"),
                          solver=dict(max_iter=50), spectral_norm=dict(coeff=0.9))
    assert block.estimator == est and isinstance(block.estimator, LogDetEstimator)
    assert block.eval_estimator == EvalEstimator()
    assert block.solver == FixedPointSolver(max_iter=50)
    assert block.spectral_norm == SpectralNorm(coeff=0.9, n_iterations=2, init_iterations=200)
    # A dict overrides the fields of the given default (a factory's default), not cls().
    iresnet_sn = SpectralNorm(coeff=0.9, n_iterations=5)
    assert as_settings(SpectralNorm, dict(n_iterations=2), iresnet_sn, name="spectral_norm",
                       who="t") == SpectralNorm(coeff=0.9, n_iterations=2)
    assert as_settings(SpectralNorm, None, iresnet_sn, name="s", who="t") is iresnet_sn
    with pytest.raises(ValueError, match="t: spectral_norm must be a SpectralNorm or a dict"):
        as_settings(SpectralNorm, est, name="spectral_norm", who="t")
    import ml_collections
    cfg = ml_collections.ConfigDict(dict(kind="series", n_terms=3))
    assert as_settings(LogDetEstimator, cfg, name="estimator", who="t") == LogDetEstimator(
        kind="series", n_terms=3)


def test_settings_give_the_log_det_keywords():
    """The estimator objects map to the keywords of jaxflows.ops.log_det as before."""
    roulette = LogDetEstimator()
    assert dict(roulette.log_det_kwargs()) == dict(
        estimator="neumann", n_exact_terms=2, distribution="poisson", p=0.5, lam=2.0,
        n_samples=1, probe="gaussian")
    assert dict(LogDetEstimator(neumann_grad=False).log_det_kwargs())["estimator"] == "roulette"
    series = LogDetEstimator(kind="series", n_terms=5, probe="rademacher")
    assert dict(series.log_det_kwargs()) == dict(estimator="series", n_terms=5, n_samples=1,
                                                 probe="rademacher")
    assert LogDetEstimator(kind="exact").log_det_kwargs() == (("estimator", "exact"),)
    assert dict(EvalEstimator().log_det_kwargs(roulette)) == dict(
        estimator="eval", n_terms=20, n_samples=8, probe="gaussian")
    assert EvalEstimator(kind="series").log_det_kwargs(series) == series.log_det_kwargs()
    assert EvalEstimator().log_det_kwargs(LogDetEstimator(kind="exact")) == (
        ("estimator", "exact"),)
    assert EvalEstimator(kind="exact").log_det_kwargs(roulette) == (("estimator", "exact"),)


# Computed with the code before the settings objects (commit 76160ea, loose keywords),
# same variables and keys, under this test session's PRNG (conftest.py: classic
# threefry): the default block must give the same log-dets (float32, CPU).
HEAD_VALUES = {
    "conv": dict(shape=(2, 4, 4, 2), eval=[-0.049658112, -0.067093536],
                 train=[-0.3160304, -0.0056423913]),
    "dense_mlp": dict(shape=(3, 6), eval=[-0.33802512, -0.48991543, -0.21483019],
                      train=[-0.043725237, -0.46662164, -0.23622817]),
}


@pytest.mark.parametrize("name", sorted(HEAD_VALUES))
def test_default_block_gives_the_values_of_the_loose_keyword_version(name):
    ref = HEAD_VALUES[name]
    block = (ResidualBlock(hidden_channels=8) if name == "conv"
             else DenseResidualBlock(depth=2, growth=4, first_features=8))
    x = jax.random.normal(jax.random.PRNGKey(0), ref["shape"])
    variables = block.init({"params": jax.random.PRNGKey(1)}, x)
    _, ld = block.apply(variables, x)
    (_, ld_train), _ = block.apply(variables, x, train=True, mutable=["lipschitz"],
                                   rngs={"logdet": jax.random.PRNGKey(2)})
    np.testing.assert_allclose(ld, ref["eval"], rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(ld_train, ref["train"], rtol=1e-4, atol=2e-6)
