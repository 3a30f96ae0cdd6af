"""Bijectors (forward = data -> latent). One family per file."""
from jaxflows.bijectors.base import Bijector, Chain, Identity, Inverse, Repeat, sum_except_batch

__all__ = ["Bijector", "Chain", "Identity", "Inverse", "Repeat", "sum_except_batch"]
from jaxflows.bijectors.attention import IMap, ITrans  # noqa: E402  (attention helper)
__all__ += ["IMap", "ITrans"]
from jaxflows.bijectors.normalization import ActNorm  # noqa: E402  (glow-bijectors)
from jaxflows.bijectors.linear import Conv1x1, Permute, Reverse  # noqa: E402  (glow-bijectors)
from jaxflows.bijectors.coupling import AdditiveCoupling, AffineCoupling  # noqa: E402  (glow-bijectors)
__all__ += ["ActNorm", "Conv1x1", "Permute", "Reverse", "AffineCoupling", "AdditiveCoupling"]
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock, fixed_point_report  # noqa: E402  (residual-blocks)
__all__ += ["ResidualBlock", "DenseResidualBlock", "fixed_point_report"]
from jaxflows.bijectors.reshape import Split, Squeeze, Unsqueeze  # noqa: E402  (flow-models)
from jaxflows.bijectors.preprocessing import LogitTransform, ScaleToUnit, Shift  # noqa: E402  (flow-models)
__all__ += ["Squeeze", "Unsqueeze", "Split", "ScaleToUnit", "Shift", "LogitTransform"]
