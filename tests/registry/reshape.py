"""Registry entries for the structural bijectors: Identity and FlattenEvent."""
from jaxflows.bijectors.base import Identity
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.reshape import FlattenEvent
from jaxflows.testing import BijectorCase

CASES = [
    BijectorCase("identity_image", Identity, (2, 2, 2, 3), identity=True),
    BijectorCase("identity_vector", Identity, (2, 5), identity=True),
    # ActNorm over all D = 12 coordinates of the image (Residual Flows' FCWrapper).
    BijectorCase("flatten_event_actnorm", lambda: FlattenEvent(ActNorm()), (2, 2, 2, 3)),
]
