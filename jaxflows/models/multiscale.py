"""The multi-scale architecture of Real NVP and Glow, as one bijector.

Dinh et al. 2017 ("Density estimation using Real NVP", Sec. 3.6, Fig. 4) and Kingma &
Dhariwal 2018 ("Glow", Sec. 3, Fig. 2): at every level (scale) the image is squeezed
(2x2 space-to-depth), transformed by ``K`` flow steps, and half of its channels are
factored out; the other half continues to the next level. The factored-out half gets
a learned conditional Gaussian prior (Glow's ``split2d``), implemented by
:class:`~jaxflows.bijectors.reshape.Split`, which *standardises* it so that the whole
flow has a standard normal base.

Level ``l`` of :class:`MultiScale` (``l = 0 .. L-1``) applies, in the forward
(data -> latent) direction:

    pre_l (optional, at the level's input resolution; Real NVP's checkerboard couplings)
    -> Squeeze (every level, or every level but the last if ``squeeze_last=False``)
    -> level_l (the flow steps, typically ``Repeat`` of K steps under ``nn.scan``)
    -> Split (every level but the last): channels [:C/2] go on to level l+1,
       channels [C/2:] (standardised) are factored out.

Latent layout
-------------
The latent has **the same shape as the input image** ``[B, H, W, C]``: at every level
the factored-out channels are concatenated back after the output of the deeper levels
(``concat(deeper(z1), eps2)`` along channels) and the level's squeeze is undone
(depth-to-space). So ``Flow.latent_shape == event_shape``, samples are drawn as one
``N(0, T^2 I)`` image, and the latent can be viewed as an image. Which coordinates hold
which level is fixed by the construction: for a 3-level Glow on ``[H, W, C]``, the
``2C`` channels ``[2C:4C)`` of ``squeeze(z)`` are level 0's factored-out part, and so
on. Every reshuffle is a permutation (log-det 0).

Conditioning: ``context`` is passed to every step and every ``Split``. An image context
``[B, H, W, K]`` with the input's spatial size is squeezed along with the data at every
level (so it always matches the current resolution); any other context (e.g. a class
embedding ``[B, K]``) is passed unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxflows.bijectors.base import Bijector, Identity, Repeat, check_unroll
from jaxflows.bijectors.reshape import squeeze2d, unsqueeze2d
from jaxflows.models.common import learned_split

__all__ = ["MultiScale", "multiscale"]

Array = jax.Array
LevelFactory = Callable[[int], Optional[Bijector]]


def _squeeze_context(context: Optional[Array], x: Array) -> Optional[Array]:
    """Squeezes an image context (an array) of ``x``'s resolution along with ``x``.

    Other contexts pass through: vectors, image contexts of other resolutions, and context
    objects such as :class:`~jaxflows.bijectors.LevelContext` (one map per level, picked
    by resolution where used).
    """
    if (isinstance(context, (jax.Array, np.ndarray)) and context.ndim == 4
            and context.shape[1:3] == x.shape[1:3]):
        return squeeze2d(context)
    return context


class MultiScale(Bijector):
    """``levels`` levels of [pre ->] squeeze -> steps -> split (see the module docstring).

    Attributes:
      levels: number of levels ``L >= 1``.
      make_level: ``level -> Bijector`` (or ``None``): the transform applied after the
        level's squeeze, e.g. ``Repeat`` of ``K`` Glow steps. Called once per level.
      make_pre: optional ``level -> Bijector`` (or ``None``) applied before the
        squeeze, at the level's input resolution (Real NVP's checkerboard couplings).
      make_split: ``level -> Bijector`` for levels ``0 .. L-2`` (default
        :class:`~jaxflows.bijectors.reshape.Split`, Glow's learned prior); it must map
        ``[B, h, w, c]`` to the same shape and leave channels ``[:c/2]`` unchanged.
        ``lambda l: Identity()`` gives a plain factor-out with a fixed ``N(0, I)``
        prior on the factored-out half (Real NVP, Residual Flows).
      squeeze_last: whether the last level starts with a squeeze (Glow: yes; Real NVP's
        last level is four checkerboard couplings at the same resolution: no).

    Input: ``[B, H, W, C]`` with ``H`` and ``W`` divisible by ``2 ** n`` (``n`` the
    number of squeezes); output: the latent, same shape (see "Latent layout").
    """

    levels: int
    make_level: LevelFactory
    make_pre: Optional[LevelFactory] = None
    make_split: Optional[LevelFactory] = None
    squeeze_last: bool = True

    def setup(self):
        if not isinstance(self.levels, int) or self.levels < 1:
            raise ValueError(f"MultiScale: levels must be an int >= 1, got {self.levels!r}.")
        make_split = self.make_split or learned_split

        def build(factory, l):
            b = None if factory is None else factory(l)
            return Identity() if b is None else b

        self.pre = [build(self.make_pre, l) for l in range(self.levels)]
        self.steps = [build(self.make_level, l) for l in range(self.levels)]
        self.splits = [make_split(l) for l in range(self.levels - 1)]

    def _squeezes(self, level: int) -> bool:
        return level < self.levels - 1 or self.squeeze_last

    def _check(self, x: Array, arg: str) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"MultiScale: {arg} must be a batch of NHWC images of rank 4, "
                f"got shape {tuple(x.shape)}.")
        n = sum(self._squeezes(l) for l in range(self.levels))
        f = 2 ** n
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(
                f"MultiScale: {arg} height and width must be divisible by 2**{n} = {f} for "
                f"{self.levels} levels with {n} squeezes, got shape {tuple(x.shape)}.")

    def forward_and_log_det(self, x, *, context=None, train=False):
        self._check(x, "x")
        total = jnp.zeros(x.shape[:1], x.dtype)
        factored = []
        ctx = context
        for l in range(self.levels):
            x, ld = self.pre[l].forward_and_log_det(x, context=ctx, train=train)
            total = total + ld
            if self._squeezes(l):
                ctx = _squeeze_context(ctx, x)
                x = squeeze2d(x)
            x, ld = self.steps[l].forward_and_log_det(x, context=ctx, train=train)
            total = total + ld
            if l < self.levels - 1:
                x, ld = self.splits[l].forward_and_log_det(x, context=ctx, train=train)
                total = total + ld
                half = x.shape[-1] // 2
                factored.append(x[..., half:])
                x = x[..., :half]
        # Place the factored-out parts back and undo the squeezes: latent shape == input shape.
        for l in reversed(range(self.levels)):
            if l < self.levels - 1:
                x = jnp.concatenate([x, factored[l]], axis=-1)
            if self._squeezes(l):
                x = unsqueeze2d(x)
        return x, total

    def inverse_and_log_det(self, y, *, context=None, train=False):
        self._check(y, "y")
        total = jnp.zeros(y.shape[:1], y.dtype)
        factored, ctx_pre, ctx_post = [], [], []
        ctx = context
        for l in range(self.levels):
            ctx_pre.append(ctx)
            if self._squeezes(l):
                ctx = _squeeze_context(ctx, y)
                y = squeeze2d(y)
            ctx_post.append(ctx)
            if l < self.levels - 1:
                half = y.shape[-1] // 2
                factored.append(y[..., half:])
                y = y[..., :half]
        for l in reversed(range(self.levels)):
            if l < self.levels - 1:
                y = jnp.concatenate([y, factored[l]], axis=-1)
                y, ld = self.splits[l].inverse_and_log_det(y, context=ctx_post[l], train=train)
                total = total + ld
            y, ld = self.steps[l].inverse_and_log_det(y, context=ctx_post[l], train=train)
            total = total + ld
            if self._squeezes(l):
                y = unsqueeze2d(y)
            y, ld = self.pre[l].inverse_and_log_det(y, context=ctx_pre[l], train=train)
            total = total + ld
        return y, total


def _repeat_level(level: int, *, make_step, steps, remat, unroll) -> Bijector:
    return Repeat(make_step=functools.partial(make_step, level), num_steps=steps[level],
                  remat=remat, unroll=unroll)


def multiscale(levels: int, steps_per_level: Union[int, Sequence[int]],
               make_step: Callable[[int], Bijector], *, remat: bool = False,
               unroll: Union[int, bool] = 1,
               make_pre: Optional[LevelFactory] = None,
               make_split: Optional[LevelFactory] = None,
               squeeze_last: bool = True) -> MultiScale:
    """Builds a :class:`MultiScale` whose levels are ``Repeat``-ed steps (``nn.scan``).

    Args:
      levels: number of levels ``L``.
      steps_per_level: ``K`` (the same at every level) or one ``K_l >= 1`` per level.
      make_step: ``level -> Bijector``, a fresh step of level ``level`` (e.g. Glow's
        ActNorm -> 1x1 conv -> coupling). Each level is one ``Repeat``, so compile
        time does not grow with ``K``.
      remat: rematerialise every step in the backward pass (memory independent of K).
      unroll: steps per compiled loop iteration of each level (``True``: all; see
        :class:`~jaxflows.bijectors.Repeat`): faster steps on CPU, compile time
        growing with ``K``.
      make_pre: optional ``level -> Bijector`` (or ``None``) applied before each
        level's squeeze, at the level's input resolution (Real NVP's checkerboard
        couplings); see :class:`MultiScale`.
      make_split: ``level -> Bijector`` for levels ``0 .. L-2``; ``None`` (default)
        gives :class:`~jaxflows.bijectors.reshape.Split`, Glow's learned prior. See
        :class:`MultiScale`.
      squeeze_last: whether the last level starts with a squeeze (Glow: yes; Real NVP:
        no).
    """
    if isinstance(steps_per_level, int):
        steps = (steps_per_level,) * levels
    else:
        steps = tuple(int(k) for k in steps_per_level)
        if len(steps) != levels:
            raise ValueError(
                f"multiscale: steps_per_level must be an int or have one entry per level "
                f"({levels}), got {steps_per_level!r}.")
    if any(k < 1 for k in steps):
        raise ValueError(f"multiscale: steps_per_level must be >= 1, got {steps_per_level!r}.")
    check_unroll(unroll, "multiscale")   # at construction, not first at init
    make_level = functools.partial(_repeat_level, make_step=make_step, steps=steps, remat=remat,
                                   unroll=unroll)
    return MultiScale(levels=levels, make_level=make_level, make_pre=make_pre,
                      make_split=make_split, squeeze_last=squeeze_last)
