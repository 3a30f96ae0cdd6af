"""Unbiased evaluation of residual flows (issue 18, item 7): the roulette evaluation
estimator and :func:`jaxflows.models.resflow.roulette_evaluation`'s standard error,
against the exact log-det and the deterministic truncated series.
"""
import jax
import jax.numpy as jnp
import pytest

from jaxflows.bijectors.residual_settings import EvalEstimator, LogDetEstimator
from jaxflows.models import resflow
from jaxflows.models.resflow import roulette_evaluation

TINY = dict(levels=1, blocks_per_level=1, hidden_channels=8, fc_blocks=0, num_bins=17,
            spectral_norm=dict(init_iterations=50, coeff=0.97))


def test_roulette_eval_estimator_settings():
    kw = EvalEstimator(kind="roulette", n_terms=3, n_samples=2).log_det_kwargs(
        LogDetEstimator(distribution="geometric", p=0.4))
    assert dict(kw)["estimator"] == "roulette" and dict(kw)["n_exact_terms"] == 3
    assert dict(kw)["distribution"] == "geometric" and dict(kw)["p"] == 0.4
    with pytest.raises(ValueError, match="probe='exact'"):
        EvalEstimator(kind="roulette", probe="exact")


def test_roulette_evaluation_is_unbiased_where_the_truncation_is_not():
    """One exact term: the truncated series is off by many standard errors; the roulette
    (1 exact term + Poisson(2) more) agrees with the exact log-det within 4.5 of its own.
    """
    shape = (4, 4, 1)
    exact = resflow(shape, eval_estimator=dict(kind="exact"), **TINY)
    truncated = resflow(shape, eval_estimator=dict(kind="eval", n_terms=1, n_samples=4), **TINY)
    roulette = resflow(shape, eval_estimator=dict(kind="roulette", n_terms=1, n_samples=8),
                       **TINY)
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (16,) + shape) * 17.0
    variables = jax.jit(exact.init)({"params": key, "logdet": key}, x)
    # Larger weights (the spectral normalisation keeps the blocks contractive).
    variables = {**variables, "params": jax.tree_util.tree_map(lambda a: 3.0 * a,
                                                               variables["params"])}
    batches = [x[:8], x[8:]]
    out = roulette_evaluation(roulette, variables, batches, jax.random.PRNGKey(1), draws=48,
                              truncated_flow=truncated)
    lp = jax.jit(lambda v, z: exact.apply(v, z, method=exact.log_prob))
    exact_bpd = float(sum(-jnp.mean(lp(variables, b)) for b in batches) / 2 / (16 * jnp.log(2.0)))
    se = out["bpd_roulette_se"]
    assert se > 0
    assert abs(out["bpd_roulette"] - exact_bpd) < 4.5 * se, (out, exact_bpd)
    assert abs(out["bpd_truncated"] - exact_bpd) > 5 * se, (out, exact_bpd)
    with pytest.raises(ValueError, match="draws"):
        roulette_evaluation(roulette, variables, batches, key, draws=1)
