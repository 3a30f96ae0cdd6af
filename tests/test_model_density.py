"""Every model's density, checked against the change-of-variables formula computed here.

For every factory of :data:`jaxflows.models.MODELS` at its tiny size (``build_tiny`` of
tests/test_models_complete.py, so models added there are covered automatically), with
perturbed parameters, one test first runs the model as users do, in float32 with its
default estimators under ``jax.jit``: forward, inverse (through fixed-point solvers where
there are), ``log_prob`` finite, a latent of the input's size, round trip to 1e-3 on
pixel values in ``[0, 17)``. Then, in float64:

    log p(x) == log N(f(x); 0, I) + log|det J_f(x)|,

where ``J_f`` is the Jacobian of the **whole flow** (preprocessing, every level, every
factor-out) formed with ``jax.jacfwd`` and reduced by ``slogdet``, and the Gaussian
log-density is written out here, so neither side shares code with ``Flow.log_prob``.
Residual flows are evaluated with their exact estimator (``eval_estimator="exact"``).

The density also integrates to 1: importance sampling with a wide Gaussian proposal on
a 4-dimensional flow, at a stated standard error. Both checks fail on a flow whose
log-det has the wrong sign (tested below).
"""
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Flow
from jaxflows.bijectors.base import Bijector
from jaxflows.models import MODELS
from jaxflows.testing import cast_floats, enable_x64, exact_log_det, jit_check, perturb_params
from tests.test_models_complete import NUM_BINS, SHAPE, TINY, VECTOR_DIMS, build_tiny

# Models whose log-det has an exact evaluation estimator (residual blocks).
_EXACT = dict(eval_estimator=dict(kind="exact"))


def _accepts_eval_estimator(name):
    params = inspect.signature(MODELS[name]).parameters
    return "eval_estimator" in params or name == "acf"  # acf forwards **base_kwargs


def tiny_flow(name):
    """``build_tiny(name)``, with the exact log-det for models of residual blocks."""
    flow, sample_input = build_tiny(name)
    if name not in VECTOR_DIMS and _accepts_eval_estimator(name):
        flow = MODELS[name](SHAPE, num_bins=NUM_BINS, **TINY[name], **_EXACT)
    return flow, sample_input


def gaussian_log_density(z):
    """``log N(z; 0, I)`` per example, written out (independent of StandardNormal)."""
    z = z.reshape(z.shape[0], -1)
    return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def density_check(flow, variables, x):
    """``(log_prob, base + slogdet)`` in float64 for a batch ``x`` (one compiled program)."""
    with enable_x64():
        v64 = cast_floats(variables, jnp.float64)
        x64 = jnp.asarray(x, jnp.float64)

        @jit_check  # float64 check program
        def run(v, x):
            log_prob = flow.apply(v, x)
            z = flow.apply(v, x, method=flow.forward)
            fwd = lambda xi: flow.apply(v, xi[None], method=flow.forward)[0]  # noqa: E731
            return log_prob, gaussian_log_density(z) + exact_log_det(fwd, x)
        return jax.device_get(run(v64, x64))


def _init(flow, sample_input, seed=0, n=2, scale=0.02):
    """``(perturbed variables, input batch)`` of ``flow`` (initialised under ``jit``)."""
    k_x, k_init, k_pert = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = sample_input(k_x, n)
    variables = perturb_params(jax.jit(flow.init)(k_init, x), k_pert, scale)
    return variables, x


def float32_run(flow, variables, x):
    """``(z, log-det, inverse(z), log_prob)`` in float32 under ``jit``, as a user runs it."""
    @jax.jit
    def run(v, x):
        z, ld = flow.apply(v, x, method=flow.forward_and_log_det)
        xr = flow.apply(v, z, method=flow.inverse)
        return z, ld, xr, flow.apply(v, x)
    return run(variables, x)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_log_prob_is_base_density_plus_whole_flow_slogdet(name):
    # float32, default estimators and solvers (the model as trained and sampled) ...
    flow, sample_input = build_tiny(name)
    assert isinstance(flow, Flow)
    variables, x = _init(flow, sample_input)
    z, ld, xr, log_prob = float32_run(flow, variables, x)
    assert z.shape[0] == 2 and ld.shape == (2,) and log_prob.shape == (2,)
    assert bool(jnp.all(jnp.isfinite(log_prob))), f"{name}: non-finite log_prob {log_prob}"
    np.testing.assert_allclose(xr, x, atol=1e-3, err_msg=f"{name}: float32 round trip")
    assert z.size == x.size, f"{name}: latent {z.shape} is not a bijective image of {x.shape}"
    # ... then float64 against the change-of-variables formula, with the exact log-det
    # for residual blocks (the same parameters: the estimator has none of its own).
    flow, _ = tiny_flow(name)
    log_prob, expected = density_check(flow, variables, x)
    assert np.all(np.isfinite(expected)), f"{name}: {expected}"
    np.testing.assert_allclose(log_prob, expected, rtol=1e-9, atol=1e-8,
                               err_msg=f"{name}: log_prob != log N(f(x)) + slogdet(J_f)")


class _WrongSign(Bijector):
    """A model's bijector with the sign of its log-det flipped (the bug guarded against)."""

    bijector: Bijector

    def forward_and_log_det(self, x, *, context=None, train=False):
        y, ld = self.bijector.forward_and_log_det(x, context=context, train=train)
        return y, -ld

    def inverse_and_log_det(self, y, *, context=None, train=False):
        x, ld = self.bijector.inverse_and_log_det(y, context=context, train=train)
        return x, -ld


DIM = 4  # the importance-sampling case


def vector_flow(wrong_sign=False):
    flow = MODELS["realnvp_vector"](DIM, **TINY["realnvp_vector"])
    if wrong_sign:
        flow = Flow(bijector=_WrongSign(flow.bijector), event_shape=(DIM,))
    return flow, lambda key, n: jax.random.normal(key, (n, DIM))


def test_density_check_fails_on_a_wrong_log_det_sign():
    flow, sample_input = vector_flow()
    variables, x = _init(flow, sample_input, scale=0.3)
    log_prob, expected = density_check(flow, variables, x)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-9, atol=1e-8)
    bad, _ = vector_flow(wrong_sign=True)
    bad_variables = {"params": {"bijector": {"bijector": variables["params"]["bijector"]}}}
    bad_log_prob, bad_expected = density_check(bad, bad_variables, x)
    assert np.max(np.abs(bad_log_prob - bad_expected)) > 1e-3


SIGMA = 1.2       # proposal: N(m, SIGMA^2 C), m and C the moments of model samples
N_IS = 40_000


def importance_normaliser(flow, variables, key, proposal_from=None):
    """``(Z, standard error)``: ``Z = E_q[p(x) / q(x)]`` estimated with ``N_IS`` draws.

    ``q`` is a Gaussian fitted to 4,000 samples of ``proposal_from`` (default ``flow``),
    widened by ``SIGMA``; the estimate is unbiased for any such ``q``.
    """
    src, src_vars = proposal_from or (flow, variables)
    k_fit, k_q = jax.random.split(key)
    fit = np.asarray(src.apply(src_vars, 4000, method=src.sample, rngs={"sample": k_fit}),
                     np.float64)
    mean, chol = fit.mean(0), SIGMA * np.linalg.cholesky(np.cov(fit.T))
    eps = np.asarray(jax.random.normal(k_q, (N_IS, DIM)), np.float64)
    x = mean + eps @ chol.T
    log_q = (-0.5 * np.sum(eps ** 2, -1) - 0.5 * DIM * math.log(2 * math.pi)
             - np.sum(np.log(np.diag(chol))))
    log_p = np.asarray(jax.jit(flow.apply)(variables, jnp.asarray(x, jnp.float32)), np.float64)
    w = np.exp(log_p - log_q)
    return float(np.mean(w)), float(np.std(w) / math.sqrt(N_IS))


def test_density_integrates_to_one():
    # Perturbation 0.1: heavier perturbations give heavy-tailed weights (no power).
    flow, sample_input = vector_flow()
    variables, _ = _init(flow, sample_input, scale=0.1)
    z, se = importance_normaliser(flow, variables, jax.random.PRNGKey(7))
    assert se < 0.005, f"standard error {se:.3g} too large for the test to have power"
    assert abs(z - 1.0) < 4 * se + 1e-3, f"integral of p: {z:.4f} +- {se:.4f}"
    # The same estimate with the log-det sign flipped is far from 1.
    bad, _ = vector_flow(wrong_sign=True)
    bad_variables = {"params": {"bijector": {"bijector": variables["params"]["bijector"]}}}
    z_bad, se_bad = importance_normaliser(bad, bad_variables, jax.random.PRNGKey(7),
                                          proposal_from=(flow, variables))
    assert abs(z_bad - 1.0) > 10 * max(se, se_bad), (z_bad, se_bad)
