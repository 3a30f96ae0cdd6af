"""``Flow``: a bijector on top of a standard normal base distribution.

With the bijector ``f`` mapping data to latent (see :mod:`jaxflows.bijectors.base`),

    log p(x) = log N(f(x); 0, I) + log |det df/dx (x)|        (change of variables),

and sampling draws ``z ~ N(0, T^2 I)`` and returns ``f^{-1}(z)``. Multi-scale flows
(:mod:`jaxflows.models.multiscale`) standardise their factored-out halves with
:class:`~jaxflows.bijectors.reshape.Split`, so the learned conditional priors of
Glow are inside ``f`` and the temperature ``T`` scales every level's prior at once.

Bad values
----------
* **Outside the support.** The flow's density is positive exactly where every bijector
  of ``f`` is defined: all of ``R^D`` for most flows, the open box of the logit
  preprocessing (:class:`~jaxflows.bijectors.preprocessing.LogitTransform`: pixel
  values ``x`` with ``0 < alpha + (1 - 2 alpha) x / K < 1``) for flows that use it.
  There the density is 0 and :meth:`Flow.log_prob` returns ``-inf``: a row whose input
  is finite but whose forward pass is not (``log`` of a negative number) is reported
  as ``-inf``, not NaN. Gradients of such rows are not meaningful (the trainer skips a
  step whose loss is not finite).
* **NaN or inf inputs** have no density. Called eagerly (outside ``jax.jit``, e.g. in
  a notebook, the launchers, ``experiments/evaluate.py``), :meth:`Flow.log_prob`
  raises a ``ValueError`` naming the rows. Under ``jit`` the values are not known
  when the function is traced, so the check cannot raise: such a row's log-density is
  NaN. For a check under ``jit``, build the flow with ``checkify_inputs=True``
  (``flow.clone(checkify_inputs=True)``) and functionalise the call with
  ``jax.experimental.checkify``::

      checked = flow.clone(checkify_inputs=True)
      f = checkify.checkify(jax.jit(lambda v, x: checked.apply(v, x)))
      err, log_p = f(variables, x)
      err.throw()          # raises naming the number of non-finite rows and the first

  (Without ``checkify.checkify`` such a flow cannot be jitted: JAX refuses an
  unfunctionalised check.)

Context (conditional flows)
---------------------------
A conditional flow models ``p(x | c)``: ``log_prob(x, context=c)``,
``sample(n, context=c, temperature=T)``. The convention, for every flow of jaxflows:

* **One context row per example.** ``context`` is batched like the data,
  ``[batch, *context_shape]``: row ``i`` conditions example ``i`` (of ``x`` in
  ``log_prob``, of the ``n`` samples in ``sample``). A context of batch **1** is
  broadcast to every example. Any other batch size is a ``ValueError``. So
  ``sample(n, context=c)`` draws one sample per row of ``c`` (``n`` = rows), or ``n``
  samples of the single row of a batch-1 ``c``; for ``m`` samples of each of ``B``
  rows, repeat the rows (``jnp.repeat(c, m, axis=0)``, ``n = B m``).
* **What a context is.** What the flow's bijectors read: a vector ``[batch, K]``
  (broadcast over the positions of image conditioners), an image-shaped map
  ``[batch, h, w, K]`` (a low-resolution image, a one-hot segmentation map), or
  integer class labels ``[batch]``. Conditional models
  (:mod:`jaxflows.models.conditional`) encode it inside the flow (an RRDB encoder, a
  class embedding) into one feature map per level
  (:class:`~jaxflows.bijectors.conditional.LevelContext`), which every conditional
  bijector picks by its input's resolution. The context is data, never transformed by
  the flow: the density is over ``x`` only.
* ``Flow.context_shape`` (per-example shape, e.g. ``(K,)``, ``(h, w, 3)``, ``()`` for
  labels) declares a conditional flow: its context is then required and checked.
  ``Flow.unconditional=True`` declares that the flow reads no context: passing one is
  an error. With neither (the default, for flows built before this convention) the
  flow passes any context on to its bijectors, which check what they read.
* **Contexts** (conditional flows, see "Context" below): a missing context when the flow
  declares one (``context_shape``), a context given to a flow built unconditional
  (``unconditional=True``), a context whose shape does not fit, or whose batch is
  neither 1 nor that of ``x`` / ``num_samples``, raise a ``ValueError`` (shapes are
  static, so these are raised under ``jit`` too).
* **Temperatures** ``T <= 0`` or non-finite are refused by :meth:`Flow.sample` with a
  ``ValueError`` when ``T`` is a concrete number; a traced ``T`` (under ``jit``) that
  is invalid gives NaN samples (and fails the check of ``checkify_inputs=True``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxflows.bijectors.base import Bijector
from jaxflows.distributions.normal import StandardNormal

__all__ = ["Flow", "check_finite_input", "check_temperature"]

Array = jax.Array


def _shape_of(context) -> str:
    """A context's shape for error messages (arrays, or pytrees of arrays)."""
    if hasattr(context, "shape"):
        return str(tuple(context.shape))
    return str(jax.tree_util.tree_map(lambda c: tuple(jnp.shape(c)), context))


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _finite_rows(x: Array) -> Array:
    """``[B]``: whether every entry of each row of ``x`` is finite."""
    return jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)


def check_finite_input(x: Array, who: str, use_checkify: bool = False) -> None:
    """Refuse NaN/inf in ``x`` (``[batch, ...]``) when it can: see the module docstring.

    Concrete ``x``: ``ValueError`` naming the rows. Traced ``x``: a
    ``checkify.check`` if ``use_checkify``, else nothing (documented NaN result).
    Integer inputs are always finite.
    """
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return
    if _is_traced(x):
        if use_checkify:
            ok = _finite_rows(x)
            checkify.check(jnp.all(ok), f"{who}: x has NaN or inf in {{n}} row(s), the first "
                           "being row {first}", n=jnp.sum(~ok), first=jnp.argmin(ok))
        return
    # A concrete array, possibly a constant captured by a traced function: check it on the
    # host (a jnp operation here would give a tracer inside a trace).
    xn = np.asarray(x)
    ok = np.all(np.isfinite(xn.reshape(xn.shape[0], -1)), axis=1)
    if not ok.all():
        rows = np.nonzero(~ok)[0]
        raise ValueError(f"{who}: x has NaN or inf values in {rows.size} row(s) (rows "
                         f"{rows[:8].tolist()}{' ...' if rows.size > 8 else ''}); a "
                         "density is defined only for finite inputs.")


def check_temperature(temperature, who: str, use_checkify: bool = False):
    """``temperature`` if finite and > 0; ``ValueError`` (concrete) or NaN (traced) if not.

    Returns the temperature to sample with: under ``jit`` an invalid one becomes NaN,
    so the samples are visibly invalid instead of plausible-looking.
    """
    if _is_traced(temperature):
        t = jnp.asarray(temperature)
        ok = jnp.all(jnp.isfinite(t) & (t > 0))
        if use_checkify:
            checkify.check(ok, f"{who}: temperature must be finite and > 0")
        return jnp.where(ok, t, jnp.nan)
    try:
        t = np.asarray(temperature, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: temperature must be a number > 0, got "
                         f"{temperature!r}.") from None
    if t.size == 0 or not np.all(np.isfinite(t) & (t > 0)):
        raise ValueError(f"{who}: temperature must be finite and > 0 (1 samples the model, "
                         f"lower values give reduced-temperature samples), got "
                         f"{temperature!r}.")
    return temperature


class Flow(nn.Module):
    """A normalizing flow: ``bijector`` (data -> latent) and a ``N(0, I)`` base.

    Attributes:
      bijector: the flow's bijector; forward maps ``[B, *event_shape]`` data to
        ``[B, *latent_shape]`` latents.
      event_shape: shape of one data example (e.g. ``(32, 32, 3)``).
      latent_shape: shape of one latent; defaults to ``event_shape``.
      context_shape: per-example shape of the context of a conditional flow (``(K,)``,
        ``(h, w, C)``, ``()`` for class labels): a context is then required and its
        shape checked. ``None`` (default): not declared (see the module docstring).
      unconditional: the flow reads no context; passing one is a ``ValueError``.
      checkify_inputs: also check inputs under ``jit`` with
        ``jax.experimental.checkify`` (NaN/inf in ``log_prob``'s ``x``, an invalid
        ``sample`` temperature); calls must then be wrapped in ``checkify.checkify``.
        Eager calls are checked either way (see the module docstring).

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
    checkify_inputs: bool = False
    context_shape: Optional[Sequence[int]] = None
    unconditional: bool = False

    @property
    def base(self) -> StandardNormal:
        shape = self.event_shape if self.latent_shape is None else self.latent_shape
        return StandardNormal(shape)

    def _check_x(self, x: Array, arg: str = "x") -> None:
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(
                f"Flow: {arg} must have shape [batch, *{tuple(self.event_shape)}], "
                f"got {tuple(x.shape)}.")

    def _context_for(self, context, batch: int, who: str, what: str):
        """``context`` checked against the declaration and broadcast to ``batch`` rows."""
        if self.unconditional and context is not None:
            raise ValueError(f"{who}: this flow is unconditional (it reads no context), but "
                             f"got a `context` of shape {_shape_of(context)}.")
        declared = self.context_shape
        if declared is not None:
            declared = tuple(int(d) for d in declared)
            if context is None:
                raise ValueError(f"{who}: this flow is conditional; `context` of shape "
                                 f"[batch, *{declared}] is required.")
            if not hasattr(context, "shape") or tuple(context.shape[1:]) != declared:
                raise ValueError(f"{who}: `context` must have shape [batch, *{declared}] "
                                 f"(one row per example), got {_shape_of(context)}.")
        if context is None:
            return None
        leaves = jax.tree_util.tree_leaves(context)
        for leaf in leaves:
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] not in (1, batch):
                raise ValueError(
                    f"{who}: context must have batch size 1 or {what}={batch} (one row "
                    f"per example, batch 1 broadcast), got shape {_shape_of(context)}.")
        return jax.tree_util.tree_map(
            lambda c: jnp.broadcast_to(c, (batch,) + tuple(jnp.shape(c)[1:])), context)

    def forward_and_log_det(self, x: Array, *, context: Optional[Array] = None,
                            train: bool = False) -> Tuple[Array, Array]:
        """The bijector's ``(f(x), log|det df/dx|)``: data to latent."""
        self._check_x(x)
        context = self._context_for(context, x.shape[0], "Flow", "the batch of x")
        return self.bijector.forward_and_log_det(x, context=context, train=train)

    def inverse_and_log_det(self, z: Array, *, context: Optional[Array] = None,
                            train: bool = False) -> Tuple[Array, Array]:
        """The bijector's ``(f^{-1}(z), log|det df^{-1}/dz|)``: latent to data."""
        context = self._context_for(context, z.shape[0], "Flow", "the batch of z")
        return self.bijector.inverse_and_log_det(z, context=context, train=train)

    def forward(self, x: Array, **kwargs) -> Array:
        """The latent ``f(x)``."""
        return self.forward_and_log_det(x, **kwargs)[0]

    def inverse(self, z: Array, **kwargs) -> Array:
        """The data ``f^{-1}(z)``."""
        return self.inverse_and_log_det(z, **kwargs)[0]

    def log_prob(self, x: Array, *, context: Optional[Array] = None,
                 train: bool = False) -> Array:
        """``log p(x) = log N(f(x); 0, I) + log|det df/dx|`` per example, in nats.

        ``-inf`` for a finite ``x`` outside the support; NaN/inf in ``x`` raise a
        ``ValueError`` when called eagerly and give NaN under ``jit`` (unless
        ``checkify_inputs``); see the module docstring.
        """
        self._check_x(x)
        check_finite_input(x, "Flow.log_prob", self.checkify_inputs)
        z, log_det = self.forward_and_log_det(x, context=context, train=train)
        log_p = self.base.log_prob(z) + log_det
        outside = _finite_rows(x) & jnp.isnan(log_p)
        return jnp.where(outside, jnp.asarray(-jnp.inf, log_p.dtype), log_p)

    def __call__(self, x: Array, *, context: Optional[Array] = None,
                 train: bool = False) -> Array:
        return self.log_prob(x, context=context, train=train)

    def _latent_sample(self, num_samples: int, temperature, context, dtype):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"Flow.sample: num_samples must be a positive Python int, got {num_samples!r}.")
        context = self._context_for(context, num_samples, "Flow.sample", "num_samples")
        temperature = check_temperature(temperature, "Flow.sample", self.checkify_inputs)
        z = self.base.sample(self.make_rng("sample"), num_samples, temperature, dtype)
        return z, context

    def sample(self, num_samples: int, *, temperature=1.0, context: Optional[Array] = None,
               dtype=jnp.float32) -> Array:
        """``num_samples`` draws ``f^{-1}(z)``, ``z ~ N(0, temperature^2 I)``.

        Uses the ``"sample"`` rng stream. ``context`` (batch 1 or ``num_samples``) is
        passed to the bijector: one sample per context row (see the module
        docstring). ``temperature=1`` samples the model; lower values give
        Glow's reduced-temperature samples (every level's prior is scaled). A
        temperature ``<= 0`` or non-finite raises ``ValueError`` (NaN samples when it
        is traced under ``jit``).
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
