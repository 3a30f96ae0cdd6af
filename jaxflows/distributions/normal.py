"""The standard normal base distribution of every flow in jaxflows."""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ["StandardNormal"]

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class StandardNormal:
    """``N(0, I)`` over events of shape ``event_shape`` (a plain object, no parameters).

    ``log N(z; 0, I) = -1/2 sum_i z_i^2 - D/2 log(2 pi)``, summed over the event axes.
    Sampling at temperature ``T`` draws from ``N(0, T^2 I)`` (Kingma & Dhariwal 2018,
    Sec. 5: reduced-temperature samples).
    """

    def __init__(self, event_shape: Sequence[int]):
        self.event_shape = tuple(int(d) for d in event_shape)

    def log_prob(self, z: Array) -> Array:
        """Log-density of a batch ``z: [batch, *event_shape]`` -> ``[batch]``."""
        if tuple(z.shape[1:]) != self.event_shape:
            raise ValueError(
                f"StandardNormal: z must have shape [batch, *{self.event_shape}], "
                f"got {tuple(z.shape)}.")
        d = math.prod(self.event_shape)
        sq = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=-1)
        return -0.5 * sq - jnp.asarray(d * _HALF_LOG_2PI, z.dtype)

    def sample(self, key: Array, num_samples: int, temperature=1.0, dtype=jnp.float32) -> Array:
        """``[num_samples, *event_shape]`` draws from ``N(0, temperature^2 I)``."""
        eps = jax.random.normal(key, (num_samples,) + self.event_shape, dtype)
        return eps * jnp.asarray(temperature, dtype)
