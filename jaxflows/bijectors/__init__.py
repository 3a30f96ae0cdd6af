"""Bijectors (forward = data -> latent). One family per file."""
from jaxflows.bijectors.attention import IMap, ITrans
from jaxflows.bijectors.autoregressive import (
    IAF,
    MAF,
    BatchNorm,
    MaskedAutoregressive,
    batch_norm_statistics,
)
from jaxflows.bijectors.base import Bijector, Chain, Identity, Inverse, Repeat, sum_except_batch
from jaxflows.bijectors.conditional import (
    AffineInjector,
    Conditioned,
    FixedContext,
    LevelContext,
    SelectContext,
)
from jaxflows.bijectors.coupling import AdditiveCoupling, AffineCoupling, Coupling
from jaxflows.bijectors.dequantization import VariationalDequantizer
from jaxflows.bijectors.linear import Conv1x1, Permute, Reverse
from jaxflows.bijectors.mar import MARSplit, MARTop
from jaxflows.bijectors.mixlogcdf import MixLogCDF, MixLogCDFCoupling, monotone_inverse_report
from jaxflows.bijectors.naf import DDSF, DSF
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.preprocessing import LogitTransform, ScaleToUnit, Shift
from jaxflows.bijectors.reshape import FlattenEvent, Split, Squeeze, Unsqueeze
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock, fixed_point_report
from jaxflows.bijectors.residual_settings import (
    EvalEstimator,
    FixedPointSolver,
    LogDetEstimator,
    SpectralNorm,
)
from jaxflows.bijectors.splines import RationalQuadraticSpline
from jaxflows.bijectors.transformer_flows import (
    JetStack,
    TarFlowStack,
    TransformerAutoregressive,
    TransformerCoupling,
)
from jaxflows.bijectors.transformers import Additive, Affine, Transformer

__all__ = [
    "Bijector", "Chain", "Identity", "Inverse", "Repeat", "sum_except_batch",
    "IMap", "ITrans",
    "ActNorm", "Conv1x1", "Permute", "Reverse", "AffineCoupling", "AdditiveCoupling",
    "Coupling", "Transformer", "Affine", "Additive",
    "ResidualBlock", "DenseResidualBlock", "fixed_point_report",
    "LogDetEstimator", "EvalEstimator", "FixedPointSolver", "SpectralNorm",
    "Squeeze", "Unsqueeze", "Split", "FlattenEvent",
    "ScaleToUnit", "Shift", "LogitTransform",
    "MARSplit", "MARTop",
    "MixLogCDF", "MixLogCDFCoupling", "monotone_inverse_report", "VariationalDequantizer",
    "MaskedAutoregressive", "MAF", "IAF", "BatchNorm", "batch_norm_statistics",
    "DSF", "DDSF", "RationalQuadraticSpline",
    "AffineInjector", "Conditioned", "FixedContext", "LevelContext", "SelectContext",
    "TransformerAutoregressive", "TransformerCoupling", "TarFlowStack", "JetStack",
]
