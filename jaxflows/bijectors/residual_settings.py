r"""Settings of the residual blocks, as frozen (hashable) dataclasses.

A residual block ``f(x) = x + g(x)`` (:mod:`jaxflows.bijectors.residual`) has four groups
of numerical settings, each one object:

* :class:`LogDetEstimator`: the training estimator of

  .. math::

      \log|\det(I + J_g(x))| = \sum_{k\ge 1} \frac{(-1)^{k+1}}{k}\operatorname{tr}(J_g^k),

  ``kind="series"`` (the first ``n_terms`` terms with Hutchinson traces, biased: i-ResNet,
  Behrmann et al. 2019, eq. 6), ``kind="roulette"`` (``n_exact_terms`` terms plus a random
  number ``N`` of further terms, term ``k`` reweighted by ``1 / P(N >= k - n_exact_terms)``,
  unbiased: Residual Flows, Chen et al. 2019, eq. 7, with the Neumann-series gradient of
  their Thm 2), or ``kind="exact"`` (``jacfwd`` + ``slogdet``; small inputs, tests).
* :class:`EvalEstimator`: the estimator of ``train=False`` (evaluation, sampling, the
  inverse's log-det): deterministic by default.
* :class:`FixedPointSolver`: the inverse ``x = y - g(x)`` by
  :func:`jaxflows.ops.fixed_point_inverse` (tolerances, iteration cap).
* :class:`SpectralNorm`: the Lipschitz coefficient of every layer of ``g`` and the power
  iterations that estimate the layers' operator norms (:mod:`jaxflows.nn.lipschitz`).

The defaults are the Residual Flows settings (Chen et al. 2019 and their reference code):
roulette with 2 exact terms + Poisson(2) further terms, one Gaussian probe, Neumann
gradient; evaluation by a deterministic 20-term series with 8 fixed Gaussian probes per
example; coefficient 0.98 with 2 power iterations per training step (200 at init).
i-ResNet (Behrmann et al. 2019): ``LogDetEstimator(kind="series", n_terms=5)``,
``SpectralNorm(coeff=0.9, n_iterations=5)``.

Each class checks its values when constructed and raises a ``ValueError`` naming the
field and what it expects. Blocks and the model factories of
:mod:`jaxflows.models.resflow` accept an instance or a plain ``dict`` of fields (how
configs write them, e.g. ``c.model.estimator = dict(kind="roulette", lam=2.0)``);
:func:`as_settings` converts a dict by **overriding the fields of the default** of the
block or factory (so ``iresnet(spectral_norm=dict(n_iterations=2))`` keeps i-ResNet's
coefficient 0.9), and names any unknown key.

References:
  Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen. Invertible Residual Networks. ICML 2019.
  Chen, Behrmann, Duvenaud, Jacobsen. Residual Flows for Invertible Generative Modeling.
    NeurIPS 2019.
  Hutchinson. A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines. 1990.
  Miyato, Kataoka, Koyama, Yoshida. Spectral Normalization for Generative Adversarial
    Networks. ICLR 2018.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from jaxflows.nn.lipschitz import check_coefficient

__all__ = ["LogDetEstimator", "EvalEstimator", "FixedPointSolver", "SpectralNorm",
           "as_settings", "moved_arguments", "MOVED_ARGUMENTS"]

LogDetKwargs = Tuple[Tuple[str, Any], ...]


def _int(owner: str, name: str, val: Any, lo: int, meaning: str) -> None:
    if isinstance(val, bool) or not isinstance(val, int) or val < lo:
        raise ValueError(f"{owner}: {name} ({meaning}) must be an integer >= {lo}, got {val!r}.")


def _choice(owner: str, name: str, val: Any, choices: Tuple[str, ...]) -> None:
    if val not in choices:
        raise ValueError(f"{owner}: {name} must be one of {choices}, got {val!r}.")


def _number(val: Any) -> bool:
    return (isinstance(val, (int, float)) and not isinstance(val, bool)
            and math.isfinite(float(val)))


@dataclasses.dataclass(frozen=True)
class LogDetEstimator:
    r"""Training estimator of ``log|det(I + J_g)|`` (``train=True``; rng stream ``"logdet"``).

    Attributes:
      kind: ``"roulette"`` (default; unbiased Russian roulette, Chen et al. 2019 eq. 7),
        ``"series"`` (the first ``n_terms`` terms of the power series, biased; i-ResNet,
        Behrmann et al. 2019 eq. 6) or ``"exact"`` (``jacfwd`` + ``slogdet``: cost grows
        with the cube of the event size, for small inputs and tests; also used at
        evaluation).
      n_terms: number of series terms for ``kind="series"`` (i-ResNet: 5); and for an
        evaluation estimator ``EvalEstimator(kind="series")``. Unused by the roulette.
      n_exact_terms: roulette: terms always computed before the random ones (Residual
        Flows: 2), ``>= 0``.
      distribution: roulette: law of the number ``N`` of further terms, ``"poisson"``
        (Residual Flows, rate ``lam``) or ``"geometric"`` (``P(N >= k) = (1 - p)^k``,
        success probability ``p``). Term ``n_exact_terms + k`` is weighted by
        ``1 / P(N >= k)``, which makes the estimate unbiased.
      lam: Poisson rate, ``> 0`` (Residual Flows: 2).
      p: geometric success probability, in ``(0, 1)`` (normflows' default: 0.5).
      n_samples: Hutchinson probes per example for the traces ``tr(J^k) ~ v^T J^k v``
        (Residual Flows and i-ResNet: 1).
      probe: law of the probes, ``"gaussian"`` (default) or ``"rademacher"``.
      neumann_grad: roulette: differentiate through the Neumann-series gradient estimator
        (Chen et al. 2019, Thm 2: ``stop_gradient`` on the series vector and one vjp, so the
        memory does not grow with the number of terms; the value is the roulette's) instead
        of through every term. Default ``True``, as Residual Flows.
    """

    kind: str = "roulette"
    n_terms: int = 5
    n_exact_terms: int = 2
    distribution: str = "poisson"
    lam: float = 2.0
    p: float = 0.5
    n_samples: int = 1
    probe: str = "gaussian"
    neumann_grad: bool = True

    def __post_init__(self):
        who = "LogDetEstimator"
        _choice(who, "kind", self.kind, ("roulette", "series", "exact"))
        _int(who, "n_terms", self.n_terms, 1, "series terms")
        _int(who, "n_exact_terms", self.n_exact_terms, 0, "roulette terms always computed")
        _choice(who, "distribution", self.distribution, ("poisson", "geometric"))
        if not (_number(self.lam) and self.lam > 0):
            raise ValueError(f"{who}: lam (Poisson rate of the roulette) must be a finite "
                             f"number > 0, got {self.lam!r}.")
        if not (_number(self.p) and 0.0 < self.p < 1.0):
            raise ValueError(f"{who}: p (geometric success probability of the roulette) must "
                             f"lie strictly in (0, 1), got {self.p!r}.")
        _int(who, "n_samples", self.n_samples, 1, "Hutchinson probes per example")
        _choice(who, "probe", self.probe, ("gaussian", "rademacher"))
        if not isinstance(self.neumann_grad, bool):
            raise ValueError(f"{who}: neumann_grad must be True or False, "
                             f"got {self.neumann_grad!r}.")

    def series_kwargs(self) -> LogDetKwargs:
        """:func:`jaxflows.ops.log_det` keywords of this estimator's truncated series."""
        return (("estimator", "series"), ("n_terms", self.n_terms),
                ("n_samples", self.n_samples), ("probe", self.probe))

    def log_det_kwargs(self) -> LogDetKwargs:
        """:func:`jaxflows.ops.log_det` keywords of this estimator (a hashable tuple)."""
        if self.kind == "exact":
            return (("estimator", "exact"),)
        if self.kind == "series":
            return self.series_kwargs()
        return (("estimator", "neumann" if self.neumann_grad else "roulette"),
                ("n_exact_terms", self.n_exact_terms), ("distribution", self.distribution),
                ("p", float(self.p)), ("lam", float(self.lam)),
                ("n_samples", self.n_samples), ("probe", self.probe))


@dataclasses.dataclass(frozen=True)
class EvalEstimator:
    r"""Estimator of ``log|det(I + J_g)|`` with ``train=False`` (evaluation, inverse, sampling).

    Attributes:
      kind: ``"eval"`` (default: the first ``n_terms`` terms of the power series with a
        **fixed** set of ``n_samples`` probes per example, so the same input always gets
        the same value; biased: the truncation error after ``n`` terms is at most
        ``D c^(n+1) / ((n + 1)(1 - c))`` for ``Lip(g) <= c``), ``"roulette"`` (the
        Residual Flows reference's evaluation: ``n_terms`` exact terms plus a Russian
        roulette over the rest with the training estimator's ``distribution``/``lam``/``p``,
        random probes: **unbiased** but random, so it needs the ``"logdet"`` rng stream
        at evaluation, and a result is reported with its standard error over draws, see
        :func:`jaxflows.models.resflow.roulette_evaluation`), ``"exact"`` (``jacfwd`` +
        ``slogdet``, small inputs) or ``"series"`` (the training estimator's series:
        its ``n_terms``, ``n_samples`` and ``probe``, with a fixed probe). A training
        ``LogDetEstimator(kind="exact")`` is exact at evaluation too.
      n_terms: series terms of ``kind="eval"`` and exact terms of ``kind="roulette"``
        (Residual Flows' evaluation: 20).
      n_samples: probes per example of ``kind="eval"``/``"roulette"`` (8).
      probe: probes of ``kind="eval"``: ``"gaussian"`` (default), ``"rademacher"``, or
        ``"exact"`` (the ``D`` basis vectors: exact traces of the truncated series, ``D``
        vjps per term); ``kind="roulette"``: gaussian or rademacher.
    """

    kind: str = "eval"
    n_terms: int = 20
    n_samples: int = 8
    probe: str = "gaussian"

    def __post_init__(self):
        who = "EvalEstimator"
        _choice(who, "kind", self.kind, ("eval", "exact", "series", "roulette"))
        _int(who, "n_terms", self.n_terms, 1, "series terms")
        _int(who, "n_samples", self.n_samples, 1, "probes per example")
        _choice(who, "probe", self.probe, ("gaussian", "rademacher", "exact"))
        if self.kind == "roulette" and self.probe == "exact":
            raise ValueError(f"{who}: probe='exact' (basis vectors) is for kind='eval'; the "
                             f"roulette uses random probes ('gaussian' or 'rademacher').")

    def log_det_kwargs(self, training: LogDetEstimator) -> LogDetKwargs:
        """:func:`jaxflows.ops.log_det` keywords at evaluation, given the training estimator."""
        if training.kind == "exact" or self.kind == "exact":
            return (("estimator", "exact"),)
        if self.kind == "eval":
            return (("estimator", "eval"), ("n_terms", self.n_terms),
                    ("n_samples", self.n_samples), ("probe", self.probe))
        if self.kind == "roulette":
            return (("estimator", "roulette"), ("n_exact_terms", self.n_terms),
                    ("distribution", training.distribution), ("p", float(training.p)),
                    ("lam", float(training.lam)), ("n_samples", self.n_samples),
                    ("probe", self.probe), ("max_terms", self.n_terms + 64))
        return training.series_kwargs()


@dataclasses.dataclass(frozen=True)
class FixedPointSolver:
    r"""Settings of the inverse ``x = y - g(x)`` (:func:`jaxflows.ops.fixed_point_inverse`).

    The iteration ``x_{k+1} = y - g(x_k)``, ``x_0 = y``, stops per example when the error
    estimate ``d_k max(1, rho_k / (1 - rho_k))`` (``d_k`` the rms update, ``rho_k`` the
    observed contraction rate) is at most ``atol + rtol * rms(x_k)``, when it stalls at
    the round-off floor, or at ``max_iter``; non-convergence is reported (the block sows
    it into ``"intermediates"``), never silent. Gradients use the implicit function
    theorem with an adjoint solve under the same settings.

    Attributes:
      rtol, atol: relative and absolute tolerances (``> 0``); ``None`` (default):
        :func:`jaxflows.ops.default_tolerance` of the input dtype (4 eps).
      max_iter: iteration cap, ``>= 1`` (default 1000; ~50 iterations reach the float32
        floor at ``Lip(g) = 0.98`` in practice).
      stall_patience: iterations without a new smallest update after which an example is
        stopped as stalled at the round-off floor, ``>= 1`` (default 16).
    """

    rtol: Optional[float] = None
    atol: Optional[float] = None
    max_iter: int = 1000
    stall_patience: int = 16

    def __post_init__(self):
        who = "FixedPointSolver"
        for name in ("rtol", "atol"):
            val = getattr(self, name)
            if val is not None and not (_number(val) and val > 0):
                raise ValueError(f"{who}: {name} (tolerance) must be a finite number > 0, or "
                                 f"None for 4 eps of the dtype; got {val!r}.")
        _int(who, "max_iter", self.max_iter, 1, "iteration cap")
        _int(who, "stall_patience", self.stall_patience, 1, "iterations without progress")

    def kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`jaxflows.ops.fixed_point_inverse`."""
        return dict(rtol=self.rtol, atol=self.atol, max_iter=self.max_iter,
                    stall_patience=self.stall_patience)


@dataclasses.dataclass(frozen=True)
class SpectralNorm:
    r"""Spectral normalisation of every linear layer of a residual branch.

    Each weight ``W`` (a convolution, by the operator norm of the convolution on the
    input's shape, or a dense layer) is used as ``W / max(1, sigma / coeff)`` with
    ``sigma`` the power-iteration estimate of its largest singular value (Miyato et al.
    2018; Behrmann et al. 2019 Sec. 3), so every layer is ``coeff``-Lipschitz and, with
    1-Lipschitz activations, ``Lip(g) <= coeff^{layers} < 1``. i-DenseNet's concatenation
    weights are normalised to ``sqrt(eta1^2 + eta2^2) = coeff`` too.

    Attributes:
      coeff: Lipschitz coefficient, in ``(0, 1)`` (Residual Flows: 0.98; i-ResNet: 0.9).
      n_iterations: power iterations per training call (``train=True`` with the
        ``"lipschitz"`` collection mutable), ``>= 1`` (Residual Flows: 2; i-ResNet: 5).
      init_iterations: power iterations at ``init``, ``>= 1`` (default 200).
    """

    coeff: float = 0.98
    n_iterations: int = 2
    init_iterations: int = 200

    def __post_init__(self):
        check_coefficient(self.coeff, "SpectralNorm")
        _int("SpectralNorm", "n_iterations", self.n_iterations, 1,
             "power iterations per training call")
        _int("SpectralNorm", "init_iterations", self.init_iterations, 1,
             "power iterations at init")

    def layer_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`~jaxflows.nn.SpectralConv` / ``SpectralDense``."""
        return dict(coeff=self.coeff, n_iterations=self.n_iterations,
                    init_iterations=self.init_iterations)


def as_settings(cls: type, value: Any, default: Any = None, *, name: str, who: str) -> Any:
    """``value`` as an instance of the settings class ``cls``.

    ``value`` is an instance of ``cls`` (returned as is), ``None`` (``default``, or
    ``cls()`` without one) or a mapping of field names (a ``dict``, a ``ConfigDict``):
    those fields replace the ones of ``default`` (``cls()`` without one). Raises a
    ``ValueError`` prefixed ``"{who}: {name}"`` for an unknown key (listing the known
    ones), an invalid value, or any other type.
    """
    base = cls() if default is None else default
    if isinstance(value, cls):
        return value
    if value is None:
        return base
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "items")):
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in value.keys() if k not in fields]
        if unknown:
            raise ValueError(f"{who}: unknown key {unknown[0]!r} in {name} ({cls.__name__}); "
                             f"known keys: {', '.join(fields)}.")
        try:
            return dataclasses.replace(base, **dict(value.items()))
        except ValueError as e:
            raise ValueError(f"{who}: {name}: {e}") from None
    raise ValueError(f"{who}: {name} must be a {cls.__name__} or a dict of its fields "
                     f"(e.g. {name}=dict({dataclasses.fields(cls)[0].name}="
                     f"{getattr(base, dataclasses.fields(cls)[0].name)!r})), got {value!r}.")


# Keyword arguments of the residual blocks and factories before the settings objects:
# old name -> (settings argument, field).
MOVED_ARGUMENTS: Dict[str, Tuple[str, str]] = {
    "coeff": ("spectral_norm", "coeff"),
    "n_power_iterations": ("spectral_norm", "n_iterations"),
    "init_power_iterations": ("spectral_norm", "init_iterations"),
    "n_terms": ("estimator", "n_terms"),
    "n_exact_terms": ("estimator", "n_exact_terms"),
    "distribution": ("estimator", "distribution"),
    "lam": ("estimator", "lam"),
    "p": ("estimator", "p"),
    "n_samples": ("estimator", "n_samples"),
    "probe": ("estimator", "probe"),
    "neumann_grad": ("estimator", "neumann_grad"),
    "eval_terms": ("eval_estimator", "n_terms"),
    "eval_samples": ("eval_estimator", "n_samples"),
    "rtol": ("solver", "rtol"),
    "atol": ("solver", "atol"),
    "max_iter": ("solver", "max_iter"),
}


def check_moved(kwargs: Mapping[str, Any], who: str) -> None:
    """Raises a ``TypeError`` saying where an old keyword argument went
    (``coeff=0.9`` -> ``spectral_norm=dict(coeff=0.9)``), or where a string
    ``estimator``/``eval_estimator`` goes (``kind``).
    """
    for old, (group, field) in MOVED_ARGUMENTS.items():
        if old in kwargs:
            raise TypeError(f"{who}: the argument `{old}` moved into `{group}`; pass "
                            f"{group}=dict({field}={kwargs[old]!r}).")
    for group in ("estimator", "eval_estimator"):
        if isinstance(kwargs.get(group), str):
            raise TypeError(f"{who}: `{group}` is a settings object now; pass "
                            f"{group}=dict(kind={kwargs[group]!r}).")


def moved_arguments(fn: Callable) -> Callable:
    """Decorator of a factory: :func:`check_moved` on its keyword arguments first."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        check_moved(kwargs, fn.__name__)
        return fn(*args, **kwargs)
    return wrapper
