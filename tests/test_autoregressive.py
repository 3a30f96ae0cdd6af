"""MaskedAutoregressive, MAF/IAF orientations, the scan and Jacobi inverses, inverse
diagnostics, compile size independent of D, MAF's batch norm, and bad input.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import (
    DSF,
    IAF,
    Affine,
    BatchNorm,
    Chain,
    MaskedAutoregressive,
    RationalQuadraticSpline,
    Transformer,
    batch_norm_statistics,
    fixed_point_report,
    monotone_inverse_report,
)
from jaxflows.nn import MADE
from jaxflows.testing import enable_x64, perturb_params

B, D = 3, 4
MADE8 = MADE(hidden_features=(8,), order="reversed")


def _init(module, x, ctx=None, scale=0.3, key=0):
    v = jax.jit(lambda x, c: module.init(jax.random.PRNGKey(key), x, context=c))(x, ctx)
    return perturb_params(v, jax.random.PRNGKey(key + 1), scale)


def test_maf_and_iaf_are_each_others_inverse_with_the_same_variables():
    t = RationalQuadraticSpline(bins=3, bound=2.0)
    maf, iaf = MaskedAutoregressive(t, MADE8), IAF(t, MADE8)
    x = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    v = _init(maf, x, scale=0.5)

    @jax.jit
    def run(v, x):
        y, ld = maf.apply(v, x, method=maf.forward_and_log_det)
        iy, ild = iaf.apply(v, x, method=iaf.inverse_and_log_det)     # = maf forward
        ix, ixld = iaf.apply(v, y, method=iaf.forward_and_log_det)    # = maf inverse
        return y, ld, iy, ild, ix, ixld
    y, ld, iy, ild, ix, ixld = run(v, x)
    np.testing.assert_allclose(iy, y, atol=1e-6)
    np.testing.assert_allclose(ild, ld, atol=1e-5)
    np.testing.assert_allclose(ix, x, atol=1e-5)
    np.testing.assert_allclose(ixld, -ld, atol=1e-5)
    assert not np.allclose(y, x)


def test_jacobi_inverse_equals_scan_inverse_with_gradients_and_diagnostics():
    """float64: same inverse and log-det; implicit (Jacobi) gradient == unrolled (scan)
    gradient; the solver's diagnostics are sown and converged within D + 2 iterations.
    """
    with enable_x64():
        t = Affine("exp")
        scan = MaskedAutoregressive(t, MADE(hidden_features=(8,), order="random"))
        jac = MaskedAutoregressive(t, MADE(hidden_features=(8,), order="random"),
                                   inverse_method="jacobi")
        y = jax.random.normal(jax.random.PRNGKey(1), (B, D), jnp.float64)
        ctx = jax.random.normal(jax.random.PRNGKey(2), (B, 2), jnp.float64)
        v = _init(scan, y, ctx, scale=0.5)

        def loss(module, v, y):
            x, ld = module.apply(v, y, context=ctx, method=module.inverse_and_log_det)
            return jnp.sum(jnp.sin(x)) + jnp.sum(ld), (x, ld)

        @jax.jit
        def run(v, y):
            def grad(module):
                return jax.value_and_grad(lambda p: loss(module, dict(v, params=p), y),
                                          has_aux=True)(v["params"])
            (_, (x1, ld1)), g1 = grad(scan)
            (_, (x2, ld2)), g2 = grad(jac)
            _, state = jac.apply(v, y, context=ctx, method=jac.inverse_and_log_det,
                                 mutable=["intermediates"])
            return x1, ld1, g1, x2, ld2, g2, state
        x1, ld1, g1, x2, ld2, g2, state = run(v, y)
        np.testing.assert_allclose(x2, x1, atol=1e-12)
        np.testing.assert_allclose(ld2, ld1, atol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
        report = fixed_point_report(state["intermediates"])
        assert report["num_not_converged"] == 0 and report["num_solves"] >= 1
        assert 1 <= report["max_iterations"] <= D + 2


def test_iaf_jacobi_density_matches_the_exact_jacobian():
    """IAF's forward (the density) through the Jacobi solver: log-det == slogdet of the
    Jacobian (reverse mode: the solver is a custom_vjp, which has no forward mode).
    """
    with enable_x64():
        iaf = IAF(Affine("sigmoid"), MADE8, inverse_method="jacobi")
        x = jax.random.normal(jax.random.PRNGKey(3), (B, D), jnp.float64)
        v = _init(iaf, x, scale=0.5)

        @jax.jit
        def run(v, x):
            ld = iaf.apply(v, x, method=iaf.forward_and_log_det)[1]
            f = lambda xi: iaf.apply(v, xi[None], method=iaf.forward)[0]
            exact = jax.vmap(lambda xi: jnp.linalg.slogdet(jax.jacrev(f)(xi))[1])(x)
            return ld, exact
        ld, exact = run(v, x)
        np.testing.assert_allclose(ld, exact, atol=1e-12)


def test_a_jacobi_iteration_cap_is_reported_not_converged():
    ma = MaskedAutoregressive(Affine("exp", clamp=None), MADE(hidden_features=(8,)),
                              inverse_method="jacobi", max_iter=1)
    y = jax.random.normal(jax.random.PRNGKey(4), (B, D))
    v = _init(ma, y, scale=0.5)
    _, state = jax.jit(lambda v, y: ma.apply(v, y, method=ma.inverse_and_log_det,
                                             mutable=["intermediates"]))(v, y)
    assert fixed_point_report(state["intermediates"])["num_not_converged"] == B


def test_numerical_transformer_inverse_is_reported():
    """DSF's bisection summary is sown; a latent outside DSF's range is flagged."""
    ma = MaskedAutoregressive(DSF(hidden=2), MADE(hidden_features=(8,)))
    y = jax.random.normal(jax.random.PRNGKey(5), (B, D))
    v = _init(ma, y, scale=0.3)
    inv = jax.jit(lambda v, y: ma.apply(v, y, method=ma.inverse_and_log_det,
                                        mutable=["intermediates"]))
    (x, _), state = inv(v, y)
    report = monotone_inverse_report(state["intermediates"])
    assert report["num_solves"] == 1 and report["num_not_converged"] == 0
    np.testing.assert_allclose(ma.apply(v, x, method=ma.forward), y, atol=1e-4)
    _, state = inv(v, y.at[0, 0].set(40.0))
    assert monotone_inverse_report(state["intermediates"])["num_not_converged"] >= 1


class _Translate(Transformer):
    """A user-defined transformer: y = x + t."""

    num_params = 1
    identity_at_zero = True

    def forward(self, x, params):
        return x + params[..., 0], jnp.zeros_like(x)

    def inverse(self, y, params):
        return y - params[..., 0], jnp.zeros_like(y)


def test_any_transformer_and_compile_size_independent_of_d():
    """A user's transformer works; the scan inverse traces one step whatever D is."""
    ma = MaskedAutoregressive(_Translate(), MADE(hidden_features=(8,)))
    sizes = []
    for d in (3, 9):
        y = jax.random.normal(jax.random.PRNGKey(6), (2, d))
        v = _init(ma, y)
        x = jax.jit(lambda v, y: ma.apply(v, y, method=ma.inverse))(v, y)
        np.testing.assert_allclose(ma.apply(v, x, method=ma.forward), y, atol=1e-5)
        jaxpr = jax.make_jaxpr(lambda v, y: ma.apply(v, y, method=ma.inverse))(v, y)
        sizes.append(len(str(jaxpr)))
    assert abs(sizes[1] - sizes[0]) < 0.02 * sizes[0], sizes


def test_batch_norm_statistics_make_evaluation_equal_to_training_on_the_set():
    """MAF's rule: after batch_norm_statistics(x), train=False on x == train=True on x."""
    flow = Chain([MaskedAutoregressive(Affine("exp"), MADE8), BatchNorm(),
                  MaskedAutoregressive(Affine("exp"), MADE(hidden_features=(8,))),
                  BatchNorm()])
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(7), (64, D))
    v = _init(flow, x[:8], scale=0.3)
    v = batch_norm_statistics(flow, v, x)
    run = jax.jit(lambda v, x, train: flow.apply(v, x, train=train,
                                                  method=flow.forward_and_log_det),
                  static_argnums=2)
    y_eval, ld_eval = run(v, x, False)
    y_train, ld_train = run(v, x, True)
    np.testing.assert_allclose(y_eval, y_train, atol=1e-4)
    np.testing.assert_allclose(ld_eval, ld_train, atol=1e-4)
    # The last BatchNorm's output is standardised over the set (gamma, beta perturbed).
    bn = v["params"]["bijectors_3"]
    np.testing.assert_allclose(jnp.mean(y_eval, 0), bn["beta"], atol=1e-4)
    with pytest.raises(ValueError, match="no BatchNorm"):
        batch_norm_statistics(flow.bijectors[0], {"params": v["params"]["bijectors_0"],
                                                  "buffers": v["buffers"]["bijectors_0"]}, x)


@pytest.mark.parametrize("make, x, match", [
    (lambda: MaskedAutoregressive(Affine()), jnp.zeros((2, 1)), "D >= 2"),
    (lambda: MaskedAutoregressive(None), jnp.zeros((2, 3)), "transformer"),
    (lambda: MaskedAutoregressive(Affine(), inverse_method="newton"), jnp.zeros((2, 3)),
     "inverse_method"),
    (lambda: MaskedAutoregressive(Affine(), max_iter=0), jnp.zeros((2, 3)), "max_iter"),
    (lambda: MaskedAutoregressive(Affine(), conditioner="made"), jnp.zeros((2, 3)),
     "conditioner"),
    (lambda: MaskedAutoregressive(Affine()), jnp.zeros((2, 3, 3, 1)), "rank 2"),
])
def test_bad_input_raises(make, x, match):
    with pytest.raises(ValueError, match=match):
        make().init(jax.random.PRNGKey(0), x)


def test_context_errors_name_the_problem():
    ma = MaskedAutoregressive(Affine(), MADE8)
    x = jnp.zeros((2, 3))
    v = ma.init(jax.random.PRNGKey(0), x, context=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="`context` is required"):
        ma.apply(v, x, method=ma.inverse)
    with pytest.raises(ValueError, match="initialised with 2"):
        ma.apply(v, x, context=jnp.zeros((2, 5)))
