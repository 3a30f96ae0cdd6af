"""Pure numerical kernels for residual flows, taking plain callables ``g(params, x)``.

- :mod:`jaxflows.ops.fixed_point`: inverse of ``x + g(x)`` by fixed-point iteration in
  ``lax.while_loop``, implicit-function-theorem gradients.
- :mod:`jaxflows.ops.logdet`: ``log det(I + J_g)`` estimators (exact, truncated series,
  Russian roulette, Neumann-series gradient, deterministic evaluation).
- :mod:`jaxflows.ops.monotone`: elementwise inverse of a strictly increasing scalar map
  ``f(params, x)`` by bisection with a static step count, implicit-function gradients.
"""
from jaxflows.ops.fixed_point import FixedPointInfo, default_tolerance, fixed_point_inverse
from jaxflows.ops.logdet import (
    ESTIMATORS,
    log_det,
    logdet_exact,
    logdet_neumann,
    logdet_neumann_naive,
    logdet_roulette,
    logdet_series,
    sample_num_terms,
    series_tail_bound,
    tail_probability,
)
from jaxflows.ops.monotone import (
    MonotoneInverseInfo,
    default_max_bisections,
    inverse_summary,
    monotone_inverse,
    num_bisections,
)

__all__ = [
    "FixedPointInfo",
    "default_tolerance",
    "fixed_point_inverse",
    "ESTIMATORS",
    "log_det",
    "logdet_exact",
    "logdet_neumann",
    "logdet_neumann_naive",
    "logdet_roulette",
    "logdet_series",
    "sample_num_terms",
    "series_tail_bound",
    "tail_probability",
    "MonotoneInverseInfo",
    "default_max_bisections",
    "monotone_inverse",
    "inverse_summary",
    "num_bisections",
]
