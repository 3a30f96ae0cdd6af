"""Registry entries for the reshaping and preprocessing bijectors, and whole tiny Glow and
Real NVP bijectors (the two MultiScale layouts: Glow's steps after each squeeze with learned
split priors; Real NVP's checkerboard stage before the squeeze, fixed N(0, I) splits and no
squeeze at the last scale).
"""
import jax

from jaxflows.bijectors.base import Chain, Inverse
from jaxflows.bijectors.preprocessing import LogitTransform, ScaleToUnit, Shift
from jaxflows.bijectors.reshape import Split, Squeeze
from jaxflows.models.glow import glow
from jaxflows.models.realnvp import realnvp
from jaxflows.testing import BijectorCase


def _unit(key, shape):
    """Inputs strictly inside (0, 1), the domain of the logit transform."""
    return jax.random.uniform(key, shape, minval=0.01, maxval=0.99)


def _pixels(key, shape):
    """Dequantised 8-bit pixel values in [0, 256)."""
    return jax.random.uniform(key, shape, minval=0.0, maxval=256.0)


CASES = [
    # 4x4 (not 2x2): a 2x2x1 squeeze keeps the flattened order, i.e. it would be the
    # identity to the check's "elements moved" guard.
    BijectorCase("squeeze", lambda: Squeeze(), (2, 4, 4, 1), output_shape=(2, 2, 2, 4)),
    BijectorCase("unsqueeze", lambda: Inverse(Squeeze()), (2, 2, 2, 4),
                 output_shape=(2, 4, 4, 1)),
    BijectorCase("split_prior", lambda: Split(), (2, 2, 2, 4)),
    BijectorCase("split_prior_context", lambda: Split(), (2, 2, 2, 2), context_shape=(2, 3)),
    BijectorCase("glow_preprocessing", lambda: Chain([ScaleToUnit(256), Shift(-0.5)]),
                 (2, 3, 2, 1), input_fn=_pixels),
    BijectorCase("logit_0.05", lambda: Chain([ScaleToUnit(256), LogitTransform(0.05)]),
                 (2, 2, 2, 3), input_fn=_pixels),
    BijectorCase("logit_1e-6", lambda: LogitTransform(1e-6), (2, 5), input_fn=_unit),
    # A whole Glow bijector (preprocessing, 2 levels of squeeze / ActNorm / 1x1 conv /
    # affine coupling / split), exact Jacobian checked in float64. A perturbation of 0.1
    # on every parameter of the whole model (pixel-scale ActNorm, 1x1 convolutions)
    # makes latents of +-160 and an inverse whose Jacobian reaches 1e18, where no finite
    # difference is meaningful; 0.03 still moves every element.
    BijectorCase("glow_4x4x1_L2_K1",
                 lambda: glow((4, 4, 1), levels=2, steps_per_level=1, hidden_channels=4).bijector,
                 (2, 4, 4, 1), input_fn=_pixels, perturb_scale=0.03),
    BijectorCase("realnvp_4x4x1_L2",
                 lambda: realnvp((4, 4, 1), levels=2, hidden_channels=4, num_blocks=1,
                                 couplings_per_stage=1, final_couplings=1).bijector,
                 (2, 4, 4, 1), input_fn=_pixels, perturb_scale=0.03, seeds=(0,)),
]
