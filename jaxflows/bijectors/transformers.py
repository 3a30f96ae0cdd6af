"""Elementwise transformers: monotone scalar maps whose parameters come from a network.

A *transformer* (the word of Papamakarios et al. 2021, "Normalizing Flows for
Probabilistic Modeling and Inference", Sec. 3.1) is a strictly increasing map
``tau(x; theta)`` applied to every entry of an array, with its own parameter vector
``theta`` per entry. A coupling layer (:class:`~jaxflows.bijectors.Coupling`) or an
autoregressive layer computes the ``theta`` of each entry with a *conditioner* network
and hands them to the transformer; the transformer knows nothing of masks, networks or
orderings, so the same transformer serves couplings and masked autoregressive flows.
This is the split of flowjax's ``Coupling(transformer=...)`` and distrax's
``MaskedCoupling(bijector=...)``.

The protocol
------------
A transformer is an immutable, hashable object with **no trainable parameters of
its own** (it is a static argument of jitted functions and a field of Flax modules)
that provides:

* ``num_params: int`` -- the number ``P`` of parameters per entry (a class attribute,
  or a property when it depends on the transformer's settings, e.g. a spline's bins);
* ``forward(x, params) -> (y, log_det)``: ``y = tau(x; theta)`` and the elementwise
  ``log_det = log(d tau / d x)``;
* ``inverse(y, params) -> (x, log_det)``: ``x = tau^{-1}(y; theta)`` and the
  elementwise ``log_det = log(d tau^{-1} / d y)``, which is **minus** the forward
  log-det at the corresponding ``x``.

with the contract

* ``params`` has shape ``x.shape + (num_params,)``: ``params[..., j]`` is parameter
  ``j`` of the entry at the same position of ``x``; any real values are allowed
  (the transformer maps them to its constrained parameters, e.g. a positive scale);
* the map is elementwise (entry ``i`` of ``y`` depends on ``x[i]`` and
  ``params[i]`` only), strictly increasing in ``x`` for every ``params``, and both
  outputs have the shape (and dtype) of ``x``;
* where possible a zero ``params`` vector gives the identity (``tau(x; 0) = x``,
  log-det 0), so that a conditioner whose last layer is zero-initialised starts the
  flow at the identity map. Set ``identity_at_zero = True`` only if this holds
  **exactly** in floating point (``tau(x; 0) == x`` bit for bit, as ``x * 1 + 0``):
  masked couplings then skip selecting ``x`` on the kept entries. It holds for
  :class:`Affine` (both scale functions) and :class:`Additive`; a map that is the
  identity only up to rounding (e.g. ``sinh(asinh(x))``) leaves it ``False``, the
  default, and is still exactly the identity on a coupling's kept entries.

Subclass :class:`Transformer` (a frozen dataclass) to write one::

    @dataclasses.dataclass(frozen=True)
    class Translate(Transformer):
        num_params = 1
        def forward(self, x, params):
            return x + params[..., 0], jnp.zeros_like(x)
        def inverse(self, y, params):
            return y - params[..., 0], jnp.zeros_like(y)

    Coupling(transformer=Translate(), mask="checkerboard", hidden_channels=64)

References: Dinh, Krueger & Bengio 2015 (NICE, additive coupling, Eq. 5);
Dinh, Sohl-Dickstein & Bengio 2017 (Real NVP, affine coupling, Eq. 7-9);
Kingma & Dhariwal 2018 (Glow, Table 1 and the reference code's ``sigmoid(h + 2)``
scale).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import ClassVar, Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["Transformer", "Affine", "Additive"]

_SCALE_FNS = ("sigmoid", "exp")
_GLOW_SCALE_SHIFT = 2.0


@dataclasses.dataclass(frozen=True)
class Transformer:
    """Base class of elementwise transformers; see the module docstring for the contract.

    Subclasses are frozen dataclasses (immutable and hashable, so they can be static
    arguments of ``jax.jit`` and fields of Flax modules) and define ``num_params``,
    :meth:`forward` and :meth:`inverse`.
    """

    #: Parameters per transformed entry (the conditioner outputs this many per entry).
    num_params: ClassVar[int]
    #: Whether ``params = 0`` gives exactly (bit for bit) the identity, with log-det 0.
    identity_at_zero: ClassVar[bool] = False

    def forward(self, x: Array, params: Array) -> Tuple[Array, Array]:
        """``y = tau(x; params)`` and ``log(d tau / d x)``, both of ``x``'s shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward().")

    def inverse(self, y: Array, params: Array) -> Tuple[Array, Array]:
        """``x = tau^{-1}(y; params)`` and ``log(d tau^{-1} / d y)``, both of ``y``'s shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement inverse().")


@dataclasses.dataclass(frozen=True)
class Additive(Transformer):
    """Additive transformer (NICE, Dinh et al. 2015, Eq. 5): ``y = x + t``, log-det 0.

    ``num_params = 1``: ``params[..., 0] = t``. Identity at zero parameters.
    """

    num_params: ClassVar[int] = 1
    identity_at_zero: ClassVar[bool] = True

    def forward(self, x, params):
        return x + params[..., 0], jnp.zeros_like(x)

    def inverse(self, y, params):
        return y - params[..., 0], jnp.zeros_like(y)


def check_affine_options(scale_fn: str, clamp: Optional[float], who: str) -> None:
    """Raises a ``ValueError`` naming ``who`` for an unknown ``scale_fn`` or a bad ``clamp``."""
    if scale_fn not in _SCALE_FNS:
        raise ValueError(f"{who}: `scale_fn` must be one of {_SCALE_FNS}, got {scale_fn!r}.")
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, numbers.Real)
                              or not clamp > 0):
        raise ValueError(f"{who}: `clamp` must be positive or None, got {clamp!r}.")


@dataclasses.dataclass(frozen=True)
class Affine(Transformer):
    """Affine transformer of Real NVP and Glow; ``num_params = 2``.

    ``params[..., 0] = t`` (shift) and ``params[..., 1] = h`` (the unconstrained
    scale parameter). Two parameterisations:

    * ``scale_fn="sigmoid"`` (Glow, Kingma & Dhariwal 2018, Table 1 and the reference
      code): ``y = (x + t) * sigma`` with ``sigma = sigmoid(h + 2) / sigmoid(2)``,
      ``log_det = log sigma``. Glow's scale is ``sigmoid(h + 2)``; dividing by the
      constant ``sigmoid(2)`` (a constant log-det offset that the next ActNorm
      absorbs) makes ``h = t = 0`` exactly the identity. ``sigma`` lies in
      ``(0, 1 / sigmoid(2)) = (0, 1.135)``, so the log-scale is bounded above. ``clamp``
      is ignored.
    * ``scale_fn="exp"`` (Real NVP, Dinh et al. 2017, Eq. 7-8): ``y = x * exp(s) + t``
      with the soft clamp ``s = c * tanh(h / c)`` (``s = h`` if ``clamp`` is
      ``None``), ``log_det = s``.

    Both are the identity at zero parameters.

    Args:
      scale_fn: ``"sigmoid"`` or ``"exp"``.
      clamp: ``c > 0`` of the soft clamp for ``"exp"``, or ``None`` for no clamp.
    """

    scale_fn: str = "sigmoid"
    clamp: Optional[float] = 2.0

    num_params: ClassVar[int] = 2
    identity_at_zero: ClassVar[bool] = True

    def __post_init__(self):
        check_affine_options(self.scale_fn, self.clamp, "Affine")
        if self.clamp is not None:  # one static value (and hash) for 2, 2.0 and np.float32(2)
            object.__setattr__(self, "clamp", float(self.clamp))

    def log_scale(self, h: Array) -> Array:
        """The log-scale as a function of the raw parameter ``h`` (see the class docstring)."""
        if self.scale_fn == "sigmoid":
            return (jax.nn.log_sigmoid(h + _GLOW_SCALE_SHIFT)
                    - jax.nn.log_sigmoid(jnp.asarray(_GLOW_SCALE_SHIFT, h.dtype)))
        return h if self.clamp is None else self.clamp * jnp.tanh(h / self.clamp)

    def forward(self, x, params):
        shift, log_scale = params[..., 0], self.log_scale(params[..., 1])
        if self.scale_fn == "sigmoid":                     # y = (x + t) * sigma
            return (x + shift) * jnp.exp(log_scale), log_scale
        return x * jnp.exp(log_scale) + shift, log_scale    # y = x * exp(s) + t

    def inverse(self, y, params):
        shift, log_scale = params[..., 0], self.log_scale(params[..., 1])
        if self.scale_fn == "sigmoid":
            return y * jnp.exp(-log_scale) - shift, -log_scale
        return (y - shift) * jnp.exp(-log_scale), -log_scale
