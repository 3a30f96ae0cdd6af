"""Glow-family bijectors: bad input, data-dependent init, variable collections,
identity at init, dtypes. (Round trip, log-dets against the exact Jacobian and
gradients are checked for every variant by the generic registry test,
tests/test_bijectors.py, with the cases of tests/registry/glow.py.)

Most checks here only trace (``jax.eval_shape``): errors are raised at trace
time and dtypes are known after tracing, so nothing needs compiling.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import (
    ActNorm,
    Additive,
    AdditiveCoupling,
    Affine,
    AffineCoupling,
    Conv1x1,
    Coupling,
    Permute,
    Repeat,
    Reverse,
)
from jaxflows.nn.conv import conv2d_same as conv2d
from jaxflows.testing import enable_x64, perturb_params

KEY = jax.random.PRNGKey(0)
IMG = (2, 4, 4, 4)


def _abstract_init(module, shape, dtype=jnp.float32, context=None, **kw):
    x = jax.ShapeDtypeStruct(shape, dtype)
    return jax.eval_shape(lambda x, c: module.init(KEY, x, context=c, **kw), x, context)


def _abstract_apply(module, variables, shape, dtype=jnp.float32, context=None, inverse=False):
    method = module.inverse_and_log_det if inverse else module.forward_and_log_det
    x = jax.ShapeDtypeStruct(shape, dtype)
    return jax.eval_shape(lambda v, x, c: module.apply(v, x, context=c, method=method),
                          variables, x, context)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make", [
    ActNorm, lambda: Conv1x1(lu=True), lambda: Conv1x1(lu=False), Permute,
    lambda: AffineCoupling(hidden_channels=8), lambda: AdditiveCoupling(hidden_channels=8),
    lambda: AffineCoupling(hidden_channels=8, mask="checkerboard", conditioner="resnet"),
    lambda: Coupling(transformer=Affine("exp"), hidden_channels=8, mask="checkerboard"),
], ids=["actnorm", "conv1x1_lu", "conv1x1_plain", "permute", "affine", "additive",
        "affine_checkerboard_resnet", "coupling_checkerboard"])
def test_channel_count_differs_from_init(make):
    module = make()
    variables = _abstract_init(module, IMG)
    for inverse in (False, True):
        with pytest.raises(ValueError, match=r"`x`.*channels"):
            _abstract_apply(module, variables, (2, 4, 4, 6), inverse=inverse)


def test_channel_split_needs_even_channels():
    with pytest.raises(ValueError, match=r"mask='channel'.*even number of channels.*`x`"):
        _abstract_init(AffineCoupling(hidden_channels=8), (2, 4, 4, 3))
    with pytest.raises(ValueError, match=r"even number of channels"):
        _abstract_init(AdditiveCoupling(hidden_channels=8), (2, 5))
    # The alternating mask handles an odd size.
    _abstract_init(AffineCoupling(hidden_channels=8, mask="alternating"), (2, 5))


@pytest.mark.parametrize("shape", [(2, 3, 4, 2), (2, 4, 5, 2)])
def test_checkerboard_needs_even_height_and_width(shape):
    with pytest.raises(ValueError, match=r"checkerboard.*even height and width of `x`"):
        _abstract_init(AffineCoupling(hidden_channels=8, mask="checkerboard"), shape)


def test_checkerboard_needs_images():
    with pytest.raises(ValueError, match=r"checkerboard.*NHWC"):
        _abstract_init(AdditiveCoupling(hidden_channels=8, mask="checkerboard"), (2, 6))


@pytest.mark.parametrize("make,shape", [
    (lambda: AffineCoupling(hidden_channels=8), (2, 4, 4)),
    (lambda: AffineCoupling(hidden_channels=8), (2, 2, 4, 4, 4)),
    (lambda: AdditiveCoupling(hidden_channels=8), (8,)),
    (lambda: Coupling(transformer=Additive(), hidden_channels=8, mask="alternating"), (2, 3, 4)),
    (ActNorm, (4,)),
    (Conv1x1, (4,)),
    (Permute, (4,)),
    (Reverse, (4,)),
], ids=["coupling_rank3", "coupling_rank5", "additive_rank1", "generic_rank3", "actnorm_rank1",
        "conv1x1_rank1", "permute_rank1", "reverse_rank1"])
def test_unsupported_event_rank(make, shape):
    with pytest.raises(ValueError, match=r"`x`.*rank"):
        _abstract_init(make(), shape)


@pytest.mark.parametrize("module", [AffineCoupling(hidden_channels=8),
                                    Coupling(transformer=Additive(), hidden_channels=8)],
                         ids=["affine", "generic"])
def test_bad_context_shape(module):
    for ctx_shape in [(3, 2), (2, 2, 4, 1), (2, 5, 2, 2, 1)]:
        with pytest.raises(ValueError, match=r"`context`"):
            _abstract_init(module, IMG, context=jax.ShapeDtypeStruct(ctx_shape, jnp.float32))


@pytest.mark.parametrize("kwargs,arg", [
    (dict(mask="diagonal"), "mask"), (dict(scale_fn="tanh"), "scale_fn"),
    (dict(parity=2), "parity"), (dict(conditioner="unet"), "conditioner"),
    (dict(clamp=-1.0, scale_fn="exp"), "clamp"),
])
def test_bad_options(kwargs, arg):
    with pytest.raises(ValueError, match=f"^AffineCoupling: `{arg}`"):
        _abstract_init(AffineCoupling(hidden_channels=8, **kwargs), IMG)
    generic = {k: v for k, v in kwargs.items() if k not in ("scale_fn", "clamp")}
    if generic:  # the same checks, and names, in the generic Coupling
        with pytest.raises(ValueError, match=f"^Coupling: `{arg}`"):
            _abstract_init(Coupling(transformer=Affine(), hidden_channels=8, **generic), IMG)


def test_mlp_conditioner_rejects_images():
    with pytest.raises(ValueError, match="conditioner='mlp'"):
        _abstract_init(AffineCoupling(hidden_channels=8, conditioner="mlp"), IMG)


# ------------------------------------------------------------------------------ ActNorm

@pytest.mark.parametrize("shape", [IMG, (16, 3)], ids=["image", "vector"])
def test_actnorm_data_dependent_init_standardises_the_init_batch(shape):
    c = shape[-1]
    x = 3.0 + jnp.arange(1, c + 1) * jax.random.normal(KEY, shape)  # per-channel mean/scale
    module = ActNorm()
    variables = jax.jit(module.init)(KEY, x)
    assert set(variables) == {"params"}
    y, ld = jax.jit(module.apply)(variables, x)
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(jnp.mean(y, axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y, axes), 1.0, atol=1e-4)
    # log-det: N log(1/std) summed over channels, N positions per example.
    n = int(np.prod(shape[1:-1]))
    np.testing.assert_allclose(ld, -n * jnp.sum(jnp.log(jnp.std(x, axes))), rtol=1e-4)


def test_actnorm_initialised_through_the_inverse_standardises_its_output():
    y = 2.0 - 4.0 * jax.random.normal(KEY, (8, 3))
    module = ActNorm()
    variables = module.init(KEY, y, method=module.inverse_and_log_det)
    x = module.apply(variables, y, method=module.inverse)
    np.testing.assert_allclose(jnp.mean(x, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(x, 0), 1.0, atol=1e-4)


# ------------------------------------------------------------- Conv1x1 / Permute variables

def test_conv1x1_lu_keeps_permutation_and_sign_out_of_params():
    module = Conv1x1(lu=True)
    variables = jax.jit(module.init)(KEY, jnp.ones(IMG))
    assert set(variables) == {"params", "buffers"}
    assert set(variables["params"]) == {"lower", "upper", "log_s"}
    assert set(variables["buffers"]) == {"P", "sign"}
    p = np.asarray(variables["buffers"]["P"])
    assert set(np.unique(p).tolist()) <= {0.0, 1.0}  # a permutation matrix
    np.testing.assert_array_equal(p.sum(0), 1)
    np.testing.assert_array_equal(p.sum(1), 1)
    assert set(np.abs(np.asarray(variables["buffers"]["sign"])).tolist()) == {1.0}

    @jax.jit
    def run(variables, x):
        w = module.apply(variables, jnp.eye(4))[0]  # rows: W at init
        v = perturb_params(variables, KEY, 0.5)      # params only, not the buffers
        return w, module.apply(v, module.apply(v, x)[0], method=module.inverse)
    x = jax.random.normal(KEY, (3, 4))
    w, xr = run(variables, x)
    # W = P L U at init is a rotation, and perturbing the params keeps an exact inverse.
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(xr, x, atol=1e-4)


def test_conv1x1_plain_has_only_a_kernel():
    variables = jax.jit(Conv1x1(lu=False).init)(KEY, jnp.ones(IMG))
    assert set(variables) == {"params"} and set(variables["params"]) == {"kernel"}
    w = variables["params"]["kernel"]
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)


def test_permute_indices_are_buffers_and_differ_between_repeat_steps():
    variables = Permute(seed=1).init(KEY, jnp.ones((2, 8)))
    assert set(variables) == {"buffers"}
    perm = np.asarray(variables["buffers"]["perm"])
    assert sorted(perm.tolist()) == list(range(8)) and perm.tolist() != list(range(8))
    # Seeded: independent of the init key.
    other = Permute(seed=1).init(jax.random.PRNGKey(5), jnp.ones((2, 8)))
    np.testing.assert_array_equal(other["buffers"]["perm"], perm)
    # Unseeded under Repeat: each step draws its own permutation.
    stacked = jax.jit(Repeat(make_step=Permute, num_steps=3).init)(KEY, jnp.ones((2, 8)))
    perms = np.asarray(jax.tree_util.tree_leaves(stacked["buffers"])[0])
    assert perms.shape == (3, 8)
    assert len({tuple(p) for p in perms.tolist()}) > 1


# -------------------------------------------------------------------- couplings at init

_COUPLINGS = {
    "affine_channel_sigmoid_glow": (lambda: AffineCoupling(hidden_channels=8), IMG),
    "affine_checkerboard_exp_resnet": (
        lambda: AffineCoupling(hidden_channels=8, mask="checkerboard", scale_fn="exp",
                               conditioner="resnet", num_blocks=1, parity=1), IMG),
    "affine_vector_alternating": (
        lambda: AffineCoupling(hidden_channels=8, mask="alternating"), (3, 5)),
    "additive_vector": (lambda: AdditiveCoupling(hidden_channels=8), (3, 6)),
    "coupling_affine_exp_checkerboard": (
        lambda: Coupling(transformer=Affine("exp"), hidden_channels=8, mask="checkerboard"), IMG),
    "coupling_additive_alternating": (
        lambda: Coupling(transformer=Additive(), hidden_channels=8, mask="alternating"), (3, 5)),
}


def test_every_coupling_is_the_identity_at_init():
    names = list(_COUPLINGS)

    @jax.jit  # one compilation for all of them
    def run(key):
        outs = []
        for name in names:
            make, shape = _COUPLINGS[name]
            module = make()
            x = 1.0 + jax.random.normal(key, shape)
            y, ld = module.apply(module.init(key, x), x)
            outs.append((x, y, ld))
        return outs

    for name, (x, y, ld) in zip(names, run(KEY)):
        # The identity up to float32 round-off at the input's scale: a masked coupling
        # computes mask * x + (1 - mask) * (x * 1 + 0), whose rounding depends on how the
        # compiler fuses the multiply-adds (exact at XLA's default level, a few ulp of
        # max|x| at the test suite's level 0).
        assert np.asarray(y).dtype == np.float32, name
        tol = 4 * np.finfo(np.float32).eps * float(np.max(np.abs(x)))
        np.testing.assert_allclose(y, x, rtol=0, atol=tol, err_msg=name)
        np.testing.assert_allclose(ld, 0.0, atol=1e-6, err_msg=name)


def test_dropout_and_context_reach_the_conditioner():
    module = AffineCoupling(hidden_channels=16, scale_fn="exp", dropout=0.5)
    x = jax.random.normal(KEY, (4, 6))
    ctx = jax.random.normal(jax.random.PRNGKey(1), (4, 2))

    @jax.jit  # one compilation, called twice
    def run(k):
        v = perturb_params(module.init(KEY, x, context=ctx), KEY, 0.3)
        ev = module.apply(v, x, context=ctx)  # train=False: no "dropout" rng needed
        ev_ctx = module.apply(v, x, context=ctx + 1.0)
        tr = module.apply(v, x, context=ctx, train=True, rngs={"dropout": k})
        inv = module.apply(v, tr[0], context=ctx, train=True, rngs={"dropout": k},
                           method=module.inverse_and_log_det)
        return ev[0], ev_ctx[0], tr, inv
    y_eval, y_ctx, (y_a, ld_a), (xr, ild) = run(jax.random.PRNGKey(2))
    y_b = run(jax.random.PRNGKey(3))[2][0]
    assert not np.allclose(y_a, y_eval) and not np.allclose(y_a, y_b)  # dropout is active
    assert not np.allclose(y_ctx, y_eval)                               # context is used
    # The first half passes through unchanged in every mode.
    np.testing.assert_array_equal(y_a[:, :3], x[:, :3])
    # train=True with dropout is still a bijection for a fixed dropout mask.
    np.testing.assert_allclose(xr, x, atol=1e-5)
    np.testing.assert_allclose(ild, -ld_a, atol=1e-5)


# ---------------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("make,shape", [
    (ActNorm, IMG), (lambda: Conv1x1(lu=True), IMG), (lambda: Conv1x1(lu=False), IMG),
    (Permute, IMG), (Reverse, IMG),
    (lambda: AffineCoupling(hidden_channels=8), IMG),
    (lambda: AffineCoupling(hidden_channels=8, mask="checkerboard", conditioner="resnet",
                            scale_fn="exp"), IMG),
    (lambda: AdditiveCoupling(hidden_channels=8), (2, 6)),
    (lambda: Coupling(transformer=Affine("exp", clamp=None), hidden_channels=8,
                      mask="alternating"), (2, 5)),
], ids=["actnorm", "conv1x1_lu", "conv1x1_plain", "permute", "reverse", "affine",
        "affine_resnet", "additive_vector", "coupling_alternating"])
def test_float64_in_float64_out(make, shape):
    module = make()
    with enable_x64():
        # Parameters initialised in float32 (as a user would), input in float64.
        variables = _abstract_init(module, shape, jnp.float32)
        for inverse in (False, True):
            y, ld = _abstract_apply(module, variables, shape, jnp.float64, inverse=inverse)
            assert y.dtype == jnp.float64 and ld.dtype == jnp.float64
            assert y.shape == shape and ld.shape == shape[:1]


# ------------------------------------------------------------------------ conv2d kernels

def test_conv2d_implementations_agree():
    x = jax.random.normal(KEY, (2, 5, 6, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 16))
    np.testing.assert_allclose(conv2d(x, kernel, impl="im2col"),
                               conv2d(x, kernel, impl="native"), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="impl"):
        conv2d(x, kernel, impl="fft")


def test_repeat_unroll_gives_the_same_flow():
    """Repeat(unroll=...) changes only how the loop is compiled: same parameter tree, same
    outputs and log-dets in both directions as the rolled loop.
    """
    from jaxflows.bijectors import Chain, Repeat
    from jaxflows.models.multiscale import multiscale

    def step():
        return Chain([ActNorm(), Conv1x1(), AffineCoupling(hidden_channels=8)])

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 2))
    rolled = Repeat(make_step=step, num_steps=3)
    # 0.05: with 0.1 this draw makes a 2-channel 1x1 convolution nearly singular and the
    # inverse amplifies float32 round-off a thousandfold, so the two loops' inverses would
    # agree only where they round alike. The round trip below guards against that.
    params = perturb_params(rolled.init(jax.random.PRNGKey(1), x), jax.random.PRNGKey(2), 0.05)
    y, ld = rolled.apply(params, x)
    x_inv, ld_inv = rolled.apply(params, y, method="inverse_and_log_det")
    np.testing.assert_allclose(x_inv, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-5, atol=1e-4)
    for unroll in (True, 2):    # full, and partial with a remainder (3 = 2 + 1)
        other = Repeat(make_step=step, num_steps=3, unroll=unroll)
        assert (jax.tree_util.tree_structure(other.init(jax.random.PRNGKey(1), x))
                == jax.tree_util.tree_structure(params))
        y2, ld2 = other.apply(params, x)
        np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ld2, ld, rtol=1e-5, atol=1e-4)
        x2, ld2_inv = other.apply(params, y, method="inverse_and_log_det")
        np.testing.assert_allclose(x2, x_inv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ld2_inv, ld_inv, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="multiscale: unroll"):
        multiscale(2, 2, lambda level: step(), unroll=0)
    with pytest.raises(ValueError, match="Repeat: unroll"):
        Repeat(make_step=step, num_steps=3, unroll=0).init(jax.random.PRNGKey(1), x)
