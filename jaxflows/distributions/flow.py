"""``Flow``: a bijector on top of a standard normal base distribution.

With the bijector ``f`` mapping data to latent (see :mod:`jaxflows.bijectors.base`),

    log p(x) = log N(f(x); 0, I) + log |det df/dx (x)|        (change of variables),

and sampling draws ``z ~ N(0, T^2 I)`` and returns ``f^{-1}(z)``. Multi-scale flows
(:mod:`jaxflows.models.multiscale`) standardise their factored-out halves with
:class:`~jaxflows.bijectors.reshape.Split`, so the learned conditional priors of
Glow are inside ``f`` and the temperature ``T`` scales every level's prior at once.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector
from jaxflows.distributions.normal import StandardNormal

__all__ = ["Flow"]

Array = jax.Array


class Flow(nn.Module):
    """A normalizing flow: ``bijector`` (data -> latent) and a ``N(0, I)`` base.

    Attributes:
      bijector: the flow's bijector; forward maps ``[B, *event_shape]`` data to
        ``[B, *latent_shape]`` latents.
      event_shape: shape of one data example (e.g. ``(32, 32, 3)``).
      latent_shape: shape of one latent; defaults to ``event_shape``.

    Methods (call them through ``flow.apply(variables, ..., method=...)``):
      ``log_prob(x, *, context=None, train=False) -> [B]`` (nats);
      ``sample(num_samples, *, temperature=1.0, context=None) -> [n, *event_shape]``
      (rng stream ``"sample"``); ``sample_and_log_prob``; ``forward_and_log_det`` and
      ``inverse_and_log_det`` of the bijector. ``__call__`` is ``log_prob``, so
      ``flow.init({"params": key}, x)`` initialises every parameter (including
      ActNorm's data-dependent initialisation from ``x``).

    Example::

        flow = jaxflows.models.glow((32, 32, 3), levels=3, steps_per_level=8,
                                    hidden_channels=128)
        variables = flow.init(jax.random.PRNGKey(0), x)          # x: [B, 32, 32, 3]
        nats = flow.apply(variables, x)                          # log p(x), [B]
        imgs = flow.apply(variables, 16, temperature=0.7, method=flow.sample,
                          rngs={"sample": jax.random.PRNGKey(1)})
    """

    bijector: Bijector
    event_shape: Sequence[int]
    latent_shape: Optional[Sequence[int]] = None

    @property
    def base(self) -> StandardNormal:
        shape = self.event_shape if self.latent_shape is None else self.latent_shape
        return StandardNormal(shape)

    def _check_x(self, x: Array, arg: str = "x") -> None:
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(
                f"Flow: {arg} must have shape [batch, *{tuple(self.event_shape)}], "
                f"got {tuple(x.shape)}.")

    def forward_and_log_det(self, x: Array, *, context: Optional[Array] = None,
                            train: bool = False) -> Tuple[Array, Array]:
        """The bijector's ``(f(x), log|det df/dx|)``: data to latent."""
        self._check_x(x)
        return self.bijector.forward_and_log_det(x, context=context, train=train)

    def inverse_and_log_det(self, z: Array, *, context: Optional[Array] = None,
                            train: bool = False) -> Tuple[Array, Array]:
        """The bijector's ``(f^{-1}(z), log|det df^{-1}/dz|)``: latent to data."""
        return self.bijector.inverse_and_log_det(z, context=context, train=train)

    def forward(self, x: Array, **kwargs) -> Array:
        """The latent ``f(x)``."""
        return self.forward_and_log_det(x, **kwargs)[0]

    def inverse(self, z: Array, **kwargs) -> Array:
        """The data ``f^{-1}(z)``."""
        return self.inverse_and_log_det(z, **kwargs)[0]

    def log_prob(self, x: Array, *, context: Optional[Array] = None,
                 train: bool = False) -> Array:
        """``log p(x) = log N(f(x); 0, I) + log|det df/dx|`` per example, in nats."""
        z, log_det = self.forward_and_log_det(x, context=context, train=train)
        return self.base.log_prob(z) + log_det

    def __call__(self, x: Array, *, context: Optional[Array] = None,
                 train: bool = False) -> Array:
        return self.log_prob(x, context=context, train=train)

    def _latent_sample(self, num_samples: int, temperature, context, dtype):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"Flow.sample: num_samples must be a positive Python int, got {num_samples!r}.")
        if context is not None:
            if context.shape[0] == 1 and num_samples > 1:
                context = jnp.broadcast_to(context, (num_samples,) + tuple(context.shape[1:]))
            elif context.shape[0] != num_samples:
                raise ValueError(
                    f"Flow.sample: context must have batch size 1 or num_samples="
                    f"{num_samples}, got shape {tuple(context.shape)}.")
        z = self.base.sample(self.make_rng("sample"), num_samples, temperature, dtype)
        return z, context

    def sample(self, num_samples: int, *, temperature=1.0, context: Optional[Array] = None,
               dtype=jnp.float32) -> Array:
        """``num_samples`` draws ``f^{-1}(z)``, ``z ~ N(0, temperature^2 I)``.

        Uses the ``"sample"`` rng stream. ``context`` (batch 1 or ``num_samples``) is
        passed to the bijector. ``temperature=1`` samples the model; lower values give
        Glow's reduced-temperature samples (every level's prior is scaled).
        """
        z, context = self._latent_sample(num_samples, temperature, context, dtype)
        return self.inverse_and_log_det(z, context=context)[0]

    def sample_and_log_prob(self, num_samples: int, *, temperature=1.0,
                            context: Optional[Array] = None,
                            dtype=jnp.float32) -> Tuple[Array, Array]:
        """Samples as :meth:`sample` and returns the model's ``log p(x)`` of each.

        The log-density is that of the model (temperature 1) at the returned
        samples, ``log N(z; 0, I) - log|det df^{-1}/dz|``, computed without a second
        pass through the flow.
        """
        z, context = self._latent_sample(num_samples, temperature, context, dtype)
        x, inv_log_det = self.inverse_and_log_det(z, context=context)
        return x, self.base.log_prob(z) - inv_log_det
