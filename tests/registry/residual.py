"""Registry entries for the residual-flow bijectors (i-ResNet / Residual Flows / i-DenseNet).

They use ``estimator=LogDetEstimator(kind="exact")`` (or the same as a dict) so that the
log-det is the exact Jacobian log-det, and ``prepare_variables`` re-runs the power
iterations after the random perturbation of the weights, so the spectral normalisation
is accurate for the perturbed weights (without it the stored singular vectors belong to
the initial weights).
"""
import functools

import jax

from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
from jaxflows.bijectors.residual_settings import LogDetEstimator
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention
from jaxflows.nn.lipschitz import update_lipschitz_state
from jaxflows.testing import BijectorCase


def _refresh(make, shape):
    """A ``prepare_variables`` hook: 40 training-mode power-iteration rounds (jitted once
    per case, so every seed reuses the compiled refresh).
    """
    @jax.jit
    def refresh(variables, key):
        x = jax.random.normal(key, shape)
        return update_lipschitz_state(make(), variables, x, num_rounds=40)

    def prepare(variables, key):
        return refresh(variables, key)
    return prepare


def _case(name, make, shape, **kw):
    return BijectorCase(name, make, shape, prepare_variables=_refresh(make, shape), **kw)


EXACT = LogDetEstimator(kind="exact")

CASES = [
    _case("residual_block_conv",
          lambda: ResidualBlock(hidden_channels=8, estimator=EXACT), (2, 4, 4, 2)),
    # ACF: L2 self-attention between the convolutions (on the 4 hidden features; gamma
    # perturbed away from 0).
    _case("residual_block_conv_attention",
          lambda: ResidualBlock(hidden_channels=4, kernels=(3, 1),
                                estimator=dict(kind="exact"),
                                attention=functools.partial(L2MultiHeadAttention, heads=2)),
          (2, 2, 2, 2)),
    # LipNorm attention between the dense layers and the final 1x1 convolution, 3 heads
    # on 4 features (one seed: compile time).
    _case("dense_residual_block_lipnorm_between",
          lambda: DenseResidualBlock(depth=1, growth=2, estimator=EXACT,
                                     attention=functools.partial(LipNormAttention, heads=3)),
          (2, 2, 2, 2), seeds=(0,)),
    _case("residual_block_mlp",
          lambda: ResidualBlock(hidden_channels=8, estimator=EXACT), (3, 5)),
    # The other branch variants: fully connected on images (ELU, no pre-activation) and
    # CLipSwish (doubles the channels) on vectors.
    _case("residual_block_fully_connected_elu_nopreact",
          lambda: ResidualBlock(hidden_channels=8, fully_connected=True, activation="elu",
                                preact=False, estimator=EXACT), (2, 2, 2, 2)),
    _case("residual_block_mlp_clipswish",
          lambda: ResidualBlock(hidden_channels=8, activation="clipswish", estimator=EXACT),
          (3, 4)),
    _case("dense_residual_block_conv",
          lambda: DenseResidualBlock(depth=2, growth=4, estimator=EXACT), (2, 4, 4, 2)),
    _case("dense_residual_block_mlp",
          lambda: DenseResidualBlock(depth=2, growth=4, first_features=8, estimator=EXACT),
          (3, 6)),
]
