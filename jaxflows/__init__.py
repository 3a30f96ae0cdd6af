"""jaxflows: normalizing flows in JAX/Flax."""
from jaxflows import bijectors, models, testing
from jaxflows.distributions import Flow
from jaxflows.interop import as_distrax, as_functions
from jaxflows.metrics import bits_per_dim

__all__ = ["Flow", "bits_per_dim", "as_functions", "as_distrax", "models", "bijectors", "testing"]
