r"""Invertible residual blocks: i-ResNet / Residual Flows (``ResidualBlock``) and
invertible DenseNets (``DenseResidualBlock``).

A residual block maps data to latent by

.. math::

    f(x) = x + g(x), \qquad \mathrm{Lip}(g) \le c < 1,

which is invertible (Behrmann et al. 2019, Thm 1): ``x`` is the unique fixed point of
the contraction ``x <- y - g(x)`` (:func:`jaxflows.ops.fixed_point_inverse`, a
``lax.while_loop`` with implicit-function-theorem gradients). Its log-det

.. math::

    \log|\det(I + J_g(x))| = \sum_{k\ge 1} \frac{(-1)^{k+1}}{k}\operatorname{tr}(J_g^k)

is computed by :func:`jaxflows.ops.log_det`, chosen by ``estimator`` (a
:class:`~jaxflows.bijectors.residual_settings.LogDetEstimator`):

==================  ===========================================  ===========================
``estimator.kind``  ``train=True`` (stream ``"logdet"``)          ``train=False`` (evaluation)
==================  ===========================================  ===========================
``"exact"``         ``jacfwd`` + ``slogdet`` (small inputs)       same
``"series"``        ``n_terms``-term series, Hutchinson (biased,  ``eval_estimator``
                    i-ResNet, Behrmann et al. 2019 eq. 6)
``"roulette"``      Russian roulette, unbiased (Chen et al.       ``eval_estimator``
                    2019 eq. 7), Neumann-series gradient (Thm 2,
                    ``neumann_grad=True``: memory independent of
                    the number of terms)
==================  ===========================================  ===========================

``eval_estimator`` (an :class:`~jaxflows.bijectors.residual_settings.EvalEstimator`) has
``kind="eval"`` (default, deterministic: ``n_terms=20`` series terms with a fixed set of
``n_samples=8`` Gaussian probes per example; biased by the truncation), ``"roulette"``
(unbiased: ``n_terms`` exact terms plus a Russian roulette, as the Residual Flows
reference evaluates; random, so the forward direction needs ``rngs={"logdet": key}``
with ``train=False`` too; an inverse without that stream, e.g. sampling, uses one fixed
roulette draw), ``"exact"``, or ``"series"`` (the training series with a fixed
probe). The inverse's fixed-point iteration follows ``solver`` (a
:class:`~jaxflows.bijectors.residual_settings.FixedPointSolver`) and the layers' spectral
normalisation ``spectral_norm`` (a
:class:`~jaxflows.bijectors.residual_settings.SpectralNorm`: coefficient ``coeff`` and
power iterations). Each of the four fields takes the settings object or a ``dict`` of
its fields (``estimator=dict(kind="series", n_terms=5)``: the given fields replace the
defaults).

``Lip(g) < c`` (``c = spectral_norm.coeff``) is guaranteed by construction: every linear
map is spectrally normalised by its **operator** norm (:mod:`jaxflows.nn.lipschitz`),
activations are 1-Lipschitz (LipSwish, CLipSwish, ELU), so ``Lip(g) <= c^{#layers} < c``.

Branches
--------
* ``ResidualBlock`` on images ``[B, H, W, C]``: Residual Flows' pre-activation CNN
  (Chen et al. 2019, reference code) ``act -> conv k1 -> act -> conv k2 -> act -> conv k3``
  with kernels ``(3, 1, 3)`` and ``hidden_channels`` channels (``preact=False`` drops the
  first activation, as for the first block of a model). On vectors ``[B, D]`` (or
  with ``fully_connected=True``, the flattened event) an MLP with the same number of
  layers. With CLipSwish (which doubles channels) the hidden layers output
  ``hidden_channels // 2`` channels, as in Perugachi-Diaz et al. 2021.
* ``DenseResidualBlock`` (i-DenseNet, Perugachi-Diaz et al. 2021): ``depth``
  dense layers ``h -> [eta1 h, eta2 phi(W h)]`` (``W`` a spectrally normalised 3x3 conv
  or dense layer with ``growth // 2`` outputs, ``phi`` = CLipSwish) followed by a
  spectrally normalised 1x1 conv (dense layer) back to ``C`` channels. The learnable
  concatenation weights ``eta_i = softplus(k_i) + 0.1`` are normalised to
  ``sqrt(eta1^2 + eta2^2) = c`` (their learnable concatenation), which makes each dense layer
  ``c``-Lipschitz since ``||[eta1 a, eta2 phi(W a)] - [eta1 b, eta2 phi(W b)]||^2 <=
  (eta1^2 + eta2^2 Lip(phi W)^2) ||a - b||^2``.

Attention in the branch (ACF)
-----------------------------
Both blocks take ``attention``: ``None`` (default) or a factory of a module ``a`` with
``Lip(a) <= 1`` on images ``[B, H, W, F] -> [B, H, W, F]`` (any ``F``), called once per
branch as ``attention(name="attention")``, and ``attention_placement``:

* ``"between"`` (default; ACF Sec. 3, "inserted in between the convolutional layers",
  as the reference code: on the hidden features, before the last Lipschitz
  convolution). For the ResNet branch ``act -> conv1 -> act -> ... -> act -> a ->
  conv_last``; for the DenseNet branch ``a`` acts on the concatenated features before
  the final 1x1 convolution. The attention sees ``hidden_channels`` (DenseNet: ``C +
  depth * growth``) features, so its heads are free of the block's input channels;
* ``"first"``: on the block input, ``g(x) = g_base(a(x))`` (this library's earlier
  placement; the attention then sees the ``C`` raw channels).

Either way

.. math::

    \mathrm{Lip}(g) \le \mathrm{Lip}(\text{layers after } a)\,\mathrm{Lip}(a)\,
    \mathrm{Lip}(\text{layers before } a) < c,

so the block stays a contraction with the same inverse and log-det estimators, as long
as ``Lip(a) <= 1`` (true of :mod:`jaxflows.nn.attention`'s normalised output with its
derived bounds; **not** of ACF's Eq. 13 output or of the paper's LipNorm constant, see
there). This is how Attentive Contractive Flows (Mukherjee et al., arXiv:2109.12135)
put Lipschitz self-attention into i-ResNet / Residual Flow / i-DenseNet branches, e.g.
``ResidualBlock(attention=functools.partial(L2MultiHeadAttention, heads=4))`` (see
:func:`jaxflows.models.acf`). A branch with a single convolution has no "between":
``attention_placement="between"`` there is a ``ValueError``, as is ``attention`` on a
fully connected branch (vector inputs, ``fully_connected=True``: no positions to
attend over).

Inversion diagnostics
---------------------
The inverse sows the fixed-point diagnostics (per example: ``iterations``,
``residual``, ``not_converged``) into the collection ``"intermediates"`` under
``"fixed_point"``, when that collection is mutable (``apply(..., mutable=
["intermediates"])``; the trainer's sampler does this and logs them).
:func:`fixed_point_report` reduces such a tree to ``{"max_iterations",
"max_residual", "num_not_converged", "num_solves"}``.

Variables: ``"params"`` (weights, LipSwish betas, concatenation weights) and
``"lipschitz"`` (power-iteration vectors, updated when ``train=True`` and mutable).

References:
  Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen. Invertible Residual Networks. ICML 2019.
  Chen, Behrmann, Duvenaud, Jacobsen. Residual Flows for Invertible Generative Modeling.
    NeurIPS 2019.
  Perugachi-Diaz, Tomczak, Bhulai. Invertible DenseNets with Concatenated LipSwish. NeurIPS 2021.
  Mukherjee, Patro, Namboodiri. Attentive Contractive Flow with Lipschitz Constrained
    Self-Attention. arXiv:2109.12135 (the ``attention`` field).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxflows.bijectors.base import Bijector
from jaxflows.bijectors.residual_settings import (
    EvalEstimator,
    FixedPointSolver,
    LogDetEstimator,
    SpectralNorm,
    as_settings,
)
from jaxflows.nn.lipschitz import CLipSwish, LipSwish, SpectralConv, SpectralDense
from jaxflows.ops import fixed_point_inverse, log_det

__all__ = ["ResidualBlock", "DenseResidualBlock", "fixed_point_report", "LogDetEstimator",
           "EvalEstimator", "FixedPointSolver", "SpectralNorm", "ATTENTION_PLACEMENTS"]

Array = jax.Array
# The settings fields of every residual block and their classes.
_SETTINGS = (("estimator", LogDetEstimator), ("eval_estimator", EvalEstimator),
             ("solver", FixedPointSolver), ("spectral_norm", SpectralNorm))
_ACTIVATIONS = ("lipswish", "clipswish", "elu")
_STATE = ("params", "lipschitz")
ATTENTION_PLACEMENTS = ("between", "first")


def _activation(name: str, who: str):
    if name == "lipswish":
        return LipSwish(), 1
    if name == "clipswish":
        return CLipSwish(), 2
    if name == "elu":
        return (lambda h: jax.nn.elu(h)), 1
    raise ValueError(f"{who}: activation must be one of {_ACTIVATIONS}, got {name!r}.")


def _spectral(conv: bool, features: int, kernel: int, spectral_norm: SpectralNorm) -> nn.Module:
    """A spectrally normalised ``kernel x kernel`` convolution (images) or dense layer."""
    sn = spectral_norm.layer_kwargs()
    return SpectralConv(features, (kernel, kernel), **sn) if conv else SpectralDense(features, **sn)


class _Branch(nn.Module, kw_only=True):
    """Fields and input handling shared by the branches ``g`` of the residual blocks."""

    out_features: int
    spectral_norm: SpectralNorm
    activation: str
    conv: bool
    attention: Optional[Callable[..., nn.Module]] = None
    attention_placement: str = "between"

    def _input(self, x):
        """``x`` (or its flattening, for an MLP branch), through the attention if it
        comes first in the branch.
        """
        h = x if self.conv else x.reshape(x.shape[0], -1)
        if self.attention is not None and self.attention_placement == "first":
            h = self.attention(name="attention")(h)
        return h

    def _between(self, h):
        """``h`` (hidden features before the last layer) through the attention if it
        sits between the layers.
        """
        if self.attention is not None and self.attention_placement == "between":
            h = self.attention(name="attention")(h)
        return h

    def _layer(self, features: int, kernel: int) -> nn.Module:
        return _spectral(self.conv, features, kernel, self.spectral_norm)


class _ResNetBranch(_Branch):
    """``g`` of a ResidualBlock: pre-activation Lipschitz CNN (images) or MLP (vectors)."""

    hidden: int
    kernels: Tuple[int, ...]
    preact: bool

    @nn.compact
    def __call__(self, x, train=False):
        who = "ResidualBlock"
        h = self._input(x)
        if self.preact:
            act, _ = _activation(self.activation, who)
            h = act(h)
        n = len(self.kernels)
        for i, k in enumerate(self.kernels):
            last = i == n - 1
            act, mult = (None, 1) if last else _activation(self.activation, who)
            feats = self.out_features if last else max(self.hidden // mult, 1)
            if last:
                h = self._between(h)
            h = self._layer(feats, k)(h, train=train)
            if not last:
                h = act(h)
        return h.reshape(x.shape)


class _DenseLayer(nn.Module):
    """``h -> [eta1 h, eta2 CLipSwish(W h)]`` with ``sqrt(eta1^2 + eta2^2) = coeff``."""

    growth: int
    spectral_norm: SpectralNorm
    activation: str
    conv: bool
    kernel_size: int
    learnable_concat: bool

    @nn.compact
    def __call__(self, h, train=False):
        act, mult = _activation(self.activation, "DenseResidualBlock")
        feats = max(self.growth // mult, 1)
        z = _spectral(self.conv, feats, self.kernel_size, self.spectral_norm)(h, train=train)
        z = act(z)
        if self.learnable_concat:
            k = self.param("concat_weights", nn.initializers.ones, (2,), jnp.float32)
        else:
            k = jnp.ones((2,), jnp.float32)
        eta = jax.nn.softplus(k) + 0.1
        eta = (self.spectral_norm.coeff * eta / jnp.sqrt(jnp.sum(jnp.square(eta)))).astype(h.dtype)
        return jnp.concatenate([eta[0] * h, eta[1] * z], axis=-1)


class _DenseBranch(_Branch):
    """``g`` of a DenseResidualBlock (i-DenseNet)."""

    depth: int
    growth: int
    first_features: int
    kernel_size: int
    learnable_concat: bool

    @nn.compact
    def __call__(self, x, train=False):
        h = self._input(x)
        if not self.conv and self.first_features:
            # The reference's fully connected i-DenseNet first maps D -> 64 features.
            h = self._layer(self.first_features, 1)(h, train=train)
        for _ in range(self.depth):
            h = _DenseLayer(self.growth, self.spectral_norm, self.activation, self.conv,
                            self.kernel_size, self.learnable_concat)(h, train=train)
        h = self._between(h)
        h = self._layer(self.out_features, 1)(h, train=train)
        return h.reshape(x.shape)


class _ResidualBase(Bijector, kw_only=True):
    """Shared machinery: pure branch, log-det estimators, fixed-point inverse.

    Holds the fields common to every residual block (keyword-only, so that the
    subclasses' own fields keep their positional order); see :class:`ResidualBlock`
    for their meaning. The four settings fields accept a ``dict`` of fields too,
    converted when the block is constructed
    (:func:`~jaxflows.bijectors.residual_settings.as_settings`).
    """

    fully_connected: bool = False
    attention: Optional[Callable[..., nn.Module]] = None
    attention_placement: str = "between"
    estimator: LogDetEstimator = LogDetEstimator()
    eval_estimator: EvalEstimator = EvalEstimator()
    solver: FixedPointSolver = FixedPointSolver()
    spectral_norm: SpectralNorm = SpectralNorm()

    def __post_init__(self):
        who = type(self).__name__
        for name, cls in _SETTINGS:
            object.__setattr__(self, name, as_settings(cls, getattr(self, name), name=name,
                                                       who=who))
        super().__post_init__()

    def _branch(self, conv: bool, out_features: int) -> nn.Module:
        """The branch ``g`` (a fresh submodule named ``"g"``) for this input kind."""
        raise NotImplementedError

    def _branch_fields(self, conv: bool, out_features: int) -> Dict[str, Any]:
        """The :class:`_Branch` fields every branch takes from its block."""
        return dict(out_features=out_features, spectral_norm=self.spectral_norm,
                    activation=self.activation, conv=conv, attention=self.attention,
                    attention_placement=self.attention_placement)

    def _check(self, x: Array) -> bool:
        who = type(self).__name__
        if x.ndim == 4:
            conv = not self.fully_connected
        elif x.ndim == 2:
            conv = False
        else:
            raise ValueError(f"{who}: x must be images [batch, height, width, channels] or "
                             f"vectors [batch, features], got shape {x.shape}.")
        if self.attention is not None and not conv:
            raise ValueError(f"{who}: attention needs a convolutional branch on images "
                             f"[batch, height, width, channels] (fully_connected=False); got "
                             f"shape {x.shape} with fully_connected={self.fully_connected}.")
        if self.attention_placement not in ATTENTION_PLACEMENTS:
            raise ValueError(f"{who}: attention_placement must be one of "
                             f"{ATTENTION_PLACEMENTS} (between: before the last convolution, "
                             f"as ACF; first: on the block input), got "
                             f"{self.attention_placement!r}.")
        if (self.attention is not None and self.attention_placement == "between"
                and isinstance(self, ResidualBlock) and len(tuple(self.kernels)) < 2):
            raise ValueError(f"{who}: attention_placement='between' needs a branch of at "
                             f"least two convolutions to sit between; kernels="
                             f"{tuple(self.kernels)!r} has one. Use "
                             f"attention_placement='first' or more kernels.")
        if self.attention is not None and not callable(self.attention):
            raise ValueError(f"{who}: attention must be None or a factory of a 1-Lipschitz "
                             f"module (e.g. functools.partial(L2MultiHeadAttention, heads=2)), "
                             f"got {self.attention!r}.")
        return conv

    def _branch_state(self, x: Array, train: bool):
        """Builds the branch ``g``, creates/updates its state, and returns the unbound
        branch module with its variables, so ``g`` runs as a pure function.
        """
        conv = self._check(x)
        out = x.shape[-1] if conv else math.prod(x.shape[1:])
        branch = self._branch(conv, out)
        if self.is_initializing() or (train and self.is_mutable_collection("lipschitz")):
            # Creates the variables at init; in training updates the power iterations.
            # The output is unused (dead code for XLA); g below reads the updated state.
            branch(x, train=train)
        module, variables = branch.unbind()
        return module, {k: v for k, v in variables.items() if k in _STATE}

    def _estimator_config(self, train: bool) -> Tuple[Tuple[str, Any], ...]:
        """The ``log_det`` keywords for this mode, as a hashable tuple."""
        if train:
            return self.estimator.log_det_kwargs()
        return self.eval_estimator.log_det_kwargs(self.estimator)

    def _solver_config(self) -> Tuple[Tuple[str, Any], ...]:
        """The ``fixed_point_inverse`` keywords, as a hashable tuple."""
        return tuple(self.solver.kwargs().items())

    @nn.compact
    def transform(self, x, inverse, context, train):
        del context  # residual blocks are unconditional
        module, state = self._branch_state(x, train)
        config = self._estimator_config(train)
        # Random in training (except exact), and at evaluation with the roulette; an
        # evaluation inverse (sampling) without a "logdet" stream uses a fixed key.
        stochastic = config[0][1] == "roulette" or (train and config[0][1] != "exact")
        if stochastic and not train and inverse and not self.has_rng("logdet"):
            stochastic = False
        key = self.make_rng("logdet") if stochastic else jax.random.PRNGKey(0)
        if not inverse:
            gx, ld = _forward(module, config, state, x, key)
            return x + gx, ld
        xr, ld, info = _inverse(module, config, self._solver_config(), state, x, key)
        self.sow("intermediates", "fixed_point",
                 {"iterations": info.iterations, "residual": info.residual,
                  "not_converged": jnp.logical_not(info.converged)})
        return xr, -ld


def _pure(module: nn.Module) -> Callable[[Any, Array], Array]:
    return lambda state, z: module.apply(state, z, train=False)


@partial(jax.jit, static_argnums=(0, 1))
def _forward(module, config, state, x, key):
    """``(g(x), log det(I + J_g(x)))``. Jitted with the (hashable) unbound branch and
    estimator settings static: one compiled computation, also in eager use.
    """
    return log_det(_pure(module), state, x, key=key, **dict(config))


@partial(jax.jit, static_argnums=(0, 1, 2))
def _inverse(module, config, solver, state, y, key):
    """Fixed-point inverse, its diagnostics, and the log-det at the solution."""
    g = _pure(module)
    x, info = fixed_point_inverse(g, state, y, **dict(solver))
    _, ld = log_det(g, state, x, key=key, **dict(config))
    return x, ld, info


class ResidualBlock(_ResidualBase):
    """Invertible residual block ``f(x) = x + g(x)`` (i-ResNet / Residual Flows).

    Attributes:
      hidden_channels: width of the hidden layers of ``g``.
      kernels: kernel sizes of the convolutions of ``g`` (Residual Flows: ``(3, 1, 3)``);
        for vectors, an MLP with ``len(kernels)`` layers.
      activation: "lipswish" (Residual Flows), "clipswish" or "elu" (i-ResNet).
      preact: apply the activation to the block input first (pre-activation).
      fully_connected: on images, use an MLP on the flattened event (Residual Flows'
        fully connected end blocks).
      attention: ``None`` or a factory of a 1-Lipschitz module in the (convolutional)
        branch, e.g. ACF's Lipschitz self-attention
        ``functools.partial(L2MultiHeadAttention, heads=4)``; called as
        ``attention(name="attention")`` (see "Attention in the branch" above).
      attention_placement: ``"between"`` (default, ACF: on the hidden features before
        the last convolution) or ``"first"`` (on the block input).
      estimator: the training log-det estimator,
        :class:`~jaxflows.bijectors.residual_settings.LogDetEstimator` or a dict of its
        fields; default: Residual Flows' roulette (2 exact terms + Poisson(2), one
        Gaussian probe, Neumann gradient); i-ResNet: ``dict(kind="series", n_terms=5)``.
      eval_estimator: the log-det estimator of ``train=False``,
        :class:`~jaxflows.bijectors.residual_settings.EvalEstimator` or a dict; default:
        deterministic 20-term series with 8 fixed Gaussian probes per example.
      solver: the fixed-point inverse,
        :class:`~jaxflows.bijectors.residual_settings.FixedPointSolver` or a dict
        (tolerances ``rtol``/``atol``, default 4 eps of the dtype; ``max_iter`` 1000).
      spectral_norm: :class:`~jaxflows.bijectors.residual_settings.SpectralNorm` or a
        dict: Lipschitz coefficient ``coeff`` of every layer, in ``(0, 1)``, so
        ``Lip(g) < coeff`` (default 0.98; i-ResNet 0.9), and power iterations per
        training call (2) and at init (200).

    ``hidden_channels``, ``kernels``, ``activation`` and ``preact`` may be given
    positionally; every other field is keyword-only (shared with
    :class:`DenseResidualBlock`).

    Example::

        block = ResidualBlock(hidden_channels=64,
                              estimator=dict(kind="series", n_terms=5),
                              spectral_norm=SpectralNorm(coeff=0.9, n_iterations=5))
    """

    hidden_channels: int = 128
    kernels: Sequence[int] = (3, 1, 3)
    activation: str = "lipswish"
    preact: bool = True

    def _branch(self, conv, out_features):
        if not (isinstance(self.hidden_channels, int) and self.hidden_channels >= 1):
            raise ValueError(f"ResidualBlock: hidden_channels must be an integer >= 1, "
                             f"got {self.hidden_channels!r}.")
        kernels = tuple(int(k) for k in self.kernels)
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"ResidualBlock: kernels must be a non-empty sequence of odd sizes, "
                             f"got {self.kernels!r}.")
        return _ResNetBranch(hidden=self.hidden_channels, kernels=kernels, preact=self.preact,
                             **self._branch_fields(conv, out_features), name="g")


class DenseResidualBlock(_ResidualBase):
    """Invertible DenseNet block ``f(x) = x + g(x)`` (Perugachi-Diaz et al. 2021).

    Attributes:
      depth: number of dense layers (paper: 3).
      growth: channels added by each dense layer (paper, CIFAR-10: 172).
      first_features: for the fully connected variant, width of the first dense layer (64).
      kernel_size: kernel of the dense layers' convolutions (3).
      learnable_concat: learn the concatenation weights ``eta`` (else fixed, equal).
      activation: "clipswish" (paper) or "lipswish"/"elu".
      Others (``fully_connected``, ``attention``, ``attention_placement`` (``"between"``:
      before the final 1x1 convolution), ``estimator``, ``eval_estimator``,
      ``solver``, ``spectral_norm``: keyword-only) as :class:`ResidualBlock`; the
      concatenation weights are normalised to ``spectral_norm.coeff``.
    """

    depth: int = 3
    growth: int = 32
    first_features: int = 64
    kernel_size: int = 3
    learnable_concat: bool = True
    activation: str = "clipswish"

    def _branch(self, conv, out_features):
        for name in ("depth", "growth"):
            val = getattr(self, name)
            if not (isinstance(val, int) and val >= 1):
                raise ValueError(f"DenseResidualBlock: {name} must be an integer >= 1, "
                                 f"got {val!r}.")
        if not (isinstance(self.kernel_size, int) and self.kernel_size % 2 == 1):
            raise ValueError(f"DenseResidualBlock: kernel_size must be an odd integer, "
                             f"got {self.kernel_size!r}.")
        return _DenseBranch(depth=self.depth, growth=self.growth,
                            first_features=self.first_features, kernel_size=self.kernel_size,
                            learnable_concat=self.learnable_concat,
                            **self._branch_fields(conv, out_features), name="g")


def fixed_point_report(intermediates: Any) -> Dict[str, Any]:
    """Summarises the fixed-point diagnostics sown by residual blocks' inverses.

    ``intermediates`` is the ``"intermediates"`` collection (or any tree containing the
    sown ``"fixed_point"`` dicts). Returns ``{"max_iterations": int, "max_residual":
    float, "num_not_converged": int, "num_solves": int}`` over every block and example
    (under ``Repeat`` each entry holds all steps); zeros if no block sowed anything.
    """
    found = []

    def visit(tree):
        if isinstance(tree, dict) or hasattr(tree, "items"):
            if set(tree.keys()) == {"iterations", "residual", "not_converged"}:
                found.append(tree)
                return
            for v in tree.values():
                visit(v)
        elif isinstance(tree, (tuple, list)):
            for v in tree:
                visit(v)

    visit(intermediates)
    if not found:
        return {"max_iterations": 0, "max_residual": 0.0, "num_not_converged": 0, "num_solves": 0}
    return {
        "max_iterations": int(max(int(jnp.max(d["iterations"])) for d in found)),
        "max_residual": float(max(float(jnp.max(d["residual"])) for d in found)),
        "num_not_converged": int(sum(int(jnp.sum(d["not_converged"])) for d in found)),
        "num_solves": len(found),
    }
