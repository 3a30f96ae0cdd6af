"""jaxflows: normalizing flows in JAX/Flax."""
from jaxflows import bijectors, testing  # noqa: F401
from jaxflows.distributions import Flow
from jaxflows.metrics import bits_per_dim
from jaxflows.interop import as_distrax, as_functions
from jaxflows import models  # noqa: E402,F401  (after Flow: the factories return Flows)

__all__ = ["Flow", "bits_per_dim", "as_functions", "as_distrax", "models", "bijectors", "testing"]
