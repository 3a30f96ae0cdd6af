"""Using jaxflows bijectors and flows from code that knows nothing about Flax.

* :func:`as_functions` closes a module over its variables and returns two plain,
  jittable, differentiable functions ``forward_and_log_det(x, context=None, rng=None)``
  and ``inverse_and_log_det(y, context=None, rng=None)``.
* :func:`as_distrax` wraps a :class:`~jaxflows.distributions.Flow` and its variables
  as a ``distrax.Distribution`` (``log_prob``, ``sample(seed=..., sample_shape=...)``,
  ``sample_and_log_prob``), usable with any distrax/optax code.

distrax is imported only when :func:`as_distrax` is first called (it pulls in
TensorFlow Probability, which is slow to import).

Example::

    fwd, inv = jaxflows.as_functions(flow, variables)
    z, log_det = jax.jit(fwd)(x)
    dist = jaxflows.as_distrax(flow, variables)
    lp = dist.log_prob(x)                                 # == flow.apply(variables, x)
    samples = dist.sample(seed=jax.random.PRNGKey(0), sample_shape=(4,))
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp

__all__ = ["as_functions", "as_distrax"]

Array = jax.Array
PyTree = Any

# Every rng stream a jaxflows module may draw from outside of ``init``.
RNG_STREAMS = ("dropout", "logdet", "sample", "noise")


def _rngs(rng: Optional[Array]):
    if rng is None:
        return {}
    keys = jax.random.split(rng, len(RNG_STREAMS))
    return dict(zip(RNG_STREAMS, keys))


def as_functions(module, variables: PyTree, *, train: bool = False
                 ) -> Tuple[Callable[..., Tuple[Array, Array]], Callable[..., Tuple[Array, Array]]]:
    """Plain functions ``(forward_and_log_det, inverse_and_log_det)`` of a bijector or Flow.

    Args:
      module: any jaxflows bijector, or a :class:`~jaxflows.distributions.Flow`
        (anything with ``forward_and_log_det`` / ``inverse_and_log_det`` methods).
      variables: its variables, as returned by ``module.init``.
      train: passed to the module (``False``: deterministic evaluation). Running
        state (e.g. spectral-norm vectors) is not updated by these functions.

    Returns:
      ``forward_and_log_det(x, context=None, rng=None) -> (y, log_det)`` and
      ``inverse_and_log_det(y, context=None, rng=None) -> (x, log_det)``, pure
      functions of their arguments (``variables`` are closed over), which can be
      jitted, vmapped over keys and differentiated. ``rng`` (a PRNG key), if given,
      seeds every stochastic part (``"logdet"`` estimators, ``"dropout"``).
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
        return module.apply(variables, y, context=context, train=train, rngs=_rngs(rng),
                            method="inverse_and_log_det")

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
      temperature: sampling temperature (``1.0`` samples the model). ``log_prob``
        is always the model's density.
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
    cls = _distribution_class()
    return cls(flow, variables, temperature=temperature, context=context, rng=rng, dtype=dtype)
