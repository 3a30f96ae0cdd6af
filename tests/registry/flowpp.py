"""Registry entries for Flow++: ``Coupling`` with a :class:`MixLogCDF` transformer (K = 4)
on images (checkerboard and channel masks) and on vectors, :class:`MixLogCDFCoupling`
with the Flow++ conditioner, and the :class:`VariationalDequantizer` (noise -> ``u`` given
the pixel values as context).

The MixLogCDF cases perturb the parameters by 0.05 (not 0.1): the Glow conditioner's
output is scaled by ``exp(3 logs)``, and larger perturbations give component log-scales
beyond +10 or means 20 apart, where ``logit F`` is flat to float64 precision over whole
intervals (derivative below 1e-12), so no inverse can recover ``x`` to the 1e-10 of the
round-trip check (the residual in ``y`` stays at round-off). Tight inverses of such
ill-conditioned maps are not a property any method can have.

The dequantiser case uses a batch of 8: its per-pixel ActNorm initialises from the
batch's per-pixel statistics, and the standard deviation of 2 draws can be tiny enough
to saturate the final sigmoid to exactly 1.
"""
import functools

import jax

from jaxflows.bijectors import Coupling, MixLogCDF, MixLogCDFCoupling, VariationalDequantizer
from jaxflows.nn import FlowppConditioner
from jaxflows.testing import BijectorCase

IMG = (2, 4, 4, 2)
VEC = (3, 6)
H = 8
K = 4
P = 0.05   # parameter perturbation (see the module docstring)

_COND = functools.partial(FlowppConditioner, filters=H, num_blocks=1, heads=2)


def _normal(key, shape):
    # Given explicitly so that the gradient check maps its inverse input through forward
    # (the dequantiser's inverse is defined on (0, 1) only).
    return jax.random.normal(key, shape)


CASES = [
    BijectorCase("mixlogcdf_checkerboard",
                 lambda: Coupling(transformer=MixLogCDF(K), hidden_channels=H,
                                  mask="checkerboard"), IMG, perturb_scale=P),
    BijectorCase("mixlogcdf_channel_parity1",
                 lambda: Coupling(transformer=MixLogCDF(K), hidden_channels=H, mask="channel",
                                  parity=1), IMG, perturb_scale=P),
    BijectorCase("mixlogcdf_vector_alternating_context",
                 lambda: Coupling(transformer=MixLogCDF(K), hidden_channels=H,
                                  mask="alternating"), VEC, context_shape=(3, 2),
                 perturb_scale=P),
    BijectorCase("mixlogcdf_coupling_flowpp_conditioner",
                 lambda: MixLogCDFCoupling(components=K, mask="checkerboard", parity=1,
                                           conditioner=_COND), IMG, seeds=(0,)),
    BijectorCase("variational_dequantizer",
                 lambda: VariationalDequantizer(num_bins=17, num_steps=2, components=K,
                                                filters=H, num_blocks=1, heads=2,
                                                context_channels=4, context_blocks=1),
                 (8, 2, 2, 1), context_shape=(8, 2, 2, 1), input_fn=_normal, seeds=(0,)),
]
