"""Bijectors (forward = data -> latent). One family per file."""
from jaxflows.bijectors.attention import IMap, ITrans
from jaxflows.bijectors.base import Bijector, Chain, Identity, Inverse, Repeat, sum_except_batch
from jaxflows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from jaxflows.bijectors.linear import Conv1x1, Permute, Reverse
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.preprocessing import LogitTransform, ScaleToUnit, Shift
from jaxflows.bijectors.reshape import FlattenEvent, Split, Squeeze, Unsqueeze
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock, fixed_point_report

__all__ = [
    "Bijector", "Chain", "Identity", "Inverse", "Repeat", "sum_except_batch",
    "IMap", "ITrans",
    "ActNorm", "Conv1x1", "Permute", "Reverse", "AffineCoupling", "AdditiveCoupling",
    "ResidualBlock", "DenseResidualBlock", "fixed_point_report",
    "Squeeze", "Unsqueeze", "Split", "FlattenEvent",
    "ScaleToUnit", "Shift", "LogitTransform",
]
