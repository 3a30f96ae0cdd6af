"""mAR-SCF's channel prior as bijectors of a multi-scale flow.

:class:`~jaxflows.distributions.mar.MARPrior` is a Gaussian autoregressive map over
channels; standardising with it (``l -> eps``) is a bijector with log-det
``-sum log sigma``, so a flow ending in ``N(0, I)`` has exactly the mAR prior on the
standardised tensors (as :class:`~jaxflows.bijectors.reshape.Split` does for Glow's
learned Gaussian prior). Two placements:

* :class:`MARSplit`: at a split of :class:`~jaxflows.models.multiscale.MultiScale`
  (levels ``0 .. L-2``): input ``[B, H, W, C]``, the kept half ``r = x[..., :C/2]``
  (which continues to the next level) is unchanged, the factored-out half
  ``l = x[..., C/2:]`` is standardised by the conditional prior ``p(l | r)``.
* :class:`MARTop`: after the last level: the whole tensor is standardised by the
  unconditional prior.

The inverse is MARPS (mAR-SCF Algorithm 1): ``MultiScale`` inverts the top level first,
then every split from the coarsest to the finest level, and each prior generates its
channels one ``nn.scan`` step at a time. The number of sequential steps of a sample is
the number of channels standardised by these bijectors (each prior sows one
``"channel_log_sigma"`` entry per channel, see
:class:`~jaxflows.distributions.mar.MARPrior`); :func:`~jaxflows.models.mar_scf.sampling_steps`
gives it in closed form (mAR-SCF Lemma A.1).

Channel order: ``MultiScale`` keeps channels ``[:C/2]`` and factors out ``[C/2:]``; the
reference code factors out the first half. The two differ by a fixed permutation, which
the learned 1x1 convolutions before every split absorb.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector
from jaxflows.bijectors.reshape import concat_context
from jaxflows.distributions.mar import MARPrior

__all__ = ["MARSplit", "MARTop"]


class _MARBase(Bijector):
    """Shared fields: the :class:`MARPrior` settings of one level."""

    input_ranks = (4,)

    features: int = 32
    num_layers: int = 3
    kernel_size: int = 3
    dilation: int = 1
    embed_features: int = 32
    embed_channels: int = 4

    def _prior(self, conditional: bool) -> MARPrior:
        return MARPrior(conditional=conditional, features=self.features,
                        num_layers=self.num_layers, kernel_size=self.kernel_size,
                        dilation=self.dilation, embed_features=self.embed_features,
                        embed_channels=self.embed_channels, name="prior")

    def _run(self, prior: MARPrior, x, r, inverse):
        if inverse:
            return prior.generate(x, r)
        return prior.standardize(x, r)


class MARSplit(_MARBase):
    """The mAR prior ``p(l | r)`` at a split (see the module docstring).

    ``context`` (optional, ``[B, K]`` or ``[B, H, W, K]``) is concatenated to the kept
    half before the prior's embedding.

    Attributes:
      features, num_layers, kernel_size, dilation, embed_features, embed_channels:
        the :class:`~jaxflows.distributions.mar.MARPrior` of this level.
    """

    @nn.compact
    def transform(self, x, inverse, context, train):
        c = x.shape[-1]
        if c % 2:
            raise ValueError(f"MARSplit: the input must have an even number of channels, got "
                             f"{c} (shape {tuple(x.shape)}).")
        r, l = x[..., :c // 2], x[..., c // 2:]
        cond = concat_context(r, context, "MARSplit")
        out, ld = self._run(self._prior(True), l, cond, inverse)
        return jnp.concatenate([r, out], axis=-1), ld


class MARTop(_MARBase):
    """The unconditional mAR prior of the top level (see the module docstring).

    With a ``context`` the top prior is conditioned on it (a ``[B, K]`` context is
    broadcast over the positions).

    Attributes:
      features, num_layers, kernel_size, dilation, embed_features, embed_channels:
        the :class:`~jaxflows.distributions.mar.MARPrior` of the top level.
    """

    @nn.compact
    def transform(self, x, inverse, context, train):
        if context is None:
            return self._run(self._prior(False), x, None, inverse)
        cond = concat_context(jnp.zeros(x.shape[:3] + (0,), x.dtype), context, "MARTop")
        return self._run(self._prior(True), x, cond, inverse)
