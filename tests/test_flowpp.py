"""Flow++: the conditioner, the variational dequantiser, the model, the trainer seam and
the importance-weighted bound.

* ``q(u | k)`` integrates to 1 over the unit cube (Gauss-Legendre quadrature, 2x2 image);
* on a tiny model whose discrete likelihood ``log P(k) = log int p(k + u) du`` is computed
  by quadrature, the IW bound is at least the single-sample bound, grows with ``S`` and
  approaches ``log P(k)``;
* the trainer's init/train/evaluate route a Flow++ flow through its dequantiser (its
  parameters train), and every bad input named in the issue is refused clearly.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxflows.bijectors import VariationalDequantizer
from jaxflows.models import FlowPP, flowpp
from jaxflows.nn import FlowppConditioner
from jaxflows.testing import perturb_params
from jaxflows.train.evaluation import importance_weighted_log_prob
from jaxflows.train.mesh import make_mesh
from jaxflows.train.step import make_steps

SHAPE = (2, 2, 1)   # D = 4: small enough for quadrature over [0, 1]^4
BINS = 4
NODES = 14          # Gauss-Legendre nodes per dimension


def _cube_nodes():
    t, w = np.polynomial.legendre.leggauss(NODES)
    t, w = (t + 1) / 2, w / 2
    pts = np.array(list(itertools.product(t, repeat=4)), np.float32)
    wts = np.prod(np.array(list(itertools.product(w, repeat=4))), axis=1)
    return pts.reshape((-1,) + SHAPE), wts


def _tiny(dequantization="variational"):
    return flowpp(SHAPE, components=2, hidden_channels=4, num_blocks=1, heads=2, dropout=0.0,
                  num_bins=BINS, layout="checkerboard*2", dequantization=dequantization,
                  dequantizer_steps=2, dequantizer_blocks=1, context_channels=2,
                  context_blocks=1)


@functools.lru_cache(maxsize=None)
def _tiny_variables():
    flow = _tiny()
    k = jax.random.randint(jax.random.PRNGKey(0), (16,) + SHAPE, 0, BINS)
    init = jax.jit(lambda k: flow.init({"params": jax.random.PRNGKey(1),
                                        "dequantize": jax.random.PRNGKey(2)}, k,
                                       method="dequantized_log_prob"))
    return flow, perturb_params(init(k), jax.random.PRNGKey(3), 0.05)


def test_dequantizer_integrates_to_one():
    flow, variables = _tiny_variables()
    deq = flow.dequantizer
    pts, wts = _cube_nodes()
    for image in ([[0, 3], [1, 2]],):
        k = jnp.broadcast_to(jnp.asarray(image, jnp.float32)[..., None], pts.shape)
        log_q = jax.jit(lambda v, u, k: deq.apply(v, u, k, method=deq.log_prob))(
            {"params": variables["params"]["dequantizer"]}, jnp.asarray(pts), k)
        total = float(np.sum(wts * np.exp(np.asarray(log_q, np.float64))))
        assert abs(total - 1.0) < 2e-3, total


IMAGES = jnp.asarray([[[0, 3], [1, 2]], [[3, 3], [0, 0]]], jnp.int32)[..., None]


def _iw(flow, variables, num_samples, chunk, seed):
    fn = jax.jit(lambda v, k: importance_weighted_log_prob(
        flow, v, k, jax.random.PRNGKey(seed), num_samples, chunk=chunk, return_mean=True))
    return tuple(np.asarray(a, np.float64) for a in fn(variables, IMAGES))


def test_iw_bound_converges_to_the_discrete_likelihood():
    """Uniform q: the IW bound is a Monte Carlo estimate of log int p(k + u) du, whose
    exact value the quadrature gives; it ends far closer to it than the single-sample
    bound (the mean of the same draws).
    """
    flow = _tiny("uniform")
    k0 = jax.random.randint(jax.random.PRNGKey(0), (16,) + SHAPE, 0, BINS)
    variables = perturb_params(jax.jit(lambda k: flow.init(jax.random.PRNGKey(1), k + 0.5))(k0),
                               jax.random.PRNGKey(3), 0.05)
    pts, wts = _cube_nodes()
    dens = jax.jit(lambda v, x: flow.apply(v, x))
    exact = np.asarray([np.log(np.sum(wts * np.exp(np.asarray(
        dens(variables, jnp.asarray(pts) + k.astype(jnp.float32)), np.float64))))
        for k in IMAGES])
    bound, single = _iw(flow, variables, 4096, 64, 7)
    gap = exact - single
    assert np.all(gap > 0.05), gap
    assert np.all(np.abs(exact - bound) < 0.3 * gap), (exact, bound, single)


def test_iw_bound_tighter_than_single_sample_with_variational_q():
    flow, variables = _tiny_variables()
    bound, single = _iw(flow, variables, 512, 8, 7)
    assert np.all(bound > single + 0.2), (bound, single)
    bound1, single1 = _iw(flow, variables, 1, 1, 7)
    np.testing.assert_allclose(bound1, single1, rtol=1e-6)   # S = 1: the same bound


def test_trainer_routes_through_the_dequantizer():
    flow = _tiny()
    tx = optax.adam(1e-2)
    steps = make_steps(flow, tx, make_mesh(), num_dims=4, ema_decay=0.9, use_ema=True,
                       num_samples=2)
    images = jax.random.randint(jax.random.PRNGKey(0), (8,) + SHAPE, 0, BINS).astype(jnp.uint8)
    state = steps.init(images, 0)
    assert set(state.params) == {"bijector", "dequantizer"}
    before = jax.tree_util.tree_map(np.asarray, state.params["dequantizer"])  # donated
    for _ in range(2):
        state, metrics = steps.train(state, images)
        assert bool(metrics["finite"])
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), before,
                                   state.params["dequantizer"])
    assert max(jax.tree_util.tree_leaves(moved)) > 0
    total, count = steps.evaluate(state, images, jnp.ones((8,)), jnp.asarray([0, 1], jnp.int32))
    assert np.isfinite(float(total)) and float(count) == 8


def test_flowpp_is_a_flow_with_a_dequantizer():
    assert isinstance(_tiny(), FlowPP) and _tiny().dequantizer is not None
    assert _tiny("uniform").dequantizer is None


@pytest.mark.parametrize("bad, match", [
    (jnp.full((1,) + SHAPE, jnp.nan), "NaN"),
    (jnp.full((1,) + SHAPE, BINS, jnp.int32), r"\[0, num_bins"),
    (jnp.full((1,) + SHAPE, -1.0), r"\[0, num_bins")])
def test_bad_pixels(bad, match):
    flow, variables = _tiny_variables()
    with pytest.raises(ValueError, match=match):
        flow.apply(variables, bad, rngs={"dequantize": jax.random.PRNGKey(0)},
                   method="dequantized_log_prob")


@pytest.mark.parametrize("kw, match", [
    (dict(components=0), "components"),
    (dict(hidden_channels=6, heads=4), "heads=4 must divide"),
    (dict(dequantization="none"), "dequantization"),
    (dict(coupling="spline"), "coupling"),
    (dict(layout="checkerboard*2,spiral"), "layout"),
    (dict(layout="channel"), "even channel count"),
])
def test_factory_errors(kw, match):
    args = dict(components=2, hidden_channels=4, num_blocks=1, heads=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        flowpp((4, 4, 1), **args)


def test_conditioner_errors_and_ablation_parameter_count():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="must divide"):
        FlowppConditioner(5, filters=6, heads=4).init(jax.random.PRNGKey(0), x)
    big = FlowppConditioner(5, filters=8, heads=2, num_blocks=1,
                            attention_memory_limit=1000)
    with pytest.raises(ValueError, match="Lower the image size"):
        big.init(jax.random.PRNGKey(0), x)
    counts = {}
    for attention in (True, False):
        m = FlowppConditioner(5, filters=8, heads=2, num_blocks=1, attention=attention)
        params = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)["params"]
        counts[attention] = sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
    # the pointwise ablation matches the attention layer's count; only the position
    # embedding (H * W * F) differs
    assert counts[True] - counts[False] == 4 * 4 * 8


def test_dequantizer_needs_the_pixels_as_context():
    deq = VariationalDequantizer(num_steps=1, components=2, filters=4, num_blocks=1, heads=2,
                                 context_channels=2, context_blocks=0)
    with pytest.raises(ValueError, match="context"):
        deq.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 1)))


@pytest.mark.parametrize("make, match", [
    (lambda: FlowppConditioner(5, filters=6, heads=2, num_blocks=-1),
     r"`num_blocks` must be an int >= 0, got -1"),
    (lambda: FlowppConditioner(5, filters=True, heads=2), r"`filters` must be a positive int"),
    (lambda: FlowppConditioner(5, filters=6, heads=2.0), r"`heads` must be a positive int"),
])
def test_conditioner_integer_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make().init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))


def test_sampling_logs_the_bisection_inverse_report(caplog):
    """A numerical inverse that missed its tolerance is a warning, never silent."""
    import logging

    from jaxflows.train.evaluation import log_inverse_reports
    summary = {"max_residual": np.float32(3e-3), "num_not_converged": np.int32(5),
               "max_iterations": np.int32(40)}
    inter = {"bijector": {"step_0": {"monotone_inverse": (summary,)},
                          "step_1": {"monotone_inverse": (dict(summary, num_not_converged=
                                                                np.int32(0)),)}}}
    with caplog.at_level(logging.INFO, logger="jaxflows.train"):
        report = log_inverse_reports(0.7, inter)
    assert report["monotone"]["num_not_converged"] == 5 and report["monotone"]["num_solves"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bisection inverse of 5 elements" in warnings[0]
    assert "0.003" in warnings[0] and "T=0.7" in warnings[0]
    caplog.clear()
    fine = {"a": {"monotone_inverse": (dict(summary, num_not_converged=np.int32(0)),)}}
    with caplog.at_level(logging.INFO, logger="jaxflows.train"):
        log_inverse_reports(1.0, fine)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "bisection inverse converged" in caplog.records[0].getMessage()
