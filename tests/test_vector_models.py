"""The vector-flow factories: Flows on event shape (dim,), conditional flows end to end
(log_prob, sample, sample_and_log_prob), densities that integrate to 1, bad input.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Flow
from jaxflows.models import MODELS, iaf, maf, naf, nsf, realnvp_vector
from jaxflows.testing import perturb_params

K = 2  # context width
TINY = dict(num_layers=2, hidden_features=(8,))


def _build(make, dim, ctx, key=0, scale=0.2):
    flow = make(dim)
    x = jax.random.normal(jax.random.PRNGKey(key), (3, dim))
    v = jax.jit(lambda x, c: flow.init(jax.random.PRNGKey(key + 1), x, context=c))(x, ctx)
    return flow, perturb_params(v, jax.random.PRNGKey(key + 2), scale), x


CONDITIONAL = {
    "maf_jacobi_batch_norm": lambda d: maf(d, **TINY, context_features=K, batch_norm=True,
                                           inverse_method="jacobi"),
    "iaf": lambda d: iaf(d, **TINY, context_features=K),
    "naf_dsf": lambda d: naf(d, num_layers=1, hidden_features=(8,), sigmoid_units=2,
                             context_features=K),
    "nsf_autoregressive": lambda d: nsf(d, kind="autoregressive", num_layers=2,
                                        hidden_features=8, num_blocks=1, bins=3,
                                        context_features=K),
    "nsf_coupling": lambda d: nsf(d, num_layers=2, hidden_features=8, num_blocks=1, bins=3,
                                  context_features=K),
    "realnvp_vector": lambda d: realnvp_vector(d, num_layers=2, hidden_features=8,
                                               num_blocks=1, context_features=K),
}


@pytest.mark.parametrize("name", sorted(CONDITIONAL))
def test_conditional_flow_end_to_end(name):
    ctx = jax.random.normal(jax.random.PRNGKey(9), (3, K))
    flow, v, x = _build(CONDITIONAL[name], 3, ctx)
    assert isinstance(flow, Flow) and tuple(flow.event_shape) == (3,)

    @jax.jit
    def run(v, x, ctx, key):
        lp = flow.apply(v, x, context=ctx)
        z = flow.apply(v, x, context=ctx, method=flow.forward)
        xr = flow.apply(v, z, context=ctx, method=flow.inverse)
        s, slp = flow.apply(v, 3, context=ctx, method=flow.sample_and_log_prob,
                            rngs={"sample": key})
        s1 = flow.apply(v, 4, context=ctx[:1], method=flow.sample, rngs={"sample": key})
        return lp, xr, s, slp, flow.apply(v, s, context=ctx), s1
    lp, xr, s, slp, lp_s, s1 = run(v, x, ctx, jax.random.PRNGKey(3))
    assert lp.shape == (3,) and bool(jnp.all(jnp.isfinite(lp)))
    np.testing.assert_allclose(xr, x, atol=1e-4)
    assert s.shape == (3, 3) and s1.shape == (4, 3)
    np.testing.assert_allclose(slp, lp_s, atol=1e-3)   # sample_and_log_prob == log_prob
    with pytest.raises(ValueError, match="`context` \\[batch, 2\\] is required"):
        flow.apply(v, x)
    with pytest.raises(ValueError, match="shape \\[batch, 2\\]"):
        flow.apply(v, x, context=ctx[:, :1])


@pytest.mark.parametrize("make", [
    lambda: maf(2, num_layers=2, hidden_features=(8,), transformer="affine"),
    lambda: nsf(2, num_layers=2, hidden_features=8, num_blocks=1, bins=4, bound=3.0),
], ids=["maf", "nsf_coupling"])
def test_two_dimensional_density_integrates_to_one(make):
    flow, v, _ = _build(lambda d: make(), 2, None, key=4, scale=0.3)
    n, lim = 501, 25.0
    g = np.linspace(-lim, lim, n)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
    p = jnp.exp(jax.jit(flow.apply)(v, grid))
    total = float(jnp.sum(p)) * (g[1] - g[0]) ** 2
    assert abs(total - 1.0) < 1e-2, total


def test_unconditional_flows_reject_a_context_and_models_are_registered():
    flow, v, x = _build(lambda d: maf(d, **TINY), 3, None)
    with pytest.raises(ValueError, match="unconditional"):
        flow.apply(v, x, context=jnp.zeros((3, K)))
    for name in ("maf", "iaf", "naf", "nsf", "realnvp_vector"):
        assert name in MODELS


@pytest.mark.parametrize("call, match", [
    (lambda: maf(1), "dim"), (lambda: iaf(1), "dim"), (lambda: naf(0), "dim"),
    (lambda: nsf(1, kind="autoregressive"), "dim"), (lambda: realnvp_vector(1), "dim"),
    (lambda: maf(3, num_layers=0), "num_layers"),
    (lambda: maf(3, context_features=0), "context_features"),
    (lambda: maf(3, transformer="spline"), "transformer"),
    (lambda: naf(3, transformer="bnaf"), "transformer"),
    (lambda: nsf(3, kind="mixed"), "kind"),
    (lambda: nsf(3, bound=0.0), "bound"), (lambda: nsf(3, bins=1), "bins"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
