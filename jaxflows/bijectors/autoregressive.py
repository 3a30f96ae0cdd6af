r"""Masked autoregressive flows: MAF and IAF with any elementwise transformer.

A masked autoregressive layer (Papamakarios, Pavlakou & Murray 2017, MAF; Kingma et al.
2016, IAF; Huang et al. 2018, NAF) maps ``x in R^D`` to ``y`` entry by entry in an order
``o``,

.. math::

    y_{o_j} = \tau\big(x_{o_j};\ \theta_{o_j}(x_{o_1}, \dots, x_{o_{j-1}}, c)\big),

with a monotone elementwise *transformer* ``tau`` (:mod:`jaxflows.bijectors.transformers`:
affine, additive, rational-quadratic spline, DSF/DDSF, MixLogCDF, ...) and a conditioner
``theta`` that is a :class:`~jaxflows.nn.MADE` (all ``D`` conditioners in one masked pass;
``c`` an optional context). The Jacobian is triangular in the order ``o``, so

.. math::  \log|\det J| = \sum_i \log \tau'(x_i; \theta_i).

Directions. ``forward`` (data -> latent, the density direction of
:mod:`jaxflows.bijectors.base`) is **one MADE pass**: every ``theta_i`` depends on ``x``
only. ``inverse`` (sampling) needs ``x_{<i}`` before ``theta_i``:

* ``inverse_method="scan"`` (default, exact): a ``lax.scan`` over the ``D`` positions of
  the order; step ``j`` runs the MADE on the current ``x`` and inverts entry ``o_j``
  alone (its parameters only see the entries already final). ``D`` MADE passes, one
  compiled step whatever ``D`` is (compile time does not grow with ``D``), the exact
  inverse. The log-det of entry ``o_j`` is collected at step ``j``.
* ``inverse_method="jacobi"``: the parallel fixed-point iteration
  ``x <- tau^{-1}(y; theta(x))`` on all entries at once, by
  :func:`jaxflows.ops.fixed_point_inverse` (Jacobi iteration; STARFlow's
  ``MetaBlock.jacobi``, Song et al. 2021). Because ``theta_{o_j}`` depends only on
  earlier entries, after iteration ``k`` the first ``k`` entries of the order are exact,
  so it ends in at most ``D + 1`` iterations (``D`` MADE passes, as the scan, plus one
  to detect convergence), usually far fewer when the dependence is weak; each iteration
  is a parallel pass over the batch and all entries. Iteration cap (``max_iter``,
  default ``D + 2``), tolerance (``tol``, default 4 eps of the dtype) and the per-example
  diagnostics are those of the solver; gradients use the implicit function theorem
  (the adjoint iteration is nilpotent too).

**IAF** is the other orientation, :class:`IAF` ``= Inverse(MaskedAutoregressive)``: its
forward (density) is the slow direction and its inverse (sampling) one pass, as in Kingma
et al. 2016 (variational posteriors, where samples and their density are needed but never
the density of an arbitrary point). :class:`MAF` is a :class:`MaskedAutoregressive`.

Inverse diagnostics. Both inverse methods report, never silently: the Jacobi solver sows
``{"iterations", "residual", "not_converged"}`` per example into the ``"intermediates"``
collection under ``"fixed_point"`` (as residual blocks do), and a transformer whose
inverse is numerical (DSF, DDSF, MixLogCDF: bisection, :func:`jaxflows.ops.monotone_inverse`)
and provides ``inverse_and_info`` has its summary ``{"max_residual", "num_not_converged",
"max_iterations"}`` sown under ``"monotone_inverse"``, as MixLogCDF couplings do. Read them
with ``apply(..., mutable=["intermediates"])`` and summarise with
:func:`jaxflows.bijectors.fixed_point_report` and
:func:`jaxflows.bijectors.monotone_inverse_report`.

The batch-normalisation bijector of MAF (:class:`BatchNorm`, Papamakarios et al. 2017,
Sec. 3.3 and App. B) is in this module too.

References:
  Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
  Estimation. ICML 2015.
  Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved Variational Inference
  with Inverse Autoregressive Flow. NeurIPS 2016.
  Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
  NeurIPS 2017.
  Huang, Krueger, Lacoste, Courville. Neural Autoregressive Flows. ICML 2018.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxflows.bijectors.base import Bijector, check_rank
from jaxflows.bijectors.coupling import _check_transformer, _elementwise
from jaxflows.nn.made import MADE
from jaxflows.nn.utils import param_dtype
from jaxflows.ops.fixed_point import default_tolerance, fixed_point_inverse
from jaxflows.ops.monotone import inverse_summary

__all__ = ["MaskedAutoregressive", "MAF", "IAF", "BatchNorm", "batch_norm_statistics"]

Array = jax.Array
_INVERSE_METHODS = ("scan", "jacobi")
_MADE_FIELDS = tuple(f.name for f in dataclasses.fields(MADE)
                     if f.name not in ("parent", "name", "num_params"))


def _transformer_inverse(transformer, y, params, who):
    """``(x, log_det, summary_or_None)``; a transformer with ``inverse_and_info`` (numerical
    inverses: DSF, DDSF, MixLogCDF) gives its solver's summary.
    """
    x, ld, info = _elementwise(transformer, y, params, True, who)
    return x, ld, None if info is None else inverse_summary(info)


class MaskedAutoregressive(Bijector):
    """Masked autoregressive layer (MAF orientation); see the module docstring.

    Example::

        from jaxflows.bijectors import Affine, MaskedAutoregressive, RationalQuadraticSpline
        from jaxflows.nn import MADE
        maf_layer = MaskedAutoregressive(Affine("exp"), MADE(hidden_features=(64, 64)))
        nsf_layer = MaskedAutoregressive(RationalQuadraticSpline(bins=8),
                                         MADE(hidden_features=(64, 64), order="reversed"))

    Args:
      transformer: the elementwise transformer (any object following the protocol of
        :mod:`jaxflows.bijectors.transformers`). Required.
      conditioner: a :class:`~jaxflows.nn.MADE` used as a template: its settings (hidden
        widths, order, residual, activation, dropout, output init) are copied and its
        ``num_params`` is replaced by the transformer's. ``None``: ``MADE()`` (two hidden
        layers of 64, sequential order, zero-initialised output), or, if the transformer
        defines ``conditioner_init_scale`` (DSF/DDSF), a MADE with that output init.
      inverse_method: ``"scan"`` (exact, sequential over ``D``) or ``"jacobi"``
        (parallel fixed-point iteration).
      max_iter: Jacobi iteration cap (default ``D + 2``, enough in exact arithmetic).
      tol: Jacobi tolerance (relative and absolute; default 4 eps of the dtype).

    Inputs are ``[batch, D]`` with ``D >= 2``; ``context`` (if any) is ``[batch, K]``.
    """

    input_ranks = (2,)

    transformer: Optional[Any] = None
    conditioner: Optional[MADE] = None
    inverse_method: str = "scan"
    max_iter: Optional[int] = None
    tol: Optional[float] = None

    def _made(self) -> MADE:
        transformer = self.transformer
        template = self.conditioner
        if template is None:
            scale = float(getattr(transformer, "conditioner_init_scale", 0.0))
            settings = dict(output_init_scale=scale)
        elif isinstance(template, MADE):
            settings = {name: getattr(template, name) for name in _MADE_FIELDS}
        else:
            raise ValueError(f"{type(self).__name__}: `conditioner` must be a "
                             f"jaxflows.nn.MADE (a template whose num_params is replaced) or "
                             f"None, got {template!r}.")
        return MADE(num_params=transformer.num_params, name="made", **settings)

    def _validate(self, x: Array) -> None:
        who = type(self).__name__
        _check_transformer(self.transformer, who)
        if x.shape[-1] < 2:
            raise ValueError(f"{who}: an autoregressive flow needs D >= 2 entries on the last "
                             f"axis of `x`; got shape {tuple(x.shape)}. For D = 1 use an "
                             f"elementwise bijector.")
        if self.inverse_method not in _INVERSE_METHODS:
            raise ValueError(f"{who}: `inverse_method` must be one of {_INVERSE_METHODS}, got "
                             f"{self.inverse_method!r}.")
        if self.max_iter is not None and (isinstance(self.max_iter, bool) or not isinstance(
                self.max_iter, numbers.Integral) or self.max_iter < 1):
            raise ValueError(f"{who}: `max_iter` must be an int >= 1 or None, got "
                             f"{self.max_iter!r}.")
        if self.tol is not None and not (isinstance(self.tol, numbers.Real) and self.tol > 0):
            raise ValueError(f"{who}: `tol` must be a positive number or None, got "
                             f"{self.tol!r}.")

    @nn.compact
    def transform(self, x, inverse, context, train):
        self._validate(x)
        made = self._made()
        who = type(self).__name__
        if self.is_initializing():
            made(x, context, False)          # creates the variables (output unused)
        # The MADE runs as a pure function of its variables in both directions, with one
        # dropout key (drawn here) for every pass: forward and inverse then compute and
        # invert the same function, also with train=True and dropout.
        module, variables = made.unbind()
        rngs = {}
        if train and module.dropout > 0:
            rngs = {"dropout": self.make_rng("dropout")}

        def conditioner(xx):
            return module.apply(variables, xx, context, train, rngs=rngs).astype(xx.dtype)

        if not inverse:
            y, ld, _ = _elementwise(self.transformer, x, conditioner(x), False, who)
            return y, jnp.sum(ld, axis=-1)
        order = self._order(module, variables, x.shape[-1])
        if self.inverse_method == "scan":
            xr, ld, info = _scan_inverse(self.transformer, conditioner, x, order, who)
        else:
            xr, ld, info, fp = self._jacobi(conditioner, x, who)
            self.sow("intermediates", "fixed_point",
                     {"iterations": fp.iterations, "residual": fp.residual,
                      "not_converged": jnp.logical_not(fp.converged)})
        if info is not None:
            self.sow("intermediates", "monotone_inverse", info)
        return xr, ld

    @staticmethod
    def _order(module: MADE, variables, dim: int) -> Array:
        if isinstance(module.order, str):
            if module.order == "sequential":
                return jnp.arange(dim, dtype=jnp.int32)
            if module.order == "reversed":
                return jnp.arange(dim - 1, -1, -1, dtype=jnp.int32)
            return variables["buffers"]["order"]
        return jnp.asarray(np.asarray(module.order), jnp.int32)

    def _jacobi(self, conditioner, y, who):
        transformer = self.transformer
        dim = y.shape[-1]
        tol = default_tolerance(y.dtype) if self.tol is None else float(self.tol)
        max_iter = dim + 2 if self.max_iter is None else int(self.max_iter)

        def step(xx):
            return _transformer_inverse(transformer, y, conditioner(xx), who)

        # fixed_point_inverse iterates x <- y - g(x); with g(x) = y - T(x) that is x <- T(x).
        def g(_, xx):
            return y - step(xx)[0]

        xr, fp = fixed_point_inverse(g, (), y, rtol=tol, atol=tol, max_iter=max_iter,
                                     stall_patience=max_iter)
        # Log-det (and numerical-inverse diagnostics) at the solution: one more pass.
        _, ld, info = step(xr)
        return xr, jnp.sum(ld, axis=-1), info, fp


def _scan_inverse(transformer, conditioner, y, order, who):
    """Exact inverse by a ``lax.scan`` over the positions of ``order``."""

    def body(carry, idx):
        x, total = carry
        params = conditioner(x)                                   # [B, D, P]
        p_i = lax.dynamic_index_in_dim(params, idx, axis=1, keepdims=True)
        y_i = lax.dynamic_index_in_dim(y, idx, axis=1, keepdims=True)
        x_i, ld_i, info = _transformer_inverse(transformer, y_i, p_i, who)
        x = lax.dynamic_update_index_in_dim(x, x_i, idx, axis=1)
        return (x, total + ld_i[:, 0]), info

    init = (jnp.zeros_like(y), jnp.zeros(y.shape[:1], y.dtype))
    (x, total), infos = lax.scan(body, init, order)
    if infos is not None:
        infos = {"max_residual": jnp.max(infos["max_residual"]),
                 "num_not_converged": jnp.sum(infos["num_not_converged"]),
                 "max_iterations": jnp.max(infos["max_iterations"])}
    return x, total, infos


MAF = MaskedAutoregressive
"""MAF layer: :class:`MaskedAutoregressive` (density in one pass, sampling by scan)."""


class IAF(MaskedAutoregressive):
    """IAF layer: :class:`MaskedAutoregressive` with the two directions swapped.

    Same fields and the same variables as :class:`MaskedAutoregressive`: with identical
    variables, ``IAF.forward`` is ``MaskedAutoregressive.inverse`` and vice versa. Its
    inverse (sampling) is one MADE pass; its forward (the density) runs the
    autoregressive inverse (``inverse_method`` ``"scan"`` or ``"jacobi"``). The
    conditioner reads the *latent* side: ``theta_i`` is a function of ``z_{<i}``, as in
    Kingma et al. 2016, Eq. 10 (``z_i = mu_i(z_{<i}) + sigma_i(z_{<i}) eps_i`` in their
    sampling direction).
    """

    def forward_and_log_det(self, x, *, context=None, train=False):
        check_rank(x, self.input_ranks, type(self).__name__, "x")
        return self.transform(x, True, context, train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        check_rank(y, self.input_ranks, type(self).__name__, "y")
        return self.transform(y, False, context, train)


class BatchNorm(Bijector):
    r"""Batch-normalisation bijector of MAF (Papamakarios et al. 2017, Sec. 3.3, App. B).

    Forward (data -> latent), per entry of the last axis:

    .. math::  y = e^{\gamma} \frac{x - m}{\sqrt{v + \epsilon}} + \beta, \qquad
               \log|\det J| = \sum_i \big(\gamma_i - \tfrac12 \log(v_i + \epsilon)\big).

    ``gamma`` (``"log_gamma"``) and ``beta`` are parameters (zero at init). ``m`` and ``v``:

    * ``train=True``: the mean and (biased) variance of the batch, differentiated through,
      as in the paper. The map then depends on the whole batch, so it is a bijection of
      each example only given the batch; if the ``"batch_stats"`` collection is mutable,
      its ``mean`` / ``var`` are also moved towards the batch's by an exponential moving
      average with ``momentum``.
    * ``train=False``: ``mean`` and ``var`` from the ``"batch_stats"`` collection (fixed
      buffers, never trained). **As in the MAF paper and its reference code** (which set
      them to "the exact mean and variance over the whole training set" before every
      validation and at the end), call :func:`batch_norm_statistics` with the training set
      to set every BatchNorm of a model at once. At ``init`` they are the init batch's
      statistics (so the model starts standardised, as ActNorm's data-dependent init).

    Args:
      eps: ``epsilon`` above (the reference's 1e-5).
      momentum: moving-average factor of the ``train=True`` update.
    """

    eps: float = 1e-5
    momentum: float = 0.9

    @nn.compact
    def transform(self, x, inverse, context, train):
        del context
        pdt = param_dtype(x.dtype)
        d = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        log_gamma = self.param("log_gamma", nn.initializers.zeros, (d,), pdt).astype(x.dtype)
        beta = self.param("beta", nn.initializers.zeros, (d,), pdt).astype(x.dtype)

        def init_stat(fn):
            return lambda: lax.stop_gradient(fn(x, axis=axes)).astype(pdt)
        mean_v = self.variable("batch_stats", "mean", init_stat(jnp.mean))
        var_v = self.variable("batch_stats", "var", init_stat(jnp.var))
        if mean_v.value.shape != (d,):
            raise ValueError(f"BatchNorm: input `x` has {d} features (shape {tuple(x.shape)}), "
                             f"but the module was initialised with {mean_v.value.shape[0]}.")
        if train and not inverse:
            mean, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)
            self.sow("intermediates", "batch_norm_stats", {"mean": mean, "var": var})
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                mom = self.momentum
                mean_v.value = (mom * mean_v.value
                                + (1 - mom) * lax.stop_gradient(mean).astype(pdt))
                var_v.value = mom * var_v.value + (1 - mom) * lax.stop_gradient(var).astype(pdt)
        else:
            mean, var = mean_v.value.astype(x.dtype), var_v.value.astype(x.dtype)
        log_scale = log_gamma - 0.5 * jnp.log(var + self.eps)
        ld = jnp.broadcast_to(jnp.sum(log_scale), x.shape[:1])
        if inverse:
            return (x - beta) * jnp.exp(-log_scale) + mean, -ld
        return (x - mean) * jnp.exp(log_scale) + beta, ld


def batch_norm_statistics(module: nn.Module, variables, x: Array, *,
                          context: Optional[Array] = None, rngs=None, method=None):
    """Sets every :class:`BatchNorm`'s ``batch_stats`` to the exact statistics of ``x``.

    This is the MAF paper's evaluation rule (reference code ``set_batch_norm_stats``): one
    ``train=True`` pass of ``module`` over ``x`` (the whole training set, or as much of it
    as fits in memory) in which every BatchNorm normalises with the statistics of its own
    input over all of ``x``; those statistics are then stored, so that an evaluation pass
    (``train=False``) over ``x`` computes exactly the same function.

    Args:
      module: a :class:`~jaxflows.distributions.Flow` or a bijector containing BatchNorms.
      variables: its variables (with a ``"batch_stats"`` collection).
      x: ``[N, D]`` training data.
      context: the matching context, if the module is conditional.
      rngs: rng streams the ``train=True`` pass needs (e.g. ``{"dropout": key}``).
      method: the method to run (default: ``module.forward_and_log_det``).

    Returns:
      ``variables`` with ``"batch_stats"`` replaced (the input is not modified).
    """
    method = module.forward_and_log_det if method is None else method
    _, state = module.apply(variables, x, context=context, train=True, rngs=rngs or {},
                            mutable=["intermediates"], method=method)
    found = {}

    def visit(tree, path):
        if hasattr(tree, "items"):
            for k, v in tree.items():
                if k == "batch_norm_stats":
                    found[path] = v[-1]
                else:
                    visit(v, path + (k,))
    visit(state.get("intermediates", {}), ())
    if not found:
        raise ValueError("batch_norm_statistics: the module has no BatchNorm (nothing sown "
                         "under 'batch_norm_stats').")
    stats = jax.tree_util.tree_map(lambda a: a, dict(variables.get("batch_stats", {})))

    def put(tree, path, value):
        tree = dict(tree)
        if len(path) == 0:
            return {k: value[k].astype(tree[k].dtype) for k in ("mean", "var")}
        if path[0] not in tree:
            raise ValueError(f"batch_norm_statistics: no 'batch_stats' at {path} in the "
                             f"variables.")
        tree[path[0]] = put(tree[path[0]], path[1:], value)
        return tree
    for path, value in found.items():
        stats = put(stats, path, value)
    out = dict(variables)
    out["batch_stats"] = stats
    return out
