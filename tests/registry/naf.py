"""Registry entries for NAF's transformers (DSF, DDSF) inside ``MaskedAutoregressive``:
the forward is explicit, the inverse is the bisection of ``jaxflows.ops.monotone_inverse``
(exact scan over the entries).
"""
from jaxflows.bijectors import DDSF, DSF, MaskedAutoregressive
from jaxflows.nn import MADE
from jaxflows.testing import BijectorCase

CASES = [
    BijectorCase("naf_dsf_maf", lambda: MaskedAutoregressive(
        DSF(hidden=3), MADE(hidden_features=(8,), output_init_scale=1e-3)), (2, 3),
        perturb_scale=0.5),
    BijectorCase("naf_ddsf_maf_context", lambda: MaskedAutoregressive(
        DDSF(hidden=2, layers=2), MADE(hidden_features=(8,), order="reversed",
                                       output_init_scale=1e-3)), (2, 3),
        context_shape=(2, 2), perturb_scale=0.5),
]
