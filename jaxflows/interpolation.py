"""Interpolation between two images through a flow's latent space.

For a flow ``f`` (data -> latent) with a standard normal base, the latent of an image is
``z = f(x)``. With mAR-SCF (:func:`~jaxflows.models.mar_scf.mar_scf`) the latent holds the
**standardised** mAR variables (every factored-out half and the top level mapped through
its autoregressive prior), so a straight line in ``z`` is the linear interpolation "in
the mAR latent space" of mAR-SCF Sec. 5 and its supplement Fig. 11:

    z_t = (1 - t) f(x_A) + t f(x_B),     x_t = f^{-1}(z_t),     t in [0, 1].

Both ends are reproduced exactly up to the round-trip error of the flow. The paper's
optimised interpolation (its Eq. 11, Adamax, about 100 iterations) is not in the
sources available to this project and is not implemented.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

__all__ = ["linear_latent_interpolation"]


def linear_latent_interpolation(flow, variables: Any, x_a: jax.Array, x_b: jax.Array,
                                num_points: int = 8, *,
                                context: Optional[jax.Array] = None) -> jax.Array:
    """Images along the straight line between ``f(x_a)`` and ``f(x_b)`` in latent space.

    Args:
      flow: a :class:`~jaxflows.distributions.Flow`.
      variables: its variables.
      x_a: the first end, of the flow's event shape (no batch axis), e.g. dequantised
        pixel values ``[H, W, C]``.
      x_b: the second end, of the same shape.
      num_points: number of points ``t = 0, 1/(n-1), ..., 1`` (>= 2), ends included.
      context: the flow's context for both images (batch axis of size 1), if any.

    Returns:
      ``[num_points, *event_shape]``: ``f^{-1}(z_t)``.
    """
    if not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"linear_latent_interpolation: num_points must be an int >= 2, got "
                         f"{num_points!r}.")
    shape = tuple(flow.event_shape)
    for name, x in (("x_a", x_a), ("x_b", x_b)):
        if tuple(jnp.shape(x)) != shape:
            raise ValueError(f"linear_latent_interpolation: `{name}` must have the flow's event "
                             f"shape {shape} (no batch axis), got {tuple(jnp.shape(x))}.")
    ends = jnp.stack([jnp.asarray(x_a), jnp.asarray(x_b)]).astype(jnp.float32)
    ctx2 = None if context is None else jnp.concatenate([context, context], axis=0)
    z = flow.apply(variables, ends, context=ctx2, method=flow.forward)
    t = jnp.linspace(0.0, 1.0, num_points).reshape((-1,) + (1,) * len(z.shape[1:]))
    zt = (1.0 - t) * z[0] + t * z[1]
    ctx = None if context is None else jnp.repeat(context, num_points, axis=0)
    return flow.apply(variables, zt, context=ctx, method=flow.inverse)
