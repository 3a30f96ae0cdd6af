r"""Contractive residual flows on images: i-ResNet, Residual Flows and i-DenseNets.

One architecture (Chen et al. 2019, *Residual Flows*, and the reference
``ResidualFlow``; Behrmann et al. 2019, *i-ResNet*; Perugachi-Diaz et al. 2021,
*i-DenseNets*), data -> latent:

    ScaleToUnit(num_bins) -> LogitTransform(alpha)
    level 0:  ActNorm -> block (no pre-activation) -> ActNorm
              -> (blocks_per_level - 1) x [block -> ActNorm]       (one nn.scan)
              -> Squeeze [-> factor out half of the channels]
    level l:  blocks_per_level x [block -> ActNorm] -> Squeeze [-> factor out]
    last:     blocks_per_level x [block -> ActNorm]
              -> fc_blocks x [fully connected block -> ActNorm over all D coordinates]

``block`` is a :class:`~jaxflows.bijectors.residual.ResidualBlock` (LipSwish CNN with
kernels 3-1-3 for Residual Flows, ELU for i-ResNet) or a
:class:`~jaxflows.bijectors.residual.DenseResidualBlock` (i-DenseNet, CLipSwish);
the fully connected end blocks (Residual Flows' ``fc_end``: 4 blocks of width 128)
act on the flattened image. With ``factor_out=True`` half of the channels leave
after each squeeze with a fixed ``N(0, I)`` prior (Real NVP/i-ResNet style multi-scale,
through :class:`~jaxflows.models.multiscale.MultiScale`; the latent then has the
image's shape); with ``factor_out=False`` (the Residual Flows default for MNIST and
CIFAR-10) every coordinate goes through every level and the latent has shape
``(H / 2^(L-1), W / 2^(L-1), C 4^(L-1))``.

Log-det estimators (``estimator``): ``"series"`` (i-ResNet, ``n_terms`` power-series
terms, biased), ``"roulette"`` (Residual Flows: Russian roulette with
``n_exact_terms`` exact terms and Poisson(``lam``) extra terms, unbiased, with the
Neumann-series gradient), ``"exact"`` (tiny images, tests). ``train=False`` uses the
deterministic evaluation estimator of the blocks (``eval_terms`` terms, fixed probes).

Attention (ACF): every factory takes ``attention``, a factory of a 1-Lipschitz module
put at the start of the branch of every **convolutional** block (not of the fully
connected end blocks), ``g(x) = g_base(a(x))``; see
:class:`~jaxflows.bijectors.residual.ResidualBlock` and :func:`jaxflows.models.acf`
(Mukherjee et al., arXiv:2109.12135), which builds its models through these factories.

The factories take dequantised pixel values in ``[0, num_bins)``; ``Flow.log_prob`` is
the density of pixel values (the ``-D log num_bins`` of the rescaling included).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax

from jaxflows.bijectors.base import Bijector, Chain, Identity, Repeat, check_unroll
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.reshape import FlattenEvent, Squeeze
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (RENAMED, check_image_shape, identity_split, learned_split,
                                     preprocessing_bijectors, renamed_arguments)
from jaxflows.models.multiscale import MultiScale

__all__ = ["resflow", "iresnet", "idensenet", "residual_flow", "level_channels"]

AttentionFactory = Optional[Callable[..., nn.Module]]

Array = jax.Array


def _block_step(make_block: Callable[..., Bijector], actnorm: bool, flatten_actnorm: bool,
                **kwargs) -> Bijector:
    norm = [FlattenEvent(ActNorm()) if flatten_actnorm else ActNorm()] if actnorm else []
    return Chain([make_block(**kwargs)] + norm)


def _level(level: int, *, levels: int, blocks: Sequence[int], make_block, make_fc_block,
           fc_blocks: int, actnorm: bool, first_block_preact: bool, remat: bool,
           unroll: Union[int, bool] = 1) -> Bijector:
    """The bijectors of one level, before its squeeze (see the module docstring)."""
    items = []
    n = blocks[level]
    if level == 0 and not first_block_preact:
        if actnorm:
            items.append(ActNorm())
        items.append(_block_step(make_block, actnorm, False, preact=False))
        n -= 1
    if n > 0:
        items.append(Repeat(make_step=functools.partial(_block_step, make_block, actnorm, False),
                            num_steps=n, remat=remat, unroll=unroll))
    if level == levels - 1 and fc_blocks > 0:
        items.append(Repeat(make_step=functools.partial(_block_step, make_fc_block, actnorm, True),
                            num_steps=fc_blocks, remat=remat,
                            unroll=unroll))
    return Chain(items) if items else Identity()


def level_channels(image_shape: Sequence[int], levels: int, *, squeeze_first: bool = False,
                   factor_out: bool = False) -> Tuple[int, ...]:
    """Channels of the images the convolutional blocks of each level see.

    With ``C`` input channels: blocks before the level's squeeze (``squeeze_first=False``)
    see ``C 4^l`` channels at level ``l``, or ``C 2^l`` with ``factor_out`` (each squeeze
    multiplies by 4, each factor-out halves); with ``squeeze_first=True`` the level's own
    squeeze comes first, ``C 4^(l+1)``, or ``C 2^(l+2)`` with ``factor_out``. Used to
    check that attention heads divide the channels at every level (ACF).
    """
    c = int(image_shape[-1])
    first = 1 if squeeze_first else 0
    if factor_out:
        return tuple(c * 4 ** first * 2 ** l for l in range(levels))
    return tuple(c * 4 ** (l + first) for l in range(levels))


def residual_flow(image_shape: Sequence[int], *, make_block: Callable[..., Bijector],
                  make_fc_block: Callable[..., Bijector], num_bins: float = 256,
                  levels: int = 3, blocks_per_level: Union[int, Sequence[int]] = 16,
                  fc_blocks: int = 4, factor_out: bool = False, actnorm: bool = True,
                  first_block_preact: bool = False, alpha: float = 0.05,
                  preprocessing: str = "logit", squeeze_first: bool = False,
                  learn_split_prior: bool = False, remat: bool = False,
                  unroll: Union[int, bool] = 1, who: str = "residual_flow") -> Flow:
    """The shared builder of :func:`resflow`, :func:`iresnet` and :func:`idensenet`.

    ``make_block(**kw)`` / ``make_fc_block(**kw)`` return a fresh (convolutional /
    fully connected) residual block; ``kw`` may contain ``preact=False`` for the very
    first block. ``preprocessing``: ``"logit"`` (``LogitTransform(alpha)``) or
    ``"shift"`` (``x / num_bins - 0.5``, i-ResNet). ``squeeze_first``: every level
    starts with a squeeze (i-ResNet's ``init_ds=2``, strides 1-2-2) instead of ending
    with one. ``learn_split_prior``: factored-out halves get Glow's learned conditional
    prior (i-ResNet) instead of ``N(0, I)``. Other arguments as :func:`resflow`.
    """
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"{who}: levels must be an int >= 1, got {levels!r}.")
    num_squeezes = levels if squeeze_first else levels - 1
    shape = check_image_shape(image_shape, 2 ** num_squeezes, who)
    if isinstance(blocks_per_level, int):
        blocks = (blocks_per_level,) * levels
    else:
        blocks = tuple(int(b) for b in blocks_per_level)
    if len(blocks) != levels or any(b < 1 for b in blocks):
        raise ValueError(f"{who}: blocks_per_level must be an int >= 1 or one such int per "
                         f"level ({levels}), got {blocks_per_level!r}.")
    check_unroll(unroll, who)
    if not (isinstance(fc_blocks, int) and fc_blocks >= 0):
        raise ValueError(f"{who}: fc_blocks must be an int >= 0, got {fc_blocks!r}.")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"{who}: alpha (logit margin) must lie in (0, 0.5), got {alpha!r}.")
    pre = preprocessing_bijectors(num_bins, preprocessing, alpha, who)
    if factor_out and shape[2] * 4 % 2:
        raise ValueError(f"{who}: factor_out needs an even channel count after squeezing.")
    level = functools.partial(_level, levels=levels, blocks=blocks, make_block=make_block,
                              make_fc_block=make_fc_block, fc_blocks=fc_blocks, actnorm=actnorm,
                              first_block_preact=first_block_preact, remat=remat,
                              unroll=unroll)
    if factor_out:
        split = learned_split if learn_split_prior else identity_split
        if squeeze_first:   # squeeze -> blocks -> split
            body = MultiScale(levels=levels, make_level=level, make_split=split)
        else:               # blocks -> squeeze -> split
            body = MultiScale(levels=levels, make_level=lambda l: None, make_pre=level,
                              make_split=split, squeeze_last=False)
        return Flow(bijector=Chain(pre + [body]), event_shape=shape)
    items = []
    for l in range(levels):
        if squeeze_first:
            items.append(Squeeze())
        items.append(level(l))
        if l < levels - 1 and not squeeze_first:
            items.append(Squeeze())
    f = 2 ** num_squeezes
    latent = (shape[0] // f, shape[1] // f, shape[2] * f * f)
    return Flow(bijector=Chain(pre + items), event_shape=shape, latent_shape=latent)


# The arguments every factory hands on to residual_flow unchanged.
_LAYOUT = ("num_bins", "levels", "blocks_per_level", "fc_blocks", "factor_out", "actnorm",
           "alpha", "preprocessing", "squeeze_first", "learn_split_prior", "remat", "unroll")


def _layout(factory_args) -> dict:
    """The :data:`_LAYOUT` arguments out of a factory's ``locals()``."""
    return {k: factory_args[k] for k in _LAYOUT}


def _resnet_blocks(hidden_channels, fc_hidden, kernels, activation, attention, est):
    """``(make_block, make_fc_block)`` of ResNet-branch blocks; attention in conv blocks only."""
    common = dict(kernels=tuple(kernels), activation=activation, **est)
    return (functools.partial(ResidualBlock, hidden_channels=hidden_channels,
                              attention=attention, **common),
            functools.partial(ResidualBlock, hidden_channels=fc_hidden, fully_connected=True,
                              **common))


def _estimator_kwargs(estimator, n_terms, n_exact_terms, distribution, lam, p, n_samples,
                      neumann_grad, eval_terms, eval_samples, coeff, n_power_iterations,
                      init_power_iterations, eval_estimator):
    return dict(estimator=estimator, n_terms=n_terms, n_exact_terms=n_exact_terms,
                distribution=distribution, lam=lam, p=p, n_samples=n_samples,
                neumann_grad=neumann_grad, eval_terms=eval_terms, eval_samples=eval_samples,
                coeff=coeff, n_power_iterations=n_power_iterations,
                init_power_iterations=init_power_iterations, eval_estimator=eval_estimator)


@renamed_arguments(RENAMED)
def resflow(image_shape: Sequence[int], *, num_bins: float = 256, levels: int = 3,
            blocks_per_level: Union[int, Sequence[int]] = 16, hidden_channels: int = 512,
            kernels: Sequence[int] = (3, 1, 3), activation: str = "lipswish",
            coeff: float = 0.98, fc_blocks: int = 4, fc_hidden: int = 128,
            factor_out: bool = False, actnorm: bool = True, alpha: float = 0.05,
            estimator: str = "roulette", n_terms: int = 5, n_exact_terms: int = 2,
            distribution: str = "poisson", lam: float = 2.0, p: float = 0.5,
            n_samples: int = 1, neumann_grad: bool = True, eval_terms: int = 20,
            eval_samples: int = 8, eval_estimator: str = "eval", n_power_iterations: int = 2,
            init_power_iterations: int = 200, preprocessing: str = "logit",
            squeeze_first: bool = False, learn_split_prior: bool = False,
            remat: bool = False, unroll: Union[int, bool] = 1,
            attention: AttentionFactory = None) -> Flow:
    """Residual Flow (Chen et al. 2019) on images of shape ``image_shape = (H, W, C)``.

    Defaults are the reference CIFAR-10 model (``train_img.py``): 3 levels of 16 blocks,
    512 hidden channels, kernels 3-1-3, LipSwish, coefficient 0.98, ActNorm after every
    block, no factor-out, 4 fully connected end blocks of width 128, Russian roulette
    with 2 exact terms + Poisson(2) terms, one Gaussian probe and the Neumann gradient;
    logit preprocessing with ``alpha = 0.05`` (MNIST: ``1e-6``).

    Args:
      image_shape: ``(H, W, C)``, ``H`` and ``W`` divisible by ``2 ** (levels - 1)``.
      num_bins: number of pixel values (inputs are dequantised values in ``[0, num_bins)``).
      levels, blocks_per_level: number of scales and residual blocks per scale.
      hidden_channels, kernels, activation, coeff: the residual branches (see
        :class:`~jaxflows.bijectors.residual.ResidualBlock`).
      fc_blocks, fc_hidden: fully connected end blocks (0 for none) and their width.
      factor_out: factor out half of the channels at each squeeze (multi-scale).
      actnorm: ActNorm after every block.
      alpha: the logit transform's margin.
      estimator, n_terms, n_exact_terms, distribution, lam, p, n_samples, neumann_grad,
        eval_terms, eval_samples: log-det estimator settings of every block.
      eval_estimator: the blocks' estimator for ``train=False``: ``"eval"``
        (deterministic ``eval_terms``-term series), ``"exact"`` (tiny images) or
        ``"series"`` (see :class:`~jaxflows.bijectors.residual.ResidualBlock`).
      n_power_iterations, init_power_iterations: spectral-norm power iterations per
        training step / at init.
      preprocessing, squeeze_first, learn_split_prior: see :func:`residual_flow`.
      remat: rematerialise each block in the backward pass.
      unroll: blocks per compiled loop iteration (``True``: each run of blocks fully
        unrolled; see :class:`~jaxflows.bijectors.Repeat`). Unrolling made the CPU
        training step of an 8-block flow markedly faster (``docs/performance.md``) and
        compiles longer; the default 1 keeps compile time flat in depth.
      attention: ``None``, or a factory of a 1-Lipschitz module applied first in the branch
        of every convolutional block (ACF; see :func:`jaxflows.models.acf`).
    """
    est = _estimator_kwargs(estimator, n_terms, n_exact_terms, distribution, lam, p, n_samples,
                            neumann_grad, eval_terms, eval_samples, coeff, n_power_iterations,
                            init_power_iterations, eval_estimator)
    make_block, make_fc = _resnet_blocks(hidden_channels, fc_hidden, kernels, activation,
                                         attention, est)
    return residual_flow(image_shape, make_block=make_block, make_fc_block=make_fc,
                         who="resflow", **_layout(locals()))


@renamed_arguments(RENAMED)
def iresnet(image_shape: Sequence[int], *, num_bins: float = 256, levels: int = 3,
            blocks_per_level: Union[int, Sequence[int]] = 16, hidden_channels: int = 512,
            kernels: Sequence[int] = (3, 1, 3), activation: str = "elu", coeff: float = 0.9,
            n_terms: int = 5, n_samples: int = 1, factor_out: bool = True,
            fc_blocks: int = 0, fc_hidden: int = 128, actnorm: bool = True,
            alpha: float = 0.05, eval_terms: int = 20, eval_samples: int = 8,
            eval_estimator: str = "eval",
            n_power_iterations: int = 5, init_power_iterations: int = 200,
            preprocessing: str = "shift", squeeze_first: bool = True,
            learn_split_prior: bool = True, remat: bool = False, unroll: Union[int, bool] = 1,
            attention: AttentionFactory = None) -> Flow:
    """Invertible ResNet for density estimation (Behrmann et al. 2019).

    Defaults are the reference CIFAR-10 density model (``dens_est_cifar.sh`` with
    ``CIFAR_main.py``'s defaults): preprocessing ``x / 256 - 0.5``, 3 scales of 16 blocks
    with 512 channels, each scale starting with a squeeze (``init_ds=2``, strides
    1-2-2), kernels 3-1-3, ELU, coefficient 0.9, 5 power iterations per step, ActNorm,
    multi-scale with factor-out and a learned prior on the factored-out halves, and the
    **truncated** power series with 5 terms and one Hutchinson probe in training
    (biased; evaluation uses the deterministic 20-term estimator). No fully connected
    end blocks (``fc_blocks=0``). ``preprocessing="logit"`` uses ``alpha``. Other
    arguments (``attention`` included) as :func:`resflow`.
    """
    est = _estimator_kwargs("series", n_terms, 2, "poisson", 2.0, 0.5, n_samples, False,
                            eval_terms, eval_samples, coeff, n_power_iterations,
                            init_power_iterations, eval_estimator)
    make_block, make_fc = _resnet_blocks(hidden_channels, fc_hidden, kernels, activation,
                                         attention, est)
    return residual_flow(image_shape, make_block=make_block, make_fc_block=make_fc,
                         who="iresnet", **_layout(locals()))


@renamed_arguments(RENAMED)
def idensenet(image_shape: Sequence[int], *, num_bins: float = 256, levels: int = 3,
              blocks_per_level: Union[int, Sequence[int]] = 16, depth: int = 3,
              growth: int = 172, fc_blocks: int = 4, fc_growth: int = 32,
              fc_first_features: int = 64, activation: str = "clipswish",
              learnable_concat: bool = True, coeff: float = 0.98, factor_out: bool = False,
              actnorm: bool = True, alpha: float = 0.05, estimator: str = "roulette",
              n_terms: int = 5, n_exact_terms: int = 2, distribution: str = "poisson",
              lam: float = 2.0, p: float = 0.5, n_samples: int = 1, neumann_grad: bool = True,
              eval_terms: int = 20, eval_samples: int = 8, eval_estimator: str = "eval",
              n_power_iterations: int = 2,
              init_power_iterations: int = 200, preprocessing: str = "logit",
              squeeze_first: bool = False, learn_split_prior: bool = False,
              remat: bool = False, unroll: Union[int, bool] = 1,
            attention: AttentionFactory = None) -> Flow:
    """Invertible DenseNet (Perugachi-Diaz et al. 2021) on images.

    Defaults are the paper's CIFAR-10 model (reference README): the Residual Flows
    layout (3 levels x 16 blocks, ActNorm, no factor-out, 4 fully connected end blocks)
    with DenseNet blocks of depth 3 and growth 172, CLipSwish, learnable concatenation,
    coefficient 0.98; the fully connected blocks map ``D -> 64`` then grow by 32 per
    dense layer. Roulette + Neumann estimator as Residual Flows. ``attention``: as
    :func:`resflow` (convolutional blocks only).
    """
    est = _estimator_kwargs(estimator, n_terms, n_exact_terms, distribution, lam, p, n_samples,
                            neumann_grad, eval_terms, eval_samples, coeff, n_power_iterations,
                            init_power_iterations, eval_estimator)
    # The DenseNet block has no pre-activation; ``preact`` (first block) is ignored.
    def make_block(preact: bool = True):
        return DenseResidualBlock(depth=depth, growth=growth, activation=activation,
                                  learnable_concat=learnable_concat, attention=attention, **est)

    def make_fc(preact: bool = True):
        return DenseResidualBlock(depth=depth, growth=fc_growth, first_features=fc_first_features,
                                  activation=activation, learnable_concat=learnable_concat,
                                  fully_connected=True, **est)

    return residual_flow(image_shape, make_block=make_block, make_fc_block=make_fc,
                         who="idensenet", **_layout(locals()))
