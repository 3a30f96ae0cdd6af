"""Registry entries for the rational-quadratic spline transformer, through the bijectors
that use it: ``Coupling`` on vectors and on images (the autoregressive use is in
``autoregressive.py``). A small ``bound`` puts some inputs on the identity tails. With
very uneven bins a spline's slope inside a bin can fall far below
``min_derivative`` (e.g. 1e-6), and the float64 round trip is then limited by the
conditioning of the inverse (``|dx| ~ eps |y| / f'(x)``, measured: the error stays
below that bound), not by the formula; hence ``recon_atol=1e-8``, and log-dets compared at
``rtol=1e-9``: the inverse's log-det is ``-log f'`` at the reconstructed point, off by
``|f''/f'| |dx|`` (seen: 1.9e-10 relative where a slope is tiny).
"""
from jaxflows.bijectors import Coupling, RationalQuadraticSpline
from jaxflows.testing import BijectorCase

H = 8  # conditioner width
SPLINE = RationalQuadraticSpline(bins=4, bound=1.5)

CASES = [
    BijectorCase("spline_coupling_vector_alternating_context",
                 lambda: Coupling(transformer=SPLINE, hidden_channels=H, mask="alternating"),
                 (3, 4), context_shape=(3, 2), perturb_scale=0.5, recon_atol=1e-8, rtol=1e-9),
    # An odd size: parity 1 transforms the 3 even entries of 5, keeping the 2 odd ones.
    BijectorCase("spline_coupling_vector_alternating_odd_parity1",
                 lambda: Coupling(transformer=SPLINE, hidden_channels=H, mask="alternating",
                                  parity=1),
                 (3, 5), perturb_scale=0.5, recon_atol=1e-8, rtol=1e-9, seeds=(0,)),
    BijectorCase("spline_coupling_image_channel",
                 lambda: Coupling(transformer=SPLINE, hidden_channels=H, mask="channel",
                                  parity=1), (2, 2, 2, 2), perturb_scale=0.3, recon_atol=1e-8,
                 rtol=1e-9),
]
