r"""Transformer flows on images: TarFlow (Zhai et al. 2024) and Jet (Kolesnikov et al. 2024).

Both factories take dequantised pixel values ``x`` in ``[0, num_bins)`` and start with
the papers' data scaling to ``[-1, 1)``: ``x / (num_bins / 2) - 1``
(``ScaleToUnit(num_bins / 2)`` then ``Shift(-1)``), whose log-det is
``-D log(num_bins / 2)`` (``-D log 128`` for 8-bit data; DESIGN.md's TarFlow scaling).
So ``Flow.log_prob`` is the density of the pixel values, and
:func:`jaxflows.bits_per_dim` of it (``D = H W C``) is the bits/dim of the 8-bit data.

* :func:`tarflow`: patchify (``p x p`` patches) and ``blocks`` TarFlow blocks
  (:class:`~jaxflows.bijectors.TransformerAutoregressive`, orders alternating identity /
  flip; pairs under ``nn.scan``), optional class conditioning with label dropout for
  classifier-free guidance, and Gaussian noise augmentation at training time
  (:class:`GaussianNoiseAugment`, TarFlow Sec. 3.2).
* :func:`jet`: patchify and ``couplings`` Jet couplings
  (:class:`~jaxflows.bijectors.TransformerCoupling`) under ``nn.scan`` + ``nn.remat``.

Sampling features (TarFlow Sec. 3.3-3.4): temperature (``Flow.sample``'s
``temperature``), classifier-free guidance (:func:`with_guidance`, or ``guidance=`` of
:func:`generate`), and the one-step score-based denoiser (:func:`denoise`,
``x + sigma^2 grad log p(x)``) for models trained with Gaussian noise of std ``sigma``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector, Chain
from jaxflows.bijectors.preprocessing import ScaleToUnit, Shift
from jaxflows.bijectors.transformer_flows import SPATIAL_KINDS, JetStack, TarFlowStack
from jaxflows.distributions.flow import Flow
from jaxflows.models.common import RENAMED, check_image_shape, renamed_arguments
from jaxflows.nn.vit import check_patch_size

__all__ = ["tarflow", "jet", "GaussianNoiseAugment", "with_guidance", "denoise", "generate",
           "noise_std_in_pixels"]

JET_IMAGENET64_KINDS = ("channel",) * 4 + ("spatial",)
JET_IMAGENET64_SPATIAL = ("checkerboard", "checkerboard-inv", "vstripes", "vstripes-inv",
                          "hstripes", "hstripes-inv")


class GaussianNoiseAugment(Bijector):
    """Gaussian noise augmentation inside the flow (TarFlow Sec. 3.2).

    ``train=True``: ``y = x + noise_std * eps``, ``eps ~ N(0, I)`` from the ``"dropout"``
    rng stream (which the trainer provides), log-det 0: the model is fitted to the noisy
    data, as TarFlow trains. This is data augmentation, **not a bijection** of ``x`` in
    training mode. ``train=False`` (evaluation, sampling): the identity. ``noise_std`` is
    in the units of the bijector's input (here ``[-1, 1]`` pixels).
    """

    noise_std: float = 0.0

    def transform(self, x, inverse, context, train):
        if not self.noise_std >= 0:
            raise ValueError(f"GaussianNoiseAugment: noise_std must be >= 0, got "
                             f"{self.noise_std!r}.")
        zeros = jnp.zeros(x.shape[:1], x.dtype)
        if train and not inverse and self.noise_std > 0:
            eps = jax.random.normal(self.make_rng("dropout"), x.shape, x.dtype)
            return x + jnp.asarray(self.noise_std, x.dtype) * eps, zeros
        return x, zeros


def _check_common(who, image_shape, patch_size, num_bins, num_classes):
    shape = check_image_shape(image_shape, 1, who)
    check_patch_size((1,) + shape, patch_size, who)
    if not num_bins > 1:
        raise ValueError(f"{who}: num_bins must be > 1, got {num_bins!r}.")
    if num_classes is not None and (isinstance(num_classes, bool) or not
                                    isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"{who}: num_classes must be an int >= 2 or None, got "
                         f"{num_classes!r}.")
    return shape


def _preprocessing(num_bins):
    return [ScaleToUnit(num_bins / 2), Shift(-1.0)]


@renamed_arguments(RENAMED)
def tarflow(image_shape: Sequence[int], *, patch_size: int = 2, channels: int = 768,
            blocks: int = 8, layers_per_block: int = 8, heads: Optional[int] = None,
            num_classes: Optional[int] = None, noise_std: float = 0.0,
            num_bins: float = 256, label_drop: float = 0.0, mlp_ratio: float = 4.0,
            inverse_method: str = "scan", chunk_size: Optional[int] = None,
            max_iter: Optional[int] = None, tol: Optional[float] = None,
            on_nonconvergence: str = "report", guidance: float = 0.0,
            remat: bool = False) -> Flow:
    """TarFlow (Zhai et al. 2024): patchify, then ``blocks`` autoregressive transformer blocks.

    Defaults are the paper's ImageNet 64x64 setting ``P-Ch-T-K = 2-768-8-8`` (its
    released ImageNet-64 models are ``2-768-8-8`` with noise 0.05), heads of 64
    features. Data scaling ``[-1, 1]``, log-det ``-D log(num_bins / 2)`` (module
    docstring): bits/dim of the 8-bit pixels with ``D = H W C``.

    Args:
      image_shape: ``(H, W, C)``; ``patch_size`` must divide ``H`` and ``W``.
      patch_size: ``P``; tokens have ``P^2 C`` features.
      channels: transformer width ``Ch``.
      blocks: ``T`` flow blocks (orders alternate identity / flip).
      layers_per_block: ``K`` transformer layers per block.
      heads: attention heads (default ``max(1, channels // 64)``); must divide ``channels``.
      num_classes: class-conditional model (``Flow.context_shape = ()``: labels
        ``[batch]`` in ``[0, num_classes)``); ``None``: unconditional (a context is an
        error).
      noise_std: std of the Gaussian noise added to the ``[-1, 1]`` data at training time
        (TarFlow's ``noise_std``; :class:`GaussianNoiseAugment`); use :func:`denoise`
        with :func:`noise_std_in_pixels` after sampling.
      num_bins: pixel levels (256 for 8-bit data).
      label_drop: fraction of labels replaced by the null condition in training
        (needed for classifier-free guidance; TarFlow's ``drop_label``).
      mlp_ratio: MLP width over ``channels``.
      inverse_method: the blocks' inverse, ``"scan"`` (exact, sequential) or
        ``"jacobi"``; see :class:`~jaxflows.bijectors.TransformerAutoregressive`.
      chunk_size: Gauss-Seidel-Jacobi chunk (``None``: plain Jacobi).
      max_iter: Jacobi iteration cap per chunk (default chunk + 2).
      tol: Jacobi tolerance, relative and absolute, on the ``[-1, 1]``-scaled tokens
        (default 4 eps of the dtype: the exact inverse to round-off; a looser one stops
        earlier, e.g. ``1e-3`` is 0.13 of a pixel level at 256 levels).
      on_nonconvergence: ``"report"`` (diagnostics) or ``"raise"``.
      guidance: classifier-free guidance weight used by sampling (class-conditional
        models only); :func:`with_guidance` changes it on a built flow.
      remat: rematerialise each scanned pair of blocks in the backward pass.
    """
    who = "tarflow"
    shape = _check_common(who, image_shape, patch_size, num_bins, num_classes)
    heads = max(1, channels // 64) if heads is None else heads
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"{who}: heads must be an int >= 1, got {heads!r}.")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{who}: channels must be an int >= 1, got {channels!r}.")
    if channels % heads:
        raise ValueError(f"{who}: heads={heads} must divide channels={channels} (the "
                         f"transformer width).")
    tokens = (shape[0] // patch_size) * (shape[1] // patch_size)
    if tokens < 2:
        raise ValueError(f"{who}: patch_size={patch_size} leaves {tokens} token on a "
                         f"{shape[0]}x{shape[1]} image; an autoregressive block needs >= 2.")
    if noise_std < 0:
        raise ValueError(f"{who}: noise_std must be >= 0, got {noise_std!r}.")
    if guidance != 0 and num_classes is None:
        raise ValueError(f"{who}: guidance needs a class-conditional model (num_classes).")
    stack = TarFlowStack(blocks=blocks, patch_size=patch_size, width=channels,
                         depth=layers_per_block, heads=heads, mlp_ratio=mlp_ratio,
                         num_classes=num_classes, inverse_method=inverse_method,
                         chunk_size=chunk_size, max_iter=max_iter, tol=tol,
                         on_nonconvergence=on_nonconvergence, guidance=guidance,
                         label_drop=label_drop, remat=remat)
    body = _preprocessing(num_bins) + [GaussianNoiseAugment(noise_std), stack]
    return Flow(bijector=Chain(body), event_shape=shape,
                context_shape=None if num_classes is None else (),
                unconditional=num_classes is None)


@renamed_arguments(RENAMED)
def jet(image_shape: Sequence[int], *, patch_size: int = 4, width: int = 512,
        couplings: int = 32, block_depth: int = 2, heads: int = 8, mlp_ratio: float = 4.0,
        kinds: Sequence[str] = JET_IMAGENET64_KINDS,
        spatial_kinds: Sequence[str] = JET_IMAGENET64_SPATIAL, scale_factor: float = 2.0,
        num_classes: Optional[int] = None, num_bins: float = 256, seed: int = 0,
        remat: bool = True) -> Flow:
    """Jet (Kolesnikov et al. 2024): patchify, then ``couplings`` ViT-conditioned couplings.

    Defaults are big_vision's ImageNet 64x64 config (``configs/proj/jet/imagenet64.py``,
    3.72 bits/dim after 200 epochs): patch 4, 32 couplings of ViT depth 2, width 512,
    8 heads, kinds four channel couplings then one spatial, the spatial kinds cycling
    through checkerboard, vertical and horizontal stripes and their inverses (the paper's
    3.66 model: 64 couplings of depth 5). Data scaling ``[-1, 1]`` (big_vision's
    ``value_range(-1, 1)``), log-det ``-D log(num_bins / 2)``.

    Args:
      image_shape: ``(H, W, C)``; ``patch_size`` must divide ``H`` and ``W``, and
        ``patch_size^2 C`` must be even.
      patch_size: patch side (tokens have ``patch_size^2 C`` features).
      width: ViT width (Jet's ``emb_dim``).
      couplings: number of coupling layers (Jet's ``depth``).
      block_depth: ViT layers per coupling.
      heads: attention heads (must divide ``width``).
      mlp_ratio: ViT MLP width over ``width``.
      kinds: cycled ``"channel"`` / ``"spatial"`` per layer.
      spatial_kinds: cycled over the spatial layers
        (:data:`~jaxflows.bijectors.transformer_flows.SPATIAL_KINDS`).
      scale_factor: the coupling scale ``sigmoid(s) * scale_factor``.
      num_classes: class-conditional ViTs (labels ``[batch]``).
      num_bins: pixel levels (256 for 8-bit data).
      seed: seed of the fixed channel permutations.
      remat: ``nn.remat`` of every coupling (Jet's default).
    """
    who = "jet"
    shape = _check_common(who, image_shape, patch_size, num_bins, num_classes)
    if (patch_size ** 2 * shape[2]) % 2:
        raise ValueError(f"{who}: tokens must have an even number of features "
                         f"(patch_size^2 * channels = {patch_size ** 2 * shape[2]}); use "
                         f"an even patch_size.")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or width % heads:
        raise ValueError(f"{who}: heads must be an int >= 1 dividing width={width}, got "
                         f"{heads!r}.")
    for k in spatial_kinds:
        if k not in SPATIAL_KINDS:
            raise ValueError(f"{who}: spatial_kinds entries must be in {SPATIAL_KINDS}, "
                             f"got {k!r}.")
    stack = JetStack(num_layers=couplings, patch_size=patch_size, kinds=tuple(kinds),
                     spatial_kinds=tuple(spatial_kinds), seed=seed, width=width,
                     depth=block_depth, heads=heads, mlp_ratio=mlp_ratio,
                     scale_factor=scale_factor, num_classes=num_classes, remat=remat)
    return Flow(bijector=Chain(_preprocessing(num_bins) + [stack]), event_shape=shape,
                context_shape=None if num_classes is None else (),
                unconditional=num_classes is None)


# ------------------------------------------------------------------------------------
# Sampling features
# ------------------------------------------------------------------------------------

def _tarflow_stack_index(flow: Flow) -> int:
    chain = flow.bijector
    if isinstance(chain, Chain):
        for i, b in enumerate(chain.bijectors):
            if isinstance(b, TarFlowStack):
                return i
    raise ValueError("with_guidance: the flow is not a tarflow() model (no TarFlowStack "
                     "in its Chain).")


def with_guidance(flow: Flow, guidance: float) -> Flow:
    """The same TarFlow model (same variables) sampling with guidance weight ``guidance``.

    Classifier-free guidance (TarFlow Sec. 3.4): every token's parameters become
    ``p_c + w (p_c - p_u)``, ``p_u`` the output for the mean class embedding. Only the
    inverse (sampling) changes; ``log_prob`` is the unguided model's.
    """
    i = _tarflow_stack_index(flow)
    stack = flow.bijector.bijectors[i]
    if guidance != 0 and stack.num_classes is None:
        raise ValueError("with_guidance: classifier-free guidance needs a class-conditional "
                         "model (tarflow(..., num_classes=K)).")
    parts = list(flow.bijector.bijectors)
    parts[i] = stack.clone(guidance=float(guidance))
    return flow.clone(bijector=Chain(parts))


def noise_std_in_pixels(noise_std: float, num_bins: float = 256) -> float:
    """TarFlow's ``noise_std`` (``[-1, 1]`` units) in pixels: ``noise_std * num_bins / 2``."""
    return float(noise_std) * float(num_bins) / 2


def denoise(flow: Flow, variables, x: jax.Array, sigma: float, *, context=None) -> jax.Array:
    """One-step score-based denoising (Tweedie; TarFlow Sec. 3.3): ``x + sigma^2 grad log p(x)``.

    For a model trained on data with Gaussian noise of std ``sigma`` (in the units of
    ``x``: pixel values, see :func:`noise_std_in_pixels`), ``grad log p`` of the model is
    an estimate of the score of the noisy data, and this is the posterior mean of the
    clean image. The gradient is ``jax.grad`` of the summed ``log_prob``.
    """
    if not sigma >= 0:
        raise ValueError(f"denoise: sigma must be >= 0, got {sigma!r}.")

    def total(xx):
        return jnp.sum(flow.apply(variables, xx, context=context))

    return x + jnp.asarray(sigma, x.dtype) ** 2 * jax.grad(total)(x)


def generate(flow: Flow, variables, key: jax.Array, num_samples: int, *,
             temperature: float = 1.0, context=None, guidance: Optional[float] = None,
             denoise_sigma: Optional[float] = None, num_bins: Optional[float] = None):
    """Samples of a transformer flow: ``(raw, final)`` images in pixel units.

    ``temperature`` scales the latent; ``guidance`` (TarFlow only) sets the
    classifier-free guidance weight; ``denoise_sigma`` (pixel units) applies
    :func:`denoise` to the raw samples (``final`` is ``raw`` otherwise); ``num_bins``
    clips ``final`` to ``[0, num_bins - 1]``.
    """
    if guidance is not None:
        flow = with_guidance(flow, guidance)
    raw = flow.apply(variables, num_samples, temperature=temperature, context=context,
                     method=flow.sample, rngs={"sample": key})
    final = raw
    if denoise_sigma:
        final = denoise(flow, variables, raw, denoise_sigma, context=context)
    if num_bins is not None:
        final = jnp.clip(final, 0, num_bins - 1)
    return raw, final
