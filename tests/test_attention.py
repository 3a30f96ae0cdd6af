"""Tests of the invertible attentions (IMap, ITrans) and the Lipschitz attentions (ACF).

The generic checks (round trip with perturbed parameters, log-det against the exact
Jacobian, gradients, jit) run on tests/registry/attention.py through
tests/test_bijectors.py; here: bad inputs, invertibility by construction, empirical
Lipschitz constants, and the registry checks after training on real digits.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxflows import testing
from jaxflows.bijectors.attention import IMap, ITrans, checkerboard_mask
from jaxflows.bijectors.base import Chain
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention, lambert_w0

KEY = jax.random.PRNGKey(0)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("module, shape, match", [
    (ITrans(heads=0), (1, 4, 4, 2), "heads"),
    (ITrans(qk_channels=0), (1, 4, 4, 2), "qk_channels"),
    (ITrans(patch_size="half"), (1, 6, 6, 2), "half"),
    (ITrans(matrix_form="free"), (1, 4, 4, 2), "matrix_form"),
    (ITrans(attention_mask="causal"), (1, 4, 4, 2), "attention_mask"),
    (ITrans(patch_size=4), (1, 6, 6, 2), "patch_size"),
    (ITrans(patch_size=3), (1, 6, 6, 2), "patch_size"),
    (ITrans(), (1, 5, 5, 2), "even spatial size"),
    (ITrans(), (4, 16, 2), "NHWC"),
    (IMap(), (4, 16), "NHWC"),
    (IMap(parity=2), (1, 4, 4, 2), "parity"),
])
def test_attention_bijectors_reject_bad_input(module, shape, match):
    with pytest.raises(ValueError, match=match):
        module.init(KEY, jnp.zeros(shape))


@pytest.mark.parametrize("cls", [L2MultiHeadAttention, LipNormAttention])
def test_lipschitz_attention_rejects_bad_heads(cls):
    with pytest.raises(ValueError, match="heads=0"):
        cls(heads=0).init(KEY, jnp.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="positions"):
        cls().init(KEY, jnp.zeros((1, 4)))


def test_checkerboard_mask_alternates_in_all_three_axes():
    m = checkerboard_mask(4, 4, 3)
    assert m[0, 0, 0] == 1 and m[1, 0, 0] == 0 and m[0, 1, 0] == 0 and m[0, 0, 1] == 0
    np.testing.assert_array_equal(m + checkerboard_mask(4, 4, 3, parity=1), 1)


# --------------------------------------------------------------------------------------
# ITrans: invertible by construction
# --------------------------------------------------------------------------------------
def test_itrans_matrix_is_diagonally_dominant_for_huge_random_params():
    module = ITrans(heads=2, kernel_size=3)      # summed heads: row sums of A reach `heads`
    x = jax.random.normal(KEY, (3, 8, 8, 2))
    variables = module.init(KEY, x)
    # Replace every parameter by huge random values; push the margin to its floor.
    variables = testing.perturb_params(variables, jax.random.PRNGKey(1), scale=1e3)
    params = dict(variables["params"])
    params["raw_margin"] = jnp.asarray(-1e3)
    variables = {"params": params}
    x_m = x * checkerboard_mask(8, 8, 2)
    t = jax.jit(lambda v, z: module.apply(v, z, method=ITrans.matrix))(variables, x_m)
    diag = jnp.diagonal(t, axis1=-2, axis2=-1)
    off = jnp.sum(jnp.abs(t), axis=-1) - jnp.abs(diag)
    delta = module.min_margin / (2 + module.min_margin)      # the guarantee in the docstring
    assert float(jnp.min(diag - off)) >= delta - 1e-6
    np.testing.assert_allclose(jnp.sum(t, axis=-1), 1.0, atol=1e-5)
    # ... and the bijector still inverts with a finite log-det.
    y, ld = jax.jit(module.apply)(variables, x)
    inverse = jax.jit(lambda v, y: module.apply(v, y, method=module.inverse_and_log_det))
    xr, ild = inverse(variables, y)
    assert bool(jnp.all(jnp.isfinite(ld)))
    np.testing.assert_allclose(xr, x, atol=1e-3)
    np.testing.assert_allclose(ild, -ld, rtol=1e-5, atol=1e-4)


def test_imap_handles_extreme_params():
    module = IMap()
    x = jax.random.normal(KEY, (2, 4, 4, 4))
    variables = testing.perturb_params(module.init(KEY, x), jax.random.PRNGKey(2), scale=30.0)
    y, ld = jax.jit(module.apply)(variables, x)
    xr = jax.jit(lambda v, y: module.apply(v, y, method=module.inverse))(variables, y)
    assert bool(jnp.all(jnp.isfinite(ld)))
    np.testing.assert_allclose(xr, x, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------------
# Lipschitz attentions: empirical Lipschitz constant below the stated bound
# --------------------------------------------------------------------------------------
def test_lambert_w0_solves_w_exp_w():
    for z in [0.0, 1e-3, 0.5, 1.0, math.e, 70.0, 1e6]:
        w = lambert_w0(z)
        assert abs(w * math.exp(w) - z) <= 1e-10 * max(1.0, z)
    assert lambert_w0(math.e) == pytest.approx(1.0)


def _empirical_lipschitz(fn, starts, steps=100, lr=0.1):
    """Max of ``||fn(x) - fn(y)|| / ||x - y||`` by normalised gradient ascent over pairs.

    ``starts`` is a batch of pairs ``[P, 2, ...]``; the ascent runs for all of them in
    one compiled ``lax.scan`` and the largest ratio seen on the way is returned.
    """
    def log_ratio(xy):
        x, y = xy[0], xy[1]
        return (jnp.log(jnp.sum((fn(x) - fn(y)) ** 2)) - jnp.log(jnp.sum((x - y) ** 2))) / 2

    def one(xy):
        def body(carry, _):
            xy, best = carry
            r, g = jax.value_and_grad(log_ratio)(xy)
            xy = xy + lr * g / (jnp.linalg.norm(g) + 1e-12)
            return (xy, jnp.maximum(best, r)), None
        (_, best), _ = jax.lax.scan(body, (xy, -jnp.inf), None, length=steps)
        return best

    return math.exp(float(jnp.max(jax.jit(jax.vmap(one))(starts))))


@pytest.mark.parametrize("cls", [L2MultiHeadAttention, LipNormAttention])
def test_lipschitz_attention_below_its_bound(cls):
    module = cls(heads=2)
    x = jax.random.normal(KEY, (2, 6, 4))
    variables = testing.perturb_params(module.init(KEY, x), jax.random.PRNGKey(3), scale=1.0)
    variables["params"]["gamma"] = jnp.asarray(5.0)
    bound = float(module.apply(variables, x, method=module.lipschitz_bound))

    def raw(z):
        return module.apply(variables, z[None], return_raw=True)[0]

    def normalised(z):
        return module.apply(variables, z[None])

    # Start from nearby pairs (local Jacobian norm) and from far pairs.
    starts = jnp.stack([jnp.stack([x[0], x[0] + 0.01 * x[1]]), jnp.stack([x[0], x[1]])])
    empirical = _empirical_lipschitz(raw, starts)
    assert empirical <= bound
    assert _empirical_lipschitz(normalised, starts) <= 1.0
    # The bound grows with the sequence length through sqrt(N) (and Lambert W for L2).
    longer = float(module.apply(variables, jnp.zeros((1, 24, 4)), method=module.lipschitz_bound))
    assert longer > bound


def test_lipschitz_attention_starts_as_identity():
    x = jax.random.normal(KEY, (2, 4, 4, 4))
    for cls in (L2MultiHeadAttention, LipNormAttention):
        module = cls(heads=2)
        variables = module.init(KEY, x)
        np.testing.assert_allclose(module.apply(variables, x), x, atol=1e-6)


# --------------------------------------------------------------------------------------
# Registry checks after a few hundred training steps on real digits
# --------------------------------------------------------------------------------------
def _digits():
    from sklearn.datasets import load_digits
    images = load_digits().images.astype(np.float32)[..., None]          # [1797, 8, 8, 1] in 0..16
    # 2x2 space-to-depth -> [N, 4, 4, 4], so that every layer sees several channels.
    n = images.shape[0]
    return images.reshape(n, 4, 2, 4, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(n, 4, 4, 4)


def _tiny_attnflow():
    return Chain([IMap(), ITrans(heads=2), IMap(parity=1), ITrans(heads=1, parity=1)])


@pytest.fixture(scope="module")
def trained_attnflow():
    data = _digits()
    flow = _tiny_attnflow()

    def preprocess(batch, key):                      # dequantise, centre: values ~ [-1, 1]
        return (batch + jax.random.uniform(key, batch.shape)) / 8.5 - 1.0

    variables = flow.init(KEY, preprocess(jnp.asarray(data[:64]), KEY))
    init_params = variables["params"]
    opt = optax.adam(1e-2)

    def loss(params, x):
        z, ld = flow.apply({"params": params}, x)
        log_prob = -0.5 * jnp.sum(z.reshape(z.shape[0], -1) ** 2 + math.log(2 * math.pi), -1) + ld
        return -jnp.mean(log_prob)

    data_j = jnp.asarray(data)

    def train_step(carry, key):
        params, opt_state = carry
        k_idx, k_deq = jax.random.split(key)
        idx = jax.random.randint(k_idx, (64,), 0, data_j.shape[0])
        x = preprocess(data_j[idx], k_deq)
        value, grads = jax.value_and_grad(loss)(params, x)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @jax.jit
    def train(params, keys):
        (params, _), losses = jax.lax.scan(train_step, (params, opt.init(params)), keys)
        return params, losses

    params, losses = train(init_params, jax.random.split(jax.random.PRNGKey(7), 300))
    losses = np.asarray(losses)
    return init_params, params, losses, preprocess, data


def test_attnflow_trains_on_digits(trained_attnflow):
    init_params, params, losses, _, _ = trained_attnflow
    assert np.isfinite(losses).all()
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 5.0        # nats per 64-dim example
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), init_params, params)
    assert all(v > 0 for v in jax.tree_util.tree_leaves(moved))


@pytest.mark.parametrize("index, make", [(0, IMap), (1, lambda: ITrans(heads=2))],
                         ids=["imap", "itrans"])
def test_trained_attention_passes_registry_checks(trained_attnflow, index, make):
    _, params, _, preprocess, data = trained_attnflow
    trained = {"params": params[f"bijectors_{index}"]}
    # Inputs of layer `index`: the digits pushed through the trained layers before it.
    prefix = Chain([_tiny_attnflow().bijectors[i] for i in range(index)]) if index else None

    def input_fn(key, shape):
        x = preprocess(jnp.asarray(data[:shape[0]]), key)
        if prefix is not None:
            sub = {"params": {f"bijectors_{i}": params[f"bijectors_{i}"] for i in range(index)}}
            x = prefix.apply(sub, x)[0]
        return x

    case = testing.BijectorCase(
        f"trained_{index}", make, (3, 4, 4, 4), input_fn=input_fn, perturb_scale=0.0,
        prepare_variables=lambda variables, key: trained)
    out = testing.check_bijector(case)
    rec = max(v for k, v in out.items() if k.startswith("reconstruction"))
    ld_err = max(v for k, v in out.items() if k.startswith("log_det_error"))
    assert rec < 1e-9 and ld_err < 1e-9, out


# --------------------------------------------------------------------------------------
# ACF: the residual branch with attention stays a contraction
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, dense", [("l2", False), ("lipnorm", True)])
def test_acf_branch_with_attention_is_a_contraction(kind, dense):
    from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
    from jaxflows.models.acf import attention_factory
    from jaxflows.nn.lipschitz import update_lipschitz_state

    # The attention first in the branch (the placement between the convolutions is
    # checked by SVD of the exact Jacobian in tests/test_attention_paper.py).
    common = dict(attention=attention_factory(kind, heads=2), attention_placement="first",
                  estimator=dict(kind="series", n_terms=1), eval_estimator=dict(kind="series"),
                  spectral_norm=dict(coeff=0.9, init_iterations=20))
    block = (DenseResidualBlock(depth=2, growth=4, **common) if dense
             else ResidualBlock(hidden_channels=8, **common))
    x = jax.random.normal(KEY, (2, 4, 4, 2))
    rngs = {"params": KEY, "logdet": KEY}
    variables = block.init(rngs, x)
    # Random weights everywhere and a large gamma: the attention is far from the identity.
    variables = testing.perturb_params(variables, jax.random.PRNGKey(4), scale=0.5)
    variables["params"]["g"]["attention"]["gamma"] = jnp.asarray(4.0)
    variables = update_lipschitz_state(block, variables, x, rngs={"logdet": KEY}, num_rounds=10)

    def g(z):                                    # f(z) = z + g(z)
        return block.apply(variables, z[None], rngs={"logdet": KEY})[0][0] - z

    starts = jnp.stack([jnp.stack([x[0], x[0] + 0.01 * x[1]]), jnp.stack([x[0], x[1]])])
    lip = _empirical_lipschitz(g, starts, steps=40)
    assert lip < block.spectral_norm.coeff
    # The attention changes the branch (it is not silently bypassed).
    no_attn = dict(variables, params=jax.tree_util.tree_map(lambda a: a, variables["params"]))
    no_attn["params"]["g"]["attention"]["gamma"] = jnp.asarray(0.0)
    fwd = jax.jit(lambda v, z: block.apply(v, z, rngs={"logdet": KEY})[0])
    y1, y0 = fwd(variables, x), fwd(no_attn, x)
    assert float(jnp.max(jnp.abs(y1 - y0))) > 1e-4


# --------------------------------------------------------------------------------------
# Model factories
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(attention="conv"), "attention"),
    (dict(position=5), "position"),
    (dict(attention="itrans", heads=0), "heads=0"),
    (dict(levels=4), "divisible"),
    (dict(attention="itrans", patch_size=4), "patch_size=4 must divide"),   # level 1 is 2x2
    (dict(attention="itrans", patch_size="half"), "half"),                  # 2x2: half is odd
    (dict(attention="l2"), "acf"),                                          # not hostable
    (dict(backbone="resflow"), "backbone"),
    (dict(backbone="mar_scf", coupling="additive"), "coupling"),
    (dict(attention="itrans", matrix_form="free"), "matrix_form"),
])
def test_attnflow_rejects_bad_arguments(kwargs, match):
    from jaxflows.models import attnflow
    with pytest.raises(ValueError, match=match):
        attnflow((8, 8, 1), **{"levels": 2, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    (dict(base="glow"), "base"),
    (dict(attention="dot"), "attention"),
    (dict(heads=0, squeeze_first=True), "heads"),
    (dict(hidden_chanels=8), "hidden_chanels"),
    (dict(base="idensenet", hidden_channels=8), "hidden_channels.*growth"),
])
def test_acf_rejects_bad_arguments(kwargs, match):
    from jaxflows.models import acf
    with pytest.raises(ValueError, match=match):
        acf((8, 8, 1), **kwargs)


def test_residual_block_attention_needs_a_convolutional_branch():
    from jaxflows.bijectors.residual import ResidualBlock
    from jaxflows.models.acf import attention_factory
    block = ResidualBlock(hidden_channels=4, attention=attention_factory("l2", 1))
    with pytest.raises(ValueError, match="attention needs a convolutional branch"):
        block.init(KEY, jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="attention must be None or a factory"):
        ResidualBlock(hidden_channels=4, attention="l2").init(KEY, jnp.ones((1, 4, 4, 2)))


ACF_TINY = dict(levels=2, blocks_per_level=1, hidden_channels=4, squeeze_first=True,
                factor_out=True, fc_blocks=0, num_bins=17, estimator=dict(kind="exact"),
                spectral_norm=dict(init_iterations=5))


@pytest.mark.parametrize("base", ["resflow", "iresnet", "idensenet"])
def test_acf_is_the_base_model_plus_attention_in_conv_branches(base):
    """The acf factory builds its model through the resflow.py factories: without attention the very
    same parameter tree as the base factory; with it, one attention in every
    convolutional branch and none in the fully connected end blocks.
    """
    from jaxflows.models import MODELS, acf
    from jaxflows.models.acf import attention_gains
    kw = dict(ACF_TINY, fc_blocks=1)
    if base == "idensenet":
        kw.update(growth=kw.pop("hidden_channels"), depth=1, fc_growth=4, fc_first_features=4)
    x = jnp.ones((2, 8, 8, 1))

    def variables(flow):       # shapes only: traced, not compiled
        return jax.eval_shape(lambda k: flow.init({"params": k}, x), KEY)

    def shapes(v):
        return {jax.tree_util.keystr(p): a.shape for p, a in jax.tree_util.tree_leaves_with_path(v)}

    plain = shapes(variables(MODELS[base]((8, 8, 1), **kw)))
    assert shapes(variables(acf((8, 8, 1), base=base, attention="none", **kw))) == plain
    v = variables(acf((8, 8, 1), base=base, attention="lipnorm", heads=2, **kw))
    with_attn = shapes(v)
    gammas = [p for p in with_attn if p.endswith("['attention']['gamma']")]
    assert {p: a for p, a in with_attn.items() if "['attention']" not in p} == plain
    assert len(gammas) == 2                   # one conv block per level, no fc block
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), v)
    assert attention_gains(zeros["params"])["count"] == 2


def test_attention_gains_reads_every_gamma():
    from jaxflows.models.acf import attention_gains
    params = {"a": {"g": {"attention": {"gamma": jnp.asarray([0.5, -2.0]), "out": jnp.ones(3)},
                          "Dense_0": {"gamma": jnp.asarray(9.0)}}},       # not an attention
              "b": {"g": {"attention": {"gamma": jnp.asarray(0.25)}}}}
    gains = attention_gains(params)
    assert gains["count"] == 3 and gains["max_abs_gamma"] == 2.0
    assert gains["mean_abs_gamma"] == pytest.approx((0.5 + 2.0 + 0.25) / 3)
    assert attention_gains({"x": jnp.ones(2)}) == {"count": 0, "max_abs_gamma": 0.0,
                                                   "mean_abs_gamma": 0.0}
