"""Base distributions and ``Flow`` (a bijector on a standard normal base)."""
from jaxflows.distributions.flow import Flow
from jaxflows.distributions.mar import MARPrior
from jaxflows.distributions.normal import StandardNormal

__all__ = ["Flow", "StandardNormal", "MARPrior"]
