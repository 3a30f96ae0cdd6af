"""Residual blocks through their real estimators (``train=True`` / ``train=False``), in float64.

The registry (tests/registry/residual.py) checks blocks with the exact log-det. Here a
:class:`~jaxflows.bijectors.ResidualBlock` with a **linear** branch ``g(x) = W x + b``
(one spectrally normalised dense layer, ``preact=False``) has a Jacobian known in closed
form, so its log-det ``log|det(I + W)|`` is computed with numpy from the matrix ``W``
read off the block (``f(e_i) - f(0) - e_i``), independently of ``jacfwd``:

* the training estimator (``train=True``: Russian roulette with Poisson or geometric
  ``N``, Neumann gradient on and off) is unbiased for the value and the gradient, over
  thousands of keys, ``|mean - exact| < 4 SE``, with the standard error itself bounded so
  that the test has power;
* a **negative control**: the same test with the roulette weights off by one
  (``1 / P(N >= j - 1)`` for term ``n_exact + j``, monkeypatched) must fail;
* the evaluation estimator's error (20 terms, 8 fixed Gaussian probes) is within its
  stated bound: the series tail plus 5 standard deviations of the 8-probe Hutchinson
  estimate of ``tr log(I + W)``.

``W = -c Q diag(1, .9, .8, .7) Q^T / 1`` with ``c = 0.5``: negative eigenvalues make every
series term the same sign, so a wrong weight cannot cancel out. With ``Q = I`` and
Rademacher probes the trace estimates are exact, so only the roulette is random and a
bias is seen at high power; with a random ``Q`` and the training default (one Gaussian
probe) the Hutchinson noise is included.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxflows.ops.logdet as logdet_ops
from jaxflows.bijectors import residual as residual_module
from jaxflows.bijectors.residual import ResidualBlock
from jaxflows.nn.lipschitz import update_lipschitz_state
from jaxflows.ops import series_tail_bound
from jaxflows.testing import enable_x64

D, B = 4, 2
COEFF = 0.5
EIGS = np.array([1.0, 0.9, 0.8, 0.7])


def block(**estimator):
    return ResidualBlock(hidden_channels=8, kernels=(1,), preact=False,
                         estimator=estimator or dict(kind="exact"),
                         spectral_norm=dict(coeff=COEFF))


def setup(rotate):
    """Variables of a linear block with kernel -Q diag(EIGS) Q^T, and an input batch."""
    q = (np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))[0] if rotate
         else np.eye(D))
    kernel = -q @ np.diag(EIGS) @ q.T
    with enable_x64():
        x = jax.random.normal(jax.random.PRNGKey(0), (B, D), jnp.float64)
        exact_block = block()
        v = exact_block.init(jax.random.PRNGKey(1), x)
        params = jax.tree_util.tree_map(lambda a: a, v["params"])
        params["g"]["SpectralDense_0"]["kernel"] = jnp.asarray(kernel, jnp.float32)
        params["g"]["SpectralDense_0"]["bias"] = jnp.asarray([0.1, -0.2, 0.3, 0.0], jnp.float32)
        v = update_lipschitz_state(exact_block, dict(v, params=params), x, num_rounds=200)
        v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v)
    return v, np.asarray(x)


def closed_form(v):
    """``(W, log|det(I + W)|)`` with ``W`` read off the block: ``f(e_i) - f(0) - e_i``."""
    with enable_x64():
        m = block()
        pts = jnp.concatenate([jnp.zeros((1, D)), jnp.eye(D)]).astype(jnp.float64)
        f = np.asarray(m.apply(v, pts, method=m.forward))
    w = (f[1:] - f[:1] - np.eye(D)).T   # column i = W e_i
    return w, float(np.linalg.slogdet(np.eye(D) + w)[1])


@pytest.fixture(scope="module")
def diagonal():
    v, x = setup(rotate=False)
    w, ld = closed_form(v)
    return v, x, w, ld


@pytest.fixture(scope="module")
def rotated():
    v, x = setup(rotate=True)
    w, ld = closed_form(v)
    return v, x, w, ld


def test_closed_form_matches_the_construction_and_the_exact_estimator(diagonal, rotated):
    for v, x, w, ld in (diagonal, rotated):
        # W = -COEFF Q diag(EIGS) Q^T: its spectral norm is COEFF (spectral normalisation).
        np.testing.assert_allclose(np.sort(np.linalg.eigvalsh((w + w.T) / 2)),
                                   np.sort(-COEFF * EIGS), atol=1e-6)
        with enable_x64():
            m = block()
            y, exact = m.apply(v, x, method=m.forward_and_log_det)
        np.testing.assert_allclose(exact, ld, rtol=1e-12)
        bias = np.asarray(v["params"]["g"]["SpectralDense_0"]["bias"])
        np.testing.assert_allclose(y, x + x @ w.T + bias, rtol=1e-12, atol=1e-12)
    assert ld < -1.0   # a sizeable log-det: sum log(1 - COEFF * EIGS)


def roulette_draws(v, x, keys, **estimator):
    """Values and parameter gradients of the block's training log-det, one per key."""
    m = block(kind="roulette", **estimator)

    def one(key):
        def ld(params):
            return m.apply(dict(v, params=params), x, train=True, rngs={"logdet": key},
                           method=m.forward_and_log_det)[1]
        value, vjp = jax.vjp(ld, v["params"])
        return value, vjp(jnp.ones_like(value))[0]["g"]["SpectralDense_0"]["kernel"]
    with enable_x64():   # chunks of 1,000 keys: as tests/test_ops_logdet.py::_over_keys
        values, grads = jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=1000))(keys)
    return np.asarray(values), np.asarray(grads)


def exact_kernel_gradient(v, x):
    m = block()
    with enable_x64():
        def ld(params):
            return m.apply(dict(v, params=params), x, method=m.forward_and_log_det)[1]
        value, vjp = jax.vjp(ld, v["params"])
        return np.asarray(vjp(jnp.ones_like(value))[0]["g"]["SpectralDense_0"]["kernel"])


def bias_in_se(samples, target):
    """``(max |mean - target| / SE, max SE)`` elementwise."""
    se = samples.std(0, ddof=1) / math.sqrt(samples.shape[0])
    return float(np.max(np.abs(samples.mean(0) - target) / se)), float(np.max(se))


@pytest.fixture()
def off_by_one_weights(monkeypatch):
    """Term ``n_exact + j`` weighted by ``1 / P(N >= j - 1)`` instead of ``1 / P(N >= j)``."""
    original = logdet_ops.tail_probability
    monkeypatch.setattr(logdet_ops, "tail_probability",
                        lambda j, *a, **kw: original(jnp.asarray(j) - 1, *a, **kw))
    residual_module._forward.clear_cache()   # re-trace with the patched weights
    yield
    monkeypatch.undo()
    residual_module._forward.clear_cache()


N_KEYS = 4000
SETTINGS = [dict(distribution="poisson", lam=2.0, neumann_grad=True),
            dict(distribution="poisson", lam=2.0, neumann_grad=False),
            dict(distribution="geometric", p=0.5, neumann_grad=True)]


def _draws_and_targets(diagonal, settings):
    v, x, _, ld = diagonal
    keys = jax.random.split(jax.random.PRNGKey(2), N_KEYS)
    values, grads = roulette_draws(v, x, keys, probe="rademacher", **settings)
    return values, grads, np.full((B,), ld), exact_kernel_gradient(v, x)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_training_estimator_is_unbiased(diagonal, settings):
    """Rademacher probes on a diagonal W: exact traces, only the roulette is random.

    Power: the standard error is below 0.2% of |log det| (asserted), so a bias of 1%
    is 5 SE or more.
    """
    values, grads, target, target_grad = _draws_and_targets(diagonal, settings)
    z, se = bias_in_se(values, target)
    assert se < 2e-3 * abs(target[0]), f"standard error {se:.3g}: no power"
    assert z < 4, f"{settings}: roulette value biased by {z:.1f} SE"
    gz, gse = bias_in_se(grads, target_grad)
    assert gz < 4, f"{settings}: roulette gradient biased by {gz:.1f} SE (SE {gse:.3g})"


@pytest.mark.parametrize("settings", [SETTINGS[0], SETTINGS[2]],
                         ids=lambda s: "-".join(map(str, s.values())))
def test_negative_control_off_by_one_roulette_weight_is_detected(diagonal, settings,
                                                                  off_by_one_weights):
    values, _, target, _ = _draws_and_targets(diagonal, settings)
    z, _ = bias_in_se(values, target)
    assert z > 8, f"the off-by-one weight went unnoticed ({z:.1f} SE)"


def test_training_default_estimator_with_gaussian_probe_is_unbiased(rotated):
    """The training default (2 exact terms + Poisson(2), one Gaussian probe, Neumann
    gradient) on a non-diagonal W: Hutchinson noise included. Power: SE < 1% of |log det|.
    """
    v, x, _, ld = rotated
    keys = jax.random.split(jax.random.PRNGKey(3), 4 * N_KEYS)
    values, grads = roulette_draws(v, x, keys)
    z, se = bias_in_se(values, np.full((B,), ld))
    assert se < 1e-2 * abs(ld), f"standard error {se:.3g}: no power"
    assert z < 4, f"default training estimator biased by {z:.1f} SE"
    gz, _ = bias_in_se(grads, exact_kernel_gradient(v, x))
    assert gz < 4, f"default Neumann gradient biased by {gz:.1f} SE"


def test_evaluation_estimator_error_is_within_its_bound(rotated):
    """``train=False`` (20 terms, 8 fixed Gaussian probes): the error against the closed
    form is at most the series tail plus 5 sd of the 8-probe trace estimate of
    ``A = log(I + W)``, ``sd = sqrt(2 ||(A + A^T)/2||_F^2 / 8)``; the error is reported.
    """
    v, x, w, ld = rotated
    m = block(kind="roulette")   # evaluation uses eval_estimator (default: "eval")
    with enable_x64():
        ev = np.asarray(m.apply(v, x, method=m.forward_and_log_det)[1])
    a = np.real(scipy.linalg.logm(np.eye(D) + w))
    sd = math.sqrt(2 * np.sum(((a + a.T) / 2) ** 2) / 8)
    bound = series_tail_bound(D, COEFF, 20) + 5 * sd
    err = float(np.max(np.abs(ev - ld)))
    print(f"evaluation estimator error {err:.3g} (bound {bound:.3g}, sd {sd:.3g})")
    assert err <= bound
    assert np.all(ev != ld)   # an estimate, not the exact value: the bound is the claim
