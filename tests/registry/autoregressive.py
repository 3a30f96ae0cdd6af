"""Registry entries for masked autoregressive layers (MAF and IAF orientations, both
inverse methods, several transformers) and MAF's batch-normalisation bijector.
"""
import jax
import jax.numpy as jnp

from jaxflows.bijectors import (
    IAF,
    Affine,
    BatchNorm,
    MaskedAutoregressive,
    RationalQuadraticSpline,
)
from jaxflows.nn import MADE
from jaxflows.testing import BijectorCase

VEC = (3, 4)
H = 8  # MADE width


def _random_batch_stats(variables, key):
    """Non-trivial evaluation statistics (as if set from a training set)."""
    k1, k2 = jax.random.split(key)
    stats = variables["batch_stats"]
    mean = jax.random.normal(k1, stats["mean"].shape, stats["mean"].dtype)
    var = jnp.exp(jax.random.normal(k2, stats["var"].shape, stats["var"].dtype))
    return dict(variables, batch_stats={"mean": mean, "var": var})


CASES = [
    # Dropout (train=True): forward and inverse use one dropout mask per call.
    BijectorCase("maf_affine_random_order_context_dropout", lambda: MaskedAutoregressive(
        Affine("exp", clamp=None), MADE(hidden_features=(H,), order="random", dropout=0.2)),
        VEC, context_shape=(3, 2)),
    BijectorCase("maf_affine_residual_jacobi", lambda: MaskedAutoregressive(
        Affine("sigmoid"), MADE(hidden_features=(H, H), residual=True),
        inverse_method="jacobi"), VEC),
    BijectorCase("maf_spline", lambda: MaskedAutoregressive(
        RationalQuadraticSpline(bins=3, bound=1.5), MADE(hidden_features=(H,))), VEC,
        perturb_scale=0.5),
    # IAF's forward (the density) is the autoregressive inverse: the scan is checked
    # against the exact Jacobian here; the Jacobi variant in tests/test_autoregressive.py.
    BijectorCase("iaf_affine_scan", lambda: IAF(
        Affine("exp"), MADE(hidden_features=(H,), order="reversed")), VEC),
    # Per-example bijection only with fixed statistics (train=False).
    BijectorCase("maf_batch_norm", BatchNorm, VEC, prepare_variables=_random_batch_stats,
                 train_log_det=None),
]
