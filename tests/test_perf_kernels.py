"""Correctness of the matmul-based convolutions of jaxflows.nn.conv (values, gradients,
transposes) against lax.conv_general_dilated. No timing here: see
experiments/benchmarks/ and docs/performance.md.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.nn.conv import choose_impl, conv2d_same


def _native(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


# (kernel size, C_in, C_out): widening, narrowing, equal, a 5x5 and a non-square image.
SHAPES = [(3, 2, 12), (3, 12, 3), (3, 5, 5), (5, 3, 4), (1, 6, 4)]


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(0)
    out = []
    for k, cin, cout in SHAPES:
        x = rng.standard_normal((2, 5, 6, cin)).astype(np.float32)
        w = (rng.standard_normal((k, k, cin, cout)) / (k * np.sqrt(cin))).astype(np.float32)
        g = rng.standard_normal((2, 5, 6, cout)).astype(np.float32)
        out.append(tuple(jnp.asarray(a) for a in (x, w, g)))
    return out


@pytest.mark.parametrize("impl", ["im2col", "shift"])
def test_values_and_gradients_match_lax_conv(cases, impl):
    for x, w, g in cases:
        ref, ref_vjp = jax.vjp(_native, x, w)
        out, vjp = jax.vjp(lambda a, b: conv2d_same(a, b, impl), x, w)
        assert out.shape == ref.shape and out.dtype == x.dtype
        np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
        for got, want in zip(vjp(g), ref_vjp(g)):   # d/dx and d/dkernel
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_linear_transpose_matches_lax_conv(cases):
    """Spectral normalisation transposes the convolution (jax.linear_transpose)."""
    x, w, g = cases[1]
    spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
    for impl in ("im2col", "shift"):
        got = jax.linear_transpose(lambda z, impl=impl: conv2d_same(z, w, impl), spec)(g)[0]
        want = jax.linear_transpose(lambda z: _native(z, w), spec)(g)[0]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_bfloat16_compute_dtype(cases):
    """bf16 operands with f32 accumulation: output in x's dtype, ~3 significant digits."""
    for x, w, _ in cases[:2]:
        ref = _native(x, w)
        for impl in ("im2col", "shift", "native"):
            out = conv2d_same(x, w, impl, jnp.bfloat16)
            assert out.dtype == jnp.float32
            err = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
            assert 0 < err < 3e-2, (impl, err)   # not exact (bf16), but close


def test_choose_impl_rules():
    assert choose_impl((3, 3, 2, 128), "cpu") == "im2col"
    assert choose_impl((3, 3, 128, 4), "cpu") == "shift"
    assert choose_impl((3, 3, 128, 128), "cpu") == "native"
    assert choose_impl((1, 1, 2, 128), "cpu") == "native"
    for backend in ("gpu", "tpu"):
        assert choose_impl((3, 3, 2, 128), backend) == "native"
        assert choose_impl((3, 3, 128, 4), backend) == "native"


def test_bad_arguments():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="impl"):
        conv2d_same(x, jnp.zeros((3, 3, 3, 2)), "fft")
    with pytest.raises(ValueError, match="odd"):
        conv2d_same(x, jnp.zeros((2, 2, 3, 2)))
    with pytest.raises(ValueError, match="channels"):
        conv2d_same(x, jnp.zeros((3, 3, 4, 2)))
    with pytest.raises(ValueError, match="rank 4"):
        conv2d_same(x[0], jnp.zeros((3, 3, 3, 2)))


def test_actnorm_relu_derivatives_match_plain_composition():
    """ReLU(ActNorm) with its output-based custom JVP equals jax.nn.relu((x + b) e^s) in
    value, reverse mode and forward mode, including exact ties z = 0 (relu'(0) = 0).
    """
    from jaxflows.nn.conditioners import actnorm_relu
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 4, 5, 6)), jnp.float32).at[0, 0, 0, :].set(0.0)
    loc = jnp.asarray(rng.standard_normal(6) * 0.3, jnp.float32).at[2].set(0.0)  # ties
    log_scale = jnp.asarray(rng.standard_normal(6) * 0.2, jnp.float32)
    args = (x, loc, log_scale)
    g = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    t = tuple(jnp.asarray(rng.standard_normal(a.shape), jnp.float32) for a in args)

    def plain(x, b, s):
        return jax.nn.relu((x + b) * jnp.exp(s))

    np.testing.assert_allclose(actnorm_relu(*args), plain(*args), rtol=1e-6, atol=1e-6)
    got = jax.jit(lambda *a: jax.vjp(actnorm_relu, *a)[1](g))(*args)
    want = jax.vjp(plain, *args)[1](g)
    for a, b, name in zip(got, want, ("x", "loc", "log_scale")):
        assert float(jnp.max(jnp.abs(b))) > 0, name
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(jax.jvp(actnorm_relu, args, t)[1], jax.jvp(plain, args, t)[1],
                               rtol=2e-5, atol=2e-5)


def test_conditioner_saves_only_relu_outputs(capsys):
    """Under the conditioners' checkpoint policy the backward pass keeps one activation per
    hidden layer: the residuals of a Glow conditioner's vjp are the two ReLU outputs, the
    output layer's small pre-scale value, the input and the parameters -- not the ActNorm
    outputs, ReLU masks or reshaped copies.
    """
    from jaxflows.nn.conditioners import GlowConditioner
    net = GlowConditioner(hidden_channels=16, out_channels=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 2))
    params = net.init(jax.random.PRNGKey(1), x)
    capsys.readouterr()
    jax.ad_checkpoint.print_saved_residuals(lambda p, x: net.apply(p, x), params, x)
    lines = capsys.readouterr().out.strip().splitlines()
    activations = sorted(l.split(" from ")[0] for l in lines if "from the argument" not in l)
    # two hidden ReLU outputs, and the output layer's pre-scale value (4 channels, for the
    # gradient of its `logs`)
    assert activations == ["f32[2,4,4,16] named 'jaxflows_conditioner_act'"] * 2 + [
        "f32[2,4,4,4] named 'jaxflows_conditioner_act'"], lines
    assert any("from the argument x" in l for l in lines), lines


def test_conditioner_parameters_and_init_match_actnorm():
    """ActNormParams has ActNorm's names and data-dependent init; the Glow conditioner's
    hidden layers keep the parameter tree of ActNorm -> ReLU -> conv, and dropout
    (unfused path) and no dropout (fused path) give the same function at rate 0+.
    """
    from jaxflows.bijectors import ActNorm
    from jaxflows.nn.conditioners import ActNormParams, GlowConditioner
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 3, 5)) * 2.0 + 1.0
    v = ActNormParams().init(jax.random.PRNGKey(1), x)
    v_ref = ActNorm().init(jax.random.PRNGKey(1), x)
    jax.tree_util.tree_map(np.testing.assert_allclose, v, v_ref)
    with pytest.raises(ValueError, match="channels"):
        ActNormParams().apply(v, x[..., :4])
    net = GlowConditioner(hidden_channels=6, out_channels=4, dropout=1e-9)
    params = net.init(jax.random.PRNGKey(2), x)
    assert set(params["params"]) == {"conv_in", "actnorm_in", "conv_hidden", "actnorm_hidden",
                                     "conv_out"}
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)   # a non-zero output layer
    y_fused = net.apply(params, x)
    y_drop = net.apply(params, x, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert float(jnp.max(jnp.abs(y_fused))) > 0
    np.testing.assert_allclose(y_fused, y_drop, rtol=1e-5, atol=1e-5)
