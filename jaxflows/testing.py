"""Reusable correctness checks for bijectors (used by jaxflows' own tests, and yours).

Every bijector, jaxflows' own or a user's, should pass :func:`check_bijector`:

1. output shapes (``y`` as expected, log-det ``[batch]``);
2. ``inverse(forward(x)) == x`` **after every parameter has been perturbed at
   random** (a coupling at init is the identity, so a check at init proves nothing);
3. forward log-det == - inverse log-det (at ``y = f(x)``);
4. log-det == ``slogdet`` of the exact Jacobian (``jax.jacfwd``, in float64);
5. every parameter leaf receives a finite gradient that is not identically zero;
6. ``jax.jit`` gives the same result as eager execution.

Example::

    from jaxflows import testing
    case = testing.BijectorCase("my_coupling", lambda: MyCoupling(), (2, 4, 4, 2))
    testing.check_bijector(case)
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BijectorCase",
    "check_bijector",
    "perturb_params",
    "exact_log_det",
    "enable_x64",
    "cast_floats",
]

PyTree = Any


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
        (default: standard normal).
      perturb_scale: standard deviation of the random parameter perturbation.
      rngs: rng streams the bijector needs besides ``params`` (e.g. ``("logdet",)``).
      apply_kwargs: extra keywords for forward/inverse (e.g. ``{"train": False}``).
      init_kwargs: extra keywords for ``init``.
      atol, rtol: tolerances of the float64 checks.
      recon_atol: tolerance of the round trip (looser for iterative inverses).
      check_grads: whether to check that every parameter gets a gradient.
      prepare_variables: ``(variables, key) -> variables`` hook applied after
        perturbation (e.g. to refresh spectral-norm estimates for new weights).
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
    atol: float = 1e-6
    rtol: float = 1e-6
    recon_atol: float = 1e-6
    check_grads: bool = True
    prepare_variables: Optional[Callable[[PyTree, jax.Array], PyTree]] = None

    def __str__(self):  # nicer pytest ids
        return self.name


def _draw_input(case: BijectorCase, key, shape, dtype):
    if case.input_fn is not None:
        return jnp.asarray(case.input_fn(key, shape), dtype)
    return jax.random.normal(key, shape, dtype)


def check_bijector(case: BijectorCase, seed: int = 0) -> Dict[str, float]:
    """Runs the six checks listed in the module docstring; raises ``AssertionError``.

    Returns a dict of the measured discrepancies (for reporting).
    """
    key = jax.random.PRNGKey(seed)
    k_x, k_init, k_pert, k_ctx, k_rng, k_prep = jax.random.split(key, 6)
    module = case.make()
    shape = tuple(case.input_shape)
    rng_names = tuple(case.rngs)

    def rngs_for(k):
        ks = jax.random.split(k, len(rng_names) + 1)
        return {n: kk for n, kk in zip(rng_names, ks[1:])}

    # Parameters are created in float32, as a user would, then perturbed.
    x32 = _draw_input(case, k_x, shape, jnp.float32)
    ctx32 = (None if case.context_shape is None
             else jax.random.normal(k_ctx, case.context_shape, jnp.float32))
    # init and perturbation are jitted: run eagerly, a Flax init dispatches (and
    # compiles) every primitive separately, which costs far more than one compile.
    @jax.jit
    def init_and_perturb(x, ctx):
        v = module.init({"params": k_init, **rngs_for(k_init)}, x, context=ctx,
                        **case.init_kwargs)
        return perturb_params(v, k_pert, case.perturb_scale)
    variables = init_and_perturb(x32, ctx32)
    if case.prepare_variables is not None:
        variables = case.prepare_variables(variables, k_prep)
    kw = dict(case.apply_kwargs)
    out: Dict[str, float] = {}

    # --- 6. jit == eager (float32) -------------------------------------------------
    def fwd(v, x, c, k):
        return module.apply(v, x, context=c, rngs=rngs_for(k),
                            method=module.forward_and_log_det, **kw)
    y_eager, ld_eager = fwd(variables, x32, ctx32, k_rng)
    y_jit, ld_jit = jax.jit(fwd)(variables, x32, ctx32, k_rng)
    np.testing.assert_allclose(y_jit, y_eager, rtol=1e-4, atol=1e-4,
                               err_msg=f"{case.name}: jit forward != eager forward")
    np.testing.assert_allclose(ld_jit, ld_eager, rtol=1e-4, atol=1e-3,
                               err_msg=f"{case.name}: jit log-det != eager log-det")

    # --- 1. shapes -----------------------------------------------------------------
    expected = tuple(case.output_shape or shape)
    assert y_jit.shape == expected, f"{case.name}: output shape {y_jit.shape}, expected {expected}"
    assert ld_jit.shape == shape[:1], (
        f"{case.name}: log-det shape {ld_jit.shape}, expected {shape[:1]}")
    assert y_jit.dtype == jnp.float32, f"{case.name}: float32 in gave {y_jit.dtype} out"

    # --- 2-4. round trip, log-det consistency, exact Jacobian, in float64 ------------
    with enable_x64():
        v64 = cast_floats(variables, jnp.float64)
        x64 = jnp.asarray(x32, jnp.float64)
        c64 = None if ctx32 is None else jnp.asarray(ctx32, jnp.float64)
        rngs = rngs_for(k_rng)

        @jax.jit
        def all_checks(v, x, c):
            y, ld = module.apply(v, x, context=c, rngs=rngs,
                                 method=module.forward_and_log_det, **kw)
            xr, ild = module.apply(v, y, context=c, rngs=rngs,
                                   method=module.inverse_and_log_det, **kw)

            def per_example(xi, ci):
                ci_b = None if ci is None else ci[None]
                return module.apply(v, xi[None], context=ci_b, rngs=rngs,
                                    method=module.forward, **kw)[0]
            if c is None:
                exact = exact_log_det(lambda xi: per_example(xi, None), x)
            else:
                def one(xi, ci):
                    return exact_log_det(lambda v_: per_example(v_, ci), xi[None])[0]
                exact = jax.vmap(one)(x, c)
            return y, ld, xr, ild, exact

        y, ld, xr, ild, exact = all_checks(v64, x64, c64)
        assert y.dtype == jnp.float64, f"{case.name}: float64 in gave {y.dtype} out"
        err = float(jnp.max(jnp.abs(xr - x64)))
        out["reconstruction"] = err
        assert err <= case.recon_atol + 1e-6 * float(jnp.max(jnp.abs(x64))), (
            f"{case.name}: inverse(forward(x)) differs from x by {err:.3g} "
            f"(tolerance {case.recon_atol:g})")
        np.testing.assert_allclose(ild, -ld, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{case.name}: inverse log-det != -forward log-det")
        np.testing.assert_allclose(ld, exact, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{case.name}: log-det != slogdet(jacfwd)")
        out["log_det_error"] = float(jnp.max(jnp.abs(ld - exact)))
        if y.shape == x64.shape and case.perturb_scale > 0 and jax.tree_util.tree_leaves(
                variables.get("params", {})):
            assert not np.allclose(np.asarray(y), np.asarray(x64)), (
                f"{case.name}: forward is the identity even after perturbing parameters")

    # --- 5. gradients for every parameter (float32) ----------------------------------
    if case.check_grads and "params" in variables:
        def loss(params):
            v = dict(variables, params=params)
            y, ld = module.apply(v, x32, context=ctx32, rngs=rngs_for(k_rng),
                                 method=module.forward_and_log_det, **kw)
            return 0.5 * jnp.mean(jnp.sum(y.reshape(y.shape[0], -1) ** 2, -1)) - jnp.mean(ld)
        grads = jax.jit(jax.grad(loss))(variables["params"])
        flat = jax.tree_util.tree_flatten_with_path(grads)[0]
        for path, g in flat:
            name = jax.tree_util.keystr(path)
            assert bool(jnp.all(jnp.isfinite(g))), f"{case.name}: non-finite gradient for {name}"
            assert bool(jnp.any(g != 0)), f"{case.name}: zero gradient for parameter {name}"
    return out
