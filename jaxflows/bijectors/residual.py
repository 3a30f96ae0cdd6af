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

is computed by :func:`jaxflows.ops.log_det`, chosen by ``estimator``:

================  ===========================================  ===========================
``estimator``     ``train=True`` (stream ``"logdet"``)          ``train=False`` (evaluation)
================  ===========================================  ===========================
``"exact"``       ``jacfwd`` + ``slogdet`` (small inputs)       same
``"series"``      ``n_terms``-term series, Hutchinson (biased,  ``eval_estimator``
                  i-ResNet, Behrmann et al. 2019 eq. 6)
``"roulette"``    Russian roulette, unbiased (Chen et al.       ``eval_estimator``
                  2019 eq. 7), Neumann-series gradient (Thm 2,
                  ``neumann_grad=True``: memory independent of
                  the number of terms)
================  ===========================================  ===========================

``eval_estimator`` is ``"eval"`` (deterministic: ``eval_terms`` series terms with a fixed
set of ``eval_samples`` Gaussian probes, high accuracy), ``"exact"``, or ``"series"``
(the training series with a fixed probe).

``Lip(g) < c`` is guaranteed by construction: every linear map is spectrally
normalised by its **operator** norm (:mod:`jaxflows.nn.lipschitz`), activations are
1-Lipschitz (LipSwish, CLipSwish, ELU), so ``Lip(g) <= c^{#layers} < c``.

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

Attention in the branch (extension point)
-----------------------------------------
Both blocks take ``attention``: ``None`` (default) or a factory of a module ``a`` with
``Lip(a) <= 1`` on images ``[B, H, W, C] -> [B, H, W, C]``, called once per branch as
``attention(name="attention")``. The convolutional branch then starts with it,

.. math::

    g(x) = g_{\text{base}}(a(x)), \qquad
    \mathrm{Lip}(g) \le \mathrm{Lip}(g_{\text{base}})\,\mathrm{Lip}(a) < c,

so the block stays a contraction with the same inverse and log-det estimators. This is
how Attentive Contractive Flows (Mukherjee et al., arXiv:2109.12135) put Lipschitz
self-attention into i-ResNet / Residual Flow / i-DenseNet branches, e.g.
``ResidualBlock(attention=functools.partial(L2MultiHeadAttention, heads=2))`` with the
attentions of :mod:`jaxflows.nn.attention` (see :func:`jaxflows.models.acf`). Fully
connected branches (vector inputs, ``fully_connected=True``) have no positions to attend
over: ``attention`` there is a ``ValueError``.

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
  Chen, Behrmann, Duvenaud, Jacobsen. Residual Flows for Invertible Generative Modeling. NeurIPS 2019.
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
from jaxflows.nn.lipschitz import (CLipSwish, LipSwish, SpectralConv, SpectralDense,
                                   check_coefficient)
from jaxflows.ops import fixed_point_inverse, log_det

__all__ = ["ResidualBlock", "DenseResidualBlock", "fixed_point_report"]

Array = jax.Array
_ESTIMATORS = ("exact", "series", "roulette")
_EVAL_ESTIMATORS = ("eval", "exact", "series")
_ACTIVATIONS = ("lipswish", "clipswish", "elu")
_STATE = ("params", "lipschitz")


def _activation(name: str, who: str):
    if name == "lipswish":
        return LipSwish(), 1
    if name == "clipswish":
        return CLipSwish(), 2
    if name == "elu":
        return (lambda h: jax.nn.elu(h)), 1
    raise ValueError(f"{who}: activation must be one of {_ACTIVATIONS}, got {name!r}.")


def _spectral(conv: bool, features: int, kernel: int, coeff: float, n_iterations: int,
              init_iterations: int) -> nn.Module:
    """A spectrally normalised ``kernel x kernel`` convolution (images) or dense layer."""
    sn = dict(coeff=coeff, n_iterations=n_iterations, init_iterations=init_iterations)
    return SpectralConv(features, (kernel, kernel), **sn) if conv else SpectralDense(features, **sn)


class _Branch(nn.Module, kw_only=True):
    """Fields and input handling shared by the branches ``g`` of the residual blocks."""

    out_features: int
    coeff: float
    activation: str
    conv: bool
    n_iterations: int
    init_iterations: int
    attention: Optional[Callable[..., nn.Module]] = None

    def _input(self, x):
        """``x`` (or its flattening, for an MLP branch), through the attention if any."""
        h = x if self.conv else x.reshape(x.shape[0], -1)
        if self.attention is not None:
            h = self.attention(name="attention")(h)
        return h

    def _layer(self, features: int, kernel: int) -> nn.Module:
        return _spectral(self.conv, features, kernel, self.coeff, self.n_iterations,
                         self.init_iterations)


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
            h = self._layer(feats, k)(h, train=train)
            if not last:
                h = act(h)
        return h.reshape(x.shape)


class _DenseLayer(nn.Module):
    """``h -> [eta1 h, eta2 CLipSwish(W h)]`` with ``sqrt(eta1^2 + eta2^2) = coeff``."""

    growth: int
    coeff: float
    activation: str
    conv: bool
    kernel_size: int
    learnable_concat: bool
    n_iterations: int
    init_iterations: int

    @nn.compact
    def __call__(self, h, train=False):
        act, mult = _activation(self.activation, "DenseResidualBlock")
        feats = max(self.growth // mult, 1)
        z = _spectral(self.conv, feats, self.kernel_size, self.coeff, self.n_iterations,
                      self.init_iterations)(h, train=train)
        z = act(z)
        if self.learnable_concat:
            k = self.param("concat_weights", nn.initializers.ones, (2,), jnp.float32)
        else:
            k = jnp.ones((2,), jnp.float32)
        eta = jax.nn.softplus(k) + 0.1
        eta = (self.coeff * eta / jnp.sqrt(jnp.sum(jnp.square(eta)))).astype(h.dtype)
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
            h = _DenseLayer(self.growth, self.coeff, self.activation, self.conv, self.kernel_size,
                            self.learnable_concat, self.n_iterations, self.init_iterations)(h, train=train)
        h = self._layer(self.out_features, 1)(h, train=train)
        return h.reshape(x.shape)


class _ResidualBase(Bijector, kw_only=True):
    """Shared machinery: pure branch, log-det estimators, fixed-point inverse.

    Holds the fields common to every residual block (keyword-only, so that the
    subclasses' own fields keep their positional order); see :class:`ResidualBlock`
    for their meaning.
    """

    coeff: float = 0.98
    fully_connected: bool = False
    attention: Optional[Callable[..., nn.Module]] = None
    estimator: str = "roulette"
    n_terms: int = 5
    n_exact_terms: int = 2
    distribution: str = "poisson"
    p: float = 0.5
    lam: float = 2.0
    neumann_grad: bool = True
    n_samples: int = 1
    probe: str = "gaussian"
    eval_estimator: str = "eval"
    eval_terms: int = 20
    eval_samples: int = 8
    rtol: Optional[float] = None
    atol: Optional[float] = None
    max_iter: int = 1000
    n_power_iterations: int = 2
    init_power_iterations: int = 200

    def _branch(self, conv: bool, out_features: int) -> nn.Module:
        """The branch ``g`` (a fresh submodule named ``"g"``) for this input kind."""
        raise NotImplementedError

    def _branch_fields(self, conv: bool, out_features: int) -> Dict[str, Any]:
        """The :class:`_Branch` fields every branch takes from its block."""
        return dict(out_features=out_features, coeff=self.coeff, activation=self.activation,
                    conv=conv, n_iterations=self.n_power_iterations,
                    init_iterations=self.init_power_iterations, attention=self.attention)

    def _check(self, x: Array) -> bool:
        who = type(self).__name__
        check_coefficient(self.coeff, who)
        if self.estimator not in _ESTIMATORS:
            raise ValueError(f"{who}: estimator must be one of {_ESTIMATORS}, got {self.estimator!r}.")
        if self.eval_estimator not in _EVAL_ESTIMATORS:
            raise ValueError(f"{who}: eval_estimator must be one of {_EVAL_ESTIMATORS}, "
                             f"got {self.eval_estimator!r}.")
        if self.distribution not in ("geometric", "poisson"):
            raise ValueError(f"{who}: distribution must be 'geometric' or 'poisson', "
                             f"got {self.distribution!r}.")
        if self.distribution == "geometric" and not 0.0 < self.p < 1.0:
            raise ValueError(f"{who}: p (geometric roulette probability) must lie strictly in "
                             f"(0, 1), got {self.p!r}.")
        if self.distribution == "poisson" and not self.lam > 0.0:
            raise ValueError(f"{who}: lam (Poisson rate) must be > 0, got {self.lam!r}.")
        for name in ("n_terms", "n_samples", "eval_terms", "eval_samples", "max_iter"):
            val = getattr(self, name)
            if not (isinstance(val, int) and val >= 1):
                raise ValueError(f"{who}: {name} must be an integer >= 1, got {val!r}.")
        for name in ("rtol", "atol"):
            val = getattr(self, name)
            if val is not None and not val > 0:
                raise ValueError(f"{who}: {name} must be positive (or None for the default), got {val!r}.")
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
        if self.attention is not None and not callable(self.attention):
            raise ValueError(f"{who}: attention must be None or a factory of a 1-Lipschitz "
                             f"module (e.g. functools.partial(L2MultiHeadAttention, heads=2)), "
                             f"got {self.attention!r}.")
        return conv

    def _branch_state(self, x: Array, train: bool):
        """Builds the branch ``g``, creates/updates its state, and returns the unbound
        branch module with its variables, so ``g`` runs as a pure function."""
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
        est = self.estimator
        common = (("n_samples", self.n_samples), ("probe", self.probe))
        if est == "exact" or (not train and self.eval_estimator == "exact"):
            return (("estimator", "exact"),)
        if not train and self.eval_estimator == "eval":
            return (("estimator", "eval"), ("n_terms", self.eval_terms),
                    ("n_samples", self.eval_samples), ("probe", self.probe))
        if est == "series" or not train:
            return (("estimator", "series"), ("n_terms", self.n_terms)) + common
        return (("estimator", "neumann" if self.neumann_grad else "roulette"),
                ("n_exact_terms", self.n_exact_terms), ("distribution", self.distribution),
                ("p", float(self.p)), ("lam", float(self.lam))) + common

    @nn.compact
    def transform(self, x, inverse, context, train):
        del context  # residual blocks are unconditional
        module, state = self._branch_state(x, train)
        config = self._estimator_config(train)
        stochastic = train and config[0][1] != "exact"
        key = self.make_rng("logdet") if stochastic else jax.random.PRNGKey(0)
        if not inverse:
            gx, ld = _forward(module, config, state, x, key)
            return x + gx, ld
        solver = (("rtol", self.rtol), ("atol", self.atol), ("max_iter", self.max_iter))
        xr, ld, info = _inverse(module, config, solver, state, x, key)
        self.sow("intermediates", "fixed_point",
                 {"iterations": info.iterations, "residual": info.residual,
                  "not_converged": jnp.logical_not(info.converged)})
        return xr, -ld


def _pure(module: nn.Module) -> Callable[[Any, Array], Array]:
    return lambda state, z: module.apply(state, z, train=False)


@partial(jax.jit, static_argnums=(0, 1))
def _forward(module, config, state, x, key):
    """``(g(x), log det(I + J_g(x)))``. Jitted with the (hashable) unbound branch and
    estimator settings static: one compiled computation, also in eager use."""
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
      coeff: Lipschitz coefficient of every layer, in ``(0, 1)``; ``Lip(g) < coeff``.
      activation: "lipswish" (Residual Flows), "clipswish" or "elu" (i-ResNet).
      preact: apply the activation to the block input first (pre-activation).
      fully_connected: on images, use an MLP on the flattened event (Residual Flows'
        fully connected end blocks).
      attention: ``None`` or a factory of a 1-Lipschitz module applied first in the
        (convolutional) branch, ``g(x) = g_base(a(x))``, e.g. ACF's Lipschitz
        self-attention ``functools.partial(L2MultiHeadAttention, heads=2)``; called as
        ``attention(name="attention")`` (see "Attention in the branch" above).
      estimator: "exact", "series" or "roulette" (see the module docstring).
      n_terms: series terms for "series" (i-ResNet: 5).
      n_exact_terms, distribution ("geometric"/"poisson"), p, lam: roulette settings
        (Residual Flows: 2 exact terms, Poisson(2)).
      neumann_grad: Neumann-series gradient for the roulette (memory-efficient).
      n_samples, probe: Hutchinson probes per example and their law.
      eval_estimator, eval_terms, eval_samples: deterministic evaluation estimator.
      rtol, atol, max_iter: fixed-point inverse settings (``None``: 8 eps of the dtype).
      n_power_iterations, init_power_iterations: spectral norm power iterations per
        training call / at init.

    ``hidden_channels``, ``kernels``, ``activation`` and ``preact`` may be given
    positionally; every other field is keyword-only (shared with
    :class:`DenseResidualBlock`).
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
      Others (``coeff``, ``fully_connected``, ``attention``, the estimator, solver and
      power-iteration settings: keyword-only) as :class:`ResidualBlock`.
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
                raise ValueError(f"DenseResidualBlock: {name} must be an integer >= 1, got {val!r}.")
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
