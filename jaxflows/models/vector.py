"""Flows on vectors: MAF, IAF, NAF (DSF/DDSF), neural spline flows and Real NVP.

Every factory here returns a :class:`~jaxflows.distributions.Flow` with event shape
``(dim,)`` and a standard normal base: ``log_prob(x)`` of ``x: [batch, dim]`` in nats
(there is no pixel preprocessing; standardise tabular data first). ``context_features=K``
makes the flow conditional: ``context: [batch, K]`` is then required by ``log_prob`` and
``sample`` (batch 1 or ``num_samples``), and reaches every layer's conditioner; a missing
context, or one of the wrong width, is a ``ValueError``.

* :func:`maf`: MADE layers with an affine (or any) transformer, orders reversed between
  layers, optional batch norm after each (Papamakarios et al. 2017);
* :func:`iaf`: the same layers in the IAF orientation, one-pass sampling and a scan for
  the density (Kingma et al. 2016);
* :func:`naf`: MADE layers with DSF or DDSF transformers (Huang et al. 2018);
* :func:`nsf`: rational-quadratic splines in couplings (``kind="coupling"``) or MADE
  layers (``kind="autoregressive"``) (Durkan et al. 2019);
* :func:`realnvp_vector`: affine couplings with alternating masks and MLP conditioners
  (Dinh et al. 2017).
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Union

import jax

from jaxflows.bijectors.autoregressive import IAF, BatchNorm, MaskedAutoregressive
from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.coupling import Coupling
from jaxflows.bijectors.linear import Permute
from jaxflows.bijectors.naf import DDSF, DSF
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.splines import RationalQuadraticSpline
from jaxflows.bijectors.transformers import Affine
from jaxflows.distributions.flow import Flow
from jaxflows.nn.made import MADE

__all__ = ["maf", "iaf", "naf", "nsf", "realnvp_vector"]

Array = jax.Array
Hidden = Union[int, Sequence[int]]


class _ContextGuard(Bijector):
    """Delegates to ``bijector`` after checking ``context`` against ``context_features``
    (``None``: unconditional, so a context is an error; ``K``: a ``[batch, K]`` context
    with the batch of the input is required).
    """

    bijector: Bijector
    context_features: Optional[int] = None
    who: str = "flow"

    def _check(self, x, context):
        k = self.context_features
        if k is None:
            if context is not None:
                raise ValueError(f"{self.who}: this flow is unconditional (built without "
                                 f"context_features) but got a `context` of shape "
                                 f"{tuple(context.shape)}.")
            return
        if context is None:
            raise ValueError(f"{self.who}: this flow is conditional (context_features={k}); "
                             f"`context` [batch, {k}] is required.")
        if context.ndim != 2 or context.shape[-1] != k or context.shape[0] != x.shape[0]:
            raise ValueError(f"{self.who}: `context` must have shape [batch, {k}] with the "
                             f"batch size of the input ({x.shape[0]}); got "
                             f"{tuple(context.shape)}.")

    def forward_and_log_det(self, x, *, context=None, train=False):
        self._check(x, context)
        return self.bijector.forward_and_log_det(x, context=context, train=train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        self._check(y, context)
        return self.bijector.inverse_and_log_det(y, context=context, train=train)


def _check_dim(dim, who: str, autoregressive: bool) -> int:
    low = 2
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < low:
        kind = "an autoregressive" if autoregressive else "a coupling"
        raise ValueError(f"{who}: `dim` must be an integer >= {low} for {kind} flow, got "
                         f"{dim!r}.")
    return int(dim)


def _check_common(who: str, num_layers, context_features) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) \
            or num_layers < 1:
        raise ValueError(f"{who}: `num_layers` must be an integer >= 1, got {num_layers!r}.")
    if context_features is not None and (isinstance(context_features, bool) or not isinstance(
            context_features, numbers.Integral) or context_features < 1):
        raise ValueError(f"{who}: `context_features` must be None or an integer >= 1, got "
                         f"{context_features!r}.")


def _flow(layers, dim, context_features, who) -> Flow:
    guard = _ContextGuard(Chain(layers), context_features=context_features, who=who)
    return Flow(guard, event_shape=(dim,))


def _autoregressive(who, dim, transformer, *, num_layers, hidden_features, residual,
                    activation, dropout, context_features, inverse_method, batch_norm,
                    output_init_scale, iaf_orientation=False):
    dim = _check_dim(dim, who, True)
    _check_common(who, num_layers, context_features)
    layer_cls = IAF if iaf_orientation else MaskedAutoregressive
    layers = []
    for i in range(num_layers):
        made = MADE(hidden_features=hidden_features, order="sequential" if i % 2 == 0
                    else "reversed", residual=residual, activation=activation,
                    dropout=dropout, output_init_scale=output_init_scale)
        layers.append(layer_cls(transformer, made, inverse_method=inverse_method))
        if batch_norm:
            layers.append(BatchNorm())
    return _flow(layers, dim, context_features, who)


def _resolve_affine(transformer: Any, who: str) -> Any:
    if isinstance(transformer, str) and transformer == "affine":
        return Affine("exp", clamp=None)
    if isinstance(transformer, str):
        raise ValueError(f"{who}: `transformer` must be 'affine' or a transformer object (e.g. "
                         f"jaxflows.bijectors.RationalQuadraticSpline()), got {transformer!r}.")
    return transformer


def maf(dim: int, *, num_layers: int = 5, hidden_features: Hidden = (64, 64),
        transformer: Any = "affine", residual: bool = False, activation: str = "relu",
        dropout: float = 0.0, batch_norm: bool = False,
        context_features: Optional[int] = None, inverse_method: str = "scan") -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017) on vectors of size ``dim``.

    ``num_layers`` :class:`~jaxflows.bijectors.MaskedAutoregressive` layers whose MADE
    orders alternate between sequential and reversed (the paper's order reversal), each
    optionally followed by :class:`~jaxflows.bijectors.BatchNorm` (the paper's
    ``batch_norm=True``; set its evaluation statistics from the training set with
    :func:`~jaxflows.bijectors.batch_norm_statistics`, as the paper does). The
    affine transformer is ``y = x exp(s) + t`` with an unclamped ``s`` (the paper's
    ``u = (x - m) exp(-alpha)`` in the other parameterisation).

    Args:
      dim: the event size ``D`` (>= 2).
      num_layers: number of MADE layers (the paper's 5 or 10).
      hidden_features: MADE hidden widths (the paper: 100 for POWER/GAS, 512 otherwise,
        one or two layers).
      transformer: ``"affine"`` or any transformer object
        (:mod:`jaxflows.bijectors.transformers`), e.g. a spline or ``DSF()``.
      residual: residual MADE layers.
      activation: MADE nonlinearity (``"relu"``, ``"tanh"``, ...).
      dropout: MADE dropout (``train=True``).
      batch_norm: a BatchNorm after every MADE layer.
      context_features: width ``K`` of a ``[batch, K]`` context, or ``None``.
      inverse_method: sampling by ``"scan"`` (exact) or ``"jacobi"``.
    """
    t = _resolve_affine(transformer, "maf")
    return _autoregressive("maf", dim, t, num_layers=num_layers,
                           hidden_features=hidden_features, residual=residual,
                           activation=activation, dropout=dropout,
                           context_features=context_features, inverse_method=inverse_method,
                           batch_norm=batch_norm,
                           output_init_scale=float(getattr(t, "conditioner_init_scale", 0.0)))


def iaf(dim: int, *, num_layers: int = 5, hidden_features: Hidden = (64, 64),
        transformer: Any = "affine", residual: bool = False, activation: str = "relu",
        dropout: float = 0.0, context_features: Optional[int] = None,
        inverse_method: str = "scan") -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016) on vectors of size ``dim``.

    :func:`maf`'s layers in the :class:`~jaxflows.bijectors.IAF` orientation: sampling
    (and ``sample_and_log_prob``, the variational-inference use) is one MADE pass per
    layer; ``log_prob`` of an arbitrary ``x`` runs the autoregressive inverse
    (``inverse_method``: ``"scan"``, ``D`` passes, or ``"jacobi"``). Arguments as
    :func:`maf` (no batch norm: it has no one-pass inverse at training time).
    """
    t = _resolve_affine(transformer, "iaf")
    return _autoregressive("iaf", dim, t, num_layers=num_layers,
                           hidden_features=hidden_features, residual=residual,
                           activation=activation, dropout=dropout,
                           context_features=context_features, inverse_method=inverse_method,
                           batch_norm=False, iaf_orientation=True,
                           output_init_scale=float(getattr(t, "conditioner_init_scale", 0.0)))


def naf(dim: int, *, transformer: str = "dsf", num_layers: int = 5,
        hidden_features: Hidden = (64,), sigmoid_units: int = 16, ddsf_layers: int = 2,
        delta: float = 1e-6, residual: bool = False, activation: str = "relu",
        dropout: float = 0.0, context_features: Optional[int] = None,
        inverse_method: str = "scan") -> Flow:
    """Neural autoregressive flow (Huang et al. 2018) on vectors of size ``dim``.

    ``num_layers`` MADE layers with a :class:`~jaxflows.bijectors.DSF` or
    :class:`~jaxflows.bijectors.DDSF` transformer, orders reversed between layers (the
    reference's ``FlipFlow``). The reference's experiment defaults are 5 layers, one hidden
    MADE layer of 100 units and 16 sigmoid units. Departure: the reference ends with a
    context-conditioned diagonal linear flow; it is left out (the last layer's transformer
    already has a learned scale and shift). Sampling inverts each transformer by bisection
    (:func:`jaxflows.ops.monotone_inverse`, reported when not converged).

    Args:
      dim: the event size ``D`` (>= 2).
      transformer: ``"dsf"`` or ``"ddsf"``.
      num_layers: number of MADE layers.
      hidden_features: MADE hidden widths.
      sigmoid_units: sigmoid units ``d`` per transformer (``num_ds_dim``).
      ddsf_layers: DDSF layers (``num_ds_layers``), for ``transformer="ddsf"``.
      delta: the transformers' ``delta`` safeguard.
      residual: residual MADE layers.
      activation: MADE nonlinearity.
      dropout: MADE dropout (``train=True``).
      context_features: width ``K`` of a ``[batch, K]`` context, or ``None``.
      inverse_method: sampling by ``"scan"`` (exact) or ``"jacobi"``.
    """
    if transformer == "dsf":
        t = DSF(hidden=sigmoid_units, delta=delta)
    elif transformer == "ddsf":
        t = DDSF(hidden=sigmoid_units, layers=ddsf_layers, delta=delta)
    else:
        raise ValueError(f"naf: `transformer` must be 'dsf' or 'ddsf', got {transformer!r}.")
    return _autoregressive("naf", dim, t, num_layers=num_layers,
                           hidden_features=hidden_features, residual=residual,
                           activation=activation, dropout=dropout,
                           context_features=context_features, inverse_method=inverse_method,
                           batch_norm=False, output_init_scale=t.conditioner_init_scale)


def nsf(dim: int, *, kind: str = "coupling", num_layers: int = 5, hidden_features: int = 64,
        num_blocks: int = 2, bins: int = 8, bound: float = 5.0, dropout: float = 0.0,
        context_features: Optional[int] = None, inverse_method: str = "scan") -> Flow:
    """Neural spline flow (Durkan et al. 2019) on vectors of size ``dim``.

    ``kind="coupling"`` (RQ-NSF (C)): :class:`~jaxflows.bijectors.Coupling` layers with a
    :class:`~jaxflows.bijectors.RationalQuadraticSpline`, alternating masks and a residual
    MLP conditioner (``num_blocks`` layers of ``hidden_features``), a fixed random
    permutation between layers. ``kind="autoregressive"`` (RQ-NSF (AR)): MADE layers
    (residual, ``num_blocks`` layers) with the spline, orders reversed between layers.
    Departure: NSF puts a learned LU-factored linear layer between steps; a fixed
    permutation (coupling) or order reversal (autoregressive) is used here.

    Args:
      dim: the event size ``D`` (>= 2).
      kind: ``"coupling"`` or ``"autoregressive"``.
      num_layers: number of spline layers.
      hidden_features: conditioner width.
      num_blocks: conditioner depth (residual layers).
      bins: spline bins ``K`` (>= 2).
      bound: spline domain ``[-bound, bound]`` (> 0; identity outside).
      dropout: conditioner dropout (``train=True``).
      context_features: width ``K`` of a ``[batch, K]`` context, or ``None``.
      inverse_method: for ``kind="autoregressive"``: sampling by ``"scan"`` or
        ``"jacobi"``.
    """
    who = "nsf"
    spline = RationalQuadraticSpline(bins=bins, bound=bound)
    if kind == "autoregressive":
        return _autoregressive(who, dim, spline, num_layers=num_layers,
                               hidden_features=(hidden_features,) * max(1, num_blocks),
                               residual=True, activation="relu", dropout=dropout,
                               context_features=context_features,
                               inverse_method=inverse_method, batch_norm=False,
                               output_init_scale=0.0)
    if kind != "coupling":
        raise ValueError(f"nsf: `kind` must be 'coupling' or 'autoregressive', got {kind!r}.")
    dim = _check_dim(dim, who, False)
    _check_common(who, num_layers, context_features)
    layers = []
    for i in range(num_layers):
        layers.append(Coupling(transformer=spline, hidden_channels=hidden_features,
                               mask="alternating", conditioner="resnet",
                               num_blocks=num_blocks, dropout=dropout, parity=i % 2))
        if i < num_layers - 1:
            layers.append(Permute())
    return _flow(layers, dim, context_features, who)


def realnvp_vector(dim: int, *, num_layers: int = 8, hidden_features: int = 64,
                   num_blocks: int = 2, clamp: Optional[float] = 2.0, actnorm: bool = True,
                   dropout: float = 0.0, context_features: Optional[int] = None) -> Flow:
    """Real NVP (Dinh et al. 2017) on vectors of size ``dim``.

    ``num_layers`` affine couplings ``y_b = x_b exp(s(x_a)) + t(x_a)`` with alternating
    masks (parity alternates, so every entry is transformed), residual MLP conditioners
    and the soft-clamped log-scale ``s = c tanh(h / c)``, each followed by
    :class:`~jaxflows.bijectors.ActNorm` (``actnorm=True``; in place of the paper's batch
    normalisation, as the image factory :func:`~jaxflows.models.realnvp`).

    Args:
      dim: the event size ``D`` (>= 2).
      num_layers: number of couplings.
      hidden_features: conditioner width.
      num_blocks: conditioner depth (residual layers).
      clamp: soft clamp of the log-scale (``None``: none).
      actnorm: an ActNorm after each coupling.
      dropout: conditioner dropout (``train=True``).
      context_features: as :func:`maf`.
    """
    who = "realnvp_vector"
    dim = _check_dim(dim, who, False)
    _check_common(who, num_layers, context_features)
    layers = []
    for i in range(num_layers):
        layers.append(Coupling(transformer=Affine("exp", clamp=clamp),
                               hidden_channels=hidden_features, mask="alternating",
                               conditioner="resnet", num_blocks=num_blocks, dropout=dropout,
                               parity=i % 2))
        if actnorm:
            layers.append(ActNorm())
    return _flow(layers, dim, context_features, who)
