"""The bijector protocol, and the wrappers every flow is assembled from.

Sign convention (written once, here and in the README)
-------------------------------------------------------
``forward`` maps **data to latent**: it is the density (likelihood) direction.
For a bijector ``f`` and a base density ``p_Z``,

    log p_X(x) = log p_Z(f(x)) + log |det df/dx (x)|,

so ``forward_and_log_det(x)`` returns ``(f(x), log|det J_f(x)|)`` and
``inverse_and_log_det(y)`` returns ``(f^{-1}(y), log|det J_{f^{-1}}(y)|)``, whose
log-det is minus the forward one at ``x = f^{-1}(y)``. Sampling runs ``inverse``.

Shapes: inputs are batched, ``[batch, *event]`` (images NHWC); log-dets have
shape ``[batch]``.

Keywords accepted by every bijector:

* ``context``: a conditioning input (class embedding, low-resolution image, ...),
  batched like ``x``; most bijectors ignore it.
* ``train``: ``True`` selects the stochastic training estimators (e.g. Russian
  roulette log-dets, dropout in conditioners) and updates running state (spectral
  norm power-iteration vectors, in their own variable collection); ``False`` is
  deterministic evaluation.

Bijectors are Flax Linen modules: parameters live outside the module, in the
``variables`` pytree, so ``module.apply(variables, x, method=...)`` is a pure
function of ``(variables, x)``. Everything in ``"params"`` is trainable and may be
set to any value without breaking invertibility; fixed buffers live elsewhere.

Writing a bijector
------------------
Subclass :class:`Bijector` and implement one ``@nn.compact`` method,
``transform(self, x, inverse, context, train) -> (y, log_det)``. Because the
compact method is shared by both directions, parameters are created once (on
whichever direction runs first, usually ``forward`` at ``init``) and shared.
Alternatively use ``setup`` and override ``forward_and_log_det`` and
``inverse_and_log_det`` directly.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any

__all__ = ["Bijector", "Chain", "Inverse", "Repeat", "Identity", "sum_except_batch", "check_rank"]

_RANK_NAMES = {2: "a [batch, D] vector batch (rank 2)",
               4: "an NHWC image batch [batch, height, width, channels] (rank 4)"}


def check_rank(x: Array, ranks: Optional[Sequence[int]], who: str, arg: str = "x") -> None:
    """Raises a ``ValueError`` naming ``who`` and ``arg`` unless ``x`` has one of ``ranks``.

    ``ranks=None`` accepts any batched input (rank >= 2, ``[batch, *event]``).
    """
    if ranks is None:
        if x.ndim >= 2:
            return
        expected = "batched, [batch, ..., channels] (rank >= 2)"
    else:
        if x.ndim in ranks:
            return
        expected = " or ".join(_RANK_NAMES.get(r, f"rank {r}") for r in ranks)
    raise ValueError(f"{who}: input `{arg}` must be {expected}; got shape {tuple(x.shape)}.")


def sum_except_batch(x: Array) -> Array:
    """Sum over every axis but the first: ``[batch, ...] -> [batch]``."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


class Bijector(nn.Module):
    """Base class of all jaxflows bijectors (forward = data -> latent).

    Subclasses implement :meth:`transform` (one ``@nn.compact`` method for both
    directions) or override both :meth:`forward_and_log_det` and
    :meth:`inverse_and_log_det`.

    The input's rank is checked here, once for every bijector that uses
    :meth:`transform`: ``input_ranks`` (a class attribute) lists the accepted ranks, e.g.
    ``(4,)`` for NHWC images or ``(2, 4)`` for vectors and images; ``None`` (default)
    accepts any batched input of rank >= 2. A wrong rank is a ``ValueError`` naming the
    bijector and the argument (``x`` forward, ``y`` inverse).
    """

    input_ranks: ClassVar[Optional[Tuple[int, ...]]] = None

    def transform(self, x: Array, inverse: bool, context: Optional[Array],
                  train: bool) -> Tuple[Array, Array]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement transform() or both "
            "forward_and_log_det() and inverse_and_log_det().")

    def forward_and_log_det(self, x: Array, *, context: Optional[Array] = None,
                            train: bool = False) -> Tuple[Array, Array]:
        """``y = f(x)`` and ``log|det df/dx|`` of shape ``[batch]``."""
        check_rank(x, self.input_ranks, type(self).__name__, "x")
        return self.transform(x, False, context, train)

    def inverse_and_log_det(self, y: Array, *, context: Optional[Array] = None,
                            train: bool = False) -> Tuple[Array, Array]:
        """``x = f^{-1}(y)`` and ``log|det df^{-1}/dy|`` of shape ``[batch]``."""
        check_rank(y, self.input_ranks, type(self).__name__, "y")
        return self.transform(y, True, context, train)

    def forward(self, x: Array, **kwargs) -> Array:
        return self.forward_and_log_det(x, **kwargs)[0]

    def inverse(self, y: Array, **kwargs) -> Array:
        return self.inverse_and_log_det(y, **kwargs)[0]

    def __call__(self, x: Array, **kwargs) -> Tuple[Array, Array]:
        """Same as :meth:`forward_and_log_det`, so ``module.init(rng, x)`` works."""
        return self.forward_and_log_det(x, **kwargs)


class Identity(Bijector):
    """``f(x) = x`` with zero log-det."""

    def transform(self, x, inverse, context, train):
        return x, jnp.zeros(x.shape[:1], x.dtype)


class Chain(Bijector):
    """Composition: forward applies ``bijectors[0]`` first, then ``bijectors[1]`` ...

    So ``Chain([f1, f2]).forward(x) = f2(f1(x))`` (data flows left to right towards
    the latent) and the inverse runs the list backwards. Log-dets add up.
    """

    bijectors: Sequence[Bijector]

    def forward_and_log_det(self, x, *, context=None, train=False):
        total = jnp.zeros(x.shape[:1], x.dtype)
        for b in self.bijectors:
            x, ld = b.forward_and_log_det(x, context=context, train=train)
            total = total + ld
        return x, total

    def inverse_and_log_det(self, y, *, context=None, train=False):
        total = jnp.zeros(y.shape[:1], y.dtype)
        for b in reversed(self.bijectors):
            y, ld = b.inverse_and_log_det(y, context=context, train=train)
            total = total + ld
        return y, total


class Inverse(Bijector):
    """Swaps the two directions of ``bijector`` (its forward becomes our inverse)."""

    bijector: Bijector

    def forward_and_log_det(self, x, *, context=None, train=False):
        return self.bijector.inverse_and_log_det(x, context=context, train=train)

    def inverse_and_log_det(self, y, *, context=None, train=False):
        return self.bijector.forward_and_log_det(y, context=context, train=train)


class _ScanBody(nn.Module):
    """One step of :class:`Repeat`, in the ``(carry, xs) -> (carry, ys)`` form of ``nn.scan``."""

    make_step: Callable[[], Bijector]
    inverse: bool
    train: bool

    @nn.compact
    def __call__(self, carry, context):
        x, total = carry
        step = self.make_step()
        if self.inverse:
            y, ld = step.inverse_and_log_det(x, context=context, train=self.train)
        else:
            y, ld = step.forward_and_log_det(x, context=context, train=self.train)
        return (y, total + ld), None


# Every variable collection is stacked along a leading "step" axis; every rng
# stream is split so that each step draws its own randomness.
_SCAN_COLLECTIONS = True
_SCAN_RNGS = ("params", "dropout", "logdet", "sample", "noise")


def check_unroll(unroll: Union[int, bool], who: str) -> None:
    """Raises a ``ValueError`` naming ``who`` unless ``unroll`` is a bool or an int >= 1."""
    if not (isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1)):
        raise ValueError(f"{who}: unroll must be True, False or an int >= 1, got {unroll!r}.")


class Repeat(Bijector):
    """``num_steps`` identical (but separately parameterised) steps, under ``nn.scan``.

    The step is traced and compiled **once**, whatever ``num_steps`` is, so compile
    time does not grow with depth. Parameters of the steps are stacked along a
    leading axis of length ``num_steps`` (``variables['params']['steps'][...]``).

    Args:
      make_step: a zero-argument callable returning a fresh step bijector, e.g.
        ``lambda: Chain([ActNorm(), Conv1x1(), AffineCoupling(hidden_channels=64)])``.
        A factory (not an instance) is taken so that each scanned step builds its
        submodules in its own scope.
      num_steps: number of steps (>= 1).
      remat: rematerialise each step in the backward pass (``nn.remat``): memory
        for activations no longer grows with depth, at the cost of a second forward.
      unroll: steps per iteration of the compiled loop (``lax.scan``'s ``unroll``);
        ``True`` unrolls all of them. The default 1 compiles one step whatever
        ``num_steps`` is; unrolling trades compile time (which then grows with
        depth) for step time on CPU, where the loop's stacked activations are
        written and re-read through dynamic slices. Parameters are stacked the same
        way whatever ``unroll`` is, so checkpoints are interchangeable.
    """

    make_step: Callable[[], Bijector]
    num_steps: int
    remat: bool = False
    unroll: Union[int, bool] = 1

    def _scan(self, x, inverse, context, train):
        if self.num_steps < 1:
            raise ValueError(f"Repeat: num_steps must be >= 1, got {self.num_steps}.")
        check_unroll(self.unroll, "Repeat")
        body = _ScanBody
        if self.remat:
            body = nn.remat(body, static_argnums=())
        scanned = nn.scan(
            body,
            variable_axes={_SCAN_COLLECTIONS: 0},
            split_rngs={name: True for name in _SCAN_RNGS},
            in_axes=nn.broadcast,
            length=self.num_steps,
            reverse=inverse,
            unroll=self.unroll,
        )
        step = scanned(self.make_step, inverse, train, name="steps")
        (y, total), _ = step((x, jnp.zeros(x.shape[:1], x.dtype)), context)
        return y, total

    @nn.compact
    def transform(self, x, inverse, context, train):
        return self._scan(x, inverse, context, train)
