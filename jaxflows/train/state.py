"""``TrainState``: everything a training run needs to continue exactly where it stopped."""
from __future__ import annotations

from typing import Any, Dict

import flax
import jax
import jax.numpy as jnp

__all__ = ["TrainState", "ema_update"]

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """The pytree checkpointed by the trainer (all leaves are arrays).

    Attributes:
      step: number of optimiser steps taken (int32 scalar), including skipped ones.
      params: the trainable ``"params"`` collection.
      opt_state: the optax state (includes ``apply_if_finite``'s counters).
      ema_params: exponential moving average of ``params`` (used at evaluation).
      model_state: the non-parameter variable collections of the model, e.g.
        ``"buffers"`` (fixed constants, never updated) and ``"lipschitz"``
        (power-iteration vectors of residual flows, updated by each train step).
      rng: the run's base PRNG key; the key of step ``s`` is ``fold_in(rng, s)``, so
        randomness does not depend on how a run was split into restarts.
      num_skipped: how many steps had a non-finite loss or gradient and left the
        parameters unchanged.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    model_state: Dict[str, PyTree]
    rng: jax.Array
    num_skipped: jax.Array

    def variables(self, use_ema: bool = False) -> Dict[str, PyTree]:
        """The ``variables`` dict for ``flow.apply`` (EMA params if ``use_ema``)."""
        return {"params": self.ema_params if use_ema else self.params, **self.model_state}


def ema_update(ema: PyTree, params: PyTree, decay: float, step: jax.Array) -> PyTree:
    """``ema <- d ema + (1 - d) params`` with ``d = min(decay, (1 + s) / (10 + s))``.

    The step-dependent cap (as in TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``) lets the average follow the fast early changes of the
    parameters instead of remembering the initialisation for ``1 / (1 - decay)``
    steps. ``step`` is the number of updates already applied.
    """
    s = step.astype(jnp.float32)
    d = jnp.minimum(jnp.float32(decay), (1.0 + s) / (10.0 + s))

    def update(e, p):
        return (d * e.astype(jnp.float32) + (1.0 - d) * p.astype(jnp.float32)).astype(e.dtype)

    return jax.tree_util.tree_map(update, ema, params)
