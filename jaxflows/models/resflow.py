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

Numerical settings of every block, one argument each (the settings objects of
:mod:`jaxflows.bijectors.residual_settings`, or a ``dict`` of their fields, which then
replace the fields of the factory's default):

* ``estimator`` (:class:`~jaxflows.bijectors.residual_settings.LogDetEstimator`): the
  training log-det, ``kind="series"`` (i-ResNet: ``n_terms=5`` power-series terms,
  biased), ``"roulette"`` (Residual Flows: Russian roulette with ``n_exact_terms=2``
  exact terms and Poisson(``lam=2``) extra terms, unbiased, with the Neumann-series
  gradient) or ``"exact"`` (tiny images, tests);
* ``eval_estimator`` (:class:`~jaxflows.bijectors.residual_settings.EvalEstimator`):
  the log-det of ``train=False``, by default deterministic (20 series terms, 8 fixed
  Gaussian probes per example);
* ``solver`` (:class:`~jaxflows.bijectors.residual_settings.FixedPointSolver`): the
  fixed-point inverse (tolerances, iteration cap 1000);
* ``spectral_norm`` (:class:`~jaxflows.bijectors.residual_settings.SpectralNorm`): the
  Lipschitz coefficient ``coeff`` of every layer (Residual Flows 0.98, i-ResNet 0.9)
  and the power iterations per training step (2; i-ResNet 5) and at init (200).

For example ``iresnet(shape, spectral_norm=dict(n_iterations=2))`` keeps i-ResNet's
coefficient 0.9, and a config writes ``c.model.estimator = dict(kind="roulette",
distribution="geometric", p=0.5)``. The old loose keywords (``coeff``, ``n_terms``,
``eval_terms``, ``max_iter``, ...) raise a ``TypeError`` saying where they went.

Attention (ACF): every factory takes ``attention``, a factory of a 1-Lipschitz module
put in the branch of every **convolutional** block (not of the fully connected end
blocks), by default between the convolutions (``attention_placement="between"``, on the
hidden features before the last convolution, as ACF) or first (``"first"``,
``g(x) = g_base(a(x))``); see
:class:`~jaxflows.bijectors.residual.ResidualBlock` and :func:`jaxflows.models.acf`
(Mukherjee et al., arXiv:2109.12135), which builds its models through these factories.

The factories take dequantised pixel values in ``[0, num_bins)``; ``Flow.log_prob`` is
the density of pixel values (the ``-D log num_bins`` of the rescaling included).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax

from jaxflows.bijectors.base import Bijector, Chain, Identity, Repeat, check_unroll
from jaxflows.bijectors.normalization import ActNorm
from jaxflows.bijectors.reshape import FlattenEvent, Squeeze
from jaxflows.bijectors.residual import DenseResidualBlock, ResidualBlock
from jaxflows.bijectors.residual_settings import (
    EvalEstimator,
    FixedPointSolver,
    LogDetEstimator,
    SpectralNorm,
    as_settings,
    moved_arguments,
)
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import (
    RENAMED,
    check_image_shape,
    identity_split,
    learned_split,
    preprocessing_bijectors,
    renamed_arguments,
)
from jaxflows.models.multiscale import MultiScale

__all__ = ["resflow", "iresnet", "idensenet", "residual_flow", "level_channels",
           "roulette_evaluation"]

AttentionFactory = Optional[Callable[..., nn.Module]]
EstimatorArg = Union[LogDetEstimator, Mapping[str, Any]]
EvalEstimatorArg = Union[EvalEstimator, Mapping[str, Any]]
SolverArg = Union[FixedPointSolver, Mapping[str, Any]]
SpectralNormArg = Union[SpectralNorm, Mapping[str, Any]]

# The factories' defaults (a dict argument overrides their fields).
_RESFLOW_ESTIMATOR = LogDetEstimator()              # roulette: 2 exact + Poisson(2), Neumann
_IRESNET_ESTIMATOR = LogDetEstimator(kind="series", n_terms=5)
_EVAL_ESTIMATOR = EvalEstimator()                   # 20 terms, 8 fixed Gaussian probes
_SOLVER = FixedPointSolver()                        # 4 eps tolerances, at most 1000 steps
_RESFLOW_SPECTRAL_NORM = SpectralNorm()             # coeff 0.98, 2 power iterations per step
_IRESNET_SPECTRAL_NORM = SpectralNorm(coeff=0.9, n_iterations=5)

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


def _settings(who: str, estimator, eval_estimator, solver, spectral_norm, *,
              default_estimator: LogDetEstimator = _RESFLOW_ESTIMATOR,
              default_spectral_norm: SpectralNorm = _RESFLOW_SPECTRAL_NORM) -> Dict[str, Any]:
    """The blocks' settings objects (dicts override the factory's defaults)."""
    return dict(
        estimator=as_settings(LogDetEstimator, estimator, default_estimator,
                              name="estimator", who=who),
        eval_estimator=as_settings(EvalEstimator, eval_estimator, _EVAL_ESTIMATOR,
                                   name="eval_estimator", who=who),
        solver=as_settings(FixedPointSolver, solver, _SOLVER, name="solver", who=who),
        spectral_norm=as_settings(SpectralNorm, spectral_norm, default_spectral_norm,
                                  name="spectral_norm", who=who))


def _resnet_blocks(hidden_channels, fc_hidden, kernels, activation, attention,
                   attention_placement, settings):
    """``(make_block, make_fc_block)`` of ResNet-branch blocks; attention in conv blocks only."""
    common = dict(kernels=tuple(kernels), activation=activation, **settings)
    return (functools.partial(ResidualBlock, hidden_channels=hidden_channels,
                              attention=attention, attention_placement=attention_placement,
                              **common),
            functools.partial(ResidualBlock, hidden_channels=fc_hidden, fully_connected=True,
                              **common))


@renamed_arguments(RENAMED)
@moved_arguments
def resflow(image_shape: Sequence[int], *, num_bins: float = 256, levels: int = 3,
            blocks_per_level: Union[int, Sequence[int]] = 16, hidden_channels: int = 512,
            kernels: Sequence[int] = (3, 1, 3), activation: str = "lipswish",
            fc_blocks: int = 4, fc_hidden: int = 128, factor_out: bool = False,
            actnorm: bool = True, alpha: float = 0.05,
            estimator: EstimatorArg = _RESFLOW_ESTIMATOR,
            eval_estimator: EvalEstimatorArg = _EVAL_ESTIMATOR, solver: SolverArg = _SOLVER,
            spectral_norm: SpectralNormArg = _RESFLOW_SPECTRAL_NORM,
            preprocessing: str = "logit", squeeze_first: bool = False,
            learn_split_prior: bool = False, remat: bool = False,
            unroll: Union[int, bool] = 1, attention: AttentionFactory = None,
            attention_placement: str = "between") -> Flow:
    """Residual Flow (Chen et al. 2019) on images of shape ``image_shape = (H, W, C)``.

    Defaults are the reference CIFAR-10 model (``train_img.py``): 3 levels of 16 blocks,
    512 hidden channels, kernels 3-1-3, LipSwish, coefficient 0.98, ActNorm after every
    block, no factor-out, 4 fully connected end blocks of width 128, Russian roulette
    with 2 exact terms + Poisson(2) terms, one Gaussian probe and the Neumann gradient;
    evaluation by the deterministic 20-term series with 8 probes; logit preprocessing
    with ``alpha = 0.05`` (MNIST: ``1e-6``).

    Args:
      image_shape: ``(H, W, C)``, ``H`` and ``W`` divisible by ``2 ** (levels - 1)``.
      num_bins: number of pixel values (inputs are dequantised values in ``[0, num_bins)``).
      levels: number of scales.
      blocks_per_level: residual blocks per scale (an int, or one per scale).
      hidden_channels: width of the convolutional branches (see
        :class:`~jaxflows.bijectors.residual.ResidualBlock`).
      kernels: kernel sizes of the branch convolutions.
      activation: ``"lipswish"``, ``"clipswish"`` or ``"elu"``.
      fc_blocks: fully connected end blocks (0 for none).
      fc_hidden: width of the fully connected end blocks.
      factor_out: factor out half of the channels at each squeeze (multi-scale).
      actnorm: ActNorm after every block.
      alpha: the logit transform's margin.
      estimator: training log-det estimator of every block
        (:class:`~jaxflows.bijectors.residual_settings.LogDetEstimator` or a dict of
        fields overriding the default: roulette, 2 exact terms + Poisson(2), one Gaussian
        probe, Neumann gradient).
      eval_estimator: the blocks' estimator for ``train=False``
        (:class:`~jaxflows.bijectors.residual_settings.EvalEstimator` or a dict; default
        deterministic 20-term series with 8 fixed probes; ``dict(kind="exact")`` for tiny
        images).
      solver: fixed-point inverse settings
        (:class:`~jaxflows.bijectors.residual_settings.FixedPointSolver` or a dict:
        ``rtol``, ``atol``, ``max_iter``, ``stall_patience``).
      spectral_norm: :class:`~jaxflows.bijectors.residual_settings.SpectralNorm` or a
        dict: Lipschitz coefficient (0.98) and power iterations per training step (2) /
        at init (200).
      preprocessing: ``"logit"`` (``LogitTransform(alpha)``) or ``"shift"``
        (``x / num_bins - 0.5``).
      squeeze_first: every level starts with a squeeze (i-ResNet) instead of ending
        with one.
      learn_split_prior: factored-out halves get Glow's learned prior instead of
        ``N(0, I)``.
      remat: rematerialise each block in the backward pass.
      unroll: blocks per compiled loop iteration (``True``: each run of blocks fully
        unrolled; see :class:`~jaxflows.bijectors.Repeat`). Unrolling made the CPU
        training step of an 8-block flow markedly faster (``docs/performance.md``) and
        compiles longer; the default 1 keeps compile time flat in depth.
      attention: ``None``, or a factory of a 1-Lipschitz module in the branch of every
        convolutional block (ACF; see :func:`jaxflows.models.acf`).
      attention_placement: ``"between"`` (ACF: on the hidden features, before the last
        convolution of the branch) or ``"first"`` (on the block input); see
        :class:`~jaxflows.bijectors.residual.ResidualBlock`.
    """
    settings = _settings("resflow", estimator, eval_estimator, solver, spectral_norm)
    make_block, make_fc = _resnet_blocks(hidden_channels, fc_hidden, kernels, activation,
                                         attention, attention_placement, settings)
    return residual_flow(image_shape, make_block=make_block, make_fc_block=make_fc,
                         who="resflow", **_layout(locals()))


@renamed_arguments(RENAMED)
@moved_arguments
def iresnet(image_shape: Sequence[int], *, num_bins: float = 256, levels: int = 3,
            blocks_per_level: Union[int, Sequence[int]] = 16, hidden_channels: int = 512,
            kernels: Sequence[int] = (3, 1, 3), activation: str = "elu",
            factor_out: bool = True, fc_blocks: int = 0, fc_hidden: int = 128,
            actnorm: bool = True, alpha: float = 0.05,
            estimator: EstimatorArg = _IRESNET_ESTIMATOR,
            eval_estimator: EvalEstimatorArg = _EVAL_ESTIMATOR, solver: SolverArg = _SOLVER,
            spectral_norm: SpectralNormArg = _IRESNET_SPECTRAL_NORM,
            preprocessing: str = "shift", squeeze_first: bool = True,
            learn_split_prior: bool = True, remat: bool = False, unroll: Union[int, bool] = 1,
            attention: AttentionFactory = None, attention_placement: str = "between") -> Flow:
    """Invertible ResNet for density estimation (Behrmann et al. 2019).

    Defaults are the reference CIFAR-10 density model (``dens_est_cifar.sh`` with
    ``CIFAR_main.py``'s defaults): preprocessing ``x / 256 - 0.5``, 3 scales of 16 blocks
    with 512 channels, each scale starting with a squeeze (``init_ds=2``, strides
    1-2-2), kernels 3-1-3, ELU, coefficient 0.9, 5 power iterations per step, ActNorm,
    multi-scale with factor-out and a learned prior on the factored-out halves, and the
    **truncated** power series with 5 terms and one Hutchinson probe in training
    (biased; evaluation uses the deterministic 20-term estimator). No fully connected
    end blocks (``fc_blocks=0``). ``preprocessing="logit"`` uses ``alpha``. Other
    arguments (``attention`` included) as :func:`resflow`; the defaults of ``estimator``
    (``LogDetEstimator(kind="series", n_terms=5)``) and ``spectral_norm``
    (``SpectralNorm(coeff=0.9, n_iterations=5)``) are i-ResNet's, and a dict overrides
    their fields.
    """
    settings = _settings("iresnet", estimator, eval_estimator, solver, spectral_norm,
                         default_estimator=_IRESNET_ESTIMATOR,
                         default_spectral_norm=_IRESNET_SPECTRAL_NORM)
    make_block, make_fc = _resnet_blocks(hidden_channels, fc_hidden, kernels, activation,
                                         attention, attention_placement, settings)
    return residual_flow(image_shape, make_block=make_block, make_fc_block=make_fc,
                         who="iresnet", **_layout(locals()))


@renamed_arguments(RENAMED)
@moved_arguments
def idensenet(image_shape: Sequence[int], *, num_bins: float = 256, levels: int = 3,
              blocks_per_level: Union[int, Sequence[int]] = 16, depth: int = 3,
              growth: int = 172, fc_blocks: int = 4, fc_growth: int = 32,
              fc_first_features: int = 64, activation: str = "clipswish",
              learnable_concat: bool = True, factor_out: bool = False, actnorm: bool = True,
              alpha: float = 0.05, estimator: EstimatorArg = _RESFLOW_ESTIMATOR,
              eval_estimator: EvalEstimatorArg = _EVAL_ESTIMATOR, solver: SolverArg = _SOLVER,
              spectral_norm: SpectralNormArg = _RESFLOW_SPECTRAL_NORM,
              preprocessing: str = "logit", squeeze_first: bool = False,
              learn_split_prior: bool = False, remat: bool = False,
              unroll: Union[int, bool] = 1, attention: AttentionFactory = None,
              attention_placement: str = "between") -> Flow:
    """Invertible DenseNet (Perugachi-Diaz et al. 2021) on images.

    Defaults are the paper's CIFAR-10 model (reference README): the Residual Flows
    layout (3 levels x 16 blocks, ActNorm, no factor-out, 4 fully connected end blocks)
    with DenseNet blocks of depth 3 and growth 172, CLipSwish, learnable concatenation,
    coefficient 0.98; the fully connected blocks map ``D -> 64`` then grow by 32 per
    dense layer. Roulette + Neumann estimator, evaluation estimator, solver and spectral
    normalisation as Residual Flows (:func:`resflow`). ``attention``: as :func:`resflow`
    (convolutional blocks only).
    """
    settings = _settings("idensenet", estimator, eval_estimator, solver, spectral_norm)
    # The DenseNet block has no pre-activation; ``preact`` (first block) is ignored.
    def make_block(preact: bool = True):
        return DenseResidualBlock(depth=depth, growth=growth, activation=activation,
                                  learnable_concat=learnable_concat, attention=attention,
                                  attention_placement=attention_placement, **settings)

    def make_fc(preact: bool = True):
        return DenseResidualBlock(depth=depth, growth=fc_growth, first_features=fc_first_features,
                                  activation=activation, learnable_concat=learnable_concat,
                                  fully_connected=True, **settings)

    return residual_flow(image_shape, make_block=make_block, make_fc_block=make_fc,
                         who="idensenet", **_layout(locals()))


def roulette_evaluation(flow: Flow, variables: Any, batches, key: jax.Array, *,
                        draws: int = 2, truncated_flow: Optional[Flow] = None
                        ) -> Dict[str, float]:
    r"""Unbiased bits/dim of a residual flow with its Monte Carlo standard error.

    ``flow`` must be built with ``eval_estimator=dict(kind="roulette")`` (every block's
    evaluation log-det is then ``n_terms`` exact series terms plus a Russian roulette:
    unbiased, as the Residual Flows reference evaluates). ``batches`` is an iterable of
    dequantised images ``[B, H, W, C]`` (values in ``[0, num_bins)``, the flow's input;
    equal batch sizes). Each batch is evaluated ``draws`` times with independent keys
    (the roulette draws one number of terms per batch, so the examples of a batch are not
    independent draws: the spread is measured across draws, per batch). With ``m_bd``
    the mean bits/dim of batch ``b`` at draw ``d`` and ``s_b^2`` its sample variance over
    the draws::

        estimate = mean_{b,d} m_bd,     SE = sqrt(sum_b s_b^2 / draws) / n_batches,

    the standard error of the estimate as an estimate of the (truncation-free) bits/dim
    of these images. With ``truncated_flow`` (the same model with the deterministic
    ``eval_estimator``, e.g. the flow as trained) the deterministic, biased value is
    returned beside it (same variables). Bits/dim: ``-log p(x) / (D ln 2)`` of the
    dequantised values, ``D = H W C``.

    Returns:
      ``{"bpd_roulette", "bpd_roulette_se", "draws", "batches"}`` and, with
      ``truncated_flow``, ``"bpd_truncated"`` and ``"roulette_minus_truncated"``.
    """
    import numpy as np

    if not isinstance(draws, int) or draws < 2:
        raise ValueError(f"roulette_evaluation: draws must be an integer >= 2 (the standard "
                         f"error is measured across draws), got {draws!r}.")
    log_prob = jax.jit(lambda v, x, k: flow.apply(v, x, rngs={"logdet": k},
                                                  method=flow.log_prob))
    trunc = None
    if truncated_flow is not None:
        trunc = jax.jit(lambda v, x: truncated_flow.apply(v, x, method=truncated_flow.log_prob))
    means, variances, det = [], [], []
    for b, x in enumerate(batches):
        dims = math.prod(x.shape[1:])
        per_draw = []
        for d in range(draws):
            k = jax.random.fold_in(jax.random.fold_in(key, b), d)
            lp = np.asarray(log_prob(variables, x, k), np.float64)
            per_draw.append(float(-lp.mean() / (dims * math.log(2))))
        means.append(np.mean(per_draw))
        variances.append(np.var(per_draw, ddof=1))
        if trunc is not None:
            det.append(float(-np.asarray(trunc(variables, x), np.float64).mean()
                             / (dims * math.log(2))))
    if not means:
        raise ValueError("roulette_evaluation: batches is empty.")
    n = len(means)
    out = {"bpd_roulette": float(np.mean(means)),
           "bpd_roulette_se": float(math.sqrt(sum(variances) / draws) / n),
           "draws": draws, "batches": n}
    if det:
        out["bpd_truncated"] = float(np.mean(det))
        out["roulette_minus_truncated"] = out["bpd_roulette"] - out["bpd_truncated"]
    return out
