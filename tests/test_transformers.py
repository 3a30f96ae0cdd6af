"""Elementwise transformers (jaxflows.bijectors.transformers) and the Coupling seam.

Each transformer: round trip, elementwise log-det against the autodiff derivative
(float64), inverse log-det = - forward log-det, identity at zero parameters where it
claims it. Coupling: a transformer written here plugs in with no library edit and
passes the generic check; the old names compute the same function of the same
variables as ``Coupling(transformer=...)``; the conditioner's channel layout; errors.
"""
import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import testing
from jaxflows.bijectors import (
    Additive,
    AdditiveCoupling,
    Affine,
    AffineCoupling,
    Coupling,
    Transformer,
)
from jaxflows.testing import BijectorCase, enable_x64, perturb_params

KEY = jax.random.PRNGKey(0)


@dataclasses.dataclass(frozen=True)
class SinhArcsinh(Transformer):
    """A user's transformer: ``y = sinh(exp(d) * asinh(x) + e)`` (Jones & Pewsey 2009)
    with ``d = tanh(params[..., 1])`` kept in (-1, 1) (a soft clamp, as Affine's),
    strictly increasing. The identity at zero parameters only up to rounding
    (``sinh(asinh(x))``), so it leaves ``identity_at_zero`` False.
    """

    num_params: ClassVar[int] = 2

    def forward(self, x, params):
        e, d = params[..., 0], jnp.tanh(params[..., 1])
        u = jnp.exp(d) * jnp.arcsinh(x) + e
        return jnp.sinh(u), jnp.log(jnp.cosh(u)) + d - 0.5 * jnp.log1p(x * x)

    def inverse(self, y, params):
        e, d = params[..., 0], jnp.tanh(params[..., 1])
        x = jnp.sinh((jnp.arcsinh(y) - e) * jnp.exp(-d))
        return x, -self.forward(x, params)[1]


@dataclasses.dataclass(frozen=True)
class CubicPlusLinear:
    """Duck-typed (no Transformer base class), not the identity at zero:
    ``y = a x + x^3 / 3 + t`` with ``a = softplus(h) > 0``; inverse by Cardano.
    """

    num_params = 2

    def forward(self, x, params):
        t, a = params[..., 0], jax.nn.softplus(params[..., 1])
        return a * x + x ** 3 / 3 + t, jnp.log(a + x * x)

    def inverse(self, y, params):
        t, a = params[..., 0], jax.nn.softplus(params[..., 1])
        q = 1.5 * (y - t)                       # x^3 + 3 a x - 2 q = 0
        r = jnp.sqrt(q * q + a ** 3)
        x = jnp.cbrt(q + r) + jnp.cbrt(q - r)
        return x, -jnp.log(a + x * x)


TRANSFORMERS = {
    "affine_sigmoid": Affine("sigmoid"),
    "affine_exp_clamp": Affine("exp", clamp=2.0),
    "affine_exp_no_clamp": Affine("exp", clamp=None),
    "additive": Additive(),
    "sinh_arcsinh": SinhArcsinh(),
    "cubic_plus_linear": CubicPlusLinear(),
}


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_transformer_contract(name):
    tr = TRANSFORMERS[name]
    with enable_x64():
        shape = (3, 5)
        x = 2.0 * jax.random.normal(KEY, shape, jnp.float64)
        params = jax.random.normal(jax.random.PRNGKey(1), shape + (tr.num_params,), jnp.float64)

        @jax.jit
        def run(x, params):
            y, ld = tr.forward(x, params)
            xr, ild = tr.inverse(y, params)
            # Elementwise: the Jacobian is diagonal, so a jvp with ones gives dy/dx.
            dy = jax.jvp(lambda v: tr.forward(v, params)[0], (x,), (jnp.ones_like(x),))[1]
            dx = jax.jvp(lambda v: tr.inverse(v, params)[0], (y,), (jnp.ones_like(y),))[1]
            jac = jax.jacfwd(lambda v: tr.forward(v, params)[0].reshape(-1))(x)
            return y, ld, xr, ild, dy, dx, jac
        y, ld, xr, ild, dy, dx, jac = run(x, params)
        assert y.shape == x.shape and ld.shape == x.shape and y.dtype == jnp.float64
        np.testing.assert_allclose(xr, x, rtol=1e-9, atol=1e-9)
        assert bool(jnp.all(dy > 0)), "not strictly increasing"
        np.testing.assert_allclose(ld, jnp.log(dy), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ild, jnp.log(dx), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ild, -ld, rtol=1e-9, atol=1e-9)
        # Elementwise: no entry depends on another.
        jac = np.asarray(jac).reshape(x.size, x.size)
        np.testing.assert_array_equal(jac - np.diag(np.diag(jac)), 0.0)


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_identity_at_zero_params_where_claimed(name):
    tr = TRANSFORMERS[name]
    claimed = getattr(tr, "identity_at_zero", False)
    assert claimed == isinstance(tr, (Affine, Additive))
    x = jax.random.normal(KEY, (4, 3))
    zeros = jnp.zeros(x.shape + (tr.num_params,))
    y, ld = jax.jit(tr.forward)(x, zeros)
    xr, ild = jax.jit(tr.inverse)(x, zeros)
    if claimed:  # exactly, bit for bit
        for out, expected in ((y, x), (ld, 0.0), (xr, x), (ild, 0.0)):
            np.testing.assert_array_equal(out, jnp.broadcast_to(expected, x.shape))
    elif name == "sinh_arcsinh":  # up to rounding only
        np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)


def test_affine_is_the_documented_maths():
    x = jnp.array([[-1.5, 0.3], [2.0, -0.7]])
    t = jnp.array([[0.2, -0.4], [1.0, 0.0]])
    h = jnp.array([[-3.0, 0.5], [4.0, 0.1]])
    p = jnp.stack([t, h], -1)
    sigma = jax.nn.sigmoid(h + 2.0) / jax.nn.sigmoid(2.0)
    y, ld = Affine("sigmoid").forward(x, p)
    np.testing.assert_allclose(y, (x + t) * sigma, rtol=1e-6)
    np.testing.assert_allclose(ld, jnp.log(sigma), rtol=1e-6, atol=1e-7)
    s = 1.5 * jnp.tanh(h / 1.5)
    y, ld = Affine("exp", clamp=1.5).forward(x, p)
    np.testing.assert_allclose(y, x * jnp.exp(s) + t, rtol=1e-6)
    np.testing.assert_allclose(ld, s, rtol=1e-6)
    y, ld = Affine("exp", clamp=None).forward(x, p)
    np.testing.assert_allclose(y, x * jnp.exp(h) + t, rtol=1e-6)
    y, ld = Additive().forward(x, t[..., None])
    np.testing.assert_allclose(y, x + t)
    np.testing.assert_array_equal(ld, 0.0)


def test_transformers_are_hashable_static_values():
    assert Affine() == Affine("sigmoid", 2.0) and hash(Affine()) == hash(Affine("sigmoid", 2))
    assert Affine("exp", 2) == Affine("exp", np.float32(2.0))
    assert Affine("exp") != Affine("sigmoid")
    assert Affine.num_params == 2 and Additive.num_params == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        Affine().clamp = 3.0
    with pytest.raises(ValueError, match="Affine: `scale_fn`"):
        Affine("tanh")
    with pytest.raises(ValueError, match="Affine: `clamp`"):
        Affine("exp", clamp=0.0)


# ---------------------------------------------------------------------- Coupling seam

IMG = (2, 4, 4, 4)
VEC = (3, 6)


@pytest.mark.parametrize("case", [
    BijectorCase("user_sinh_arcsinh_checkerboard",
                 lambda: Coupling(transformer=SinhArcsinh(), hidden_channels=8,
                                  mask="checkerboard"), IMG),
    BijectorCase("user_cubic_vector_channel_context",
                 lambda: Coupling(transformer=CubicPlusLinear(), hidden_channels=8), VEC,
                 context_shape=(3, 2), rtol=1e-5, atol=1e-5),
    BijectorCase("user_cubic_vector_alternating",
                 lambda: Coupling(transformer=CubicPlusLinear(), hidden_channels=8,
                                  mask="alternating", parity=1), (3, 5),
                 rtol=1e-5, atol=1e-5),
], ids=str)
def test_user_transformer_plugs_into_coupling(case):
    testing.check_bijector(case)


@pytest.mark.parametrize("kw", [
    dict(mask="channel", scale_fn="sigmoid"),
    dict(mask="checkerboard", scale_fn="exp", clamp=1.5, conditioner="resnet", num_blocks=1,
         parity=1),
    dict(mask="alternating", scale_fn="exp", clamp=None),
], ids=["channel_sigmoid", "checkerboard_exp_resnet", "alternating_exp_noclamp"])
def test_old_names_equal_coupling_with_a_transformer(kw):
    kw = dict(kw, hidden_channels=8)
    scale_fn, clamp = kw.pop("scale_fn"), kw.pop("clamp", 2.0)
    shape = VEC if kw["mask"] == "alternating" else IMG
    pairs = [(AffineCoupling(scale_fn=scale_fn, clamp=clamp, **kw),
              Coupling(transformer=Affine(scale_fn, clamp), **kw)),
             (AdditiveCoupling(**kw), Coupling(transformer=Additive(), **kw))]
    x = jax.random.normal(KEY, shape)

    @jax.jit
    def run(x):
        outs = []
        for old, new in pairs:
            v = perturb_params(old.init(KEY, x), jax.random.PRNGKey(1), 0.2)
            assert (jax.tree_util.tree_structure(new.init(KEY, x))
                    == jax.tree_util.tree_structure(v))
            for method in ("forward_and_log_det", "inverse_and_log_det"):
                outs.append((old.apply(v, x, method=method), new.apply(v, x, method=method)))
        return outs
    for a, b in run(x):
        for u, w in zip(a, b):
            np.testing.assert_array_equal(u, w)


class _Dense(nn.Module):
    """A conditioner for the layout test: one dense layer with random weights."""

    features: int

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.features, kernel_init=nn.initializers.normal(0.3),
                        bias_init=nn.initializers.normal(0.3))(x)


def test_conditioner_output_layout_is_entry_major():
    """Channel ``k * num_params + j`` is parameter ``j`` of entry ``k``: for Affine, the
    shift of entry k is channel 2k and its scale parameter channel 2k + 1 (the layout of
    the former interleaved ``out[..., 0::2]``, ``out[..., 1::2]``).
    """
    module = AffineCoupling(conditioner=_Dense, scale_fn="exp", clamp=None)
    x = jax.random.normal(KEY, VEC)
    v = module.init(KEY, x)
    y, ld = module.apply(v, x)
    k, b = v["params"]["_Dense_0"]["Dense_0"]["kernel"], v["params"]["_Dense_0"]["Dense_0"]["bias"]
    out = x[:, :3] @ k + b
    t, h = out[:, 0::2], out[:, 1::2]
    np.testing.assert_allclose(y[:, 3:], x[:, 3:] * jnp.exp(h) + t, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y[:, :3], x[:, :3])
    np.testing.assert_allclose(ld, h.sum(-1), rtol=1e-5)


@pytest.mark.parametrize("transformer", [Affine("sigmoid"), Affine("exp"), Additive(),
                                         SinhArcsinh()], ids=str)
def test_masked_couplings_keep_the_kept_entries_exactly(transformer):
    """Kept entries pass through bit for bit, in both directions, with trained (non-zero)
    parameters: through zeroed parameters for transformers that claim exact identity at
    zero, through a select otherwise.
    """
    cases = [(Coupling(transformer=transformer, hidden_channels=8, mask="checkerboard"), IMG,
              (np.add.outer(np.arange(4), np.arange(4)) % 2 == 0)[None, :, :, None]),
             (Coupling(transformer=transformer, hidden_channels=8, mask="alternating",
                       parity=1), VEC, np.arange(6) % 2 == 1)]

    @jax.jit
    def run(x):
        outs = []
        for module, shape, _ in cases:
            xs = x[: shape[0]].reshape(-1)[: int(np.prod(shape))].reshape(shape)
            v = perturb_params(module.init(KEY, xs), jax.random.PRNGKey(1), 0.3)
            y = module.apply(v, xs)[0]
            outs.append((xs, y, module.apply(v, xs, method="inverse")))
        return outs
    for (xs, y, x_inv), (_, _, keep) in zip(run(3.0 * jax.random.normal(KEY, IMG)), cases):
        keep = np.broadcast_to(keep, xs.shape)
        np.testing.assert_array_equal(np.asarray(y)[keep], np.asarray(xs)[keep])
        np.testing.assert_array_equal(np.asarray(x_inv)[keep], np.asarray(xs)[keep])
        assert not np.allclose(np.asarray(y)[~keep], np.asarray(xs)[~keep])


def test_masked_entries_are_exactly_kept_even_if_zero_params_are_not_the_identity():
    module = Coupling(transformer=CubicPlusLinear(), hidden_channels=8, mask="checkerboard")
    x = jax.random.normal(KEY, IMG)
    y, ld = jax.jit(module.init_with_output)(KEY, x)[0]
    keep = (np.add.outer(np.arange(4), np.arange(4)) % 2 == 0)[None, :, :, None]
    np.testing.assert_array_equal(np.where(keep, y, 0), np.where(keep, x, 0))
    assert not np.allclose(np.where(keep, 0, y), np.where(keep, 0, x))
    # Log-det only from the transformed entries (conditioner output 0 at init).
    a = jax.nn.softplus(0.0)
    x_b = np.where(keep, 0.0, x)
    expected = np.sum(np.where(keep, 0.0, np.log(a + x_b ** 2)), axis=(1, 2, 3))
    np.testing.assert_allclose(ld, expected, rtol=1e-5)


# ------------------------------------------------------------------------------ errors

def _abstract_init(module, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: module.init(KEY, x), x)


class _Unhashable(Additive):
    """Defines __eq__ without __hash__, so Python makes it unhashable."""

    def __eq__(self, other):
        return isinstance(other, _Unhashable)


@dataclasses.dataclass(frozen=True)
class _WrongShape(Transformer):
    num_params: ClassVar[int] = 1

    def forward(self, x, params):
        return x + params[..., 0], jnp.zeros(x.shape[:1])   # summed log-det: wrong

    inverse = forward


class _NoInverse:
    num_params = 1

    def forward(self, x, params):
        return x, x


@pytest.mark.parametrize("transformer,match", [
    (None, "`transformer` is required"),
    (object(), r"`num_params` is None"),
    (_NoInverse(), "lacks a forward or an inverse"),
    (_Unhashable(), "not hashable"),
], ids=["none", "object", "no_inverse", "unhashable"])
def test_transformer_not_following_the_protocol(transformer, match):
    with pytest.raises(ValueError, match=f"Coupling: .*{match}"):
        _abstract_init(Coupling(transformer=transformer, hidden_channels=8), VEC)


def test_transformer_returning_wrong_shapes():
    with pytest.raises(ValueError, match=r"_WrongShape.forward\(x, params\) must return"):
        _abstract_init(Coupling(transformer=_WrongShape(), hidden_channels=8), VEC)


def test_conditioner_output_of_the_wrong_size():
    make = lambda n: _Dense(n + 1)  # noqa: E731 - ignores the requested width
    with pytest.raises(ValueError, match=r"conditioner returned shape \(3, 7\), expected "
                                         r"\(3, 6\): 2 parameter\(s\) .* 3 transformed"):
        _abstract_init(AffineCoupling(conditioner=make), VEC)


def test_old_names_reject_a_transformer():
    with pytest.raises(ValueError, match="AffineCoupling builds its own transformer"):
        _abstract_init(AffineCoupling(transformer=Additive(), hidden_channels=8), VEC)
    with pytest.raises(ValueError, match="AdditiveCoupling builds its own transformer"):
        _abstract_init(AdditiveCoupling(transformer=Affine(), hidden_channels=8), VEC)
