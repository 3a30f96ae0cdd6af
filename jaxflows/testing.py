"""Reusable correctness checks for bijectors (used by jaxflows' own tests, and yours).

Every bijector, jaxflows' own or a user's, should pass :func:`check_bijector`. For each
seed of the case (``BijectorCase.seeds``, default two), after the parameters have been
**perturbed at random** (a coupling at init is the identity, so a check at init proves
nothing), it checks:

1. **shapes and dtypes**: ``y`` as expected, log-det ``[batch]``; float32 in gives
   float32 out and float64 in gives float64 out;
2. **round trip** in float64: ``|f^{-1}(f(x)) - x| <= recon_atol * max(1, |x|)``
   elementwise (default ``1e-10``; a float32 computation hidden inside a float64 call
   shows up here as an error of about ``1e-7``);
3. **log-det consistency**: forward log-det ``== -`` inverse log-det at ``y = f(x)``;
4. **exact Jacobian**: the forward log-det equals ``slogdet`` of the Jacobian of the
   **whole batch** map (``jax.jacfwd``, float64), taken block by block, and the
   off-diagonal blocks are zero (examples do not interact); tolerance
   ``atol + rtol * |log-det|`` (default ``1e-10`` each);
5. **training mode**: the same round-trip / log-det / Jacobian checks with
   ``train=True`` (stochastic estimators and dropout use the rng streams ``"logdet"``,
   ``"dropout"`` and ``case.rngs``, with the same keys in every call; non-``params``
   collections such as power-iteration vectors are mutable, as in a training step).
   ``train_log_det="stochastic"`` keeps the shape / round-trip checks and only asks a
   finite log-det of a case whose training log-det is a random estimate. Where
   ``train=True`` traces to the **same program** as evaluation (:func:`same_program`:
   equal jaxprs after dead-code elimination; most couplings and steps, whose training
   flag changes nothing), the program is not compiled twice: the same program on the
   same inputs repeats the evaluation checks bit for bit (reported as
   ``train_program="same as eval"``);
6. **not the identity**: at least ``min_moved_fraction`` (default 1/4) of the output
   elements differ from the input's (flattened per example) by more than ``1e-6 *
   max(1, |x|)``, for every bijector, with or without parameters (``identity=True``
   instead asserts ``y == x`` and log-det 0 exactly);
7. **gradients**: a random scalar functional of ``f(x)``, its log-det, ``f^{-1}(z)``
   and the inverse log-det is differentiated with ``jax.grad`` (float64) w.r.t. the
   parameters, ``x`` and ``z``; its derivative along a random unit direction is compared
   with finite differences (a Richardson-extrapolated central difference at step
   ``1e-4``, and central differences at ``1e-6`` and ``1e-7`` for piecewise-smooth maps
   such as ReLU conditioners; one must agree within ``grad_rtol``, default ``1e-6``,
   relative, plus its round-off); every gradient is finite, and every parameter leaf
   receives a gradient that is not identically zero;
8. the float32 forward under ``jax.jit`` (as training runs it) agrees with the float64
   computation to float32 accuracy (first seed).

Everything runs under ``jax.jit``: on a CPU, XLA compiles one whole-module program faster
than the hundreds of per-primitive programs an eager call dispatches. Eager calls are
covered where a bijector behaves differently without ``jit`` (errors that name NaN rows,
``on_nonconvergence="raise"``) by the tests of those features.

Each program (initialisation, the float64 checks of each mode, the functional and its
gradient) is jitted once per case and reused for every seed (keys are arguments; the
random perturbation, weights and directions are drawn on the host with numpy), so more
seeds cost run time, not compilation.

Example::

    from jaxflows import testing
    case = testing.BijectorCase("my_coupling", lambda: MyCoupling(), (2, 4, 4, 2))
    testing.check_bijector(case)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BijectorCase",
    "check_bijector",
    "jit_check",
    "same_program",
    "perturb_params",
    "exact_log_det",
    "enable_x64",
    "cast_floats",
]

PyTree = Any
# Streams always offered in training mode (unused streams are harmless in Flax).
_TRAIN_RNGS = ("dropout", "logdet")
_TRAIN_LOG_DET = ("exact", "stochastic", None)


#: XLA options of the float64 check programs: no LLVM optimisation passes. The programs
#: are tiny and run a few times, so optimising their machine code costs far more than it
#: saves (about a quarter of a registry case's time); code generation may differ in the
#: last bit, which float64 checks at 1e-10 cannot see. The code under test is compiled
#: as users compile it.
CHECK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_check(fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(fn, ...)`` for a float64 *check* program (:data:`CHECK_COMPILER_OPTIONS`)."""
    return jax.jit(fn, compiler_options=CHECK_COMPILER_OPTIONS, **jit_kwargs)


@contextlib.contextmanager
def enable_x64():
    """Context manager that turns on float64 in JAX and restores the old setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def cast_floats(tree: PyTree, dtype) -> PyTree:
    """Casts every floating-point leaf of ``tree`` to ``dtype`` (others unchanged)."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree_util.tree_map(cast, tree)


def perturb_params(variables: PyTree, key: jax.Array, scale: float = 0.1,
                   collection: str = "params") -> PyTree:
    """Adds ``scale * N(0, 1)`` noise to every floating leaf of ``variables[collection]``.

    Collections other than ``collection`` (fixed buffers, running state) are kept.
    """
    variables = dict(variables)
    params = variables.get(collection, {})
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    new = [l + scale * jax.random.normal(k, l.shape, l.dtype)
           if jnp.issubdtype(l.dtype, jnp.floating) else l
           for l, k in zip(leaves, keys)]
    variables[collection] = jax.tree_util.tree_unflatten(treedef, new)
    return variables


def exact_log_det(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """``log|det J|`` of a per-example map ``fn: [*event] -> [*event']``, for a batch ``x``.

    The Jacobian of each example is formed with ``jax.jacfwd`` and reduced by
    ``jnp.linalg.slogdet``: O(D^3), for small inputs (tests, 2-D toy densities).
    """
    def one(xi):
        jac = jax.jacfwd(lambda v: fn(v.reshape(xi.shape)).reshape(-1))(xi.reshape(-1))
        return jnp.linalg.slogdet(jac)[1]
    return jax.vmap(one)(x)


def batch_jacobian_log_det(fn: Callable[[jax.Array], jax.Array],
                           x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Per-example ``log|det J|`` of a **batched** map ``fn: [B, *event] -> [B, *event']``.

    The Jacobian of the whole batch, ``[B D', B D]``, is formed with ``jax.jacfwd``; its
    diagonal blocks are the per-example Jacobians (reduced by ``slogdet``) and its
    off-diagonal blocks must vanish for a map that treats examples independently.
    Returns ``(log_det [B], max |off-diagonal entry|)``.
    """
    b = x.shape[0]
    d = math.prod(x.shape[1:])
    jac = jax.jacfwd(lambda flat: fn(flat.reshape(x.shape)).reshape(-1))(x.reshape(-1))
    if jac.shape != (b * d, b * d):
        raise ValueError(f"batch_jacobian_log_det: the map changes the number of elements "
                         f"per example (Jacobian {jac.shape}, input {x.shape})")
    jac = jac.reshape(b, d, b, d)
    idx = jnp.arange(b)
    blocks = jac[idx, :, idx, :]
    off = jnp.where((idx[:, None] == idx[None, :])[:, None, :, None], 0.0, jac)
    off_max = jnp.max(jnp.abs(off)) if b > 1 else jnp.zeros((), x.dtype)
    return jnp.linalg.slogdet(blocks)[1], off_max


@dataclasses.dataclass
class BijectorCase:
    """One entry of the generic bijector registry.

    Attributes:
      name: test id.
      make: zero-argument factory returning the (unbound) bijector module.
      input_shape: batched input shape, e.g. ``(2, 4, 4, 2)``.
      context_shape: batched shape of ``context``, or ``None`` if unconditional.
      output_shape: expected output shape, if it differs from ``input_shape``.
      input_fn: ``(key, shape) -> x`` draws an input in the bijector's domain
        (default: standard normal). It also draws the inverse's input ``z`` of the
        gradient check, mapped through the forward first when ``input_fn`` is given
        (so ``z`` lies in the image of ``f``).
      perturb_scale: standard deviation of the random parameter perturbation.
      rngs: rng streams the bijector needs besides ``params`` (e.g. ``("logdet",)``);
        in training mode ``"dropout"`` and ``"logdet"`` are always supplied.
      apply_kwargs: extra keywords for forward/inverse (``train`` is set by the check).
      init_kwargs: extra keywords for ``init``.
      atol, rtol: tolerances of the float64 log-det checks,
        ``|a - b| <= atol + rtol * |b|``.
      recon_atol: tolerance of the float64 round trip, relative to ``max(1, |x|)``
        elementwise (looser only for iterative inverses that stop early).
      check_grads: whether to check gradients (finite differences, every leaf non-zero).
      prepare_variables: ``(variables, key) -> variables`` hook applied after
        perturbation (e.g. to refresh spectral-norm estimates for new weights).
      seeds: the seeds checked (inputs, initialisation, perturbation and rng streams
        all change with the seed).
      train_log_det: ``"exact"`` (default): with ``train=True`` the log-det is exact too
        and is checked like the evaluation one; ``"stochastic"``: it is a random
        estimate, only finite and of the right shape (its unbiasedness needs many draws:
        test it separately); ``None``: no ``train=True`` run.
      identity: the bijector is the identity by design (``y == x``, log-det 0 exactly).
      min_moved_fraction: fraction of the output elements that must differ from the
        input's (flattened per example) after perturbation.
      grad_rtol: relative tolerance of the finite-difference gradient check.
      perturb_collections: variable collections perturbed at random: ``"params"`` and
        any buffer that is a parameter in effect (never estimates such as
        power-iteration vectors, which ``prepare_variables`` refreshes).
    """

    name: str
    make: Callable[[], Any]
    input_shape: Tuple[int, ...]
    context_shape: Optional[Tuple[int, ...]] = None
    output_shape: Optional[Tuple[int, ...]] = None
    input_fn: Optional[Callable[[jax.Array, Tuple[int, ...]], jax.Array]] = None
    perturb_scale: float = 0.1
    rngs: Sequence[str] = ()
    apply_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    init_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    atol: float = 1e-10
    rtol: float = 1e-10
    recon_atol: float = 1e-10
    check_grads: bool = True
    prepare_variables: Optional[Callable[[PyTree, jax.Array], PyTree]] = None
    seeds: Sequence[int] = (0, 1)
    train_log_det: Optional[str] = "exact"
    identity: bool = False
    min_moved_fraction: float = 0.25
    grad_rtol: float = 1e-6
    perturb_collections: Sequence[str] = ("params",)

    def __post_init__(self):
        if self.train_log_det not in _TRAIN_LOG_DET:
            raise ValueError(f"BijectorCase({self.name!r}): train_log_det must be one of "
                             f"{_TRAIN_LOG_DET}, got {self.train_log_det!r}")
        if not self.seeds:
            raise ValueError(f"BijectorCase({self.name!r}): seeds must be non-empty")
        if not 0.0 <= self.min_moved_fraction <= 1.0:
            raise ValueError(f"BijectorCase({self.name!r}): min_moved_fraction must lie in "
                             f"[0, 1], got {self.min_moved_fraction!r}")

    def __str__(self):  # nicer pytest ids
        return self.name


def _draw_input(case: BijectorCase, key, shape, dtype):
    if case.input_fn is not None:
        return jnp.asarray(case.input_fn(key, shape), dtype)
    return jax.random.normal(key, shape, dtype)


def _max_ratio(err, scale):
    return float(jnp.max(err / scale))


_FD_STEP = 1e-4


def _canonical_jaxpr(closed) -> Tuple[str, list]:
    """A jaxpr's text after dead-code elimination, and its constants."""
    from jax._src.interpreters import partial_eval as pe  # no public DCE
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    return str(jaxpr), list(closed.consts)


def same_program(jitted, args: Sequence[Any], static_a: Any, static_b: Any) -> bool:
    """Whether ``jitted(*args, static_a)`` and ``jitted(*args, static_b)`` trace to the
    same program: equal jaxpr text after dead-code elimination and equal constants.

    Used by :func:`check_bijector` for ``train=True``: a bijector whose training flag
    changes nothing (no dropout, no stochastic estimator, no state update) traces to the
    evaluation program once the unused rng streams of training mode are eliminated, and
    the same program on the same inputs gives the same numbers, so its training-mode
    checks would repeat the evaluation checks bit for bit and are not compiled again.
    Conservative: anything that prints differently (a state update, an rng stream that is
    used, a callable in a primitive's parameters) or a failure to compare counts as
    different, and the training-mode program is compiled and checked.
    """
    try:
        ta, ca = _canonical_jaxpr(jitted.trace(*args, static_a).jaxpr)
        tb, cb = _canonical_jaxpr(jitted.trace(*args, static_b).jaxpr)
    except Exception:  # noqa: BLE001 -- private API moved: fall back to checking
        return False
    return ta == tb and len(ca) == len(cb) and all(
        np.shape(a) == np.shape(b) and np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(ca, cb))


class _Compiled:
    """The jitted functions of one case, built once and reused for every seed.

    Compiled programs: ``mode_checks`` per mode (float64 forward, inverse and the exact
    Jacobian), and ``value_and_grad`` of the random functional (the gradient, and the
    values for the finite differences); ``init`` and the float32 forward of check 8.
    """

    def __init__(self, case: BijectorCase):
        self.case = case
        module = self.module = case.make()
        rng_names = tuple(case.rngs)
        train_names = tuple(dict.fromkeys(rng_names + _TRAIN_RNGS))
        kw = {k: v for k, v in case.apply_kwargs.items() if k != "train"}
        modes = (False,) + ((True,) if case.train_log_det is not None else ())

        def rngs_for(k, names):
            ks = jax.random.split(k, len(names) + 1)
            return {n: kk for n, kk in zip(names, ks[1:])}

        def init(x, ctx, k_init):
            return module.init({"params": k_init, **rngs_for(k_init, rng_names)}, x,
                               context=ctx, **case.init_kwargs)
        self.init = jax.jit(init)

        def apply(v, x, c, k, train, method):
            names = train_names if train else rng_names
            state = (tuple(col for col in v if col != "params") or False) if train else False
            out = module.apply(v, x, context=c, rngs=rngs_for(k, names), method=method,
                               train=train, mutable=state, **kw)
            return out[0] if train and state else out

        def fwd32(v, x, c, k):
            return apply(v, x, c, k, False, module.forward_and_log_det)
        self.fwd32 = jax.jit(fwd32)

        def scalar(params, rest, x, z, c, k, weights):
            """A random linear-quadratic functional of f(x), log-det, f^-1(z), inverse log-det."""
            v = dict(rest, params=params)
            y, ld = apply(v, x, c, k, False, module.forward_and_log_det)
            xz, ild = apply(v, z, c, k, False, module.inverse_and_log_det)
            a, b, a2, b2 = weights
            return (jnp.sum(a * y) + 0.5 * jnp.mean(jnp.square(y)) + jnp.sum(b * ld)
                    + jnp.sum(a2 * xz) + 0.5 * jnp.mean(jnp.square(xz)) + jnp.sum(b2 * ild))

        def to64(variables, x32, c32):
            return (cast_floats(variables, jnp.float64), x32.astype(jnp.float64),
                    None if c32 is None else c32.astype(jnp.float64))

        @partial(jit_check, static_argnums=4)
        def mode_checks(variables, x32, c32, k, train):
            v, x, c = to64(variables, x32, c32)
            y, ld = apply(v, x, c, k, train, module.forward_and_log_det)
            xr, ild = apply(v, y, c, k, train, module.inverse_and_log_det)
            exact, off = batch_jacobian_log_det(
                lambda xx: apply(v, xx, c, k, train, module.forward_and_log_det)[0], x)
            return dict(y=y, ld=ld, xr=xr, ild=ild, exact=exact, off=off)

        # Gradient check: the random weights and direction come from the host (numpy), so
        # that the only compiled program is the functional's value and gradient (the finite
        # differences evaluate its value: one program instead of two).
        self.value_and_grad = jit_check(jax.value_and_grad(scalar, argnums=(0, 2, 3)))

        self.mode_checks = mode_checks
        self.modes = modes
        # Whether train=True traces to the same program as train=False (see
        # same_program); None until the first seed decides it.
        self.train_same = None


def _host_perturb(variables: PyTree, rng: np.random.Generator, scale: float,
                  collections: Sequence[str]) -> PyTree:
    """:func:`perturb_params` with host (numpy) noise: no compilation per leaf shape."""
    variables = dict(variables)
    for col in collections:
        if col in variables:
            variables[col] = jax.tree_util.tree_map(
                lambda l: jnp.asarray(
                    (np.asarray(l) + scale * rng.standard_normal(l.shape)).astype(l.dtype))
                if jnp.issubdtype(l.dtype, jnp.floating) else l, variables[col])
    return variables


def _host_float64(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(
        lambda l: np.asarray(l, np.float64) if jnp.issubdtype(l.dtype, jnp.floating)
        else np.asarray(l), tree)


def _check_seed(comp: _Compiled, seed: int, check_float32: bool) -> Dict[str, Any]:
    case = comp.case
    key = jax.random.PRNGKey(seed)
    k_x, k_init, k_ctx, k_rng, k_prep = jax.random.split(key, 5)
    rng = np.random.default_rng(seed)
    shape = tuple(case.input_shape)
    expected = tuple(case.output_shape or shape)
    name = case.name
    out: Dict[str, Any] = {}

    # Parameters are created in float32, as a user would, then perturbed.
    x32 = _draw_input(case, k_x, shape, jnp.float32)
    ctx32 = (None if case.context_shape is None
             else jax.random.normal(k_ctx, case.context_shape, jnp.float32))
    variables = _host_perturb(comp.init(x32, ctx32, k_init), rng, case.perturb_scale,
                              case.perturb_collections)
    if case.prepare_variables is not None:
        variables = case.prepare_variables(variables, k_prep)

    with enable_x64():
        res = {"eval": jax.device_get(comp.mode_checks(variables, x32, ctx32, k_rng, False))}
        if True in comp.modes:
            if comp.train_same is None:     # decided once per case, on the first seed
                comp.train_same = same_program(comp.mode_checks, (variables, x32, ctx32, k_rng),
                                               False, True)
            res["train"] = (res["eval"] if comp.train_same else jax.device_get(
                comp.mode_checks(variables, x32, ctx32, k_rng, True)))
    out["train_program"] = ("same as eval" if comp.train_same
                            else "checked" if True in comp.modes else "not applicable")
    x64 = np.asarray(x32, np.float64)
    xscale = np.maximum(1.0, np.abs(x64))

    # --- 8. float32 == float64 at float32 accuracy, and 1. shapes -------------------------
    if check_float32:
        y32, ld32 = comp.fwd32(variables, x32, ctx32, k_rng)
        assert y32.shape == expected, f"{name}: output shape {y32.shape}, expected {expected}"
        assert ld32.shape == shape[:1], (
            f"{name}: log-det shape {ld32.shape}, expected {shape[:1]}")
        assert y32.dtype == jnp.float32 and ld32.dtype == jnp.float32, (
            f"{name}: float32 in gave {y32.dtype} / log-det {ld32.dtype} out")
        ev = res["eval"]
        np.testing.assert_allclose(y32, ev["y"], rtol=1e-4, atol=1e-4,
                                   err_msg=f"{name}: float32 forward != float64")
        np.testing.assert_allclose(ld32, ev["ld"], rtol=1e-4, atol=1e-3,
                                   err_msg=f"{name}: float32 log-det != float64")

    for tag, r in res.items():
        label = f"train={tag == 'train'}"
        y, ld = r["y"], r["ld"]
        assert y.dtype == np.float64 and ld.dtype == np.float64, (
            f"{name} ({label}): float64 in gave {y.dtype} / log-det {ld.dtype} out")
        assert y.shape == expected and ld.shape == shape[:1], (
            f"{name} ({label}): shapes {y.shape} / {ld.shape}, expected {expected} / "
            f"{shape[:1]}")
        # --- 2. round trip -----------------------------------------------------------------
        err = float(np.max(np.abs(r["xr"] - x64) / xscale))
        out[f"reconstruction[{label}]"] = err
        assert err <= case.recon_atol, (
            f"{name} ({label}): inverse(forward(x)) differs from x by {err:.3g} relative to "
            f"max(1, |x|) (tolerance {case.recon_atol:g})")
        assert np.all(np.isfinite(ld)), f"{name} ({label}): non-finite log-det"
        if tag == "train" and case.train_log_det == "stochastic":
            continue
        # --- 3. forward log-det == - inverse log-det -----------------------------------------
        np.testing.assert_allclose(r["ild"], -ld, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{name} ({label}): inverse log-det != "
                                           "-forward log-det")
        # --- 4. exact Jacobian, examples independent ---------------------------------------
        np.testing.assert_allclose(ld, r["exact"], rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{name} ({label}): log-det != slogdet(jacfwd)")
        out[f"log_det_error[{label}]"] = float(np.max(np.abs(ld - r["exact"])))
        assert float(r["off"]) <= case.atol, (
            f"{name} ({label}): examples interact (off-diagonal Jacobian block "
            f"{float(r['off']):.3g})")

    # --- 6. not the identity --------------------------------------------------------------
    yf = res["eval"]["y"].reshape(shape[0], -1)
    xf = x64.reshape(shape[0], -1)
    if case.identity:
        assert np.all(yf == xf) and np.all(res["eval"]["ld"] == 0), (
            f"{name}: declared the identity, but y != x or log-det != 0")
    else:
        frac = float(np.mean(np.abs(yf - xf) > 1e-6 * np.maximum(1.0, np.abs(xf))))
        out["moved_fraction"] = frac
        assert frac >= case.min_moved_fraction, (
            f"{name}: only {frac:.0%} of the elements moved (minimum "
            f"{case.min_moved_fraction:.0%}): forward is (nearly) the identity after "
            "perturbing parameters")

    # --- 7. gradients: reverse mode against finite differences (float64) ------------------
    if case.check_grads:
        out["gradient_error"] = _check_gradients(comp, variables, x64, ctx32, k_rng, rng,
                                                 res["eval"]["y"])
    return out


def _check_gradients(comp: _Compiled, variables, x64, ctx32, k_rng, rng, y64) -> float:
    """Directional derivative of a random functional: ``jax.grad`` vs finite differences."""
    case, name = comp.case, comp.case.name
    shape = x64.shape
    expected = y64.shape
    v64 = _host_float64(variables)
    params = v64.get("params", {})
    rest = {k: v for k, v in v64.items() if k != "params"}
    # The inverse's input: a point in the image of f when the domain is restricted.
    z = y64 if case.input_fn is not None else rng.standard_normal(expected)
    weights = (rng.standard_normal(expected) / math.prod(expected),
               rng.standard_normal(shape[:1]),
               rng.standard_normal(shape) / math.prod(shape),
               rng.standard_normal(shape[:1]))
    with enable_x64():
        c64 = None if ctx32 is None else np.asarray(ctx32, np.float64)
        g_p, g_x, g_z = jax.device_get(
            comp.value_and_grad(params, rest, x64, z, c64, k_rng, weights)[1])
        for path, g in jax.tree_util.tree_flatten_with_path(g_p)[0]:
            leaf = jax.tree_util.keystr(path)
            assert np.all(np.isfinite(g)), f"{name}: non-finite gradient for parameter {leaf}"
            assert np.any(g != 0), f"{name}: zero gradient for parameter {leaf}"
        assert np.all(np.isfinite(g_x)) and np.all(np.isfinite(g_z)), (
            f"{name}: non-finite gradient w.r.t. the input")
        # A random direction of unit norm in (params, x, z); steps in x and z scale with
        # max(1, |x|) (pixel-valued inputs).
        leaves, treedef = jax.tree_util.tree_flatten(params)
        d_p = [rng.standard_normal(l.shape) for l in leaves]
        d_x = rng.standard_normal(shape) * np.maximum(1.0, np.abs(x64))
        d_z = rng.standard_normal(expected) * np.maximum(1.0, np.abs(z))
        norm = math.sqrt(sum(float(np.sum(np.square(d))) for d in d_p + [d_x, d_z]))
        d_p, d_x, d_z = [d / norm for d in d_p], d_x / norm, d_z / norm
        dd = float(sum(np.vdot(g, d) for g, d in
                       zip(jax.tree_util.tree_leaves(g_p) + [g_x, g_z], d_p + [d_x, d_z])))

        def at(t):
            p = jax.tree_util.tree_unflatten(treedef, [l + t * d for l, d in zip(leaves, d_p)])
            return float(comp.value_and_grad(p, rest, x64 + t * d_x, z + t * d_z, c64, k_rng,
                                             weights)[0])
        # Richardson-extrapolated central difference (O(h^4)) at h = 1e-4, and plain
        # central differences at 1e-6 and 1e-7: the smaller steps are for piecewise-smooth
        # maps (ReLU conditioners, clipping), whose kinks a step of 1e-4 may straddle.
        h = _FD_STEP
        lv = [at(t) for t in (h, -h, h / 2, -h / 2)]
        estimates = [((4 * (lv[2] - lv[3]) / h - (lv[0] - lv[1]) / (2 * h)) / 3, h, lv)]
        for step in (1e-6, 1e-7):
            lp, lm = at(step), at(-step)
            estimates.append(((lp - lm) / (2 * step), step, [lp, lm]))
    tol = case.grad_rtol * max(1.0, abs(dd))
    # round-off of the differences: ~1e-15 |L| / step
    errors = [(abs(fd - dd), fd, 1e-15 * max(abs(v) for v in vals) / step)
              for fd, step, vals in estimates]
    gerr, fd, _ = min(errors, key=lambda e: e[0] - e[2])
    assert any(err <= tol + roundoff for err, _, roundoff in errors), (
        f"{name}: directional derivative {dd:.12g} (jax.grad) differs from the finite "
        f"differences {[f'{e[1]:.12g}' for e in errors]} (steps 1e-4 extrapolated, 1e-6, "
        f"1e-7) by at least {gerr:.3g} (tolerance {case.grad_rtol:g} relative)")
    return gerr / max(1.0, abs(dd))


def check_bijector(case: BijectorCase, seed: Optional[int] = None) -> Dict[str, Any]:
    """Runs the checks listed in the module docstring; raises ``AssertionError``.

    Args:
      case: the bijector and its settings.
      seed: check this seed only (default: every seed of ``case.seeds``).

    Returns:
      The largest measured discrepancies over the seeds (for reporting):
      ``reconstruction[train=...]`` (relative to ``max(1, |x|)``),
      ``log_det_error[train=...]``, ``moved_fraction`` (smallest), ``gradient_error``,
      and ``train_program``: ``"checked"``, ``"same as eval"`` (check 5 proved by
      :func:`same_program`) or ``"not applicable"``.
    """
    seeds = tuple(case.seeds) if seed is None else (seed,)
    comp = _Compiled(case)
    out: Dict[str, Any] = {}
    for i, s in enumerate(seeds):
        for k, v in _check_seed(comp, s, check_float32=i == 0).items():
            if isinstance(v, str):
                out[k] = v
            else:
                out[k] = min(v, out[k]) if k == "moved_fraction" and k in out else max(
                    v, out.get(k, v))
    return out
