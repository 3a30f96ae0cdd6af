"""Registry entries for the protocol wrappers (Chain, Inverse, Repeat)."""
import flax.linen as nn
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, Chain, Inverse, Repeat
from jaxflows.testing import BijectorCase


class _Affine(Bijector):
    """Elementwise y = x * exp(s) + b: the simplest parameterised bijector."""

    @nn.compact
    def transform(self, x, inverse, context, train):
        s = self.param("log_scale", nn.initializers.zeros, x.shape[1:]).astype(x.dtype)
        b = self.param("shift", nn.initializers.zeros, x.shape[1:]).astype(x.dtype)
        ld = jnp.broadcast_to(jnp.sum(s), x.shape[:1])
        if inverse:
            return (x - b) * jnp.exp(-s), -ld
        return x * jnp.exp(s) + b, ld


CASES = [
    BijectorCase("chain_of_affine", lambda: Chain([_Affine(), Inverse(_Affine())]), (2, 3)),
    BijectorCase("repeat_affine", lambda: Repeat(make_step=_Affine, num_steps=3), (2, 2, 2, 1)),
    BijectorCase("repeat_affine_remat", lambda: Repeat(make_step=_Affine, num_steps=2, remat=True),
                 (2, 4)),
]
