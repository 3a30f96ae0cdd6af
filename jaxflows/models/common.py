"""Pieces shared by the model factories: shape checks, the pixel preprocessing, the
split factories of multi-scale flows, and the error for renamed arguments.

Every factory in :mod:`jaxflows.models` takes dequantised pixel values in ``[0, num_bins)``
and starts with :func:`preprocessing_bijectors`, whose ``ScaleToUnit`` log-det
``-D log(num_bins)`` makes ``Flow.log_prob`` the density of the pixel values.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping

from jaxflows.bijectors.base import Bijector, Identity
from jaxflows.bijectors.preprocessing import LogitTransform, ScaleToUnit, Shift
from jaxflows.bijectors.reshape import Split

__all__ = ["PREPROCESSING", "check_image_shape", "preprocessing_bijectors", "identity_split",
           "learned_split", "renamed_arguments"]

PREPROCESSING = ("shift", "logit")


def check_image_shape(image_shape, factor: int, who: str) -> tuple:
    """Validates ``image_shape = (H, W, C)`` with ``H`` and ``W`` divisible by ``factor``.

    Returns the shape as a tuple of ints; raises a ``ValueError`` naming ``who`` otherwise.
    """
    try:
        shape = tuple(int(d) for d in image_shape)
    except TypeError:
        raise ValueError(f"{who}: image_shape must be (height, width, channels), "
                         f"got {image_shape!r}.") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{who}: image_shape must be (height, width, channels) of positive "
                         f"ints, got {image_shape!r}.")
    if shape[0] % factor or shape[1] % factor:
        raise ValueError(f"{who}: image_shape height and width must be divisible by {factor} "
                         f"(2 ** number of squeezes), got {shape}.")
    return shape


def preprocessing_bijectors(num_bins: float, kind: str, alpha: float, who: str) -> list:
    """``[ScaleToUnit(num_bins), Shift(-0.5) | LogitTransform(alpha)]``.

    ``kind="shift"`` is Glow's ``x / num_bins - 0.5``; ``kind="logit"`` is Real NVP's
    ``logit(alpha + (1 - 2 alpha) x / num_bins)``.
    """
    if kind not in PREPROCESSING:
        raise ValueError(f"{who}: preprocessing must be one of {PREPROCESSING}, got {kind!r}.")
    if not num_bins > 1:
        raise ValueError(f"{who}: num_bins must be > 1, got {num_bins!r}.")
    last = Shift(-0.5) if kind == "shift" else LogitTransform(alpha)
    return [ScaleToUnit(num_bins), last]


def identity_split(level: int) -> Bijector:
    """Plain factor-out (Real NVP, i-ResNet): the factored-out half keeps a fixed
    ``N(0, I)`` prior. A ``make_split`` for :func:`~jaxflows.models.multiscale`.
    """
    del level
    return Identity()


def learned_split(level: int) -> Bijector:
    """Glow's learned conditional prior on the factored-out half (:class:`Split`)."""
    del level
    return Split()


def renamed_arguments(renames: Mapping[str, str]) -> Callable:
    """Decorator: a call with an old keyword name raises a ``TypeError`` naming the new one.

    ``@renamed_arguments({"num_levels": "num_bins"})`` on a factory turns
    ``glow(shape, num_levels=17)`` into ``TypeError: glow: the argument `num_levels` was
    renamed `num_bins`; pass num_bins=17.`` The wrapped signature is unchanged.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    raise TypeError(f"{fn.__name__}: the argument `{old}` was renamed `{new}`; "
                                    f"pass {new}={kwargs[old]!r}.")
            return fn(*args, **kwargs)
        return wrapper
    return decorate


RENAMED = {"num_levels": "num_bins"}
