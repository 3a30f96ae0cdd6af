"""Small helpers shared by networks and bijectors: parameter dtypes, channel checks, integer
argument checks and the per-channel statistics of data-dependent initialisation (ActNorm).
"""
from __future__ import annotations

import functools
import numbers
from typing import Any, Mapping, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["param_dtype", "check_channels", "check_int_args", "channel_moments"]


def check_int_args(who: str, values: Mapping[str, Any],
                   minimum: Union[int, Mapping[str, int]] = 1) -> None:
    """Raises ``ValueError("<who>: `name` must be a positive int, got ...")`` for the first
    value of ``values`` (name -> value) that is not an int (bools are refused) or is below
    its ``minimum`` (one for all, or per name; default 1).
    """
    for name, value in values.items():
        low = minimum[name] if isinstance(minimum, Mapping) else minimum
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or value < low):
            what = "a positive int" if low == 1 else f"an int >= {low}"
            raise ValueError(f"{who}: `{name}` must be {what}, got {value!r}.")


def param_dtype(dtype):
    """Parameters are kept in at least float32 (float64 if the input is float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def check_channels(module: nn.Module, collection: str, name: str, x: jax.Array,
                   arg: str = "x") -> None:
    """Raises a ``ValueError`` if ``x``'s last axis differs from the initialised size.

    ``name`` is a variable of ``module`` in ``collection`` whose last axis has the
    channel count the module was initialised with. Does nothing at ``init``.
    """
    if module.has_variable(collection, name):
        expected = module.get_variable(collection, name).shape[-1]
        if x.shape[-1] != expected:
            raise ValueError(
                f"{type(module).__name__}: input `{arg}` has {x.shape[-1]} channels "
                f"(last axis of shape {tuple(x.shape)}), but the module was initialised "
                f"with {expected} channels.")


@functools.partial(jax.jit, static_argnames=("dtype", "eps"))
def channel_moments(x, dtype, eps):
    """Per-channel mean and ``std + eps`` of ``x`` over every axis but the last (no gradient)."""
    x = jax.lax.stop_gradient(x).astype(dtype)
    axes = tuple(range(x.ndim - 1))
    return jnp.mean(x, axes), jnp.std(x, axes) + eps
