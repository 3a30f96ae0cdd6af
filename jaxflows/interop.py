"""Using jaxflows bijectors and flows from code that knows nothing about Flax.

* :func:`as_functions` closes a module over its variables and returns two plain,
  jittable, differentiable functions ``forward_and_log_det(x, context=None, rng=None)``
  and ``inverse_and_log_det(y, context=None, rng=None)``; with ``diagnostics=True`` the
  inverse also returns the fixed-point diagnostics of residual blocks
  (:func:`fixed_point_diagnostics`), so a non-converged inverse is never silent.
* :func:`as_distrax` wraps a :class:`~jaxflows.distributions.Flow` and its variables
  as a ``distrax.Distribution`` (``log_prob``, ``sample(seed=..., sample_shape=...)``,
  ``sample_and_log_prob``), usable with any distrax/optax code.

distrax is imported only when :func:`as_distrax` is first called (it pulls in
TensorFlow Probability, which is slow to import).

Example::

    fwd, inv = jaxflows.as_functions(flow, variables)
    z, log_det = jax.jit(fwd)(x)
    fwd, inv = jaxflows.as_functions(flow, variables, diagnostics=True)
    x, log_det, info = jax.jit(inv)(z)                  # info["not_converged"]: [batch]
    dist = jaxflows.as_distrax(flow, variables)
    lp = dist.log_prob(x)                                 # == flow.apply(variables, x)
    samples = dist.sample(seed=jax.random.PRNGKey(0), sample_shape=(4,))
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

__all__ = ["as_functions", "as_distrax", "fixed_point_diagnostics"]

Array = jax.Array
PyTree = Any

# Every rng stream a jaxflows module may draw from outside of ``init``.
RNG_STREAMS = ("dropout", "logdet", "sample", "noise")


def _rngs(rng: Optional[Array]):
    if rng is None:
        return {}
    keys = jax.random.split(rng, len(RNG_STREAMS))
    return dict(zip(RNG_STREAMS, keys))


def _leaf_dicts(tree) -> list:
    """The ``{"iterations", "residual", "not_converged"}`` dicts sown anywhere in ``tree``."""
    found = []

    def visit(node):
        if hasattr(node, "keys"):
            if set(node.keys()) == {"iterations", "residual", "not_converged"}:
                found.append(node)
                return
            for value in node.values():
                visit(value)
        elif isinstance(node, (tuple, list)):
            for value in node:
                visit(value)

    visit(tree)
    return found


def fixed_point_diagnostics(intermediates: PyTree, batch_size: int) -> Dict[str, Array]:
    """Per-example fixed-point diagnostics of an inverse, as arrays (jittable).

    Residual blocks invert ``y = x + g(x)`` by fixed-point iteration
    (:func:`jaxflows.ops.fixed_point_inverse`, settings
    :class:`~jaxflows.bijectors.residual_settings.FixedPointSolver`) and sow, per
    solve and example, ``iterations``, ``residual`` and ``not_converged`` into the
    ``"intermediates"`` collection. This reduces them over every block (and every
    step of a scanned stack) to one value per example:

    * ``"iterations"``: int32 ``[batch]``, the most iterations any block needed;
    * ``"residual"``: ``[batch]``, the largest final error estimate of any block;
    * ``"not_converged"``: bool ``[batch]``, whether any block stopped at its
      iteration cap without reaching its tolerance (the inverse is then inaccurate:
      raise ``FixedPointSolver.max_iter`` or check the blocks' Lipschitz constants);
    * ``"num_solves"``: int32 scalar, how many fixed-point solves there were (0 for
      flows whose inverse is in closed form: then the other entries are 0 / False).

    Args:
      intermediates: the ``"intermediates"`` collection returned by
        ``module.apply(..., mutable=["intermediates"])`` (or any tree containing it).
      batch_size: the batch size (the sown arrays' last axis).
    """
    found = _leaf_dicts(intermediates)
    out = {"iterations": jnp.zeros((batch_size,), jnp.int32),
           "residual": jnp.zeros((batch_size,), jnp.float32),
           "not_converged": jnp.zeros((batch_size,), bool),
           "num_solves": jnp.asarray(len(found), jnp.int32)}

    def per_example(a):
        a = jnp.asarray(a)
        return a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a[None]

    for d in found:
        out["iterations"] = jnp.maximum(
            out["iterations"], jnp.max(per_example(d["iterations"]), 0).astype(jnp.int32))
        residual = jnp.max(per_example(d["residual"]), 0)
        out["residual"] = jnp.maximum(out["residual"].astype(residual.dtype), residual)
        out["not_converged"] = out["not_converged"] | jnp.any(
            per_example(d["not_converged"]), 0)
    return out


def as_functions(module, variables: PyTree, *, train: bool = False, diagnostics: bool = False
                 ) -> Tuple[Callable[..., Tuple[Array, ...]], Callable[..., Tuple[Array, ...]]]:
    """Plain functions ``(forward_and_log_det, inverse_and_log_det)`` of a bijector or Flow.

    Args:
      module: any jaxflows bijector, or a :class:`~jaxflows.distributions.Flow`
        (anything with ``forward_and_log_det`` / ``inverse_and_log_det`` methods).
      variables: its variables, as returned by ``module.init``.
      train: passed to the module (``False``: deterministic evaluation). Running
        state (e.g. spectral-norm vectors) is not updated by these functions.
      diagnostics: the inverse also returns the fixed-point diagnostics of residual
        blocks (:func:`fixed_point_diagnostics`: per example ``iterations``,
        ``residual``, ``not_converged``, and ``num_solves``) as a third output.

    Returns:
      ``forward_and_log_det(x, context=None, rng=None) -> (y, log_det)`` and
      ``inverse_and_log_det(y, context=None, rng=None) -> (x, log_det)`` (with
      ``diagnostics=True``: ``(x, log_det, info)``), pure functions of their
      arguments (``variables`` are closed over), which can be jitted, vmapped over
      keys and differentiated. ``rng`` (a PRNG key), if given, seeds every
      stochastic part (``"logdet"`` estimators, ``"dropout"``).

    Example (a residual flow inverted with a deliberately low iteration cap)::

        flow = jaxflows.models.resflow((8, 8, 1), solver=dict(max_iter=2), ...)
        _, inv = jaxflows.as_functions(flow, variables, diagnostics=True)
        x, log_det, info = jax.jit(inv)(z)
        if info["not_converged"].any(): ...   # warn, or raise the cap
    """
    for name in ("forward_and_log_det", "inverse_and_log_det"):
        if not callable(getattr(module, name, None)):
            raise ValueError(
                f"as_functions: module must have a {name} method (a jaxflows bijector or "
                f"Flow), got {type(module).__name__}.")

    def forward_and_log_det(x, context=None, rng=None):
        return module.apply(variables, x, context=context, train=train, rngs=_rngs(rng),
                            method="forward_and_log_det")

    def inverse_and_log_det(y, context=None, rng=None):
        if not diagnostics:
            return module.apply(variables, y, context=context, train=train, rngs=_rngs(rng),
                                method="inverse_and_log_det")
        (x, log_det), state = module.apply(
            variables, y, context=context, train=train, rngs=_rngs(rng),
            method="inverse_and_log_det", mutable=["intermediates"])
        info = fixed_point_diagnostics(state.get("intermediates", {}), y.shape[0])
        return x, log_det, info

    return forward_and_log_det, inverse_and_log_det


@functools.lru_cache(maxsize=None)
def _distribution_class():
    import distrax  # deferred: heavy import

    class FlowDistribution(distrax.Distribution):
        """A jaxflows ``Flow`` with fixed variables, as a ``distrax.Distribution``.

        ``log_prob(value)`` accepts ``[*sample_shape, *event_shape]`` and returns
        ``[*sample_shape]``; ``sample(seed=key, sample_shape=...)`` draws at the given
        ``temperature``. A fixed ``context`` (batch 1, broadcast, or the full batch)
        makes it a conditional distribution p(x | context).
        """

        def __init__(self, flow, variables, *, temperature=1.0, context=None, rng=None,
                     dtype=jnp.float32):
            self._flow = flow
            self._variables = variables
            self._temperature = temperature
            self._context = context
            self._rng = rng
            self._dtype = jnp.dtype(dtype)
            self._event_shape = tuple(int(d) for d in flow.event_shape)

        @property
        def event_shape(self):
            return self._event_shape

        @property
        def batch_shape(self):
            return ()

        @property
        def dtype(self):
            return self._dtype

        @property
        def flow(self):
            return self._flow

        @property
        def variables(self):
            return self._variables

        def _context_for(self, n):
            c = self._context
            if c is None:
                return None
            if c.shape[0] == 1 and n != 1:
                return jnp.broadcast_to(c, (n,) + tuple(c.shape[1:]))
            if c.shape[0] != n:
                raise ValueError(
                    f"FlowDistribution: context has batch size {c.shape[0]}, but {n} "
                    "events were given; use a context of batch size 1 to broadcast.")
            return c

        def log_prob(self, value):
            value = jnp.asarray(value)
            ev = len(self._event_shape)
            if tuple(value.shape[value.ndim - ev:]) != self._event_shape or value.ndim < ev:
                raise ValueError(
                    f"FlowDistribution.log_prob: value must have shape "
                    f"[..., *{self._event_shape}], got {tuple(value.shape)}.")
            lead = value.shape[:value.ndim - ev]
            n = math.prod(lead)
            flat = value.reshape((n,) + self._event_shape)
            lp = self._flow.apply(self._variables, flat, context=self._context_for(n),
                                  rngs=_rngs(self._rng), method="log_prob")
            return lp.reshape(lead)

        def _sample_n(self, key, n):
            return self._flow.apply(self._variables, n, temperature=self._temperature,
                                    context=self._context_for(n), dtype=self._dtype,
                                    rngs={"sample": key}, method="sample")

        def _sample_n_and_log_prob(self, key, n):
            return self._flow.apply(self._variables, n, temperature=self._temperature,
                                    context=self._context_for(n), dtype=self._dtype,
                                    rngs={"sample": key}, method="sample_and_log_prob")

    return FlowDistribution


def as_distrax(flow, variables: PyTree, *, temperature=1.0, context: Optional[Array] = None,
               rng: Optional[Array] = None, dtype=jnp.float32):
    """Wraps a :class:`~jaxflows.distributions.Flow` as a ``distrax.Distribution``.

    Args:
      flow: a ``Flow`` module (e.g. from :func:`jaxflows.models.glow`).
      variables: its variables (``flow.init(...)``).
      temperature: sampling temperature, finite and ``> 0`` (``1.0`` samples the
        model; a ``ValueError`` otherwise). ``log_prob`` is always the model's density.
      context: optional fixed conditioning input (batch 1, or the batch of the events).
      rng: optional PRNG key for stochastic log-det estimators used by ``log_prob``.
      dtype: dtype of the samples.

    Returns:
      A ``distrax.Distribution`` with event shape ``flow.event_shape`` and batch
      shape ``()``, whose ``log_prob`` equals ``flow.apply(variables, x)``.
    """
    for name in ("log_prob", "sample", "event_shape"):
        if not hasattr(flow, name):
            raise ValueError(
                f"as_distrax: flow must be a jaxflows Flow (with {name}), "
                f"got {type(flow).__name__}.")
    from jaxflows.distributions.flow import check_temperature
    check_temperature(temperature, "as_distrax")
    cls = _distribution_class()
    return cls(flow, variables, temperature=temperature, context=context, rng=rng, dtype=dtype)
