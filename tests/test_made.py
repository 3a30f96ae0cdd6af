"""MADE: the autoregressive property for every order (with and without context, plain and
residual), masks as fixed buffers, the context reaching every output, bad input.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.nn import MADE

D, P, B = 4, 2, 2
X = jax.random.normal(jax.random.PRNGKey(0), (B, D))
CTX = jax.random.normal(jax.random.PRNGKey(1), (B, 3))


def _allowed(order):
    """allowed[i, j]: output i may depend on input j (j comes before i in the order)."""
    pos = np.empty(D, int)
    pos[np.asarray(order)] = np.arange(D)
    return pos[None, :] < pos[:, None]


def _dependence(made, variables, ctx):
    """Structural dependence of output entry i on input j, from the Jacobian."""
    @jax.jit
    def jac(variables, x, c):
        f = lambda xx: made.apply(variables, xx[None], None if c is None else c[None])[0]
        return jnp.any(jax.jacfwd(f)(x) != 0, axis=1)         # [D, D]
    return np.asarray(jac(variables, X[0], None if ctx is None else ctx[0]))


# Each order with and without a context, plain and residual (6 of the 16 combinations).
COMBOS = [("sequential", False, False), ("reversed", True, True), ("random", True, False),
          ("random", False, True), ([2, 0, 3, 1], False, False), ([2, 0, 3, 1], True, True)]


@pytest.mark.parametrize("order, with_context, residual", COMBOS,
                         ids=[f"{o if isinstance(o, str) else 'explicit'}-c{int(c)}-r{int(r)}"
                              for o, c, r in COMBOS])
def test_autoregressive_property(order, with_context, residual):
    # tanh (no dead units) and a random output layer, so every allowed edge is non-zero.
    made = MADE(hidden_features=(3 * D, 3 * D), num_params=P, order=order, residual=residual,
                activation="tanh", output_init_scale=0.5)
    ctx = CTX if with_context else None
    variables = jax.jit(made.init)(jax.random.PRNGKey(2), X, ctx)
    if order == "random":
        used = np.asarray(variables["buffers"]["order"])
        assert sorted(used.tolist()) == list(range(D))
    else:
        used = {"sequential": np.arange(D), "reversed": np.arange(D)[::-1]}.get(
            order if isinstance(order, str) else "", np.asarray(order))
    np.testing.assert_array_equal(_dependence(made, variables, ctx), _allowed(used))
    assert set(variables["buffers"]) >= {"mask_0", "mask_1", "mask_2"}
    assert all(variables["buffers"][f"mask_{i}"].dtype == bool for i in range(3))
    flat = jax.tree_util.tree_leaves_with_path(variables["params"])
    assert not any("mask" in jax.tree_util.keystr(p) for p, _ in flat)


def test_context_reaches_every_output_including_the_first():
    made = MADE(hidden_features=(8,), num_params=P, activation="tanh", output_init_scale=0.5)
    variables = jax.jit(made.init)(jax.random.PRNGKey(3), X, CTX)
    jac = jax.jit(jax.jacfwd(lambda c: made.apply(variables, X[:1], c[None])[0]))(CTX[0])
    assert bool(jnp.all(jnp.any(jac != 0, axis=(1, 2))))


def test_zero_output_at_init_and_random_order_from_seed():
    made = MADE(hidden_features=8, num_params=3)
    v = made.init(jax.random.PRNGKey(4), X)
    out = made.apply(v, X)
    assert out.shape == (B, D, 3)
    np.testing.assert_array_equal(out, 0.0)
    seeded = MADE(hidden_features=8, order="random", seed=7)
    o1 = seeded.init(jax.random.PRNGKey(5), X)["buffers"]["order"]
    o2 = seeded.init(jax.random.PRNGKey(6), X)["buffers"]["order"]
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(o1, jax.random.permutation(jax.random.PRNGKey(7), D))


def test_bad_input_raises():
    made = MADE(hidden_features=(8,))
    with pytest.raises(ValueError, match="order"):
        MADE(order="backwards").init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match="permutation"):
        MADE(order=[0, 1, 1, 2]).init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match="equal hidden widths"):
        MADE(hidden_features=(8, 4), residual=True).init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match=r"\[batch, D\]"):
        made.init(jax.random.PRNGKey(0), X[0])
    v = made.init(jax.random.PRNGKey(0), X, CTX)
    with pytest.raises(ValueError, match="`context` is required"):
        made.apply(v, X)
    with pytest.raises(ValueError, match="initialised with 3"):
        made.apply(v, X, CTX[:, :2])
    with pytest.raises(ValueError, match="initialised with 4"):
        made.apply(v, X[:, :3], CTX)
    v0 = made.init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match="without one"):
        made.apply(v0, X, CTX)
