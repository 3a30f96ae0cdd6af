"""Attentive Contractive Flows (ACF): Lipschitz self-attention inside residual flows.

A. Mukherjee, B. N. Patro, V. P. Namboodiri, "Attentive Contractive Flow with Lipschitz
Constrained Self-Attention" (arXiv:2109.12135): contractive (residual) flows
``f(x) = x + g(x)`` stay invertible as long as ``Lip(g) < 1``; ACF adds a
Lipschitz-constrained self-attention to the residual branch ``g`` of i-ResNet, Residual
Flows and i-DenseNets, with two variants: L2 multi-head attention (Kim et al. 2021) and
dot-product attention with LipschitzNorm (Dasoulas et al. 2021).

Here the attention is the first layer of the branch, over the ``N = H W`` positions of
the block's input (tokens of ``C`` features)::

    g(x) = g_base(a(x)),    a(x) = (x + gamma * F(x) / L_F) / (1 + |gamma|),

with ``F`` the attention, ``L_F`` its closed-form Lipschitz bound and ``gamma`` learnable
(initialised at 0, so training starts from the plain residual flow); see
:mod:`jaxflows.nn.attention`. ``Lip(a) <= 1`` for every parameter value, so
``Lip(g) <= Lip(g_base) < coeff < 1``: the whole branch stays a contraction, and the
block keeps its fixed-point inverse and log-det estimators unchanged. Fully connected
(vector) branches have no positions to attend over and are left as they are.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Tuple, Type

import flax.linen as nn

from jaxflows.bijectors.base import Chain, Identity
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
from jaxflows.distributions.flow import Flow
from jaxflows.models.glow import check_image_shape, preprocessing_bijectors
from jaxflows.models.multiscale import multiscale
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention

__all__ = ["acf", "AttentiveResidualBlock", "AttentiveDenseResidualBlock", "ATTENTION_KINDS",
           "BASES", "attention_module"]

ATTENTION_KINDS = ("l2", "lipnorm")


def attention_module(kind: str, heads: int, name: str = "attention") -> nn.Module:
    """``L2MultiHeadAttention`` (``"l2"``) or ``LipNormAttention`` (``"lipnorm"``), 1-Lipschitz."""
    if kind == "l2":
        return L2MultiHeadAttention(heads=heads, name=name)
    if kind == "lipnorm":
        return LipNormAttention(heads=heads, name=name)
    raise ValueError(f"acf: attention must be one of {ATTENTION_KINDS}, got {kind!r}.")


class _AttentiveBranch(nn.Module):
    """``g(x) = g_base(a(x))`` with ``a`` a 1-Lipschitz attention block (image inputs)."""

    base_cls: Type[nn.Module]
    base_kwargs: Tuple[Tuple[str, Any], ...]
    attention: str
    heads: int

    @nn.compact
    def __call__(self, x, train=False):
        h = attention_module(self.attention, self.heads)(x)
        return self.base_cls(**dict(self.base_kwargs), name="g")(h, train=train)


def _attentive(block, conv, out_features, base_branch):
    """Wraps the branch built by the parent class (its configuration, not its instance)."""
    if not conv:
        return base_branch
    if block.heads < 1 or out_features % block.heads:
        raise ValueError(f"{type(block).__name__}: heads={block.heads} must be >= 1 and divide "
                         f"the channels of the block input ({out_features}).")
    kwargs = tuple((f.name, getattr(base_branch, f.name)) for f in dataclasses.fields(base_branch)
                   if f.name not in ("parent", "name"))
    return _AttentiveBranch(type(base_branch), kwargs, block.attention, block.heads,
                            name="g_attentive")


class AttentiveResidualBlock(ResidualBlock):
    """:class:`~jaxflows.bijectors.residual.ResidualBlock` with ACF attention in its branch.

    Attributes (besides those of ``ResidualBlock``):
      attention: ``"l2"`` (L2-MHA) or ``"lipnorm"`` (LipschitzNorm dot-product attention).
      heads: attention heads (must divide the block's channels).
    """

    attention: str = "l2"
    heads: int = 1

    def _branch(self, conv, out_features):
        return _attentive(self, conv, out_features, super()._branch(conv, out_features))


class AttentiveDenseResidualBlock(DenseResidualBlock):
    """:class:`~jaxflows.bijectors.residual.DenseResidualBlock` (i-DenseNet) with ACF attention.

    Attributes (besides those of ``DenseResidualBlock``): ``attention``, ``heads`` as
    :class:`AttentiveResidualBlock`.
    """

    attention: str = "l2"
    heads: int = 1

    def _branch(self, conv, out_features):
        return _attentive(self, conv, out_features, super()._branch(conv, out_features))


# --------------------------------------------------------------------------------------
# The ACF model factory
# --------------------------------------------------------------------------------------
BASES = ("iresnet", "resflow", "idensenet")

# Per-base defaults of the residual blocks (the papers' choices, scaled down by the
# caller through hidden_channels / blocks_per_level):
#  i-ResNet (Behrmann et al. 2019): ELU, coefficient 0.9, truncated power series (5 terms).
#  Residual Flows (Chen et al. 2019): LipSwish, 0.98, Russian roulette (2 exact terms,
#    Poisson(2)) with the Neumann-series gradient.
#  i-DenseNet (Perugachi-Diaz et al. 2021): dense blocks with CLipSwish, 0.98, roulette.
_BASE_DEFAULTS = {
    "iresnet": dict(activation="elu", coeff=0.9, estimator="series", n_terms=5),
    "resflow": dict(activation="lipswish", coeff=0.98, estimator="roulette"),
    "idensenet": dict(activation="clipswish", coeff=0.98, estimator="roulette"),
}


def _acf_step(level, *, base, attention, heads, hidden_channels, depth, block_kwargs):
    kw = dict(_BASE_DEFAULTS[base])
    kw.update(block_kwargs)
    if base == "idensenet":
        kw.update(depth=depth, growth=hidden_channels)
        block = (DenseResidualBlock(**kw) if attention == "none"
                 else AttentiveDenseResidualBlock(attention=attention, heads=heads, **kw))
    else:
        kw.update(hidden_channels=hidden_channels)
        block = (ResidualBlock(**kw) if attention == "none"
                 else AttentiveResidualBlock(attention=attention, heads=heads, **kw))
    return Chain([ActNorm(), block])


def acf(image_shape, *, base: str = "resflow", attention: str = "l2", heads: int = 1,
        levels: int = 2, blocks_per_level=4, hidden_channels: int = 128, depth: int = 3,
        num_levels: float = 256, preprocessing: str = "logit", alpha: float = 0.05,
        coeff=None, estimator=None, n_terms=None, n_exact_terms=None, eval_estimator=None,
        remat: bool = False):
    """An ACF (or, with ``attention="none"``, the plain residual) flow on images.

    Multi-scale residual flow: preprocessing (``ScaleToUnit`` then logit), then ``levels``
    levels of [squeeze -> ``blocks_per_level`` x (ActNorm -> residual block)], factoring
    out half of the channels (fixed ``N(0, I)`` prior) between levels, built with
    :func:`~jaxflows.models.multiscale.multiscale` (blocks under ``nn.scan``).

    Args:
      image_shape: ``(H, W, C)``; ``H``, ``W`` divisible by ``2 ** levels``.
      base: ``"iresnet"`` | ``"resflow"`` | ``"idensenet"`` (block type and defaults).
      attention: ``"l2"`` (L2-MHA), ``"lipnorm"`` (LipschitzNorm attention) or ``"none"``.
      heads: attention heads; must divide the channels at every level (``4 C 2^l``).
      levels, blocks_per_level: multi-scale structure.
      hidden_channels: hidden width of the ResNet branches / growth of the dense layers.
      depth: dense layers per i-DenseNet block.
      num_levels, preprocessing (``"logit"``/``"shift"``), alpha: as :func:`jaxflows.models.glow`.
      coeff, estimator, n_terms, n_exact_terms, eval_estimator: override the base's
        block defaults (see :class:`~jaxflows.bijectors.residual.ResidualBlock`).
      remat: rematerialise each block in the backward pass.

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values.
    """

    if base not in BASES:
        raise ValueError(f"acf: base must be one of {BASES}, got {base!r}.")
    if attention not in ATTENTION_KINDS + ("none",):
        raise ValueError(f"acf: attention must be one of {ATTENTION_KINDS + ('none',)}, "
                         f"got {attention!r}.")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"acf: levels must be an int >= 1, got {levels!r}.")
    shape = check_image_shape(image_shape, 2 ** levels, "acf")
    if attention != "none":
        for l in range(levels):
            channels = shape[2] * 4 * 2 ** l
            if not isinstance(heads, int) or heads < 1 or channels % heads:
                raise ValueError(f"acf: heads={heads!r} must be a positive int dividing the "
                                 f"channels at every level ({channels} at level {l}).")
    overrides = dict(coeff=coeff, estimator=estimator, n_terms=n_terms,
                     n_exact_terms=n_exact_terms, eval_estimator=eval_estimator)
    block_kwargs = {k: v for k, v in overrides.items() if v is not None}
    make_step = functools.partial(_acf_step, base=base, attention=attention, heads=heads,
                                  hidden_channels=hidden_channels, depth=depth,
                                  block_kwargs=block_kwargs)
    pre = preprocessing_bijectors(num_levels, preprocessing, alpha, "acf")
    body = multiscale(levels, blocks_per_level, make_step, remat=remat,
                      make_split=lambda level: Identity())
    return Flow(bijector=Chain(pre + [body]), event_shape=shape)
