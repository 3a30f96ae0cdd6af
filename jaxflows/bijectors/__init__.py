"""Bijectors (forward = data -> latent). One family per file."""
from jaxflows.bijectors.base import Bijector, Chain, Identity, Inverse, Repeat, sum_except_batch

__all__ = ["Bijector", "Chain", "Identity", "Inverse", "Repeat", "sum_except_batch"]
from jaxflows.bijectors.attention import IMap, ITrans  # noqa: E402  (attention helper)
__all__ += ["IMap", "ITrans"]
