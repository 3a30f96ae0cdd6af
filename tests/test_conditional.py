"""Conditional flows: the context convention of Flow, the conditional models' densities
(normalised for every context; log_prob == base + slogdet of the whole flow in float64),
the encoders, and the errors for bad contexts.

The bijectors themselves (injector, conditional coupling and split prior, Conditioned /
SelectContext, a cAttnFlow step) are in the generic registry (tests/registry/conditional.py).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Flow
from jaxflows.bijectors.conditional import LevelContext, select_context
from jaxflows.models.conditional import cattnflow, class_conditional_glow, conditional_glow
from jaxflows.nn.encoders import ClassEmbedding, RRDBEncoder, SegmentationEncoder
from jaxflows.testing import cast_floats, enable_x64, exact_log_det, jit_check, perturb_params

NUM_BINS = 17
KEY = jax.random.PRNGKey(0)


def _gaussian(z):
    z = z.reshape(z.shape[0], -1)
    return -0.5 * jnp.sum(z * z, -1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _init(flow, x, ctx, scale=0.05, seed=0):
    k_init, k_pert = jax.random.split(jax.random.PRNGKey(seed))
    v = jax.jit(lambda x, c: flow.init(k_init, x, context=c))(x, ctx)
    return perturb_params(v, k_pert, scale)


# ------------------------------------------------------------------ tiny models
def _tiny(name):
    """``(flow, x, context)`` of a cAttnFlow at a tiny size (4x4x1 images)."""
    x = jax.random.uniform(KEY, (2, 4, 4, 1), maxval=NUM_BINS)
    if name == "cattnflow_sr_imap":
        flow = cattnflow((4, 4, 1), (2, 2, 1), levels=1, steps_per_level=1, hidden_channels=4,
                         rrdb_features=2, rrdb_growth=2, rrdb_blocks=1, stacked_blocks=(0,),
                         num_bins=NUM_BINS)
        lr = jax.random.uniform(jax.random.PRNGKey(3), (2, 2, 2, 1), maxval=NUM_BINS)
        return flow, x, lr
    if name == "cattnflow_seg_itrans":
        flow = cattnflow((4, 4, 1), context_shape=(4, 4), num_classes=3, levels=1,
                         steps_per_level=1, attention="itrans", heads=1, hidden_channels=4,
                         seg_features=2, num_bins=NUM_BINS)
        return flow, x, jax.random.randint(jax.random.PRNGKey(4), (2, 4, 4), 0, 3)
    raise KeyError(name)


# The class-conditional Glow's density is checked below (normalised for every class) and
# a vector context's injector, coupling and split prior are in the registry.
MODELS = ["cattnflow_sr_imap", "cattnflow_seg_itrans"]


@pytest.mark.parametrize("name", MODELS)
def test_log_prob_is_base_plus_whole_flow_slogdet_and_round_trips(name):
    flow, x, ctx = _tiny(name)
    v = _init(flow, x, ctx)
    with enable_x64():
        v64 = cast_floats(v, jnp.float64)
        x64, c64 = cast_floats((x, ctx), jnp.float64)

        @jit_check  # float64 check program
        def run(v, x, c):
            lp = flow.apply(v, x, context=c)
            z = flow.apply(v, x, context=c, method=flow.forward)
            xr = flow.apply(v, z, context=c, method=flow.inverse)
            exact = jax.vmap(lambda xi, ci: exact_log_det(
                lambda u: flow.apply(v, u[None], context=ci[None], method=flow.forward)[0],
                xi[None])[0])(x, c)
            other = flow.apply(v, x, context=jnp.roll(c, 1, axis=0))
            return lp, _gaussian(z) + exact, xr, other
        lp, expected, xr, other = jax.device_get(run(v64, x64, c64))
    np.testing.assert_allclose(lp, expected, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(xr, x64, atol=1e-9)
    # The density depends on the context (the flow is not ignoring it).
    assert np.max(np.abs(lp - other)) > 1e-3, (lp, other)


# Importance sampling of the normaliser of p(. | c) for every class c of a 4-dimensional
# class-conditional Glow (2x2x1 images, one level): E_q[p(x | c) / q(x)] = 1.
N_IS = 20_000


@pytest.fixture(scope="module")
def tiny_classes():
    flow = class_conditional_glow((2, 2, 1), 3, levels=1, steps_per_level=2, hidden_channels=4,
                                  embedding_features=2, num_bins=NUM_BINS)
    # 1x1 positions after the squeeze: ActNorm's data-dependent initialisation needs a
    # batch with some spread (a batch of 4 gives near-zero variances and wild scales).
    x = jax.random.uniform(KEY, (60, 2, 2, 1), maxval=NUM_BINS)
    v = _init(flow, x, jnp.arange(60) % 3, scale=0.1)
    sample = jax.jit(lambda v, c, k: flow.apply(v, 4000, context=c, method=flow.sample,
                                                rngs={"sample": k}))
    log_prob = jax.jit(lambda v, x, c: flow.apply(v, x, context=c))
    return flow, v, sample, log_prob


def _normaliser(v, sample, log_prob, label, key):
    k_fit, k_q = jax.random.split(key)
    c1 = jnp.array([label])
    fit = np.asarray(sample(v, c1, k_fit), np.float64).reshape(4000, -1)
    mean, chol = fit.mean(0), 1.3 * np.linalg.cholesky(np.cov(fit.T))
    eps = np.asarray(jax.random.normal(k_q, (N_IS, fit.shape[1])), np.float64)
    xq = mean + eps @ chol.T
    log_q = (-0.5 * np.sum(eps ** 2, -1) - 0.5 * fit.shape[1] * math.log(2 * math.pi)
             - np.sum(np.log(np.diag(chol))))
    lp = np.asarray(log_prob(v, jnp.asarray(xq.reshape(N_IS, 2, 2, 1), jnp.float32),
                             jnp.full((N_IS,), label)), np.float64)
    w = np.exp(lp - log_q)
    return float(w.mean()), float(w.std() / math.sqrt(N_IS)), fit.mean(0)


def test_conditional_density_is_normalised_for_every_class(tiny_classes):
    flow, v, sample, log_prob = tiny_classes
    means = []
    for label in range(3):
        z, se, mean = _normaliser(v, sample, log_prob, label, jax.random.PRNGKey(10 + label))
        assert se < 0.01, f"class {label}: standard error {se:.3g} too large for power"
        assert abs(z - 1.0) < 4 * se + 1e-3, f"class {label}: integral {z:.4f} +- {se:.4f}"
        means.append(mean)
    # Different classes are different distributions.
    assert np.max(np.abs(means[0] - means[1])) > 0.05, means


def test_sample_shape_convention(tiny_classes):
    flow, v, _, _ = tiny_classes
    k = jax.random.PRNGKey(5)
    smp = lambda n, c: flow.apply(v, n, context=c, method=flow.sample,  # noqa: E731
                                  rngs={"sample": k})
    # One sample per context row; a batch-1 context broadcasts to all n.
    rows = smp(3, jnp.array([0, 1, 2]))
    assert rows.shape == (3, 2, 2, 1)
    same = smp(3, jnp.array([1]))
    np.testing.assert_allclose(same[1], rows[1], rtol=1e-5, atol=1e-5)  # same z, same label
    with pytest.raises(ValueError, match="batch size 1 or num_samples=4"):
        smp(4, jnp.array([0, 1, 2]))
    # log_prob: a batch-1 context broadcasts too; other batches are refused.
    x = rows
    lp_b = flow.apply(v, x, context=jnp.array([1]))
    lp_r = flow.apply(v, x, context=jnp.array([1, 1, 1]))
    np.testing.assert_allclose(lp_b, lp_r, rtol=1e-6)
    with pytest.raises(ValueError, match="batch size 1 or the batch of x=3"):
        flow.apply(v, x, context=jnp.array([1, 1]))


def test_class_conditional_log_prob_is_base_plus_slogdet(tiny_classes):
    flow, v, _, _ = tiny_classes
    x = jax.random.uniform(jax.random.PRNGKey(2), (3, 2, 2, 1), maxval=NUM_BINS)
    labels = jnp.array([0, 1, 2])
    with enable_x64():
        v64, x64 = cast_floats((v, x), jnp.float64)

        @jit_check  # float64 check program
        def run(v, x):
            z = flow.apply(v, x, context=labels, method=flow.forward)
            exact = jax.vmap(lambda xi, ci: exact_log_det(
                lambda u: flow.apply(v, u[None], context=ci[None], method=flow.forward)[0],
                xi[None])[0])(x, labels)
            return flow.apply(v, x, context=labels), _gaussian(z) + exact
        lp, expected = jax.device_get(run(v64, x64))
    np.testing.assert_allclose(lp, expected, rtol=1e-9, atol=1e-8)


def test_context_errors(tiny_classes):
    flow, v, _, _ = tiny_classes
    x = jnp.full((2, 2, 2, 1), 3.0)
    with pytest.raises(ValueError, match="conditional; `context` of shape"):
        flow.apply(v, x)
    with pytest.raises(ValueError, match=r"`context` must have shape \[batch, \*\(\)\]"):
        flow.apply(v, x, context=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        flow.apply(v, x, context=jnp.array([0, 3]))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        flow.apply(v, 2, context=jnp.array([-1]), method=flow.sample,
                   rngs={"sample": KEY})
    # Under jit an out-of-range label cannot raise: its row's features are NaN, so its
    # log-density is not finite (Flow.log_prob reports it as -inf).
    lp = jax.jit(lambda v, c: flow.apply(v, x, context=c))(v, jnp.array([0, 7]))
    assert np.isfinite(lp[0]) and not np.isfinite(lp[1])
    # A flow declared unconditional refuses a context.
    plain = Flow(bijector=flow.bijector, event_shape=(2, 2, 1), unconditional=True)
    with pytest.raises(ValueError, match="unconditional"):
        plain.apply(v, x, context=jnp.array([0, 1]))


def test_factory_errors():
    with pytest.raises(ValueError, match="not the configured scale=4"):
        cattnflow((8, 8, 1), (4, 4, 1), scale=4, levels=1)
    with pytest.raises(ValueError, match="integer multiple"):
        cattnflow((8, 8, 1), (3, 3, 1), levels=1)
    with pytest.raises(ValueError, match="channels of the high-resolution"):
        cattnflow((8, 8, 3), (2, 2, 1), levels=1)
    with pytest.raises(ValueError, match="context's shape is required"):
        cattnflow((8, 8, 1), levels=1)
    with pytest.raises(ValueError, match="segmentation context must be"):
        cattnflow((8, 8, 1), context_shape=(8, 8, 5), num_classes=3, levels=1)
    with pytest.raises(ValueError, match="attention must be one of"):
        cattnflow((8, 8, 1), (2, 2, 1), attention="l3", levels=1)
    # "none" (the command line's spelling) is SRFlow's step: no attention bijector.
    step = cattnflow((8, 8, 1), (2, 2, 1), attention="none", levels=1).bijector.bijectors[-1]
    parts = step.bijector.make_level(0).make_step().bijector.bijectors
    assert [type(p).__name__ for p in parts] == ["ActNorm", "Conv1x1", "AffineInjector",
                                                  "AffineCoupling"]
    with pytest.raises(ValueError, match="context_shape must be"):
        conditional_glow((8, 8, 1), (2, 3), levels=1)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        class_conditional_glow((8, 8, 1), 1, levels=1)


def test_encoders_shapes_and_errors():
    sizes = ((4, 4), (2, 2))
    enc = RRDBEncoder(level_sizes=sizes, features=2, growth=2, num_blocks=2,
                      stacked_blocks=(0, 1), input_shape=(2, 2, 1))
    lr = jnp.ones((3, 2, 2, 1))
    out, v = jax.eval_shape(lambda c: enc.init_with_output(KEY, c), lr)
    assert isinstance(out, LevelContext)
    # (len(stacked_blocks) + 1) * features channels, one map per level size.
    assert [m.shape for m in out.maps] == [(3, 4, 4, 6), (3, 2, 2, 6)]
    assert sum(1 for k in v["params"] if k.startswith("rrdb")) == 2
    with pytest.raises(ValueError, match=r"context must have shape \[batch, \*\(2, 2, 1\)\]"):
        enc.init(KEY, jnp.ones((3, 4, 4, 1)))
    with pytest.raises(ValueError, match="stacked_blocks"):
        RRDBEncoder(level_sizes=sizes, num_blocks=2, stacked_blocks=(2,)).init(KEY, lr)

    seg = SegmentationEncoder(3, level_sizes=sizes, features=2, num_layers=1)
    labels = jnp.array([[[0, 1, 2, 0]] * 4])
    out = jax.eval_shape(lambda c: seg.init_with_output(KEY, c)[0], labels)
    assert [m.shape for m in out.maps] == [(1, 4, 4, 2), (1, 2, 2, 2)]
    with pytest.raises(ValueError, match="more or fewer classes than configured"):
        seg.init(KEY, jnp.ones((1, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        seg.init(KEY, labels + 1)

    emb = ClassEmbedding(4, 3)
    ve = emb.init(KEY, jnp.array([0, 3]))
    one_hot = jax.nn.one_hot(jnp.array([0, 3]), 4)
    np.testing.assert_allclose(emb.apply(ve, one_hot), emb.apply(ve, jnp.array([0, 3])))

    ctx = LevelContext((jnp.zeros((1, 4, 4, 2)), jnp.ones((1, 2, 2, 2))))
    assert select_context(ctx, jnp.zeros((1, 2, 2, 8)), "t").shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match=r"none at the input's \(8, 8\)"):
        select_context(ctx, jnp.zeros((1, 8, 8, 1)), "t")


@pytest.mark.parametrize("name,variant", [
    ("conditional_glow_mnist", ""), ("conditional_glow_mnist", "small"),
    ("conditional_glow_mnist", "digits"), ("cattnflow_celeba", ""),
    ("cattnflow_celeba", "srflow"), ("cattnflow_celeba", "small")])
def test_configs_build_with_their_context(name, variant):
    # The trainer's own check: settings, dataset, and the flow initialised abstractly
    # with the context of config.dataset.context (jax.eval_shape, no compute).
    import importlib

    from jaxflows.train import validate_config
    config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
    validate_config(config)


def test_cityscapes_paper_model_builds():
    # The source's Cityscapes seg-to-image model (L=2, K=8, 256x256, 30 classes), built
    # abstractly; its launcher config needs a Cityscapes dataset and a segmentation
    # context in the trainer (docs/conditional.md).
    flow = cattnflow((256, 256, 3), context_shape=(256, 256), num_classes=30, levels=2,
                     steps_per_level=8, attention="imap")
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    seg = jax.ShapeDtypeStruct((1, 256, 256), jnp.int32)
    v = jax.eval_shape(lambda x, c: flow.init(KEY, x, context=c), x, seg)
    steps = v["params"]["bijector"]["bijectors_2"]["bijector"]["steps_0"]["steps"]
    assert jax.tree_util.tree_leaves(steps)[0].shape[0] == 8
