"""Attentive Contractive Flows (ACF): Lipschitz self-attention inside residual flows.

A. Mukherjee, B. N. Patro, V. P. Namboodiri, "Attentive Contractive Flow with Lipschitz
Constrained Self-Attention" (arXiv:2109.12135): contractive (residual) flows
``f(x) = x + g(x)`` stay invertible as long as ``Lip(g) < 1``; ACF adds a
Lipschitz-constrained self-attention to the residual branch ``g`` of i-ResNet, Residual
Flows and i-DenseNets, with two variants: L2 multi-head attention (Kim et al. 2021) and
dot-product attention with LipschitzNorm (Dasoulas et al. 2021).

Here an ACF model is the base model of :mod:`jaxflows.models.resflow` (``iresnet``,
``resflow`` or ``idensenet``, with that factory's architecture and defaults) whose
convolutional residual blocks get the attention ``a`` in their branch, through the
blocks' ``attention`` field (:class:`~jaxflows.bijectors.residual.ResidualBlock`):

* ``placement="between"`` (default, the paper's Sec. 3: "in between the convolutional
  layers"): on the hidden features before the last Lipschitz convolution,
  ``g = conv_last o a o (act o conv ... o act)``; tokens are the ``N = H W`` positions,
  with ``hidden_channels`` features (i-DenseNet: ``C + depth * growth``), so the paper's
  heads (4 on MNIST, 16 on CIFAR-10) are reachable;
* ``placement="first"``: on the block input, ``g(x) = g_base(a(x))`` (``C`` features).

The attention's output (``output``):

* ``"normalised"`` (default) ``a(x) = (x + gamma F(x) / L_F) / (1 + |gamma|)``:
  ``Lip(a) <= 1`` for every parameter value, so ``Lip(g) < coeff < 1``: the branch
  stays a contraction and the block keeps its fixed-point inverse and log-det series;
* ``"eq13"``: the paper's Eq. 13 ``a(x) = x + gamma F(x) / L_F``, ``Lip(a) <= 1 + |gamma|``:
  **not** contractive once ``|gamma| >= 1 / coeff^k - 1`` (see
  :mod:`jaxflows.nn.attention`).

``F`` is the attention, ``L_F`` its Lipschitz bound (LipNorm: ``bound="derived"``, a
true bound, default; or ``"paper"``, ACF's Eq. 15 constant 10.55, which is not a bound
on ``F``: docs/attention.md) and ``gamma`` is learnable, initialised at 0 so training
starts from the plain residual flow. The fully connected end blocks (vectors: no
positions to attend over) have no attention. With ``attention="none"`` the model is
exactly the base model.

:func:`attention_gains` reads the learned ``gamma`` of every attention from a model's
parameters: with ``gamma = 0`` the attention is the identity and the model is the base
model, so ``max |gamma|`` says whether (and how much) the attention is used.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import numpy as np

from jaxflows.bijectors.residual import ATTENTION_PLACEMENTS
from jaxflows.bijectors.residual_settings import check_moved
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import RENAMED, renamed_arguments
from jaxflows.models.resflow import idensenet, iresnet, resflow
from jaxflows.nn.attention import (
    LIPNORM_BOUNDS,
    OUTPUTS,
    L2MultiHeadAttention,
    LipNormAttention,
)

__all__ = ["acf", "attention_factory", "attention_gains", "ATTENTION_KINDS", "BASES",
           "ATTENTION_PLACEMENTS"]

ATTENTION_KINDS = ("l2", "lipnorm")
_ATTENTIONS = {"l2": L2MultiHeadAttention, "lipnorm": LipNormAttention}
BASES = ("iresnet", "resflow", "idensenet")
_FACTORIES = {"iresnet": iresnet, "resflow": resflow, "idensenet": idensenet}
# Arguments of the base factories that acf sets itself (or that come from the data).
_NOT_FORWARDED = ("image_shape", "attention", "attention_placement")


@dataclasses.dataclass(frozen=True)
class _AttentionFactory:
    """``cls(heads=heads, **options, **kwargs)``; compared and hashed by value (unlike a
    partial), so equal configurations give equal (jit-cache-sharing) residual branches.
    """

    cls: type
    heads: int
    options: Tuple[Tuple[str, Any], ...] = ()

    def __call__(self, **kwargs) -> nn.Module:
        return self.cls(heads=self.heads, **dict(self.options), **kwargs)


def attention_factory(kind: str, heads: int, *, output: str = "normalised",
                      bound: str = "derived", head_features: Optional[int] = None,
                      gamma_init: float = 0.0) -> Callable[..., nn.Module]:
    """The ``attention`` factory of a residual block for ACF's attention ``kind``.

    ``"l2"``: :class:`~jaxflows.nn.attention.L2MultiHeadAttention` (Kim et al. 2021);
    ``"lipnorm"``: :class:`~jaxflows.nn.attention.LipNormAttention` (Dasoulas et al.
    2021). ``output``: ``"normalised"`` (1-Lipschitz, default) or ``"eq13"`` (ACF's
    ``X + gamma F / L``); ``bound`` (LipNorm only): ``"derived"`` or ``"paper"``
    (ACF's Eq. 15 constant); ``head_features``: width of each head (default
    ``ceil(features / heads)``); ``gamma_init``: the initial gain (0, the identity, by
    default). The factory called with ``name=...`` returns the module.
    """
    if kind not in _ATTENTIONS:
        raise ValueError(f"acf: attention must be one of {ATTENTION_KINDS}, got {kind!r}.")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"acf: heads must be an integer >= 1, got heads={heads!r}.")
    if output not in OUTPUTS:
        raise ValueError(f"acf: output must be one of {OUTPUTS}, got {output!r}.")
    if bound not in LIPNORM_BOUNDS:
        raise ValueError(f"acf: bound must be one of {LIPNORM_BOUNDS}, got {bound!r}.")
    if bound != "derived" and kind != "lipnorm":
        raise ValueError(f"acf: bound={bound!r} (ACF Eq. 15's LipNorm constant) applies to "
                         f"attention='lipnorm' only; attention={kind!r} uses Kim et al.'s "
                         f"bound.")
    if head_features is not None and (isinstance(head_features, bool)
                                      or not isinstance(head_features, int)
                                      or head_features < 1):
        raise ValueError(f"acf: head_features must be an integer >= 1 or None, got "
                         f"{head_features!r}.")
    if isinstance(gamma_init, bool) or not isinstance(gamma_init, (int, float)) or not (
            np.isfinite(gamma_init)):
        raise ValueError(f"acf: gamma_init must be a finite number, got {gamma_init!r}.")
    options = [("output", output), ("head_features", head_features)]
    if gamma_init:
        options.append(("gamma_init", float(gamma_init)))
    if kind == "lipnorm":
        options.append(("bound", bound))
    return _AttentionFactory(_ATTENTIONS[kind], heads, tuple(options))


def _base_params(base: str) -> Mapping[str, inspect.Parameter]:
    params = inspect.signature(_FACTORIES[base]).parameters
    return {k: p for k, p in params.items() if k not in _NOT_FORWARDED}


@renamed_arguments(RENAMED)
def acf(image_shape, *, base: str = "resflow", attention: str = "l2", heads: int = 1,
        placement: str = "between", output: str = "normalised", bound: str = "derived",
        head_features: Optional[int] = None, gamma_init: float = 0.0, **base_kwargs) -> Flow:
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
      heads: attention heads, any integer >= 1 (each head has its own projections of
        width ``head_features``, default ``ceil(features / heads)``). The paper: 4 on
        MNIST, 16 on CIFAR-10 (L2 attention).
      placement: ``"between"`` (the paper: hidden features before the last convolution
        of the branch) or ``"first"`` (the block input).
      output: ``"normalised"`` (``(X + gamma F/L) / (1 + |gamma|)``, contractive by
        construction) or ``"eq13"`` (the paper's ``X + gamma F/L``; not contractive for
        large ``|gamma|``).
      bound: LipNorm's normaliser: ``"derived"`` (an upper bound of ``Lip(F)``) or
        ``"paper"`` (Eq. 15's constant 10.55, not a bound of this ``F``).
      head_features: width of each head (default ``ceil(features / heads)``).
      gamma_init: initial ``gamma`` of every attention (default 0: training starts from
        the base model). With the normalised output, the loss depends on ``gamma`` mostly
        through ``|gamma|`` (the branch input is scaled by ``1 / (1 + |gamma|)``), which
        has a kink at 0: on digits at initialisation its one-sided slope was 0.08-0.16
        nats per unit ``|gamma|`` against 2e-4-1e-3 through the attention itself. Where
        the kink is a corner minimum Adam keeps ``gamma`` within about one step of 0
        (the digits ablations: ``|gamma| < 4e-6``). A non-zero start (the MNIST
        ablations use 1: half attention, half identity) lets training decide from a
        model that uses the attention.
      **base_kwargs: any other argument of the base factory (``levels``,
        ``blocks_per_level``, ``hidden_channels`` or ``growth``, ``fc_blocks``,
        ``factor_out``, ``squeeze_first``, ``num_bins``, ``alpha``, and the settings
        ``estimator``, ``eval_estimator``, ``solver``, ``spectral_norm``: objects of
        :mod:`jaxflows.bijectors.residual_settings` or dicts of their fields, which
        override the base factory's defaults).

    Returns:
      ``Flow`` whose ``log_prob`` is the density (nats) of the pixel values.

    Raises:
      ValueError: unknown ``base``, ``attention``, ``placement``, ``output`` or ``bound``;
        ``heads < 1``; an attention option its kind cannot host (``bound="paper"`` with
        L2); ``placement="between"`` in a branch of one convolution; an argument the
        base factory does not take, or any error of the base factory.
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
    if placement not in ATTENTION_PLACEMENTS:
        raise ValueError(f"acf: placement must be one of {ATTENTION_PLACEMENTS} (between: "
                         f"before the last convolution of the branch, as the paper; first: "
                         f"on the block input), got {placement!r}.")
    factory = None
    if attention != "none":
        factory = attention_factory(attention, heads, output=output, bound=bound,
                                    head_features=head_features, gamma_init=gamma_init)
        kernels = base_kwargs.get("kernels", params["kernels"].default
                                  if "kernels" in params else None)
        if placement == "between" and kernels is not None and len(tuple(kernels)) < 2:
            raise ValueError(f"acf: placement='between' needs residual branches of at least "
                             f"two convolutions; kernels={tuple(kernels)!r} has one (use "
                             f"placement='first').")
    return _FACTORIES[base](image_shape, attention=factory, attention_placement=placement,
                            **base_kwargs)



def attention_gains(params: Any) -> Dict[str, float]:
    """Summary of the learned attention gains ``gamma`` in a model's parameters.

    Every attention of :mod:`jaxflows.nn.attention` mixes ``a(x) = (x + gamma F(x) / L)
    / (1 + |gamma|)`` (or ACF's Eq. 13 ``x + gamma F(x) / L``): ``gamma = 0`` is the
    identity (no attention), and the weight of the attention path in ``a`` is
    ``|gamma| / (1 + |gamma|)`` (Eq. 13: ``|gamma|`` against 1). ``params`` is any tree
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
