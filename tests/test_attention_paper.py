"""ACF and AttnFlow as the papers define them (issue 18): placement of the ACF attention
between the convolutions, heads free of the channel count, ACF's Eq. 13 output and
Eq. 15 LipNorm constant (which of the normalisers is a bound, by SVD of the exact
Jacobian), and the bad inputs the factories refuse.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import testing
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
from jaxflows.models.acf import attention_factory
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention, lipnorm_paper_constant

KEY = jax.random.PRNGKey(0)


_perturb = jax.jit(testing.perturb_params)


@functools.lru_cache(maxsize=None)
def _jit_init(module):
    return jax.jit(module.init)


def _init(module, x, seed=0, scale=None):
    """Jitted ``module.init`` at ``x``, optionally perturbed (``testing.perturb_params``)."""
    variables = _jit_init(module)(KEY, x)
    if scale is not None:
        variables = _perturb(variables, jax.random.PRNGKey(seed), scale)
    return variables


def _svd_max(jac, n):
    jac = np.asarray(jac, np.float64).reshape(jac.shape[0], n, n)
    return float(np.max(np.linalg.svd(jac, compute_uv=False)[:, 0]))


@functools.lru_cache(maxsize=None)
def _jacobians(module):
    """Jitted ``(variables, xs) -> exact Jacobians`` of ``module`` at each example of ``xs``
    (one compilation per module, shared by every call).
    """
    def one(variables, z):
        out = module.apply(variables, z[None])
        out = out[0] if isinstance(out, tuple) else out             # a bijector: (y, log-det)
        return out.reshape(z.shape)
    return jax.jit(jax.vmap(jax.jacfwd(one, argnums=1), in_axes=(None, 0)))


def _max_jacobian_norm(module, variables, xs):
    """Max over ``xs`` of the largest singular value of the module's exact Jacobian."""
    return _svd_max(_jacobians(module)(variables, xs), int(np.prod(xs.shape[1:])))


# --------------------------------------------------------------------------------------
# Which normaliser is a bound: SVD of the exact Jacobian on tiny inputs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, heads", [(L2MultiHeadAttention, 3), (LipNormAttention, 3)])
def test_derived_bounds_are_bounds_by_svd(cls, heads):
    """``F / L`` has every Jacobian spectral norm <= 1, for random weights at several
    scales, 3 heads on 2 features (heads not dividing the features).
    """
    module = cls(heads=heads, residual=False)
    xs = jax.random.normal(KEY, (4, 2, 2, 2))                 # N = 4 tokens, D = 2
    worst = 0.0
    for seed, scale in enumerate((0.3, 1.0, 3.0)):
        variables = _init(module, xs[:1], seed, scale)
        worst = max(worst, _max_jacobian_norm(module, variables, xs))
    assert 0.0 < worst <= 1.0, worst


def test_paper_lipnorm_constant_is_not_a_bound():
    """ACF's Eq. 15 constant (10.55 at m = n) ignores the weights: with larger weights
    the Jacobian of ``F / 10.55`` exceeds 1 (so the block could stop being a contraction),
    while the derived bound keeps it below 1 on the same weights and inputs.
    """
    assert lipnorm_paper_constant(4, 4) == pytest.approx(10.5512, abs=1e-4)
    xs = jax.random.normal(KEY, (3, 2, 2, 2))
    paper = LipNormAttention(heads=1, residual=False, bound="paper")
    derived = LipNormAttention(heads=1, residual=False)
    variables = _init(paper, xs[:1])
    variables = jax.tree_util.tree_map(lambda a: 4.0 * a, variables)    # larger weights
    assert _max_jacobian_norm(paper, variables, xs) > 1.0
    assert _max_jacobian_norm(derived, variables, xs) <= 1.0


def test_eq13_output_is_not_1_lipschitz_but_the_normalised_one_is():
    xs = jax.random.normal(KEY, (3, 2, 2, 2))
    for output, expect_above_one in (("eq13", True), ("normalised", False)):
        module = L2MultiHeadAttention(heads=2, output=output)
        variables = _init(module, xs[:1], 1, 1.0)
        variables["params"]["gamma"] = jnp.asarray(3.0)
        lip = _max_jacobian_norm(module, variables, xs)
        assert (lip > 1.0) == expect_above_one, (output, lip)
        # gamma = 0: both forms are the identity.
        variables["params"]["gamma"] = jnp.asarray(0.0)
        np.testing.assert_allclose(module.apply(variables, xs), xs, atol=1e-6)


# --------------------------------------------------------------------------------------
# Placement between the convolutions
# --------------------------------------------------------------------------------------
def _attention_params(variables):
    return variables["params"]["g"]["attention"]


@pytest.mark.parametrize("dense", [False, True])
def test_between_placement_attends_over_hidden_features(dense):
    """Between: the attention's projections act on the hidden features (ResNet branch:
    ``hidden_channels``; DenseNet: ``C + depth * growth``); first: on the ``C`` inputs.
    Heads (3) divide neither.
    """
    x = jnp.ones((2, 4, 4, 2))
    kw = dict(attention=attention_factory("l2", 3), estimator=dict(kind="exact"),
              spectral_norm=dict(init_iterations=2))
    make = (functools.partial(DenseResidualBlock, depth=1, growth=4) if dense
            else functools.partial(ResidualBlock, hidden_channels=8))
    hidden = 2 + 4 if dense else 8
    for placement, features in (("between", hidden), ("first", 2)):
        block = make(attention_placement=placement, **kw)
        v = jax.eval_shape(lambda k, b=block: b.init({"params": k}, x), KEY)
        q = _attention_params(v)["query"].shape
        assert q == (3, features, -(-features // 3)), (placement, q)


@pytest.fixture(scope="module")
def between_block():
    block = ResidualBlock(hidden_channels=4, kernels=(3, 1), attention_placement="between",
                          attention=attention_factory("lipnorm", 3),
                          estimator=dict(kind="exact"),
                          spectral_norm=dict(coeff=0.9, init_iterations=30))
    x = jax.random.normal(KEY, (2, 2, 2, 2))
    variables = _init(block, x, 2, 0.5)
    variables["params"]["g"]["attention"]["gamma"] = jnp.asarray(4.0)
    from jaxflows.nn.lipschitz import update_lipschitz_state
    variables = update_lipschitz_state(block, variables, x, num_rounds=20)
    return block, variables, x


def test_block_with_attention_between_is_a_contraction(between_block):
    block, variables, x = between_block
    jac = _jacobians(block)(variables, x)                         # J_f = I + J_g
    n = int(np.prod(x.shape[1:]))
    jac_g = np.asarray(jac, np.float64).reshape(x.shape[0], n, n) - np.eye(n)
    lip = float(np.max(np.linalg.svd(jac_g, compute_uv=False)[:, 0]))
    assert 0.0 < lip < block.spectral_norm.coeff + 1e-4
    # The attention is used: zeroing gamma changes the output.
    no_attn = jax.tree_util.tree_map(lambda a: a, variables)
    no_attn["params"]["g"]["attention"]["gamma"] = jnp.asarray(0.0)
    fwd = jax.jit(lambda v: block.apply(v, x)[0])
    assert float(jnp.max(jnp.abs(fwd(variables) - fwd(no_attn)))) > 1e-4


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(placement="middle"), "placement"),
    (dict(kernels=(3,)), "placement='between'"),
    (dict(bound="paper"), "lipnorm"),
    (dict(attention="lipnorm", bound="loose"), "bound"),
    (dict(output="eq12"), "output"),
    (dict(heads=0), "heads"),
    (dict(head_features=0), "head_features"),
    (dict(gamma_init=float("nan")), "gamma_init"),
    (dict(gamma_init="1"), "gamma_init"),
])
def test_acf_rejects_bad_attention_options(kwargs, match):
    from jaxflows.models import acf
    with pytest.raises(ValueError, match=match):
        acf((8, 8, 1), **{"levels": 2, "squeeze_first": True, "factor_out": True, **kwargs})


def test_gamma_init_sets_every_attention_gain():
    """``gamma_init`` starts every attention of the model there (the MNIST ablations start
    at 1); the default 0 is the base model's identity.
    """
    from jaxflows.models import acf
    from jaxflows.models.acf import attention_gains
    x = jnp.ones((2, 4, 4, 3))
    for gamma_init in (0.0, 1.0):
        module = attention_factory("lipnorm", 2, gamma_init=gamma_init)(name="a")
        assert float(_init(module, x)["params"]["gamma"]) == gamma_init
    flow = acf((4, 4, 1), levels=1, blocks_per_level=2, hidden_channels=4, fc_blocks=0,
               squeeze_first=True, factor_out=False, heads=3, gamma_init=-0.5)
    params = jax.jit(flow.init)(KEY, jnp.full((1, 4, 4, 1), 100.0))["params"]
    gains = attention_gains(params)
    assert gains["count"] == 2 and gains["max_abs_gamma"] == gains["mean_abs_gamma"] == 0.5
    gammas = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if "gamma" in jax.tree_util.keystr(path)]
    np.testing.assert_array_equal(np.concatenate([np.ravel(g) for g in gammas]), -0.5)


def test_block_rejects_a_bad_placement():
    block = ResidualBlock(hidden_channels=4, attention=attention_factory("l2", 1),
                          attention_placement="last")
    with pytest.raises(ValueError, match="attention_placement"):
        block.init(KEY, jnp.ones((1, 4, 4, 2)))
    block = ResidualBlock(hidden_channels=4, kernels=(3,), attention=attention_factory("l2", 1))
    with pytest.raises(ValueError, match="two convolutions"):
        block.init(KEY, jnp.ones((1, 4, 4, 2)))


@pytest.mark.parametrize("cls", [L2MultiHeadAttention, LipNormAttention])
def test_attention_rejects_bad_heads_and_output(cls):
    x = jnp.zeros((1, 4, 2))
    with pytest.raises(ValueError, match="heads"):
        cls(heads=0).init(KEY, x)
    with pytest.raises(ValueError, match="output"):
        cls(output="eq14").init(KEY, x)
    with pytest.raises(ValueError, match="head_features"):
        cls(head_features=0).init(KEY, x)


# --------------------------------------------------------------------------------------
# AttnFlow on the mAR-SCF backbone
# --------------------------------------------------------------------------------------
def _param_shapes(flow, x):
    v = jax.eval_shape(lambda k: flow.init({"params": k, "dropout": k}, x), KEY)
    return {jax.tree_util.keystr(p): a.shape
            for p, a in jax.tree_util.tree_leaves_with_path(v["params"])}


@pytest.mark.parametrize("attention", ["imap", "itrans"])
def test_attnflow_on_mar_scf_is_mar_scf_plus_one_attention_per_step(attention):
    """Shapes only (traced): the mAR-SCF backbone's parameters (couplings, 1x1 convs, mAR
    priors) plus one attention per step, at pos-4 (after the coupling).
    """
    from jaxflows.models import attnflow, mar_scf
    kw = dict(levels=2, steps_per_level=2, hidden_channels=4, coupling="affine",
              lstm_features=4, lstm_layers=1, kernel_sizes=3, dilations=1)
    x = jnp.ones((2, 8, 8, 1))
    plain = _param_shapes(mar_scf((8, 8, 1), **kw), x)
    with_attn = _param_shapes(attnflow((8, 8, 1), backbone="mar_scf", attention=attention,
                                       position=4, heads=3, **kw), x)
    is_attn = ("IMap" if attention == "imap" else "ITrans")
    attn = {p: s for p, s in with_attn.items() if is_attn in p}
    rest = sorted(s for p, s in with_attn.items() if is_attn not in p)
    assert rest == sorted(plain.values())
    assert attn and all(s[0] == 2 for s in attn.values())          # stacked over K=2 steps
    assert len({p.split("['steps']")[0] for p in attn}) == 2  # one run of steps per level
    # pos-4: the attention after the coupling of the backbone's step.
    from jaxflows.bijectors import IMap, ITrans
    from jaxflows.bijectors.mixlogcdf import MixLogCDFCoupling
    from jaxflows.models.attnflow import attnflow_step
    from jaxflows.models.mar_scf import mixlogcdf_step
    base = functools.partial(mixlogcdf_step, hidden_channels=4, components=2, num_blocks=1,
                             heads=1, dropout=0.0)
    step = attnflow_step(0, attention=attention, position=4, make_base_step=base).bijectors
    assert isinstance(step[2], MixLogCDFCoupling)
    assert isinstance(step[3], IMap if attention == "imap" else ITrans)
