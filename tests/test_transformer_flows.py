"""Transformer flows (TarFlow blocks, Jet couplings) beyond the generic registry checks
(tests/registry/transformer_flows.py): sampling by the sequential and the (Gauss-Seidel-)
Jacobi inverses agree, with and without classifier-free guidance; Jacobi non-convergence
is reported and can raise; density normalisation of both factories on a 2-D case; the
one-step denoiser against its closed form; Jet's split buffers; bad input. (The
MNIST configs' launcher runs are in the README section; ``tests/test_configs.py`` builds
their models.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from jaxflows.bijectors import JetStack, TransformerAutoregressive, TransformerCoupling
from jaxflows.bijectors.transformer_flows import coupling_split, jacobi_solve
from jaxflows.models import jet, tarflow
from jaxflows.models.transformer_flows import (
    denoise,
    generate,
    noise_std_in_pixels,
    with_guidance,
)
from jaxflows.testing import enable_x64, perturb_params

SHAPE = (8, 8, 1)          # patch 2: 16 tokens of 4 features
TINY = dict(patch_size=2, channels=8, blocks=2, layers_per_block=1, heads=2, num_bins=17)


@pytest.fixture(scope="module")
def conditional():
    """A perturbed class-conditional tiny TarFlow and its variables."""
    flow = tarflow(SHAPE, num_classes=3, **TINY)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2,) + SHAPE, maxval=17.0)
    labels = jnp.array([0, 2])
    v = jax.jit(flow.init)(jax.random.PRNGKey(1), x, context=labels)
    return flow, perturb_params(v, jax.random.PRNGKey(2), 0.3), x, labels


def test_sequential_jacobi_and_gs_jacobi_give_the_same_samples(conditional):
    flow, v, _, _ = conditional
    labels = jnp.array([0, 1, 2, 1])
    z = 0.9 * jax.random.normal(jax.random.PRNGKey(3), (4,) + SHAPE)
    out = {}
    for name, kw in {"scan": {}, "jacobi": dict(inverse_method="jacobi"),
                     "gsj": dict(inverse_method="jacobi", chunk_size=5)}.items():
        # The scan flow is the fixture's (unguided) flow with guidance set afterwards.
        f = (with_guidance(flow, 1.5) if name == "scan"
             else tarflow(SHAPE, num_classes=3, guidance=1.5, **TINY, **kw))

        @jax.jit
        def sample(v, f=f, name=name):
            x, state = f.apply(v, z, context=labels, method=f.inverse,
                               mutable=["intermediates"])
            # The unguided forward of guided samples is not z: guidance has an effect.
            return x, state, (flow.apply(v, x, context=labels, method=flow.forward)
                              if name == "scan" else None)
        out[name] = sample(v)
    x_scan = out["scan"][0]
    assert bool(jnp.all(jnp.isfinite(x_scan)))
    assert float(jnp.max(jnp.abs(out["scan"][2] - z))) > 1e-2
    for name in ("jacobi", "gsj"):
        np.testing.assert_allclose(out[name][0], x_scan, atol=2e-4, rtol=1e-4)
    # Nilpotent iteration: at most T + 1 = 17 passes per block (plain Jacobi), every
    # example reported converged.
    fps = jax.tree_util.tree_leaves(out["jacobi"][1], is_leaf=lambda t: isinstance(t, dict)
                                    and "iterations" in t)
    assert fps and all(int(jnp.max(fp["iterations"])) <= 17 for fp in fps)
    assert not any(bool(jnp.any(fp["not_converged"])) for fp in fps)


def test_jacobi_non_convergence_is_reported_and_can_raise():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 1))
    kw = dict(patch_size=2, width=8, depth=1, heads=2, inverse_method="jacobi", max_iter=2)
    block = TransformerAutoregressive(**kw)
    v = jax.jit(block.init)(jax.random.PRNGKey(1), x)
    v = perturb_params(v, jax.random.PRNGKey(2), 0.5)
    y = jax.jit(block.apply)(v, x)[0]
    (xr, _), state = jax.jit(lambda v, y: block.apply(
        v, y, method=block.inverse_and_log_det, mutable=["intermediates"]))(v, y)
    fp = state["intermediates"]["fixed_point"][0]
    assert bool(jnp.all(fp["not_converged"])) and int(jnp.max(fp["iterations"])) == 2
    assert float(jnp.max(jnp.abs(xr - x))) > 1e-3       # 4 tokens need up to 4 passes
    # "raise": an error when eager; under jit a checkify check.
    strict = TransformerAutoregressive(on_nonconvergence="raise", **kw)
    with pytest.raises(RuntimeError, match="did not reach its tolerance"):
        strict.apply(v, y, method=strict.inverse_and_log_det)
    checked = checkify.checkify(jax.jit(lambda v, y: strict.apply(v, y, method=strict.inverse)))
    err, _ = checked(v, y)
    with pytest.raises(Exception, match="did not reach its tolerance"):
        err.throw()
    enough = TransformerAutoregressive(**dict(kw, max_iter=5), on_nonconvergence="raise")
    err, xr = checkify.checkify(jax.jit(lambda v, y: enough.apply(v, y, method=enough.inverse)))(
        v, y)
    err.throw()
    np.testing.assert_allclose(xr, x, atol=1e-5)


def test_jacobi_solve_follows_a_given_autoregressive_order():
    # The solver shared with MAF-style flows: a random order given by its ranks.
    rng = np.random.default_rng(0)
    n = 6
    order = rng.permutation(n)                   # order[j]: the j-th entry solved
    rank = np.argsort(order)
    w = np.tril(rng.normal(size=(n, n)), -1)     # strictly lower in order coordinates
    mix = jnp.asarray(w[np.ix_(rank, rank)])     # entry i reads entries of lower rank
    z = jnp.asarray(rng.normal(size=(3, n)), jnp.float32)

    def update(x):
        h = x @ mix.T
        return z * jnp.exp(0.5 * jnp.tanh(h)) + jnp.sin(h)

    ref = jnp.zeros_like(z)
    for i in order:
        ref = ref.at[:, i].set(update(ref)[:, i])
    for chunk in (None, 4):
        x, info = jax.jit(lambda z, c=chunk: jacobi_solve(update, z, chunk_size=c, axis=-1,
                                                          rank=rank))(z)
        np.testing.assert_allclose(x, ref, atol=1e-5)
        assert bool(jnp.all(info.converged)) and int(jnp.max(info.iterations)) <= n + 2


def _grid_mass(flow, variables, lo, hi, n):
    """``sum p h^2`` over an ``n x n`` grid of ``[lo, hi]^2`` (float64)."""
    g = np.linspace(lo, hi, n)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1))
    shape = tuple(flow.event_shape)
    logp = jax.jit(lambda v, p: flow.apply(v, p.reshape((-1,) + shape)))(variables, pts)
    return float(jnp.sum(jnp.exp(logp)) * (g[1] - g[0]) ** 2)


@pytest.mark.parametrize("name", ["tarflow", "jet"])
def test_density_integrates_to_one_in_2d(name):
    with enable_x64():
        if name == "tarflow":   # 2 tokens of 1 feature
            flow = tarflow((1, 2, 1), patch_size=1, channels=8, blocks=2, layers_per_block=1,
                           heads=2, num_bins=4)
        else:                   # 1 token of 2 features, channel couplings
            flow = jet((1, 1, 2), patch_size=1, width=8, couplings=2, block_depth=1, heads=2,
                       kinds=("channel",), num_bins=4)
        x = jnp.full((1,) + tuple(flow.event_shape), 2.0, jnp.float64)
        v = jax.jit(flow.init)(jax.random.PRNGKey(0), x)
        v = perturb_params(v, jax.random.PRNGKey(1), 0.3)
        # Data scaling u = x / 2 - 1: the base N(0, 1) is N(2, 4) in x before the flow.
        mass = _grid_mass(flow, v, -40.0, 44.0, 421)
    assert abs(mass - 1.0) < 2e-3, mass


def test_denoiser_matches_the_closed_form_at_init():
    # At init the blocks are the identity (zero-initialised outputs): log p(x) is a
    # Gaussian in u = x / (K / 2) - 1, so x + s^2 grad log p = x - s^2 u / (K / 2).
    flow = tarflow(SHAPE, **TINY)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3,) + SHAPE, maxval=17.0)
    v = jax.jit(flow.init)(jax.random.PRNGKey(1), x)
    sigma = noise_std_in_pixels(0.05, 17)
    assert sigma == pytest.approx(0.425)
    half = 17 / 2
    expected = x - sigma ** 2 * (x / half - 1) / half
    run = jax.jit(lambda v, x, k: (denoise(flow, v, x, sigma), generate(
        flow, v, k, 3, temperature=0.5, denoise_sigma=sigma, num_bins=17)))
    den, (raw, final) = run(v, x, jax.random.PRNGKey(2))
    np.testing.assert_allclose(den, expected, rtol=1e-5, atol=1e-5)
    assert raw.shape == final.shape == (3,) + SHAPE
    assert float(jnp.min(final)) >= 0 and float(jnp.max(final)) <= 16


def test_jet_splits_are_fixed_permutation_buffers():
    x = jnp.zeros((1, 8, 8, 1))
    stack = JetStack(num_layers=4, patch_size=2, kinds=("channel", "spatial"),
                     spatial_kinds=("checkerboard", "hstripes-inv"), width=8, depth=1,
                     heads=2)
    v = jax.jit(stack.init)(jax.random.PRNGKey(0), x)
    splits = np.asarray(v["buffers"]["splits"])
    assert splits.shape == (4, 16, 4) and "splits" not in str(jax.tree_util.tree_structure(
        v["params"]))
    for s in splits:
        assert sorted(s.ravel().tolist()) == list(range(64))     # a permutation of T * D
    # Layer 1 (checkerboard, 4 x 4 token grid): the kept half is the tokens with i + j even.
    kept_tokens = set((splits[1][:, :2].ravel() // 4).tolist())
    assert kept_tokens == {t for t in range(16) if (t // 4 + t % 4) % 2 == 0}
    # Parameters are stacked along the layer axis (one scanned coupling).
    leaves = jax.tree_util.tree_leaves(v["params"])
    assert all(leaf.shape[0] == 4 for leaf in leaves)
    # vstripes-inv on a 2 x 2 grid of 2-feature tokens: kept = odd columns (tokens 1, 3),
    # each kept token's features fill two rows (big_vision's "cut" layout).
    np.testing.assert_array_equal(coupling_split("vstripes-inv", (2, 2), 2),
                                  [[2, 0], [3, 1], [6, 4], [7, 5]])


def test_bad_input_is_refused_with_clear_errors(conditional):
    flow, v, x, _ = conditional
    img = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="divisible by patch_size=3"):
        TransformerAutoregressive(patch_size=3, width=8, heads=2).init(
            jax.random.PRNGKey(0), img)
    with pytest.raises(ValueError, match="divisible by patch_size=3"):
        tarflow(SHAPE, **dict(TINY, patch_size=3))
    with pytest.raises(ValueError, match="heads=3 must divide width=8"):
        TransformerCoupling(patch_size=2, width=8, heads=3).init(jax.random.PRNGKey(0), img)
    with pytest.raises(ValueError, match="heads=3 must divide channels=8"):
        tarflow(SHAPE, **dict(TINY, heads=3))
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        flow.apply(v, x, context=jnp.array([0, 3]))
    uncond = tarflow(SHAPE, **TINY)
    with pytest.raises(ValueError, match="unconditional"):
        uncond.init(jax.random.PRNGKey(0), x, context=jnp.array([0, 1]))
    with pytest.raises(ValueError, match="not class-conditional"):
        TransformerAutoregressive(patch_size=2, width=8, heads=2).init(
            jax.random.PRNGKey(0), img, context=jnp.array([1]))
    with pytest.raises(ValueError, match="guidance"):
        tarflow(SHAPE, guidance=2.0, **TINY)
    with pytest.raises(ValueError, match="uneven"):
        coupling_split("vstripes", (2, 3), 4)
    with pytest.raises(ValueError, match="inverse_method"):
        TransformerAutoregressive(patch_size=2, width=8, heads=2,
                                  inverse_method="newton").init(jax.random.PRNGKey(0), img)
