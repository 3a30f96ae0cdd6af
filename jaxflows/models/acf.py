"""Attentive Contractive Flows (ACF): Lipschitz self-attention inside residual flows.

A. Mukherjee, B. N. Patro, V. P. Namboodiri, "Attentive Contractive Flow with Lipschitz
Constrained Self-Attention" (arXiv:2109.12135): contractive (residual) flows
``f(x) = x + g(x)`` stay invertible as long as ``Lip(g) < 1``; ACF adds a
Lipschitz-constrained self-attention to the residual branch ``g`` of i-ResNet, Residual
Flows and i-DenseNets, with two variants: L2 multi-head attention (Kim et al. 2021) and
dot-product attention with LipschitzNorm (Dasoulas et al. 2021).

Here an ACF model is the base model of :mod:`jaxflows.models.resflow` (``iresnet``,
``resflow`` or ``idensenet``, with that factory's architecture and defaults) whose
convolutional residual blocks get the attention as the first layer of their branch,
over the ``N = H W`` positions of the block's input (tokens of ``C`` features), through
the blocks' ``attention`` field (:class:`~jaxflows.bijectors.residual.ResidualBlock`)::

    g(x) = g_base(a(x)),    a(x) = (x + gamma * F(x) / L_F) / (1 + |gamma|),

with ``F`` the attention, ``L_F`` its closed-form Lipschitz bound and ``gamma`` learnable
(initialised at 0, so training starts from the plain residual flow); see
:mod:`jaxflows.nn.attention`. ``Lip(a) <= 1`` for every parameter value, so
``Lip(g) <= Lip(g_base) < coeff < 1``: the whole branch stays a contraction, and the
block keeps its fixed-point inverse and log-det estimators unchanged. The fully
connected end blocks (vectors: no positions to attend over) have no attention. With
``attention="none"`` the model is exactly the base model.

:func:`attention_gains` reads the learned ``gamma`` of every attention from a model's
parameters: with ``gamma = 0`` the attention is the identity and the model is the base
model, so ``max |gamma|`` says whether (and how much) the attention is used.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, Mapping

import flax.linen as nn
import jax
import numpy as np

from jaxflows.bijectors.residual_settings import check_moved
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import RENAMED, renamed_arguments
from jaxflows.models.resflow import idensenet, iresnet, level_channels, resflow
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention

__all__ = ["acf", "attention_factory", "attention_gains", "ATTENTION_KINDS", "BASES"]

ATTENTION_KINDS = ("l2", "lipnorm")
_ATTENTIONS = {"l2": L2MultiHeadAttention, "lipnorm": LipNormAttention}
BASES = ("iresnet", "resflow", "idensenet")
_FACTORIES = {"iresnet": iresnet, "resflow": resflow, "idensenet": idensenet}
# Arguments of the base factories that acf sets itself (or that come from the data).
_NOT_FORWARDED = ("image_shape", "attention")


@dataclasses.dataclass(frozen=True)
class _AttentionFactory:
    """``cls(heads=heads, **kwargs)``; compared and hashed by value (unlike a partial),
    so equal configurations give equal (jit-cache-sharing) residual branches.
    """

    cls: type
    heads: int

    def __call__(self, **kwargs) -> nn.Module:
        return self.cls(heads=self.heads, **kwargs)


def attention_factory(kind: str, heads: int) -> Callable[..., nn.Module]:
    """The ``attention`` factory of a residual block for ACF's attention ``kind``.

    ``"l2"``: :class:`~jaxflows.nn.attention.L2MultiHeadAttention` (Kim et al. 2021);
    ``"lipnorm"``: :class:`~jaxflows.nn.attention.LipNormAttention` (Dasoulas et al.
    2021); both normalised by their Lipschitz bound and mixed with the identity through
    ``gamma`` (1-Lipschitz). The factory called with ``name=...`` returns
    ``cls(heads=heads, name=...)``.
    """
    if kind not in _ATTENTIONS:
        raise ValueError(f"acf: attention must be one of {ATTENTION_KINDS}, got {kind!r}.")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"acf: heads must be a positive int, got heads={heads!r}.")
    return _AttentionFactory(_ATTENTIONS[kind], heads)


def _base_params(base: str) -> Mapping[str, inspect.Parameter]:
    params = inspect.signature(_FACTORIES[base]).parameters
    return {k: p for k, p in params.items() if k not in _NOT_FORWARDED}


@renamed_arguments(RENAMED)
def acf(image_shape, *, base: str = "resflow", attention: str = "l2", heads: int = 1,
        **base_kwargs) -> Flow:
    """An ACF flow on images: the ``base`` residual flow with attention in its branches.

    Args:
      image_shape: ``(H, W, C)`` (constraints of the base factory).
      base: ``"iresnet"`` | ``"resflow"`` | ``"idensenet"``: the model of
        :mod:`jaxflows.models.resflow` that ACF extends, with its architecture and
        defaults (Residual Flows: 3 levels of 16 LipSwish blocks, no factor-out, 4 fully
        connected end blocks, roulette; i-ResNet: squeeze first, factor-out, ELU,
        5-term series; i-DenseNet: the Residual Flows layout with dense blocks).
      attention: ``"l2"`` (L2-MHA), ``"lipnorm"`` (LipschitzNorm attention) or
        ``"none"`` (the base model unchanged).
      heads: attention heads; must divide the channels at every level
        (:func:`~jaxflows.models.resflow.level_channels`).
      **base_kwargs: any other argument of the base factory (``levels``,
        ``blocks_per_level``, ``hidden_channels`` or ``growth``, ``fc_blocks``,
        ``factor_out``, ``squeeze_first``, ``num_bins``, ``alpha``, and the settings
        ``estimator``, ``eval_estimator``, ``solver``, ``spectral_norm``: objects of
        :mod:`jaxflows.bijectors.residual_settings` or dicts of their fields, which
        override the base factory's defaults).

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values.

    Raises:
      ValueError: unknown ``base`` or ``attention``, ``heads`` not dividing the channels
        of some level, an argument the base factory does not take, or any error of the
        base factory.
      TypeError: a keyword of the base factories that moved into a settings object
        (``coeff=0.9``: pass ``spectral_norm=dict(coeff=0.9)``).
    """
    check_moved(base_kwargs, "acf")
    if base not in BASES:
        raise ValueError(f"acf: base must be one of {BASES}, got {base!r}.")
    if attention not in ATTENTION_KINDS + ("none",):
        raise ValueError(f"acf: attention must be one of {ATTENTION_KINDS + ('none',)}, "
                         f"got {attention!r}.")
    params = _base_params(base)
    for key in base_kwargs:
        if key not in params:
            raise ValueError(f"acf: unknown argument {key!r} for base={base!r}; accepted: "
                             f"base, attention, heads, {', '.join(params)}.")
    factory = None
    if attention != "none":
        factory = attention_factory(attention, heads)
        layout = {k: base_kwargs.get(k, params[k].default)
                  for k in ("levels", "squeeze_first", "factor_out")}
        if isinstance(layout["levels"], int) and layout["levels"] >= 1 and len(image_shape) == 3:
            channels = level_channels(image_shape, layout["levels"],
                                      squeeze_first=layout["squeeze_first"],
                                      factor_out=layout["factor_out"])
            for level, c in enumerate(channels):
                if c % heads:
                    raise ValueError(
                        f"acf: heads={heads!r} must divide the channels at every level "
                        f"({c} at level {level}; channels per level {channels}).")
    return _FACTORIES[base](image_shape, attention=factory, **base_kwargs)



def attention_gains(params: Any) -> Dict[str, float]:
    """Summary of the learned attention gains ``gamma`` in a model's parameters.

    Every attention of :mod:`jaxflows.nn.attention` mixes ``a(x) = (x + gamma F(x) / L)
    / (1 + |gamma|)``: ``gamma = 0`` is the identity (no attention), and the weight of
    the attention path in ``a`` is ``|gamma| / (1 + |gamma|)``. ``params`` is any tree
    holding them (a ``"params"`` collection, the whole variables, a ``TrainState``'s
    parameters); scanned blocks hold one ``gamma`` per step.

    Returns:
      ``{"count": number of attentions, "max_abs_gamma": max |gamma|,
      "mean_abs_gamma": mean |gamma|}`` (zeros when there is none).
    """
    found = []

    def visit(path, leaf):
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        if len(names) >= 2 and names[-1] == "gamma" and names[-2] == "attention":
            found.append(np.abs(np.asarray(jax.device_get(leaf), np.float64)).reshape(-1))

    jax.tree_util.tree_map_with_path(visit, params)
    if not found:
        return {"count": 0, "max_abs_gamma": 0.0, "mean_abs_gamma": 0.0}
    gammas = np.concatenate(found)
    return {"count": int(gammas.size), "max_abs_gamma": float(gammas.max()),
            "mean_abs_gamma": float(gammas.mean())}
